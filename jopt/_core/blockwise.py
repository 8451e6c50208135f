r"""Block-wise 8-bit dynamic quantization of optimizer state (Dettmers et al., 2021).

A tensor is cut into blocks of ``block_size`` elements. Each block keeps one
float32 scale, its absolute maximum :math:`s_b`, and one byte per element: the
index of the code nearest to :math:`x / s_b` in a 256-entry *dynamic* code book.

The dynamic code book spends its bits on orders of magnitude: after an optional
sign bit, a run of :math:`e` zero bits sets the scale :math:`10^{-e}`
(:math:`e = 0..6`), one indicator bit ends the run, and the remaining :math:`f`
bits split :math:`[0.1, 1]` into :math:`2^f` equal bins whose midpoints are the
codes. With 0 and 1 added this gives exactly 256 values, dense near zero where
Adam's moments live, with relative error bounded per magnitude, not per block.

Reference: Dettmers, Lewis, Shleifer & Zettlemoyer, *8-bit Optimizers via
Block-wise Quantization*, ICLR 2022 (arXiv:2110.02861), section 2.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["dynamic_codebook", "zero_code", "quantize", "dequantize", "num_blocks"]


@functools.cache
def dynamic_codebook(signed: bool) -> np.ndarray:
  """The 256 sorted float32 codes of the dynamic data type (signed or not)."""
  payload = 6 if signed else 7  # bits after the sign bit and the indicator bit
  mags = []
  for e in range(7):
    f = payload - e
    edges = np.linspace(0.1, 1.0, 2**f + 1)
    mags.append(10.0**-e * (edges[:-1] + edges[1:]) / 2)
  mags = np.concatenate(mags)
  codes = np.concatenate([mags, -mags]) if signed else mags
  codes = np.concatenate([codes, [0.0, 1.0]])
  codes = np.unique(codes.astype(np.float32))
  assert codes.size == 256, codes.size
  return codes


def zero_code(signed: bool) -> int:
  """The code that decodes to exactly 0.0 (whatever the block's scale)."""
  return int(np.flatnonzero(dynamic_codebook(signed) == 0.0)[0])


def num_blocks(size: int, block_size: int) -> int:
  return max(1, -(-size // block_size))


def _blocks(flat: jax.Array, block_size: int) -> jax.Array:
  nb = num_blocks(flat.size, block_size)
  return jnp.pad(flat, (0, nb * block_size - flat.size)).reshape(nb, block_size)


@functools.partial(jax.jit, static_argnums=(1, 2))
def quantize(x: jax.Array, block_size: int, signed: bool) -> tuple[jax.Array, jax.Array]:
  """``x`` -> (uint8 codes shaped like ``x``, float32 scales of shape (blocks,)).

  Codes keep ``x``'s shape (so they can keep its sharding); blocks run over the
  flattened array, the last one zero-padded.
  """
  cb = jnp.asarray(dynamic_codebook(signed))
  blocks = _blocks(jnp.ravel(x).astype(jnp.float32), block_size)
  scale = jnp.max(jnp.abs(blocks), axis=1)
  safe = jnp.where(scale > 0, scale, jnp.ones_like(scale))
  v = jnp.clip(blocks / safe[:, None], -1.0, 1.0)
  hi = jnp.clip(jnp.searchsorted(cb, v), 1, cb.size - 1)
  lo = hi - 1
  nearer_lo = (v - cb[lo]) <= (cb[hi] - v)
  codes = jnp.where(nearer_lo, lo, hi).astype(jnp.uint8)
  return codes.reshape(-1)[: x.size].reshape(x.shape), scale


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def dequantize(codes: jax.Array, scale: jax.Array, block_size: int, signed: bool,
               dtype=jnp.float32) -> jax.Array:
  """Inverse of :func:`quantize` up to its rounding: an array shaped like ``codes``.

  The value is the float32 product code x scale, whatever ``dtype`` it is then
  cast to (``scale`` may arrive upcast, e.g. float64 in a float64 update).
  """
  cb = jnp.asarray(dynamic_codebook(signed))
  idx = _blocks(jnp.ravel(codes).astype(jnp.int32), block_size)
  values = cb[idx] * scale.astype(jnp.float32)[:, None]
  return values.reshape(-1)[: codes.size].reshape(codes.shape).astype(dtype)
