"""The flat multi-tensor engine: optimizer state as a few contiguous buffers.

Elementwise optimizers (SGD with momentum, Adagrad, RMSprop, Adadelta, the Adam
family, Lion, ...) apply the same per-element rule to every parameter. Written
per leaf, a model with 1,000 parameter arrays becomes 1,000 loops in XLA, a
jitted step takes thousands of state arrays, and compiling takes seconds.
Here parameters are grouped by (dtype, state dtypes, mask flags); each group's
state slot is one 1-D buffer, and each update concatenates the group's
gradients, applies the rule once, and splits the result back into leaves.

The layout (which leaves form which group, their shapes) is static: it lives
in the pytree *structure* of :class:`FlatSlot`, not in its leaves, so the state
stays a pytree of arrays that ``jit``, checkpointers and ``lax.cond`` accept,
and ``FlatSlot.tree()`` gives the per-parameter view back.

Status (measured by ``benchmarks/suite.py`` on a 2-core CPU, jax 0.10.2): XLA
on CPU does not fuse the concatenation into the update, so each step writes the
concatenated gradients and the flat direction to fresh temporaries; Adam at 10M
parameters took 29 ms flat vs 10 ms per leaf (4 arrays) and 56 ms vs 23 ms (999
arrays), and compiling 999 arrays took 11.8 s vs 5.9 s. The engine is therefore
**off by default**: :func:`use_flat` answers "per leaf" unless
:func:`layout_override` asks for ``"flat"``. Results are identical either way
(tests/test_flat_engine.py). When on, the layout is flat only where every
parameter is unsharded (one device, or fully replicated), so concatenation
never moves data between devices; sharded parameters keep per-leaf slots on
their own sharding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp

__all__ = ["FlatSlot", "Layout", "Group", "make_layout", "use_flat", "layout_override",
           "concat", "split"]

_OVERRIDE: list[str | None] = [None]


@contextlib.contextmanager
def layout_override(mode: str | None) -> Iterator[None]:
  """Ask for ``"flat"`` (unsharded parameters only) or ``"per_leaf"`` state for
  transforms initialised inside; ``None`` restores the default (per leaf)."""
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
  """One optimizer slot (e.g. Adam's ``mu``) as one 1-D buffer per group."""

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


def use_flat(leaves: Sequence[Any]) -> bool:
  """The layout decision for these parameter leaves (see module doc): per leaf
  unless ``layout_override("flat")`` is active and every leaf is unsharded."""
  mode = _OVERRIDE[-1]
  if mode != "flat":
    return False
  return bool(leaves) and all(_unsharded(x) for x in leaves)


def make_layout(treedef: Any, leaves: Sequence[Any], slot_dtypes: Sequence[Sequence[Any]],
                flags: dict[str, list[bool]]) -> Layout:
  """Group leaves by (param dtype, slot dtypes, flags), keeping first-seen order."""
  keyed: dict[Any, list[int]] = {}
  for i, p in enumerate(leaves):
    f = tuple(sorted((k, v[i]) for k, v in flags.items()))
    key = (jnp.dtype(p.dtype), tuple(jnp.dtype(d) for d in slot_dtypes[i]), f)
    keyed.setdefault(key, []).append(i)
  groups = tuple(
      Group(tuple(idx), tuple(tuple(leaves[i].shape) for i in idx), key[2])
      for key, idx in keyed.items())
  return Layout(treedef, groups)


def concat(arrays: Sequence[jax.Array], dtype: Any) -> jax.Array:
  """Ravel and concatenate into one 1-D array of ``dtype``."""
  flat = [jnp.ravel(a).astype(dtype) for a in arrays]
  return flat[0] if len(flat) == 1 else jnp.concatenate(flat)


def split(buf: jax.Array, group: Group) -> list[jax.Array]:
  """Inverse of :func:`concat` for one group: pieces reshaped to the leaves' shapes."""
  out, start = [], 0
  for shape, size in zip(group.shapes, group.sizes):
    out.append(jax.lax.slice_in_dim(buf, start, start + size).reshape(shape))
    start += size
  return out
