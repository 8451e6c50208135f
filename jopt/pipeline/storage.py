r"""Honest bytes: every leaf's candidate storage formats, their exact sizes, and the smallest.

For a leaf of :math:`n` entries whose stored (dequantized) values have
:math:`k` non-zeros, the candidates are

=============================  ==========================================================
format                         bytes
=============================  ==========================================================
``float32``                    :math:`4n`
``bitmask+float32``            :math:`\lceil n/8\rceil + 4k`
``relidx<i>+float32``          :math:`\lceil E_i (32 + i) / 8\rceil`
``<b>bit``                     :math:`\lceil n b/8\rceil + s` (all codes packed)
``bitmask+<b>bit``             :math:`\lceil n/8\rceil + \lceil k b/8\rceil + s`
``relidx<i>+<b>bit``           :math:`\lceil E_i (b + i) / 8\rceil + s`
=============================  ==========================================================

with :math:`b` the code bits of a quantized leaf, :math:`s` its side data
(per-block scales, zero points, k-means codebook: what
:attr:`jopt.quant.QuantizedArray.nbytes` counts besides the packed codes),
and :math:`E_i` the entries of Deep Compression's relative-index format with
:math:`i`-bit gaps, :math:`i = 1..8` (non-zeros plus fillers,
:func:`jopt.prune.relative_index.relative_index_count`). Float leaves take the
first three, quantized leaves the last three; the smallest wins (ties: the
earlier row). Floating leaves that are not quantized are stored as float32
whatever their dtype; integer leaves as their own dtype (``dense``). Shapes,
dtypes and the format name are metadata and not counted. Huffman coding (Deep
Compression's last stage) is not applied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.prune.relative_index import relative_index_count
from jopt.quant.qarray import QuantizedArray, packed_nbytes
from jopt.quant.tree import param_path

__all__ = ["LeafStorage", "leaf_storage", "tree_storage", "INDEX_BITS"]

INDEX_BITS = tuple(range(1, 9))


@dataclasses.dataclass(frozen=True)
class LeafStorage:
  """How one leaf is stored: its chosen format and exact bytes, and every candidate's bytes.

  Attributes:
    path: the leaf's ``a/b/kernel`` path.
    shape: its shape.
    nonzeros: non-zero entries of the stored (dequantized) values.
    bits: code bits when quantized, else None.
    format: the chosen (smallest) format's name.
    nbytes: its bytes.
    candidates: ``{format: bytes}`` of every format considered.
  """

  path: str
  shape: tuple[int, ...]
  nonzeros: int
  bits: int | None
  format: str
  nbytes: int
  candidates: dict[str, int]

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))


def leaf_storage(path: str, stored: Any, quantized: QuantizedArray | None = None) -> LeafStorage:
  r"""The smallest honest storage of one leaf (see the module docstring for every format).

  .. math:: B = \min_{f \in F} \text{bytes}_f(w)

  Args:
    path: the leaf's path (for the report).
    stored: the values the model uses (dequantized when quantized).
    quantized: the leaf's :class:`jopt.quant.QuantizedArray`, or None for a float leaf.

  Returns:
    A :class:`LeafStorage`.

  Example:
    >>> w = np.zeros((64, 64), np.float32); w[0, :4] = 1.0
    >>> s = jopt.pipeline.leaf_storage("w", w)
    >>> s.format, s.nbytes                           # 4 entries x (32 + 1) bits
    ('relidx1+float32', 17)
    >>> s.candidates["float32"], s.candidates["bitmask+float32"]   # 4n; n/8 + 4k
    (16384, 528)

  Reference: Han et al., *Deep Compression*, ICLR 2016, Sec. 3 (relative
  indices, weight sharing with a codebook); the bitmask layout of
  :func:`jopt.prune.to_bitmask`.
  """
  a = np.asarray(stored)
  n = int(a.size)
  k = int(np.count_nonzero(a))
  cand: dict[str, int] = {}
  if quantized is None:
    if not np.issubdtype(a.dtype, np.floating):
      cand["dense"] = n * a.dtype.itemsize
      return LeafStorage(path, tuple(a.shape), k, None, "dense", cand["dense"], cand)
    cand["float32"] = 4 * n
    cand["bitmask+float32"] = -(-n // 8) + 4 * k
    entries = {i: relative_index_count(a, i) for i in INDEX_BITS}
    for i in INDEX_BITS:
      cand[f"relidx{i}+float32"] = -(-entries[i] * (32 + i) // 8)
    bits = None
  else:
    bits = int(quantized.bits)
    side = int(quantized.nbytes) - int(np.asarray(quantized.packed).nbytes)
    cand[f"{bits}bit"] = packed_nbytes(n, bits) + side
    cand[f"bitmask+{bits}bit"] = -(-n // 8) + packed_nbytes(k, bits) + side
    entries = {i: relative_index_count(a, i) for i in INDEX_BITS}
    for i in INDEX_BITS:
      cand[f"relidx{i}+{bits}bit"] = -(-entries[i] * (bits + i) // 8) + side
  best = min(cand, key=lambda f: (cand[f], list(cand).index(f)))
  return LeafStorage(path, tuple(a.shape), k, bits, best, cand[best], cand)


def tree_storage(stored: Any, quantized: Any) -> list[LeafStorage]:
  r""":func:`leaf_storage` of every leaf of a stored tree, in flattening order.

  .. math:: B = \sum_{\text{leaves}} B_\ell

  Args:
    stored: the dense stored tree (:meth:`CompressedModel.stored_params`).
    quantized: the same tree with :class:`jopt.quant.QuantizedArray` leaves
      where quantized (:meth:`CompressedModel.quantized_params`).

  Returns:
    A list of :class:`LeafStorage`, one per leaf.

  Example:
    >>> from jopt import pipeline as pl
    >>> params = {"w": jnp.array([[0.5, -1.0], [0.25, 2.0]]), "b": jnp.ones(2)}
    >>> cm = pl.CompressedModel(lambda p, x: x @ p["w"] + p["b"], params, None,
    ...                         pl.QuantSpec(bits=2, method="kmeans"))
    >>> rows = pl.tree_storage(cm.stored_params(), cm.quantized_params())
    >>> for r in rows:          # w: 1 byte of 2-bit codes + a 4-entry float32 codebook
    ...   print(r.path, r.format, r.nbytes)
    b float32 8
    w 2bit 17
    >>> sum(r.nbytes for r in rows)
    25

  Reference: the per-layer storage table of Han et al., ICLR 2016, Table 2.
  """
  is_q = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
  q_leaves = jax.tree_util.tree_flatten_with_path(quantized, is_leaf=is_q)[0]
  s_leaves = jax.tree.leaves(stored)
  if len(q_leaves) != len(s_leaves):
    raise ValueError("tree_storage: stored and quantized trees differ in structure.")
  out = []
  for (path, q), s in zip(q_leaves, s_leaves):
    out.append(leaf_storage(param_path(path), jnp.asarray(s), q if is_q(q) else None))
  return out
