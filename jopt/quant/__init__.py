"""jopt.quant: quantizers, the quantized-array object, calibration, parameter trees.

Quantize an array with :func:`quantize` (linear symmetric / asymmetric, log2,
k-means, NF4; per tensor, channel or group) to a :class:`QuantizedArray` with
``.dequantize()`` and a true ``.nbytes``; calibrate ranges on sample batches
with :func:`calibrate` or a running observer; quantize whole parameter trees
with :func:`quantize_params` and account for them with :func:`size_report`.
Train with fake quantization (:func:`fake_quant`, :func:`fake_quant_params`:
clipped straight-through gradients) and run int8 / int4 layers on integers
with :func:`int8_dense` and :func:`int8_conv` (int32 accumulation).
Choose per-leaf bit widths under a byte budget from measured sensitivity with
:func:`layer_sensitivity` and :func:`allocate_bits`.
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

from jopt.quant.mixed import (
    Sensitivity as Sensitivity,
    allocate_bits as allocate_bits,
    layer_sensitivity as layer_sensitivity,
)
from jopt.quant.qat import (
    fake_quant as fake_quant,
    fake_quant_params as fake_quant_params,
)
from jopt.quant.integer import (
    int8_conv as int8_conv,
    int8_dense as int8_dense,
    quantize_input as quantize_input,
)

__all__ = [
    "fake_quant",
    "fake_quant_params",
    "int8_conv",
    "int8_dense",
    "quantize_input",
    "Sensitivity",
    "allocate_bits",
    "layer_sensitivity",
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
