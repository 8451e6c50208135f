"""The flat multi-tensor engine: optimizer state as a few contiguous buffers.

Elementwise optimizers (SGD with momentum, Adagrad, RMSprop, Adadelta, the Adam
family, Lion, ...) apply the same per-element rule to every parameter. Written
per leaf, a model with 1,000 parameter arrays becomes 3,000 small loops in XLA,
a jitted step takes 4,000 arrays, and compiling takes seconds. Here the small
leaves (at most ``SMALL`` elements: biases, norm scales, small matrices) share
buffers, grouped by (dtype, state dtypes, mask flags) in groups of at most
``MAX_LEAVES`` leaves and ``MAX_GROUP`` elements; each update concatenates a
group's gradients, applies the rule once and splits the result back into
leaves. Large leaves keep a buffer of their own, shaped like the leaf, and are
updated exactly as per-leaf state is.

The layout (which leaves form which group, their shapes) is static: it lives
in the pytree *structure* of :class:`FlatSlot`, not in its leaves, so the state
stays a pytree of arrays that ``jit``, checkpointers and ``lax.cond`` accept,
and ``FlatSlot.tree()`` gives the per-parameter view back. The same params give
the same layout, so restored checkpoints fit ``tx.init(params)``.

Why these limits (measured on a 2-core CPU, jax 0.10.2, XLA:CPU; see
benchmarks/RESULTS.md):

* 666 leaves of 173 floats: Adam per leaf 12.0 ms a step, one group 4.6 ms.
  Passing arrays into a jitted call costs ~1.3 us each, and each leaf is 3 loops.
* Large leaves must not be grouped: XLA:CPU does not fuse a concatenation into
  its consumer and writes the concatenated gradients and the direction to
  fresh temporaries; 333 leaves of 29,583 floats took 49 ms grouped vs 15 ms
  per leaf.
* Compile time grows with the size of the buffer a leaf is sliced from: 666
  slices of one 115k buffer compiled in 5.8 s, the same slices from groups of
  32 leaves in 0.6 s. Hence ``MAX_LEAVES``.

Default: flat in a one-device process with at least two small leaves;
otherwise per leaf, like optax. The decision uses only the device count and the
shapes, so ``tx.init`` and ``jax.jit(tx.init)`` give the same structure. With
several devices, ``layout_override("flat")`` opts in where every parameter is
unsharded or fully replicated (concatenation never moves data between
devices); sharded parameters keep per-leaf slots on their own sharding.
Results are identical either way (tests/test_flat_engine.py, float64), and
:func:`unflatten_state` / :func:`flatten_state` convert a state between the two
forms, so a checkpoint can be saved in the per-leaf form and restored on a
machine that lays state out differently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp

__all__ = ["FlatSlot", "Layout", "Group", "make_layout", "use_flat", "layout_override",
           "concat", "split", "SMALL", "MAX_LEAVES", "MAX_GROUP", "unflatten_state",
           "flatten_state"]

_OVERRIDE: list[str | None] = [None]
SMALL = 16_384        # leaves with more elements get a buffer of their own
MAX_LEAVES = 32       # leaves per shared buffer
MAX_GROUP = 1 << 20   # elements per shared buffer


@contextlib.contextmanager
def layout_override(mode: str | None) -> Iterator[None]:
  """Choose how optimizer state is laid out for ``tx.init`` calls inside the block.

  Public as ``jopt.state_layout``. By default, in a one-device process,
  elementwise optimizers (SGD, Adagrad, RMSprop, Adadelta, the Adam family,
  Lion) store the slots of small parameters in a few shared buffers
  (:class:`FlatSlot`); results are the same either way. Ask for ``"per_leaf"`` when code needs the state as a
  tree shaped like the params (as optax lays it out), e.g. to ``tree_map`` over
  ``state.mu``; ``FlatSlot.tree()`` gives that view without changing the layout.

  Args:
    mode: ``"per_leaf"``, ``"flat"`` (honoured where every parameter is
      unsharded or fully replicated) or ``None`` for the default.

  Example:
    >>> import jax.numpy as jnp, jopt
    >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((3, 2))}
    >>> with jopt.state_layout("per_leaf"):
    ...   state = jopt.adam(1e-3).init(params)
    >>> state.mu["w"].shape
    (3, 2)
    >>> jopt.adam(1e-3).init(params).mu.tree()["w"].shape
    (3, 2)
  """
  if mode not in (None, "flat", "per_leaf"):
    raise ValueError(f"layout_override: mode={mode!r} is not None, 'flat' or 'per_leaf'.")
  _OVERRIDE.append(mode)
  try:
    yield
  finally:
    _OVERRIDE.pop()


@dataclasses.dataclass(frozen=True)
class Group:
  """Leaves stored together: their indices in the flattened tree and shapes."""
  indices: tuple[int, ...]
  shapes: tuple[tuple[int, ...], ...]
  flags: tuple[tuple[str, bool], ...]

  @property
  def sizes(self) -> tuple[int, ...]:
    return tuple(math.prod(s) for s in self.shapes)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static description of a flat state: the parameter tree and its groups."""
  treedef: Any
  groups: tuple[Group, ...]


@jax.tree_util.register_pytree_node_class
class FlatSlot:
  """One optimizer slot (e.g. Adam's ``mu``) as one 1-D buffer per group of leaves.

  ``slot.tree()`` (or ``slot["layer"]["w"]``) gives the per-parameter view;
  ``slot.buffers`` are the arrays a checkpoint holds.
  """

  def __init__(self, buffers: Sequence[jax.Array], layout: Layout):
    self.buffers = tuple(buffers)
    self.layout = layout

  def tree_flatten(self):
    return self.buffers, self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(buffers, layout)

  def tree(self) -> Any:
    """The slot as a tree shaped like the parameters (copies, read-only view)."""
    leaves: list[Any] = [None] * self.layout.treedef.num_leaves
    for buf, group in zip(self.buffers, self.layout.groups):
      for i, piece in zip(group.indices, split(buf, group)):
        leaves[i] = piece
    return self.layout.treedef.unflatten(leaves)

  def __getitem__(self, key):
    """Index like the parameter tree: ``state.mu["layer"]["w"]`` (a copy)."""
    return self.tree()[key]

  def __repr__(self):
    return (f"FlatSlot({len(self.buffers)} buffers, "
            f"{sum(len(g.indices) for g in self.layout.groups)} leaves)")


def _unsharded(x: Any) -> bool:
  if isinstance(x, jax.core.Tracer):
    try:
      spec = jax.typeof(x).sharding.spec
    except Exception:  # pylint: disable=broad-except
      spec = ()
    if any(a is not None for a in spec):
      return False
    # Auto-mode sharding is unknown while tracing: flat only on one device.
    return jax.device_count() == 1
  sharding = getattr(x, "sharding", None)
  return sharding is None or len(sharding.device_set) == 1 or sharding.is_fully_replicated


def _device_count() -> int:
  return jax.device_count()


def use_flat(leaves: Sequence[Any]) -> bool:
  """The layout decision for these parameter leaves (see module doc).

  Default: flat in a process with one device, where at least two leaves are
  small enough to share a buffer (otherwise grouping gains nothing and the state
  stays a tree like optax's). The answer depends only on the device count and
  the shapes, so ``tx.init`` and ``jax.jit(tx.init)`` agree. With several
  devices the default is per leaf; ``layout_override("flat")`` asks for flat
  state there, honoured where every leaf is unsharded or fully replicated.
  """
  mode = _OVERRIDE[-1]
  if mode == "per_leaf" or not leaves:
    return False
  if mode == "flat":
    return all(_unsharded(x) for x in leaves)
  if _device_count() != 1:
    return False
  return sum(1 for x in leaves if math.prod(x.shape) <= SMALL) >= 2


def make_layout(treedef: Any, leaves: Sequence[Any], slot_dtypes: Sequence[Sequence[Any]],
                flags: dict[str, list[bool]]) -> Layout:
  """Group leaves by (param dtype, slot dtypes, flags), keeping first-seen order.

  Leaves with more than ``SMALL`` elements get a group of their own (one buffer,
  no concatenation); the others share groups of at most ``MAX_LEAVES`` leaves
  and ``MAX_GROUP`` elements.
  """
  open_groups: dict[Any, tuple[list[int], int]] = {}  # key -> (indices, elements)
  found: list[tuple[list[int], Any]] = []  # every group, in order of its first leaf
  for i, p in enumerate(leaves):
    f = tuple(sorted((k, v[i]) for k, v in flags.items()))
    key = (jnp.dtype(p.dtype), tuple(jnp.dtype(d) for d in slot_dtypes[i]), f)
    size = math.prod(p.shape)
    if size > SMALL:
      found.append(([i], f))
      continue
    idx, total = open_groups.get(key, ([], 0))
    if not idx or len(idx) >= MAX_LEAVES or total + size > MAX_GROUP:
      idx, total = [], 0
      found.append((idx, f))
    idx.append(i)
    open_groups[key] = (idx, total + size)
  groups = tuple(Group(tuple(idx), tuple(tuple(leaves[i].shape) for i in idx), f)
                 for idx, f in found)
  return Layout(treedef, groups)


def concat(arrays: Sequence[jax.Array], dtype: Any) -> jax.Array:
  """Ravel and concatenate into one 1-D array of ``dtype``; a single array keeps
  its shape (a leaf alone in its group is stored exactly as per-leaf state is)."""
  if len(arrays) == 1:
    return arrays[0].astype(dtype)
  return jnp.concatenate([jnp.ravel(a).astype(dtype) for a in arrays])


def split(buf: jax.Array, group: Group) -> list[jax.Array]:
  """Inverse of :func:`concat` for one group: pieces reshaped to the leaves' shapes."""
  if len(group.shapes) == 1:
    return [buf.reshape(group.shapes[0])]
  out, start = [], 0
  for shape, size in zip(group.shapes, group.sizes):
    out.append(jax.lax.slice_in_dim(buf, start, start + size).reshape(shape))
    start += size
  return out


def _is_slot(x: Any) -> bool:
  return isinstance(x, FlatSlot)


def unflatten_state(state: Any) -> Any:
  """The optimizer state with every :class:`FlatSlot` replaced by its per-parameter tree.

  The result has exactly the structure ``tx.init`` gives under
  ``state_layout("per_leaf")`` on any machine, so it is the portable form to
  checkpoint; :func:`flatten_state` turns it back.

  Example:
    >>> import jax.numpy as jnp, jopt
    >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((3, 2))}
    >>> tx = jopt.adam(1e-3)
    >>> portable = jopt.unflatten_state(tx.init(params))
    >>> portable.mu["w"].shape
    (3, 2)
    >>> state = jopt.flatten_state(portable, like=tx.init(params))
  """
  return jax.tree.map(lambda x: x.tree() if _is_slot(x) else x, state, is_leaf=_is_slot)


def flatten_state(state: Any, like: Any) -> Any:
  """Lay out a per-parameter state (from :func:`unflatten_state`) as ``like`` is laid out.

  ``like`` is a state from ``tx.init(params)`` on this machine: wherever it
  holds a :class:`FlatSlot`, the matching per-parameter tree of ``state`` is
  packed into that slot's groups and dtypes; everything else is taken from
  ``state`` as is.

  Example:
    >>> import jax.numpy as jnp, jopt
    >>> params = {"b": jnp.zeros(3), "w": jnp.zeros((3, 2))}
    >>> with jopt.state_layout("per_leaf"):
    ...   saved = jopt.adam(1e-3).init(params)
    >>> state = jopt.flatten_state(saved, like=jopt.adam(1e-3).init(params))
  """
  def pack(ref, tree):
    if not _is_slot(ref):
      return tree
    leaves, treedef = jax.tree.flatten(tree)
    if treedef != ref.layout.treedef:
      raise ValueError(
          "flatten_state: the state's per-parameter slot has structure"
          f" {treedef}, but `like` was initialised for {ref.layout.treedef}. Pass"
          " `like=tx.init(params)` for the params this state belongs to.")
    return FlatSlot([concat([leaves[i] for i in g.indices], buf.dtype)
                     for g, buf in zip(ref.layout.groups, ref.buffers)], ref.layout)

  return jax.tree.map(pack, like, state, is_leaf=_is_slot)
