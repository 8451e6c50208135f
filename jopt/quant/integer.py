r"""Integer inference: int8 activations x int8 (or packed int4) weights, int32 accumulation.

A dense or conv layer with a weight :math:`W \approx S_w\,Q_w` (symmetric,
per tensor or per output channel; a :class:`jopt.quant.QuantizedArray`) and an
input quantized with a calibrated range, :math:`x \approx S_x\,Q_x`, is

.. math::
  y_j = S_x\,S_{w,j} \sum_k Q_{x,k}\,Q_{w,kj} + b_j

The sum runs on integers: ``jax.lax.dot_general`` / ``conv_general_dilated``
of int8 operands with ``preferred_element_type=jnp.int32``; one float multiply
per output rescales it, and the float bias is added. Activations use the
restricted symmetric int8 range :math:`|Q_x| \le 127` (so zero padding in the
integer conv is exactly the float zero padding, and :math:`|Q_x Q_w| \le 127^2`).
int4 weights stay packed two to a byte in storage and are unpacked to int8 for
the product; the accumulator is exact as long as
:math:`K \cdot 127^2 < 2^{31}` (:math:`K` the reduction length, up to about
133,000).

Equality with fake quantization. The accumulator is exact, so the integer
layer differs from the fake-quantized float layer
``fake_quant(x, clip_range=x_range) @ qw.dequantize() + b`` only by the float
rounding of the latter's sum. Both lie (up to that rounding) on the output grid
of spacing :math:`S_x S_{w,j}`, the step of the int32 accumulator; the
difference is at most :math:`\gamma_K \sum_k |S_x Q_{x,k} S_{w,j} Q_{w,kj}|`
(:math:`\gamma_K \approx K\,u`, :math:`u` the unit roundoff) plus the rounding
of the final multiply and add, far below one step :math:`S_x S_{w,j}` for any
practical :math:`K`.

qwix. Google's qwix quantizes Flax models by intercepting their ops
(``qwix.quantize_model`` with ``qwix.QtRule`` / ``qwix.PtqProvider``); jopt's
kernels are plain functions on a parameter tree. The two meet at qwix's
``QArray`` (``qvalue``, ``scale`` of the operand's rank, ``zero_point``,
``qtype``): jopt's codes and scales *are* such an array, so a jopt-quantized
weight and a jopt-calibrated activation run through qwix's integer ops
unchanged::

    cx, sx = jopt.quant.quantize_input(x, x_range)          # x_range from calibrate
    xq = qwix.QArray(cx, sx.reshape(1, 1), None, jnp.int8)
    wq = qwix.QArray(qw.codes.astype(jnp.int8), qw.scale.reshape(1, -1), None, jnp.int8)
    y = qwix.dot_general(xq, wq, (((1,), (0,)), ((), ())))   # int8 x int8 -> int32

(for a conv, ``qwix.conv_general_dilated`` with the scale reshaped to
``(1, 1, 1, O)``). Build the ``QArray`` from jopt's codes rather than letting
qwix re-quantize ``qw.dequantize()``: qwix's symmetric int8 grid uses the bound
127.5 (``scale = absmax / 127.5``), jopt's the restricted 127, so a re-quantized
weight can land on different codes. Tested in ``tests/test_quant_integer.py``
against qwix 0.1.8.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.tree import compute_dtype
from jopt.quant import _layout
from jopt.quant.linear import linear_codes, scale_and_zero_point
from jopt.quant.qarray import QuantizedArray

__all__ = ["quantize_input", "int8_dense", "int8_conv"]


def _range_pair(x_range: Any, where: str) -> tuple[jax.Array, jax.Array]:
  if x_range is None:
    raise TypeError(f"{where}x_range is required: the input's (min, max) range, e.g."
                     " jopt.quant.calibrate(activation_batches) or"
                     " jopt.quant.observer_range(state).")
  try:
    lo, hi = x_range
  except (TypeError, ValueError):
    raise TypeError(f"{where}x_range must be a (min, max) pair such as"
                    f" jopt.quant.calibrate returns, got {type(x_range).__name__}.") from None
  lo, hi = jnp.asarray(lo), jnp.asarray(hi)
  if lo.shape != () or hi.shape != ():
    raise ValueError(f"{where}x_range has shapes {lo.shape} and {hi.shape}; the input is"
                     " quantized per tensor, so pass scalars (calibrate with"
                     " granularity='tensor').")
  _layout.check_finite("x_range", lo, where)
  _layout.check_finite("x_range", hi, where)
  return lo, hi


def quantize_input(x: Any, x_range: Any, *, bits: int = 8) -> tuple[jax.Array, jax.Array]:
  r"""Symmetric per-tensor integer codes of an activation, for the integer kernels.

  .. math:: S_x = \frac{\max(|l|, |h|)}{2^{b-1} - 1}, \qquad
    Q_x = \operatorname{clip}(\operatorname{round}(\operatorname{clip}(x, l, h) / S_x),
    \ -(2^{b-1}-1),\ 2^{b-1}-1)

  The codes are those of ``jopt.quant.fake_quant(x, bits, clip_range=x_range)``
  (:math:`S_x Q_x` is its value).

  Args:
    x: a floating array.
    x_range: the ``(min, max)`` range (scalars), e.g. from :func:`jopt.quant.calibrate`.
    bits: bits of the codes, 2..8.

  Returns:
    ``(codes, scale)``: int8 codes shaped like ``x`` and the float32 (or
    wider) scale :math:`S_x`.

  Example:
    >>> q, s = jopt.quant.quantize_input(jnp.array([0.5, -1.0]), (-1.0, 1.0))
    >>> q.tolist(), round(float(s) * 127, 6)
    ([64, -127], 1.0)

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, §2 (here with a
  symmetric activation range, zero point 0).
  """
  where = "quantize_input: "
  bits = _layout.check_bits(bits, where)
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}x must be floating, got dtype {x.dtype}.")
  lo, hi = _range_pair(x_range, where)
  cdt = compute_dtype(x.dtype, "x")
  lo, hi = lo.astype(cdt), hi.astype(cdt)
  scale, z = scale_and_zero_point(lo, hi, bits=bits)
  xc = jnp.clip(x.astype(cdt), lo, hi)
  return linear_codes(xc, scale, z, bits=bits).astype(jnp.int8), scale


def _weight(qw: Any, ndim: int, where: str) -> tuple[jax.Array, jax.Array]:
  """int8 codes and the per-output-channel (or scalar) scale of a QuantizedArray."""
  if not isinstance(qw, QuantizedArray):
    raise TypeError(f"{where}qw must be a jopt.quant.QuantizedArray (from"
                    f" jopt.quant.quantize), got {type(qw).__name__}.")
  if qw.method != "linear" or qw.scheme != "symmetric":
    raise ValueError(f"{where}qw is method={qw.method!r}, scheme={qw.scheme!r}; integer"
                     " kernels need method='linear', scheme='symmetric' (zero point 0).")
  if qw.ndim != ndim:
    raise ValueError(f"{where}qw has shape {qw.shape}; expected a rank-{ndim} kernel.")
  if qw.granularity == "group" or (qw.granularity == "channel" and qw.axis != ndim - 1):
    raise ValueError(f"{where}qw is quantized with granularity={qw.granularity!r},"
                     f" axis={qw.axis}; integer kernels need one scale per tensor or per"
                     f" output channel: quantize with granularity='channel', axis=-1.")
  return qw.codes.astype(jnp.int8), qw.scale


def _finish(acc: jax.Array, sx: jax.Array, sw: jax.Array, bias: Any, dtype: Any,
            return_accumulator: bool):
  if not isinstance(return_accumulator, (bool, np.bool_)):
    raise TypeError(f"return_accumulator={return_accumulator!r} must be True or False.")
  out_scale = sx * sw.astype(sx.dtype)
  if return_accumulator:
    return acc, out_scale
  y = acc.astype(out_scale.dtype) * out_scale
  if bias is not None:
    y = y + jnp.asarray(bias).astype(y.dtype)
  return y.astype(dtype)


def int8_dense(x: Any, qw: QuantizedArray, bias: Any = None, *, x_range: Any,
               return_accumulator: bool = False):
  r"""A dense layer on integers: int8 input x int8 / int4 weight, int32 sum, float rescale.

  .. math:: y = S_x S_w \odot (Q_x\,Q_w) + b, \qquad Q_x Q_w \text{ in int32}

  Args:
    x: the float input, shape ``(..., K)``.
    qw: the kernel ``(K, N)`` as a symmetric linear :class:`QuantizedArray`,
      per tensor or per output channel (``granularity="channel", axis=-1``);
      2..8 bits (int4 stays packed in ``qw`` and is unpacked to int8 here).
    bias: optional float bias ``(N,)``.
    x_range: the input's ``(min, max)`` (scalars), e.g. from
      :func:`jopt.quant.calibrate`; values outside are clipped.
    return_accumulator: if True return ``(acc, out_scale)``, the int32
      accumulator and :math:`S_x S_w`, instead of ``y``.

  Returns:
    ``y`` of shape ``(..., N)`` in ``x``'s dtype, or ``(acc, out_scale)``.

  Example:
    >>> w = jopt.quant.quantize(jnp.array([[1.0, -2.0], [0.5, 1.0]]), 8, granularity="channel")
    >>> y = jopt.quant.int8_dense(jnp.array([[1.0, 1.0]]), w, x_range=(-1.0, 1.0))
    >>> [round(v, 2) for v in y[0].tolist()]
    [1.5, -0.99]

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, §2.2-2.4 (int32
  accumulation; here the rescale is a float multiply rather than a
  fixed-point one, and the bias stays float).
  """
  where = "int8_dense: "
  x = jnp.asarray(x)
  cw, sw = _weight(qw, 2, where)
  if x.ndim < 1 or x.shape[-1] != qw.shape[0]:
    raise ValueError(f"{where}x has shape {x.shape} but qw has shape {qw.shape}; the"
                     " last axis of x must equal qw.shape[0].")
  cx, sx = quantize_input(x, x_range)
  acc = jax.lax.dot_general(cx, cw, (((x.ndim - 1,), (0,)), ((), ())),
                            preferred_element_type=jnp.int32)
  return _finish(acc, sx, sw, bias, x.dtype, return_accumulator)


def int8_conv(x: Any, qw: QuantizedArray, bias: Any = None, *, x_range: Any,
              strides: Sequence[int] = (1, 1), padding: Any = "SAME",
              rhs_dilation: Sequence[int] | None = None, feature_group_count: int = 1,
              return_accumulator: bool = False):
  r"""A 2-D convolution on integers (NHWC input, HWIO kernel), int32 sum, float rescale.

  .. math:: y = S_x S_w \odot (Q_x \ast Q_w) + b, \qquad Q_x \ast Q_w \text{ in int32}

  Zero padding pads the int8 codes with 0, which is exactly the float 0.0 of
  the symmetric activation grid.

  Args:
    x: the float input ``(N, H, W, C)``.
    qw: the kernel ``(KH, KW, C // feature_group_count, O)`` as a symmetric
      linear :class:`QuantizedArray`, per tensor or per output channel
      (``granularity="channel", axis=-1``).
    bias: optional float bias ``(O,)``.
    x_range: the input's ``(min, max)`` (scalars).
    strides: window strides.
    padding: ``"SAME"``, ``"VALID"`` or explicit pairs, as ``lax.conv_general_dilated``.
    rhs_dilation: kernel dilation.
    feature_group_count: grouped / depthwise convolution.
    return_accumulator: if True return ``(acc, out_scale)``.

  Returns:
    ``y`` of shape ``(N, H', W', O)`` in ``x``'s dtype, or ``(acc, out_scale)``.

  Example:
    >>> w = jopt.quant.quantize(jnp.ones((3, 3, 1, 2)), 8, granularity="channel")
    >>> y = jopt.quant.int8_conv(jnp.ones((1, 4, 4, 1)), w, x_range=(-1.0, 1.0))
    >>> y.shape, [round(v, 3) for v in y[0, 0, :, 0].tolist()]  # 3x3 sums of ones, zero-padded
    ((1, 4, 4, 2), [4.0, 6.0, 6.0, 4.0])

  Reference: Jacob et al., CVPR 2018, §2.2-2.4 (integer convolution with
  int32 accumulators).
  """
  where = "int8_conv: "
  x = jnp.asarray(x)
  cw, sw = _weight(qw, 4, where)
  if x.ndim != 4 or x.shape[-1] != qw.shape[2] * feature_group_count:
    raise ValueError(f"{where}x has shape {x.shape} and qw {qw.shape}; x must be NHWC"
                     " with C = qw.shape[2] * feature_group_count (HWIO kernel).")
  cx, sx = quantize_input(x, x_range)
  acc = jax.lax.conv_general_dilated(
      cx, cw, window_strides=tuple(strides), padding=padding,
      rhs_dilation=None if rhs_dilation is None else tuple(rhs_dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=feature_group_count, preferred_element_type=jnp.int32)
  return _finish(acc, sx, sw, bias, x.dtype, return_accumulator)
