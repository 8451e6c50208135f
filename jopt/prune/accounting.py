"""Honest accounting of pruned trees: exact sparsity counts and a bitmask export with true bytes.

These run on the host on concrete arrays (not inside ``jit``: the export's
size depends on the values).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jopt._core.tree import leaf_paths, unwrap_variables
from jopt.prune.transform import PruneState
from jopt.regularizers.penalties import mask_flags

__all__ = ["sparsity_report", "SparsityReport", "LeafSparsity", "BitmaskArray",
           "to_bitmask", "from_bitmask", "nbytes"]


@dataclasses.dataclass(frozen=True)
class LeafSparsity:
  """Exact counts of one leaf: ``zeros`` of ``size`` entries; ``sparsity = zeros / size``."""

  zeros: int
  size: int

  @property
  def sparsity(self) -> float:
    return self.zeros / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
  """Per-leaf and global exact counts from :func:`sparsity_report`.

  Attributes:
    leaves: ``{path: LeafSparsity}`` for every counted leaf, paths as
      ``params['dense']['kernel']``.
    zeros: the total number of zero (or ``False``) entries over the counted leaves.
    size: the total number of entries over the counted leaves.
  """

  leaves: dict[str, LeafSparsity]
  zeros: int
  size: int

  @property
  def sparsity(self) -> float:
    """The global sparsity ``zeros / size``."""
    return self.zeros / self.size if self.size else 0.0

  def __str__(self) -> str:
    width = max([len(p) for p in self.leaves] + [6])
    rows = [f"{'leaf':<{width}}  {'zeros':>10}  {'size':>10}  sparsity"]
    for path, leaf in self.leaves.items():
      rows.append(f"{path:<{width}}  {leaf.zeros:>10}  {leaf.size:>10}  {leaf.sparsity:.4f}")
    rows.append(f"{'global':<{width}}  {self.zeros:>10}  {self.size:>10}  {self.sparsity:.4f}")
    return "\n".join(rows)


def _tree(tree: Any) -> Any:
  if isinstance(tree, PruneState):
    tree = tree.masks
  return unwrap_variables(tree)


def sparsity_report(tree: Any,
                    filter: Any = True) -> SparsityReport:  # pylint: disable=redefined-builtin
  r"""Exact per-leaf and global sparsity of params, masks or a :class:`PruneState`.

  .. math::
    s_l = \frac{\#\{i : w^l_i = 0\}}{n_l}, \qquad
    s = \frac{\sum_l \#\{i : w^l_i = 0\}}{\sum_l n_l}

  A boolean leaf (a mask) counts its ``False`` entries, any other leaf its
  entries equal to zero (``-0.0`` included, NaN not). Counts are Python ints.

  Args:
    tree: a params tree, a masks tree, or a :class:`PruneState` (its masks).
    filter: which leaves are counted: ``True`` (default, all), ``None`` for
      :func:`jopt.regularizers.weights_mask` (``ndim >= 2``), a tree / prefix
      of bools, or a function ``tree -> tree``.

  Returns:
    A :class:`SparsityReport` (``str()`` of it is a table).

  Example:
    >>> report = jopt.prune.sparsity_report({"w": jnp.array([[0.0, 1.0], [0.0, 0.0]]),
    ...                                      "b": jnp.array([0.0, 2.0])})
    >>> report.sparsity, report.leaves["params['w']"].zeros   # 4 zeros of 6; 3 in "w"
    (0.6666666666666666, 3)
    >>> print(report)
    leaf              zeros        size  sparsity
    params['b']           1           2  0.5000
    params['w']           3           4  0.7500
    global                4           6  0.6667

  Reference: the per-layer and global sparsity accounting of Han et al.,
  *Learning both Weights and Connections for Efficient Neural Networks*, 2015 (Table 2).
  """
  tree = _tree(tree)
  flags = mask_flags(filter, tree, "sparsity_report: ")
  leaves = {}
  for path, x, f in zip(leaf_paths(tree), jax.tree.leaves(tree), flags):
    if not f:
      continue
    a = np.asarray(x)
    zeros = int(np.count_nonzero(~a)) if a.dtype == np.bool_ else int(a.size - np.count_nonzero(a))
    leaves[path] = LeafSparsity(zeros, int(a.size))
  return SparsityReport(leaves, sum(v.zeros for v in leaves.values()),
                        sum(v.size for v in leaves.values()))


class BitmaskArray:
  r"""A sparse array stored as a packed bitmask of its non-zeros plus their values.

  ``bits`` is uint8 of :math:`\lceil n / 8 \rceil` bytes (row-major order, most
  significant bit first, as ``numpy.packbits``), ``values`` the non-zero
  entries in that order; :attr:`nbytes` is their true storage,
  :math:`\lceil n/8 \rceil + \mathrm{nnz} \cdot \text{itemsize}` (shape and
  dtype are metadata, not counted).
  """

  def __init__(self, bits: np.ndarray, values: np.ndarray, shape: tuple[int, ...], dtype: Any):
    self.bits = bits
    self.values = values
    self.shape = tuple(shape)
    self.dtype = np.dtype(dtype)

  @property
  def nbytes(self) -> int:
    return int(self.bits.nbytes + self.values.nbytes)

  @property
  def nnz(self) -> int:
    return int(self.values.shape[0])

  def todense(self) -> jax.Array:
    """The dense array back (zeros where the bitmask is 0; ``-0.0`` comes back as ``0.0``)."""
    n = int(np.prod(self.shape, dtype=np.int64))
    keep = np.unpackbits(self.bits, count=n).astype(bool)
    out = np.zeros(n, self.dtype)
    out[keep] = self.values
    return jax.numpy.asarray(out.reshape(self.shape))

  def __repr__(self) -> str:
    return (f"BitmaskArray(shape={self.shape}, dtype={self.dtype}, nnz={self.nnz},"
            f" nbytes={self.nbytes})")


def to_bitmask(params: Any, filter: Any = None) -> Any:  # pylint: disable=redefined-builtin
  r"""Export the filtered leaves of a pruned tree as :class:`BitmaskArray` (bitmask + values).

  .. math:: \text{bytes}(w) = \lceil n / 8 \rceil + \mathrm{nnz}(w) \cdot \text{itemsize}

  which is smaller than the dense :math:`n \cdot \text{itemsize}` once the
  density is below :math:`1 - 1/(8\,\text{itemsize})` (97% for float32). Leaves the
  filter leaves out stay dense arrays. :func:`from_bitmask` inverts it exactly
  (every entry compares equal; ``-0.0`` comes back as ``0.0``).

  Args:
    params: a tree of arrays (``nnx.Variable`` leaves are unwrapped).
    filter: which leaves to compress: ``None`` (default) is
      :func:`jopt.regularizers.weights_mask` (``ndim >= 2``), ``True`` all, or a
      tree / prefix of bools or a function ``params -> tree``.

  Returns:
    The tree with :class:`BitmaskArray` leaves where selected.

  Example:
    >>> w = jnp.zeros((8, 8)).at[0, 1].set(1.5).at[3, 4].set(-2.0)
    >>> params = {"w": w, "b": jnp.ones(8)}
    >>> packed = jopt.prune.to_bitmask(params)   # "b" (ndim 1) stays dense by default
    >>> packed["w"]                              # 64 bits = 8 bytes, 2 float32 values = 8
    BitmaskArray(shape=(8, 8), dtype=float32, nnz=2, nbytes=16)
    >>> jopt.prune.nbytes(packed), jopt.prune.nbytes(params)   # 16 + 32 vs 256 + 32
    (48, 288)

  Reference: the bitmask-plus-values (``BitMask``) layout of sparse weight
  storage, e.g. Han et al., *Deep Compression*, ICLR 2016 (which stores
  relative indices instead); ``jax.experimental.sparse.BCOO`` stores int32
  indices per non-zero instead (more bytes above ~3% density).
  """
  params = unwrap_variables(params)
  flags = mask_flags(filter, params, "to_bitmask: ")
  treedef = jax.tree.structure(params)
  out = []
  for x, f in zip(jax.tree.leaves(params), flags):
    if not f:
      out.append(x)
      continue
    a = np.asarray(x)
    nz = (a != 0).reshape(-1)
    out.append(BitmaskArray(np.packbits(nz), a.reshape(-1)[nz], a.shape, a.dtype))
  return treedef.unflatten(out)


def from_bitmask(tree: Any) -> Any:
  r"""The dense tree back from :func:`to_bitmask`'s output.

  .. math:: w_i = \begin{cases} v_{r(i)} & b_i = 1 \\ 0 & b_i = 0 \end{cases}

  with :math:`r(i)` the number of set bits before :math:`i`.

  Args:
    tree: a tree with :class:`BitmaskArray` leaves (others pass through).

  Returns:
    The tree of dense ``jax.Array`` leaves.

  Example:
    >>> params = {"w": jnp.zeros((8, 8)).at[0, 1].set(1.5).at[3, 4].set(-2.0)}
    >>> dense = jopt.prune.from_bitmask(jopt.prune.to_bitmask(params))
    >>> bool(jnp.array_equal(dense["w"], params["w"])), dense["w"].dtype
    (True, dtype('float32'))

  Reference: the inverse of :func:`to_bitmask` (NumPy's ``unpackbits``).
  """
  return jax.tree.map(lambda x: x.todense() if isinstance(x, BitmaskArray) else x, tree)


def nbytes(tree: Any) -> int:
  r"""The true byte count of a tree: :math:`\sum` of each leaf's ``nbytes``.

  .. math:: B = \sum_{\text{leaves}} \text{nbytes}(x)

  :class:`BitmaskArray` leaves count their bitmask and values; arrays
  :math:`n \cdot \text{itemsize}`.

  Args:
    tree: a tree of arrays and/or :class:`BitmaskArray`.

  Returns:
    An int.

  Example:
    >>> jopt.prune.nbytes({"w": jnp.zeros((4, 4), jnp.float32), "b": jnp.zeros(4, jnp.int8)})
    68

  Reference: NumPy's and JAX's ``nbytes``.
  """
  return int(sum(int(np.asarray(x).nbytes) if not isinstance(x, BitmaskArray) else x.nbytes
                 for x in jax.tree.leaves(unwrap_variables(tree))))
