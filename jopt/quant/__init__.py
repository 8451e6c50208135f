"""jopt.quant: quantizers, the quantized-array object, calibration, parameter trees.

Quantize an array with :func:`quantize` (linear symmetric / asymmetric, log2,
k-means, NF4; per tensor, channel or group) to a :class:`QuantizedArray` with
``.dequantize()`` and a true ``.nbytes``; calibrate ranges on sample batches
with :func:`calibrate` or a running observer; quantize whole parameter trees
with :func:`quantize_params` and account for them with :func:`size_report`.
"""

from jopt.quant.linear import (
    code_range as code_range,
    linear_codes as linear_codes,
    linear_values as linear_values,
    scale_and_zero_point as scale_and_zero_point,
)
from jopt.quant.nonlinear import (
    kmeans_1d as kmeans_1d,
    log2_codes as log2_codes,
    log2_scale as log2_scale,
    log2_values as log2_values,
    nf4_codes as nf4_codes,
    nf4_levels as nf4_levels,
    nf4_values as nf4_values,
)
from jopt.quant.qarray import (
    QuantizedArray as QuantizedArray,
    pack_bits as pack_bits,
    packed_nbytes as packed_nbytes,
    unpack_bits as unpack_bits,
)
from jopt.quant.quantizer import quantize as quantize
from jopt.quant.calibrate import (
    ObserverState as ObserverState,
    QuantRange as QuantRange,
    calibrate as calibrate,
    mse_clip as mse_clip,
    observer_init as observer_init,
    observer_range as observer_range,
    observer_update as observer_update,
)
from jopt.quant.tree import (
    LeafSize as LeafSize,
    SizeReport as SizeReport,
    dequantize_params as dequantize_params,
    param_path as param_path,
    quantize_params as quantize_params,
    size_report as size_report,
)

__all__ = [
    "LeafSize",
    "ObserverState",
    "QuantRange",
    "QuantizedArray",
    "SizeReport",
    "calibrate",
    "dequantize_params",
    "mse_clip",
    "observer_init",
    "observer_range",
    "observer_update",
    "param_path",
    "quantize_params",
    "size_report",
    "code_range",
    "kmeans_1d",
    "linear_codes",
    "linear_values",
    "log2_codes",
    "log2_scale",
    "log2_values",
    "nf4_codes",
    "nf4_levels",
    "nf4_values",
    "pack_bits",
    "packed_nbytes",
    "quantize",
    "scale_and_zero_point",
    "unpack_bits",
]
