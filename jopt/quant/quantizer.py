"""``quantize``: one entry point for every quantizer and granularity."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate
from jopt.quant import _layout
from jopt.quant.linear import SCHEMES, linear_codes, scale_and_zero_point
from jopt.quant.nonlinear import kmeans_1d, log2_codes, log2_scale, nf4_codes
from jopt.quant.qarray import QuantizedArray, pack_bits

__all__ = ["quantize", "METHODS"]

METHODS = ("linear", "log2", "kmeans", "nf4")
_WHERE = "quantize: "


def _block_range(xb: jax.Array, clip_range: Any, layout: _layout.Layout):
  """Per-block ``(lo, hi)`` of shape ``(num_blocks,)``: the data's or the given range."""
  if clip_range is None:
    if xb.shape[1] == 0:  # empty blocks (a zero-size x): no data, the range [0, 0]
      return (jnp.zeros(xb.shape[:1], xb.dtype),) * 2
    return jnp.min(xb, axis=1), jnp.max(xb, axis=1)
  try:
    lo, hi = clip_range
  except (TypeError, ValueError):
    raise TypeError(f"{_WHERE}clip_range must be a (min, max) pair such as"
                    " jopt.quant.calibrate returns, got"
                    f" {type(clip_range).__name__}.") from None
  out = []
  for name, v in (("min", lo), ("max", hi)):
    v = jnp.asarray(v)
    if v.shape not in ((), layout.param_shape):
      raise ValueError(f"{_WHERE}clip_range's {name} has shape {v.shape}, but"
                       f" granularity={layout.granularity!r} needs one value per block,"
                       f" shape {layout.param_shape} (or a scalar). Calibrate with the"
                       " same granularity and axis.")
    _layout.check_finite("clip_range", v, _WHERE)
    v = jnp.broadcast_to(v.astype(xb.dtype), layout.param_shape)
    out.append(_layout.params_to_blocks(v, layout))
  if validate.is_concrete(out[0]) and bool(jnp.any(out[0] > out[1])):
    raise ValueError(f"{_WHERE}clip_range has min > max somewhere; pass min <= max.")
  return out[0], out[1]


def quantize(x: Any, bits: int | None = None, *, scheme: str | None = None,
             granularity: str = "tensor", axis: int = -1, group_size: int | None = None,
             method: str = "linear", clip_range: Any = None,
             iters: int | None = None, keep_zeros: bool = False) -> QuantizedArray:
  r"""Quantize an array to ``bits``-bit codes; returns a :class:`QuantizedArray`.

  Each block (the tensor, each channel along ``axis``, or each group of
  ``group_size`` contiguous entries along ``axis``) gets its own parameters,
  from its min/max (or ``clip_range``, e.g. from :func:`jopt.quant.calibrate`;
  values outside it are clipped):

  * ``"linear"``: :math:`\hat x = S(q - Z)`, with :math:`S, Z` from
    :func:`jopt.quant.scale_and_zero_point` -- symmetric (restricted range
    :math:`|q| \le 2^{b-1}-1`, :math:`Z = 0`) or asymmetric
    (:math:`q \in [0, 2^b-1]`, integer :math:`Z`). Inside the range,
    :math:`|x - \hat x| \le S/2`.
  * ``"log2"``: :math:`\hat x = \pm S\,2^{c - c_{\max}}` or 0, a sign bit and
    ``bits - 1`` exponent bits, :math:`S` the block's power-of-two full scale.
  * ``"kmeans"``: a codebook of :math:`2^b` centroids per block by Lloyd's
    algorithm from a linear start (``iters`` iterations), :math:`\hat x = c_q`.
    With ``keep_zeros=True`` (Deep Compression after pruning), code 0 is
    reserved for exact zeros -- its codebook entry is 0.0, so they dequantize
    to exactly 0.0 -- and only the non-zeros are clustered, into
    :math:`2^b - 1` centroids (codes :math:`1 .. 2^b-1`; initial range the
    non-zeros' min / max). The stored codebook keeps :math:`2^b` entries, the
    0.0 included, so ``.nbytes`` counts what ``dequantize`` reads.
  * ``"nf4"``: :math:`\hat x = S\,\ell_q`, the 16 NormalFloat levels and
    :math:`S` the block's absmax (``bits`` must be 4). QLoRA's blocks of 64 are
    ``granularity="group", group_size=64`` along the last axis.

  Args:
    x: a floating array.
    bits: bits per code, 2..8; default 8 (4 for ``"nf4"``).
    scheme: ``"symmetric"`` (default) or ``"asymmetric"``; linear only.
    granularity: ``"tensor"``, ``"channel"`` (one block per index along
      ``axis``) or ``"group"``.
    axis: the channel axis, or the axis the groups run along.
    group_size: entries per group (must divide ``x.shape[axis]``); group only.
    method: ``"linear"``, ``"log2"``, ``"kmeans"`` or ``"nf4"``.
    clip_range: optional ``(min, max)`` per block (a :class:`QuantRange`);
      log2 and NF4 use its largest magnitude.
    iters: Lloyd iterations for ``"kmeans"`` (default 30); k-means only.
    keep_zeros: reserve a code for exact zeros (pruned weights) and cluster
      only the non-zeros; k-means only.

  Returns:
    A :class:`QuantizedArray`; ``.dequantize()`` gives the approximation and
    ``.nbytes`` the bytes stored.

  Example:
    >>> qa = jopt.quant.quantize(jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), 4)
    >>> qa.nbytes, float(jnp.abs(qa.dequantize()).max())
    (36, 1.0)

  Reference: Jacob et al., CVPR 2018 (affine quantization); Nagel et al., *A
  White Paper on Neural Network Quantization*, 2021 (granularities); Miyashita
  et al., 2016 (log2); Han et al., ICLR 2016 (k-means weight sharing);
  Dettmers et al., NeurIPS 2023 (NF4).
  """
  validate.check_choice("method", method, METHODS, _WHERE)
  if bits is None:
    bits = 4 if method == "nf4" else 8
  bits = _layout.check_bits(bits, _WHERE)
  if method == "nf4" and bits != 4:
    raise ValueError(f"{_WHERE}bits={bits}, but method='nf4' has exactly 16 levels;"
                     " pass bits=4 (or leave it out), or use method='kmeans' for"
                     " other widths.")
  if scheme is not None and method != "linear":
    raise ValueError(f"{_WHERE}scheme={scheme!r} applies to method='linear' only;"
                     f" method={method!r} has its own levels. Drop scheme.")
  scheme = "symmetric" if scheme is None else scheme
  validate.check_choice("scheme", scheme, SCHEMES, _WHERE)
  if iters is not None and method != "kmeans":
    raise ValueError(f"{_WHERE}iters={iters!r} applies to method='kmeans' only; drop it"
                     f" for method={method!r}.")
  iters = validate.static_int("iters", 30 if iters is None else iters, _WHERE, 0)
  if not isinstance(keep_zeros, (bool, np.bool_)):
    raise TypeError(f"{_WHERE}keep_zeros must be True or False, got {keep_zeros!r}.")
  if keep_zeros and method != "kmeans":
    raise ValueError(f"{_WHERE}keep_zeros=True applies to method='kmeans' only (linear,"
                     " log2 and NF4 already map 0.0 to an exact code); drop it for"
                     f" method={method!r}.")
  x, layout, cdt, xb = _layout.blocks_of(x, granularity, axis, group_size, _WHERE)
  nonzero = xb != 0
  lo, hi = _block_range(xb, clip_range, layout)
  if clip_range is not None:
    xb = jnp.clip(xb, lo[:, None], hi[:, None])
  zero_point = codebook = None
  if method == "linear":
    scale, z = scale_and_zero_point(lo, hi, bits=bits, scheme=scheme)
    q = linear_codes(xb, scale[:, None], z[:, None], bits=bits, scheme=scheme)
    if scheme == "symmetric":
      q = q + (2 ** (bits - 1) - 1)          # stored unsigned
    else:
      zero_point = _layout.params_from_blocks(z.astype(jnp.uint8), layout)
  elif method == "log2":
    scale = log2_scale(jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
    q = log2_codes(xb, scale[:, None], bits=bits)
  elif method == "nf4":
    scale = jnp.maximum(jnp.abs(lo), jnp.abs(hi))
    q = nf4_codes(xb, scale[:, None])
  elif keep_zeros:
    init = (None, None) if clip_range is None else (lo, hi)
    book, q = jax.vmap(lambda v, m, l, h: kmeans_1d(v, 2 ** bits - 1, iters=iters, lo=l,
                                                    hi=h, mask=m),
                       in_axes=(0, 0, None if clip_range is None else 0,
                                None if clip_range is None else 0))(xb, nonzero, *init)
    book = jnp.concatenate([jnp.zeros((book.shape[0], 1), book.dtype), book], axis=1)
    q = jnp.where(nonzero, q + 1, 0)
    codebook = _layout.params_from_blocks(book, layout, trailing=1)
    scale = None                             # the codebook holds the values
  else:
    book, q = jax.vmap(lambda v, l, h: kmeans_1d(v, 2 ** bits, iters=iters, lo=l, hi=h))(
        xb, lo, hi)
    codebook = _layout.params_from_blocks(book, layout, trailing=1)
    scale = None                             # the codebook holds the values
  codes = _layout.from_blocks(q, layout)
  if scale is not None:
    scale = _layout.params_from_blocks(scale, layout)
  return QuantizedArray(pack_bits(codes, bits), scale, zero_point, codebook,
                        shape=x.shape, dtype=x.dtype, bits=bits, method=method,
                        scheme=scheme if method == "linear" else None,
                        granularity=granularity, axis=layout.axis,
                        group_size=layout.group_size)
