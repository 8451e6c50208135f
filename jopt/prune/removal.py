r"""Physical removal of pruned neurons and channels: a smaller dense parameter tree.

Neuron or channel pruning leaves whole output units of a layer at zero; the
model is sparser but no faster. :func:`remove_units` deletes those units from
every array that is indexed by them -- the layer's kernel and bias, its
batch-norm scale, offset and running statistics, and the next layer's kernel
input axis -- so every shape stays consistent and inference does less work.

The model declares which axes are coupled, as a list of :class:`UnitGroup`:

.. code-block:: python

  groups = [
      UnitGroup("hidden1", source=("params/dense1/kernel", 1), coupled=[
          ("params/dense1/bias", 0),
          ("params/bn1/scale", 0), ("params/bn1/bias", 0),
          ("batch_stats/bn1/mean", 0), ("batch_stats/bn1/var", 0),
          ("params/dense2/kernel", 0)]),        # the consumer's input axis
      UnitGroup("conv2", source=("conv2/kernel", 3), coupled=[   # HWIO: O is axis 3
          ("conv2/bias", 0),
          Coupled("head/kernel", 0, repeat=7 * 7)]),  # NHWC flatten of a 7x7 map
  ]

Paths are ``'a/b/c'`` strings or tuples of keys (``("params", "dense1",
"kernel")``; list indices as ints or their decimal strings), matched against the
tree's own key paths, so the same spec works for a plain dict, a Linen variable
dict (``{"params": ..., "batch_stats": ...}``) and a Flax ``nnx.State`` (whose
``nnx.Variable`` leaves stay Variables, of the same type, with smaller values).

A flattened consumer axis holds ``repeat`` entries per unit. In the layout of
an NHWC feature map flattened to ``H*W*C`` (units, the channels, vary fastest:
``order="units_last"``, the default) unit :math:`c` owns the positions
:math:`p\,C + c`; after an NCHW (torch) flatten (``order="units_first"``) it
owns :math:`c\,R + p`. Any other layout takes ``index_map``, a function
``(kept_units, num_units) -> indices along that axis``.

Removal runs on concrete arrays outside ``jit`` (it changes shapes); it is a
one-time export step after pruning and fine-tuning.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.validate import check_choice

__all__ = ["remove_units", "UnitGroup", "Coupled"]

_WHERE = "remove_units: "


class Coupled(NamedTuple):
  """An axis that must shrink with a :class:`UnitGroup`'s units.

  Attributes:
    path: the leaf, ``'a/b'`` or a tuple of keys.
    axis: the axis indexed by the units (negative counts from the end).
    repeat: entries per unit on that axis (``H*W`` for a dense layer fed by a
      flattened ``H x W x C`` feature map; 1 otherwise).
    order: ``"units_last"`` (index ``p * num_units + unit``: an NHWC flatten)
      or ``"units_first"`` (index ``unit * repeat + p``: an NCHW flatten).
    index_map: optional ``(kept_units, num_units) -> indices`` (integer NumPy
      arrays) for any other layout; ``repeat`` and ``order`` are then ignored.
  """

  path: Any
  axis: int
  repeat: int = 1
  order: str = "units_last"
  index_map: Callable[[np.ndarray, int], Any] | None = None


Coupled.__module__ = "jopt.prune"


class UnitGroup(NamedTuple):
  """A set of units (neurons or channels) removed together, and the axes they index.

  Attributes:
    name: the group's name, a key of the returned kept indices and of ``keep``.
    source: ``(path, axis)`` of the leaf whose zero pattern decides: a unit is
      removed when that leaf is zero at every entry of the unit (all other
      axes). A list of such pairs removes a unit only when it is zero in all of
      them (e.g. the kernel *and* the bias). Sources shrink along their axis.
    coupled: every other axis indexed by the same units, each a
      :class:`Coupled` or a tuple ``(path, axis[, repeat[, order]])``.
  """

  name: str
  source: Any
  coupled: Sequence[Any] = ()


UnitGroup.__module__ = "jopt.prune"


def _key_str(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _parse_path(path: Any, what: str) -> tuple[str, ...]:
  if isinstance(path, str):
    parts = tuple(p for p in path.split("/") if p)
  elif isinstance(path, (tuple, list)) and path:
    parts = tuple(str(p) for p in path)
  elif isinstance(path, (tuple, list)):
    raise ValueError(f"{_WHERE}{what} path={path!r} must be a string 'a/b/c' or a"
                     " non-empty tuple of keys.")
  else:
    raise TypeError(f"{_WHERE}{what} path={path!r} must be a string 'a/b/c' or a"
                    " non-empty tuple of keys.")
  if not parts:
    raise ValueError(f"{_WHERE}{what} path={path!r} names no leaf.")
  return parts


def _variable_type() -> Any:
  nnx = sys.modules.get("flax.nnx")
  return getattr(nnx, "Variable", None)


class _Leaves:
  """The tree's leaves by key path (``nnx.Variable`` counts as one leaf)."""

  def __init__(self, tree: Any):
    var = _variable_type()
    self.is_var = (lambda x: isinstance(x, var)) if var is not None else (lambda x: False)
    flat, self.treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=self.is_var)
    self.paths = [tuple(_key_str(k) for k in p) for p, _ in flat]
    self.leaves = [leaf for _, leaf in flat]
    self.index = {p: i for i, p in enumerate(self.paths)}

  def find(self, path: Any, what: str) -> int:
    parts = _parse_path(path, what)
    if parts not in self.index:
      known = ", ".join("/".join(p) for p in self.paths[:12])
      more = f" (and {len(self.paths) - 12} more)" if len(self.paths) > 12 else ""
      raise ValueError(f"{_WHERE}{what} names {'/'.join(parts)!r}, which is not a leaf of"
                       f" the tree; its leaves are: {known}{more}. Fix the path (keys"
                       " joined by '/', e.g. 'params/dense1/kernel').")
    return self.index[parts]

  def name(self, i: int) -> str:
    return "/".join(self.paths[i])

  def value(self, i: int) -> Any:
    leaf = self.leaves[i]
    return leaf.get_value() if self.is_var(leaf) else leaf

  def shape(self, i: int) -> tuple[int, ...]:
    return tuple(np.shape(self.value(i)))


def _axis(leaves: _Leaves, i: int, axis: Any, what: str) -> int:
  ndim = len(leaves.shape(i))
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not (
      -ndim <= axis < ndim):
    raise ValueError(f"{_WHERE}{what}: axis={axis!r} is not an axis of {leaves.name(i)}"
                     f" (shape {leaves.shape(i)}); pass an int in [{-ndim}, {ndim}).")
  return int(axis) % ndim


def _sources(group: UnitGroup, leaves: _Leaves) -> list[tuple[int, int]]:
  src = group.source
  single = (isinstance(src, (tuple, list)) and len(src) == 2
            and isinstance(src[1], (int, np.integer)) and not isinstance(src[1], bool))
  pairs = [src] if single else src
  if not isinstance(pairs, (tuple, list)) or not pairs:
    raise ValueError(f"{_WHERE}group {group.name!r}: source={src!r} must be (path, axis)"
                     " or a non-empty list of such pairs.")
  out = []
  for j, pair in enumerate(pairs):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise ValueError(f"{_WHERE}group {group.name!r}: source must be (path, axis) or a"
                       f" list of such pairs, got {pair!r}.")
    what = f"group {group.name!r} source" + (f"[{j}]" if len(pairs) > 1 else "")
    i = leaves.find(pair[0], what)
    out.append((i, _axis(leaves, i, pair[1], what)))
  return out


def _alive(group: UnitGroup, leaves: _Leaves, srcs, num: int) -> np.ndarray:
  alive = np.zeros(num, bool)
  for i, ax in srcs:
    try:
      x = np.asarray(leaves.value(i))
    except jax.errors.TracerArrayConversionError:
      raise TypeError(f"{_WHERE}{leaves.name(i)} is a traced value: removal changes"
                      " shapes, so it runs on concrete arrays outside jit (or pass"
                      " keep= masks).") from None
    others = tuple(a for a in range(x.ndim) if a != ax)
    alive |= np.any(x != 0, axis=others) if others else (x != 0)
  return alive


def _keep_mask(keep: Any, name: str, num: int) -> np.ndarray:
  try:
    mask = np.asarray(keep)
  except jax.errors.TracerArrayConversionError:
    raise TypeError(f"{_WHERE}keep[{name!r}] is a traced value; pass a concrete mask.") from None
  if mask.dtype != np.bool_:
    raise TypeError(f"{_WHERE}keep[{name!r}] must be a boolean array of shape ({num},)"
                    f" (one flag per unit of the group), got dtype {mask.dtype}.")
  if mask.shape != (num,):
    raise ValueError(f"{_WHERE}keep[{name!r}] must be a boolean array of shape ({num},)"
                     f" (one flag per unit of the group), got dtype {mask.dtype} and shape"
                     f" {mask.shape}.")
  return mask


def _coupled(entry: Any, group: str, j: int) -> Coupled:
  if isinstance(entry, Coupled):
    c = entry
  elif isinstance(entry, (tuple, list)) and 2 <= len(entry) <= 4:
    c = Coupled(*entry)
  else:
    raise TypeError(f"{_WHERE}group {group!r}: coupled[{j}]={entry!r} must be a"
                     " Coupled(path, axis, repeat=1, order='units_last') or a tuple"
                     " (path, axis[, repeat[, order]]).")
  where = f"{_WHERE}group {group!r} coupled[{j}]: "
  if isinstance(c.repeat, bool) or not isinstance(c.repeat, (int, np.integer)):
    raise TypeError(f"{where}repeat={c.repeat!r} must be an integer >= 1.")
  if c.repeat < 1:
    raise ValueError(f"{where}repeat={c.repeat!r} must be an integer >= 1.")
  check_choice("order", c.order, ("units_last", "units_first"), where)
  if c.index_map is not None and not callable(c.index_map):
    raise TypeError(f"{where}index_map={c.index_map!r} must be a function"
                     " (kept_units, num_units) -> indices.")
  return c


def _indices(c: Coupled, kept: np.ndarray, num: int, size: int, where: str) -> np.ndarray:
  if c.index_map is not None:
    idx = np.asarray(c.index_map(kept.copy(), num))
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or (
        idx.size and (idx.min() < 0 or idx.max() >= size)):
      raise ValueError(f"{where}index_map returned {idx.dtype} indices of shape"
                       f" {idx.shape}; it must return a 1-D integer array of positions in"
                       f" [0, {size}).")
    return idx
  pos = np.arange(c.repeat)
  if c.order == "units_last":
    return (pos[:, None] * num + kept[None, :]).reshape(-1)
  return (kept[:, None] * c.repeat + pos[None, :]).reshape(-1)


def _take(x: Any, idx: np.ndarray, axis: int) -> Any:
  if isinstance(x, np.ndarray):
    return np.take(x, idx, axis=axis)
  return jnp.take(jnp.asarray(x), jnp.asarray(idx), axis=axis)


def remove_units(
    tree: Any,
    groups: Sequence[UnitGroup],
    *,
    keep: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, np.ndarray]]:
  r"""Delete pruned units (all-zero neurons / filters) and every axis coupled to them.

  For a group with source leaf :math:`W` whose axis :math:`a` has :math:`U`
  units, unit :math:`u` is kept when it is nonzero somewhere in some source,

  .. math::
    K = \{u : \exists\ \text{source}\ W,\ \exists j:\ W_{\ldots,u,\ldots}[j] \ne 0\}
    \qquad (\text{or } K = \{u : \texttt{keep}[u]\}),

  and every coupled axis (size :math:`U\cdot r`) keeps the positions of the
  units in :math:`K` (their :math:`r` positions each, in the declared order).

  The smaller model computes exactly what the masked one does when a removed
  unit contributes nothing downstream: its output is zero for every input.
  For ``dense -> bias -> ReLU`` that needs the kernel column *and* the bias
  zero; with batch norm after the layer, the normalized constant
  :math:`\beta + \gamma(b - \hat\mu)/\sqrt{\hat\sigma^2 + \epsilon}` must be zero
  too (e.g. :math:`\gamma = \beta = 0`). Mask those leaves with the kernel, or
  list them all in ``source`` so a unit is removed only when all are zero; a
  unit whose kernel is zero but whose bias is not is a constant input to the
  next layer, which this function does not fold into that layer's bias.

  Decisions use the given tree (no cascade: a unit that becomes all-zero only
  after an earlier group's removal is kept). Removal changes shapes, so it runs
  outside ``jit`` on concrete arrays; the new leaves are fresh arrays
  (NumPy leaves stay NumPy), their sharding is not kept.

  Args:
    tree: the parameters (and statistics): a dict tree, a Linen variable dict
      with ``"params"`` and ``"batch_stats"``, or an ``nnx.State``.
    groups: the :class:`UnitGroup` list (see the module docstring). Group names
      are unique; a (leaf, axis) belongs to at most one group.
    keep: optional ``{group name: boolean array of shape (U,)}`` that decides
      instead of the zero pattern (e.g. a neuron mask from ``jopt.prune``).

  Returns:
    ``(smaller_tree, kept)``: the tree with the same structure and leaf types,
    smaller along every declared axis, and ``{group name: the sorted indices
    of the kept units}`` (``int64`` NumPy arrays).

  Raises:
    ValueError: a path that is not a leaf, an axis out of range, coupled axes
      whose sizes disagree (naming both paths and sizes), a group whose every
      unit would be removed, or a malformed ``keep``.

  Example:
    >>> params = {"d1": {"kernel": jnp.array([[1., 0., 2.]]), "bias": jnp.zeros(3)},
    ...           "d2": {"kernel": jnp.ones((3, 2))}}
    >>> groups = [jopt.prune.UnitGroup("h", source=("d1/kernel", 1),
    ...                                coupled=[("d1/bias", 0), ("d2/kernel", 0)])]
    >>> small, kept = jopt.prune.remove_units(params, groups)
    >>> small["d2"]["kernel"].shape, kept["h"].tolist()
    ((2, 2), [0, 2])

  Reference: Li et al., *Pruning Filters for Efficient ConvNets*, ICLR 2017
  (Sec. 3.1-3.2: removing a filter removes its feature map, the matching
  batch-norm entries and the next layer's kernel slice). Li et al. pick the
  filters by their L1 norm; here the choice is made before (a zero pattern or
  ``keep``), this only removes.
  """
  leaves = _Leaves(tree)
  if isinstance(groups, UnitGroup) or not isinstance(groups, Sequence):
    raise TypeError(f"{_WHERE}groups must be a list of UnitGroup, got"
                     f" {type(groups).__name__}; wrap a single group in a list.")
  keep = {} if keep is None else dict(keep)
  names = [getattr(g, "name", None) for g in groups]
  for g, name in zip(groups, names):
    if not isinstance(g, UnitGroup):
      raise TypeError(f"{_WHERE}groups holds {g!r}; each entry must be a"
                       " UnitGroup(name, source=(path, axis), coupled=[...]).")
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ValueError(f"{_WHERE}group names must be unique; {dup} appear more than once.")
  unknown = sorted(set(keep) - set(names))
  if unknown:
    raise ValueError(f"{_WHERE}keep has {unknown}, which are not group names {names}.")

  plan: dict[tuple[int, int], tuple[str, np.ndarray]] = {}   # (leaf, axis) -> indices
  kept_all: dict[str, np.ndarray] = {}
  for g in groups:
    srcs = _sources(g, leaves)
    i0, a0 = srcs[0]
    num = leaves.shape(i0)[a0]
    for i, a in srcs[1:]:
      if leaves.shape(i)[a] != num:
        raise ValueError(f"{_WHERE}group {g.name!r}: sources disagree on the number of"
                         f" units: {leaves.name(i0)} axis {a0} has {num},"
                         f" {leaves.name(i)} axis {a} has {leaves.shape(i)[a]}.")
    if g.name in keep:
      alive = _keep_mask(keep[g.name], g.name, num)
    else:
      alive = _alive(g, leaves, srcs, num)
    kept = np.nonzero(alive)[0].astype(np.int64)
    if kept.size == 0:
      raise ValueError(f"{_WHERE}group {g.name!r}: every one of its {num} units is"
                       f" {'dropped by keep' if g.name in keep else 'zero'} in"
                       f" {leaves.name(i0)} axis {a0}; removing them all would leave a"
                       " layer of width 0. Keep at least one unit (keep=) or remove the"
                       " layer from the model.")
    kept_all[g.name] = kept
    entries = [(i, a, Coupled(None, a), f"source {leaves.name(i)}") for i, a in srcs]
    for j, e in enumerate(g.coupled):
      c = _coupled(e, g.name, j)
      what = f"group {g.name!r} coupled[{j}]"
      i = leaves.find(c.path, what)
      entries.append((i, _axis(leaves, i, c.axis, what), c, what))
    for i, a, c, what in entries:
      size = leaves.shape(i)[a]
      if c.index_map is None and size != num * c.repeat:
        rep = f" x repeat {c.repeat}" if c.repeat != 1 else ""
        raise ValueError(f"{_WHERE}{what}: {leaves.name(i)} axis {a} has size {size}, but"
                         f" group {g.name!r} has {num} units (from {leaves.name(i0)} axis"
                         f" {a0}){rep}, so it must have size {num * c.repeat}. Fix the axis"
                         " or the repeat, or leave the leaf out of this group.")
      idx = _indices(c, kept, num, size, f"{_WHERE}{what}: ")
      if (i, a) in plan:
        other, prev = plan[(i, a)]
        if other == g.name and np.array_equal(prev, idx):
          continue   # a source listed again in coupled
        raise ValueError(f"{_WHERE}{leaves.name(i)} axis {a} is declared in groups"
                         f" {other!r} and {g.name!r}; an axis shrinks with one group only.")
      plan[(i, a)] = (g.name, idx)

  new_leaves = list(leaves.leaves)
  for (i, a), (_, idx) in sorted(plan.items()):
    leaf = new_leaves[i]
    if leaves.is_var(leaf):
      new_leaves[i] = leaf.replace(_take(leaf.get_value(), idx, a))
    else:
      new_leaves[i] = _take(leaf, idx, a)
  return jax.tree_util.tree_unflatten(leaves.treedef, new_leaves), kept_all
