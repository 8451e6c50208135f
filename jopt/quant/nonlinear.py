"""Non-linear quantizers: power-of-two levels, k-means codebooks, NormalFloat (NF4).

Each comes as a pair ``*_codes`` (values -> integer codes) and ``*_values``
(codes -> values), plus the level construction; :func:`jopt.quant.quantize`
applies them block by block (per tensor, channel or group).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate

__all__ = ["log2_scale", "log2_codes", "log2_values", "kmeans_1d", "nf4_levels",
           "nf4_codes", "nf4_values"]


def log2_scale(amax: Any) -> jax.Array:
  r"""The largest level of a log quantizer: the power of two nearest to ``amax`` in log scale.

  .. math:: S = 2^{\operatorname{round}(\log_2 a)} \quad (S = 1 \text{ when } a = 0)

  Args:
    amax: the largest magnitude to represent (array, > 0 or 0).

  Returns:
    :math:`S`, in ``amax``'s float dtype (at least float32).

  Example:
    >>> float(jopt.quant.log2_scale(jnp.float32(0.3)))
    0.25

  Reference: Miyashita et al., *Convolutional Neural Networks using
  Logarithmic Data Representation*, 2016 (the full-scale range FSR, here
  :math:`\log_2 S`, derived from the data rather than chosen by hand).
  """
  amax = jnp.asarray(amax)
  if amax.dtype.itemsize < 4 or not jnp.issubdtype(amax.dtype, jnp.floating):
    amax = amax.astype(jnp.float32)
  e = jnp.round(jnp.log2(jnp.where(amax > 0, amax, 1))).astype(jnp.int32)
  return jnp.ldexp(jnp.ones_like(amax), e)       # exact, unlike exp2 on some backends


def log2_codes(x: Any, scale: Any, *, bits: int) -> jax.Array:
  r"""Sign-and-exponent codes of ``x`` on the levels :math:`\pm S\,2^{-k}`.

  With :math:`c_{\max} = 2^{b-1} - 1`, the exponent code is

  .. math:: c = \operatorname{clip}(\operatorname{round}(\log_2 |x|) - \log_2 S + c_{\max},\ 0,\ c_{\max})

  and the stored code is :math:`u = 2^{b-1}[x < 0] + c`. Code :math:`c = 0`
  is exact zero; :math:`c \ge 1` is the magnitude :math:`S\,2^{c - c_{\max}}`.
  Rounding is in the log domain, as in the paper.

  Args:
    x: a floating array.
    scale: :math:`S` (a power of two, see :func:`log2_scale`), broadcasting.
    bits: the number of bits, 2..8 (one sign bit, ``bits - 1`` exponent bits).

  Returns:
    int32 codes in :math:`[0, 2^b - 1]`, shaped like ``x``.

  Example:
    >>> jopt.quant.log2_codes(jnp.array([1.0, -0.25, 0.0]), 1.0, bits=3)
    Array([3, 5, 0], dtype=int32)

  Reference: Miyashita et al., *Convolutional Neural Networks using
  Logarithmic Data Representation*, 2016, eq. (3). Departure: the paper clips
  small exponents to the smallest level; here one exponent code is kept for
  exact zero (pruned weights stay zero) and magnitudes whose rounded exponent
  falls below the smallest level become zero.
  """
  x = jnp.asarray(x)
  scale = jnp.asarray(scale).astype(x.dtype)
  cmax = 2 ** (bits - 1) - 1
  mag = jnp.abs(x)
  top = (jnp.frexp(scale)[1] - 1).astype(x.dtype)  # log2 S, exact for a power of two
  # log2(0) = -inf clips to code 0 (zero); no integer cast of an infinity.
  e = jnp.round(jnp.log2(mag)) - top + cmax
  c = jnp.clip(jnp.where(mag > 0, e, 0), 0, cmax).astype(jnp.int32)
  return jnp.where((x < 0) & (c > 0), c + 2 ** (bits - 1), c)


def log2_values(codes: Any, scale: Any, *, bits: int) -> jax.Array:
  r"""The values of sign-and-exponent codes (the inverse of :func:`log2_codes` on its levels).

  .. math:: \hat x = (-1)^{s}\,[c > 0]\,S\,2^{c - c_{\max}}

  Args:
    codes: integer codes from :func:`log2_codes`.
    scale: :math:`S`, broadcasting.
    bits: the number of bits used to make the codes.

  Returns:
    Values in ``scale``'s dtype.

  Example:
    >>> jopt.quant.log2_values(jnp.array([3, 5, 0]), jnp.float32(1.0), bits=3)
    Array([ 1.  , -0.25,  0.  ], dtype=float32)

  Reference: Miyashita et al., *Convolutional Neural Networks using
  Logarithmic Data Representation*, 2016.
  """
  codes = jnp.asarray(codes).astype(jnp.int32)
  scale = jnp.asarray(scale)
  cmax = 2 ** (bits - 1) - 1
  c = codes & cmax
  neg = (codes >> (bits - 1)) & 1
  mag = jnp.ldexp(jnp.broadcast_to(scale, jnp.broadcast_shapes(scale.shape, c.shape)),
                  c - cmax)
  mag = jnp.where(c > 0, mag, jnp.zeros((), scale.dtype))
  return jnp.where(neg > 0, -mag, mag)


def _assign(v: jax.Array, centroids: jax.Array) -> jax.Array:
  """Nearest centroid of each value (``centroids`` sorted; ties to the lower one)."""
  mid = (centroids[1:] + centroids[:-1]) / 2
  return jnp.searchsorted(mid, v, side="left").astype(jnp.int32)


def kmeans_1d(values: Any, num_clusters: int, *, iters: int = 30, lo: Any = None,
              hi: Any = None, mask: Any = None) -> tuple[jax.Array, jax.Array]:
  r"""Weight sharing: a 1-D k-means codebook by Lloyd's algorithm from a linear start.

  Centroids start evenly spaced over :math:`[lo, hi]` (default the data's min
  and max), :math:`c_k^{(0)} = lo + k\,(hi - lo)/(K - 1)`, then ``iters``
  Lloyd iterations alternate

  .. math::
    a_i = \arg\min_k |v_i - c_k|, \qquad
    c_k \leftarrow \frac{\sum_{a_i = k} v_i}{|\{i : a_i = k\}|}

  (an empty cluster keeps its centroid). In one dimension the centroids stay
  sorted, so the assignment is a binary search against the midpoints. The
  iteration count is fixed, so the result is deterministic and ``jit``-able.
  With ``mask``, only the values where it is True are clustered (and give the
  default ``lo`` / ``hi``; 0 when none is); the others still get an assignment.

  Args:
    values: a 1-D floating array.
    num_clusters: :math:`K` (``2 ** bits``).
    iters: the number of Lloyd iterations (a Python int).
    lo: start of the initial centroid range (default ``values.min()``).
    hi: end of the initial centroid range (default ``values.max()``).
    mask: optional boolean array like ``values``: the values to cluster.

  Returns:
    ``(centroids, assignment)``: the ``(K,)`` sorted codebook and the int32
    index of each value's nearest centroid.

  Example:
    >>> c, a = jopt.quant.kmeans_1d(jnp.array([0.0, 0.1, 0.9, 1.0]), 2)
    >>> [round(float(v), 3) for v in c], a.tolist()
    ([0.05, 0.95], [0, 0, 1, 1])

  Reference: Han et al., *Deep Compression: Compressing Deep Neural Networks
  with Pruning, Trained Quantization and Huffman Coding*, ICLR 2016, §3.1-3.2
  (linear initialization; here a fixed number of iterations instead of
  iterating to convergence).
  """
  validate.check_positive_int("num_clusters", num_clusters, "kmeans_1d: ")
  v = jnp.asarray(values).reshape(-1)
  if mask is None:
    w = jnp.ones_like(v)
    lo = jnp.min(v) if lo is None else jnp.asarray(lo).astype(v.dtype)
    hi = jnp.max(v) if hi is None else jnp.asarray(hi).astype(v.dtype)
  else:
    m = jnp.asarray(mask).reshape(-1).astype(bool)
    w = m.astype(v.dtype)
    some = jnp.any(m)
    zero = jnp.zeros((), v.dtype)
    if lo is None:
      lo = jnp.where(some, jnp.min(jnp.where(m, v, jnp.inf)), zero)
    if hi is None:
      hi = jnp.where(some, jnp.max(jnp.where(m, v, -jnp.inf)), zero)
    lo, hi = jnp.asarray(lo).astype(v.dtype), jnp.asarray(hi).astype(v.dtype)
  k = int(num_clusters)
  steps = jnp.arange(k, dtype=v.dtype) / max(k - 1, 1)
  c0 = lo + (hi - lo) * steps

  def step(c, _):
    a = _assign(v, c)
    sums = jnp.zeros((k,), v.dtype).at[a].add(v * w)
    counts = jnp.zeros((k,), v.dtype).at[a].add(w)
    c = jnp.where(counts > 0, sums / jnp.maximum(counts, 1), c)
    return jnp.sort(c), None

  c, _ = jax.lax.scan(step, c0, None, length=int(iters))
  return c, _assign(v, c)


def nf4_levels() -> np.ndarray:
  r"""The 16 NormalFloat-4 levels of QLoRA, computed from the normal quantile function.

  With :math:`Q` the standard normal quantile function and
  :math:`p^* = 1 - \tfrac12(\tfrac1{32} + \tfrac1{30})`, the positive half
  takes 8 quantiles at probabilities evenly spaced from :math:`p^*` down to
  :math:`\tfrac12` (the last excluded), the negative half 7 (likewise), then
  zero is added and all are divided by the largest:

  .. math::
    \{Q(p^* - i\,\tfrac{p^* - 1/2}{8})\}_{i=0}^{7} \cup
    \{-Q(p^* - i\,\tfrac{p^* - 1/2}{7})\}_{i=0}^{6} \cup \{0\},
    \quad \text{normalized to } [-1, 1]

  This is the construction of the paper's reference implementation, which
  realizes eq. (4) (averaged quantiles with an asymmetric split so that 0 is
  exact) and gives the values the paper lists in its appendix.

  Args:
    none.

  Returns:
    A sorted float64 NumPy array of the 16 levels, from -1 to 1.

  Example:
    >>> jopt.quant.nf4_levels()[[0, 7, 15]].tolist()
    [-1.0, 0.0, 1.0]

  Reference: Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*,
  NeurIPS 2023, §3 (NormalFloat) and Appendix E; bitsandbytes'
  ``create_normal_map``.
  """
  q = NormalDist().inv_cdf
  p = 1.0 - 0.5 * (1.0 / 32 + 1.0 / 30)
  pos = [q(p - i * (p - 0.5) / 8) for i in range(8)]
  neg = [-q(p - i * (p - 0.5) / 7) for i in range(7)]
  levels = np.sort(np.array(pos + [0.0] + neg, np.float64))
  return levels / levels.max()


_NF4 = nf4_levels()


def nf4_codes(x: Any, scale: Any) -> jax.Array:
  r"""NF4 codes: the index of the level nearest to ``x / scale`` (absmax scaling).

  .. math:: q = \arg\min_j \left| \ell_j - x / S \right|, \qquad S = \max |x| \text{ of the block}

  Args:
    x: a floating array.
    scale: :math:`S`, the block's absolute maximum, broadcasting.

  Returns:
    int32 codes in ``0..15``, shaped like ``x``.

  Example:
    >>> jopt.quant.nf4_codes(jnp.array([-2.0, 0.0, 2.0]), 2.0)
    Array([ 0,  7, 15], dtype=int32)

  Reference: Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*,
  NeurIPS 2023, §3 (block-wise absmax quantization to NF4).
  """
  x = jnp.asarray(x)
  scale = jnp.asarray(scale).astype(x.dtype)
  levels = jnp.asarray(_NF4, x.dtype)
  return _assign(x / jnp.where(scale > 0, scale, 1), levels)


def nf4_values(codes: Any, scale: Any) -> jax.Array:
  r"""The values of NF4 codes.

  .. math:: \hat x = S\,\ell_q

  Args:
    codes: integer codes in ``0..15``.
    scale: :math:`S`, broadcasting.

  Returns:
    Values in ``scale``'s dtype.

  Example:
    >>> jopt.quant.nf4_values(jnp.array([0, 15]), jnp.float32(2.0))
    Array([-2.,  2.], dtype=float32)

  Reference: Dettmers et al., *QLoRA: Efficient Finetuning of Quantized LLMs*,
  NeurIPS 2023, §3.
  """
  scale = jnp.asarray(scale)
  levels = jnp.asarray(_NF4, scale.dtype)
  return scale * levels[jnp.asarray(codes)]
