r"""Linear (uniform, affine) quantization: scales, zero points, integer codes.

These are the building blocks :func:`jopt.quant.quantize` uses for
``method="linear"`` and that fake quantization reuses: the same scale and
zero point, the same rounding, the same clipping. All of them broadcast, so a
per-channel scale shaped to broadcast against ``x`` works as it stands.

Range convention. Symmetric quantization uses the *restricted* range
:math:`[-(2^{b-1}-1),\ 2^{b-1}-1]`: the code :math:`-2^{b-1}` is never used, so
the grid is symmetric around zero (``-x`` quantizes to ``-q``), and the product
of two int8 codes is at most :math:`127^2`, never the :math:`(-128)^2` that
overflows an int16 accumulator in pairs (as TensorFlow Lite and Nagel et al.'s
white paper recommend for weights). Asymmetric (affine) quantization uses the
full unsigned range :math:`[0, 2^b - 1]` with an integer zero point.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt.quant import _layout

__all__ = ["code_range", "scale_and_zero_point", "linear_codes", "linear_values",
           "SCHEMES"]

SCHEMES = ("symmetric", "asymmetric")


def code_range(bits: int, scheme: str = "symmetric") -> tuple[int, int]:
  r"""The smallest and largest integer code of a ``bits``-bit linear quantizer.

  .. math::
    \text{symmetric: } [-(2^{b-1}-1),\ 2^{b-1}-1], \qquad
    \text{asymmetric: } [0,\ 2^b - 1]

  Args:
    bits: the number of bits, 2..8.
    scheme: ``"symmetric"`` (restricted signed range) or ``"asymmetric"``.

  Returns:
    ``(qmin, qmax)`` as Python ints.

  Example:
    >>> jopt.quant.code_range(8), jopt.quant.code_range(4, "asymmetric")
    ((-127, 127), (0, 15))

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018 (the affine range);
  Nagel et al., *A White Paper on Neural Network Quantization*, 2021, §2.2
  (the restricted symmetric range).
  """
  bits = _layout.check_bits(bits, "code_range: ")
  if scheme == "symmetric":
    return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
  if scheme == "asymmetric":
    return 0, 2 ** bits - 1
  raise ValueError(f"code_range: scheme={scheme!r} is not one of {SCHEMES!r}.")


def _float(x: Any) -> jax.Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype.itemsize < 4:
    x = x.astype(jnp.float32)
  return x


def scale_and_zero_point(lo: Any, hi: Any, *, bits: int, scheme: str = "symmetric"):
  r"""The scale :math:`S` and integer zero point :math:`Z` that map ``[lo, hi]`` onto the codes.

  Symmetric, with :math:`a = \max(|lo|, |hi|)`:

  .. math:: S = \max\!\left(\frac{a}{2^{b-1}-1},\ \epsilon\right), \qquad Z = 0

  Asymmetric, with the range first widened to contain zero (so that 0.0 is
  exactly representable, as Jacob et al. require for zero padding):

  .. math::
    l = \min(lo, 0),\ h = \max(hi, 0), \qquad
    S = \max\!\left(\frac{h - l}{2^b - 1},\ \epsilon\right), \qquad
    Z = \operatorname{clip}(\operatorname{round}(-l / S),\ 0,\ 2^b - 1)

  :math:`\epsilon` is the smallest normal number of the dtype: an all-zero
  range gives codes 0 and values 0, never a division by zero.

  Args:
    lo: the lower end of the range (array; broadcasts with ``hi``).
    hi: the upper end of the range.
    bits: the number of bits, 2..8.
    scheme: ``"symmetric"`` or ``"asymmetric"``.

  Returns:
    ``(scale, zero_point)``: the scale in ``lo``'s float dtype (at least
    float32) and the zero point as int32 (zeros for symmetric).

  Example:
    >>> s, z = jopt.quant.scale_and_zero_point(-1.0, 3.0, bits=8, scheme="asymmetric")
    >>> round(float(s) * 255, 6), int(z)
    (4.0, 64)

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, eq. (1) and §2.1.
  """
  lo, hi = _float(lo), _float(hi)
  if lo.dtype != hi.dtype:
    hi = hi.astype(lo.dtype)
  tiny = jnp.finfo(lo.dtype).tiny
  qmin, qmax = code_range(bits, scheme)
  if scheme == "symmetric":
    amax = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    scale = jnp.maximum(amax / qmax, tiny)
    return scale, jnp.zeros(scale.shape, jnp.int32)
  lo, hi = jnp.minimum(lo, 0), jnp.maximum(hi, 0)
  scale = jnp.maximum((hi - lo) / qmax, tiny)
  zero = jnp.clip(jnp.round(-lo / scale), qmin, qmax).astype(jnp.int32)
  return scale, zero


def linear_codes(x: Any, scale: Any, zero_point: Any, *, bits: int,
                 scheme: str = "symmetric") -> jax.Array:
  r"""Integer codes of ``x``: round to the nearest grid point, then clip to the code range.

  .. math:: q = \operatorname{clip}(\operatorname{round}(x / S) + Z,\ q_{\min},\ q_{\max})

  Rounding is to the nearest integer, ties to even (``jnp.round``).

  Args:
    x: a floating array.
    scale: :math:`S`, broadcasting against ``x``.
    zero_point: :math:`Z` (integer), broadcasting against ``x``.
    bits: the number of bits, 2..8.
    scheme: ``"symmetric"`` or ``"asymmetric"`` (fixes the code range).

  Returns:
    int32 codes shaped like ``x``.

  Example:
    >>> jopt.quant.linear_codes(jnp.array([0.5, -2.0]), 0.25, 0, bits=3)
    Array([ 2, -3], dtype=int32)

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, eq. (1).
  """
  qmin, qmax = code_range(bits, scheme)
  x = _float(x)
  scale = jnp.asarray(scale).astype(x.dtype)
  q = jnp.round(x / scale) + jnp.asarray(zero_point).astype(x.dtype)
  return jnp.clip(q, qmin, qmax).astype(jnp.int32)


def linear_values(codes: Any, scale: Any, zero_point: Any) -> jax.Array:
  r"""The real values that integer codes stand for.

  .. math:: \hat x = S\,(q - Z)

  Args:
    codes: integer codes.
    scale: :math:`S` (float), broadcasting against ``codes``.
    zero_point: :math:`Z` (integer), broadcasting against ``codes``.

  Returns:
    ``scale * (codes - zero_point)`` in the scale's dtype.

  Example:
    >>> jopt.quant.linear_values(jnp.array([2, -3]), jnp.float32(0.25), 0)
    Array([ 0.5 , -0.75], dtype=float32)

  Reference: Jacob et al., *Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference*, CVPR 2018, eq. (1).
  """
  scale = _float(scale)
  diff = jnp.asarray(codes).astype(jnp.int32) - jnp.asarray(zero_point).astype(jnp.int32)
  return scale * diff.astype(scale.dtype)
