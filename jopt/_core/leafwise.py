"""Build an optimizer from one per-array update rule.

An optimizer is written as ``step(g, p, slots, h, flags) -> (u, new_slots)`` for a
single parameter array: ``g`` the gradient, ``p`` the parameter (or None),
``slots`` a tuple of that array's state slots, ``h`` the hyperparameters and
per-update scalars as 0-d arrays, ``flags`` static per-array booleans (masks).
:func:`leafwise` turns it into an ``optax.GradientTransformationExtraArgs``
that owns the plumbing every optimizer shares:

* step counting (int32, saturating) and hyperparameters kept in state;
* dtypes: the rule runs in ``promote(g.dtype, float32)``; updates come back in
  the gradient's dtype and each slot in the dtype it was created with (integer
  slots, such as quantization codes, reach the rule as stored);
* sharding: slots are created on their parameter's sharding (see
  :func:`jopt._core.tree.zeros_like`);
* checks: the gradient tree must match the state's, ``params`` present when the
  rule needs them.

The per-array form is also what a flat multi-tensor engine applies to
concatenated buffers, so each rule is written once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core import flat
from jopt._core.hyperparams import HyperSpec, hyper_dtype
from jopt._core.tree import check_same_structure, compute_dtype, safe_increment, zeros_like

__all__ = ["leafwise", "slot_zeros", "resolve_mask", "Step"]

Step = Callable[..., tuple[jax.Array, tuple[jax.Array, ...]]]


def slot_zeros(dtype: Any = None) -> Callable[[jax.Array], jax.Array]:
  """A slot initializer: zeros like the parameter, in ``dtype`` (default: param's)."""
  if dtype is not None:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"state dtype must be a floating dtype, got {dtype}.")
  return lambda p: zeros_like(p, dtype)


def resolve_mask(mask: Any, tree: Any, n: int, where: str) -> list[bool]:
  """A mask as one bool per leaf of ``tree``.

  ``mask`` is None/True (all), False (none), a tree of bools shaped like
  ``tree`` or a prefix of it (a bool for a whole subtree, as optax accepts),
  or a function ``params -> such a tree``.
  """
  if mask is None or mask is True:
    return [True] * n
  if mask is False:
    return [False] * n
  if callable(mask):
    mask = mask(tree)
  try:
    full = jax.tree.broadcast(mask, tree)
  except (ValueError, TypeError) as e:
    raise ValueError(
        f"{where}mask must be a tree of Python bools shaped like the params (or a"
        f" prefix of them); it does not fit: {e}") from e
  leaves = jax.tree.leaves(full)
  if len(leaves) != n or not all(isinstance(b, (bool, np.bool_)) for b in leaves):
    raise ValueError(
        f"{where}mask must be a tree of Python bools with one leaf per parameter"
        f" ({n}) or a prefix of the params, got {len(leaves)} leaves"
        f" ({sorted({type(b).__name__ for b in leaves})}).")
  return [bool(b) for b in leaves]


def _to_compute(x: jax.Array, cdt: Any) -> jax.Array:
  """Floating slots are read in the compute dtype; integer slots (codes) as stored."""
  return x.astype(cdt) if jnp.issubdtype(x.dtype, jnp.floating) else x


def leafwise(
    name: str,
    state_cls: type,
    hyper: HyperSpec,
    slots: Mapping[str, Callable[[jax.Array], jax.Array]],
    step: Step,
    *,
    needs_params: bool = False,
    scalars: Callable[[dict[str, jax.Array]], dict[str, jax.Array]] | None = None,
    masks: Mapping[str, Any] | None = None,
    elementwise: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Turn a per-array rule into a gradient transformation (see module docstring).

  Args:
    name: the optimizer's public name, used in error messages.
    state_cls: a class from :func:`jopt._core.hyperparams.state_class` whose
      slot fields are the keys of ``slots``, in order.
    hyper: the numeric hyperparameters.
    slots: slot name -> ``init(param) -> array``.
    step: the per-array rule.
    needs_params: raise a clear error when ``update`` is called without params.
    scalars: ``h -> dict`` computed once per update from the hyperparameters
      and ``h["t"]`` (the 1-based step as a float), e.g. bias corrections.
    masks: flag name -> mask; each array's ``flags[name]`` is its mask bit.
    elementwise: the rule treats every element alike (no per-array reductions,
      slots shaped like the parameter), so the state may be stored flat
      (:mod:`jopt._core.flat`) and the rule applied once per group of arrays.
  """
  where = f"{name}: "
  slot_names = tuple(slots)
  masks = dict(masks or {})

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    for p in leaves:
      compute_dtype(p.dtype, f"{where}params")  # integer params: fail at init
    per_leaf = {s: [f(p) for p in leaves] for s, f in slots.items()}
    if elementwise and slot_names and flat.use_flat(leaves):
      flags = {k: resolve_mask(m, params, len(leaves), where) for k, m in masks.items()}
      layout = flat.make_layout(
          treedef, leaves, [[per_leaf[s][i].dtype for s in slot_names]
                            for i in range(len(leaves))], flags)
      trees = {s: flat.FlatSlot([flat.concat([per_leaf[s][i] for i in g.indices],
                                             per_leaf[s][g.indices[0]].dtype)
                                 for g in layout.groups], layout)
               for s in slot_names}
    else:
      trees = {s: treedef.unflatten(v) for s, v in per_leaf.items()}
    return state_cls(count=jnp.zeros([], jnp.int32), hyperparams=hyper.init(), **trees)

  def leaves_of(params, treedef, what_needs_params):
    if params is None:
      if what_needs_params:
        raise ValueError(
            f"{where}this optimizer needs the current parameters: call"
            " tx.update(grads, state, params)."
        )
      return None
    p_leaves, pdef = jax.tree.flatten(params)
    check_same_structure(treedef, pdef, f"{where}params",
                         "Pass params with the same structure as the gradients.")
    return p_leaves

  def hyper_values(state):
    h = hyper.resolve(state.hyperparams, state.count)
    count_inc = safe_increment(state.count)
    h_all = dict(h, t=count_inc.astype(hyper_dtype()))
    if scalars is not None:
      h_all.update(scalars(h_all))
    cache: dict[Any, dict[str, jax.Array]] = {}

    def cast(cdt):
      if cdt not in cache:
        cache[cdt] = {k: v.astype(cdt) for k, v in h_all.items()}
      return cache[cdt]

    return h, count_inc, cast

  def flat_update(updates, state, params):
    layout = getattr(state, slot_names[0]).layout
    g_leaves, treedef = jax.tree.flatten(updates)
    check_same_structure(layout.treedef, treedef, f"{where}updates",
                         "Pass gradients shaped like the params given to init.")
    p_leaves = leaves_of(params if needs_params else None, treedef, needs_params)
    h, count_inc, cast = hyper_values(state)
    new_u: list[Any] = [None] * len(g_leaves)
    new_bufs: dict[str, list[jax.Array]] = {s: [] for s in slot_names}
    for gi, group in enumerate(layout.groups):
      cdt = compute_dtype(g_leaves[group.indices[0]].dtype)
      bufs = [getattr(state, s).buffers[gi] for s in slot_names]
      u, outs = step(
          flat.concat([g_leaves[i] for i in group.indices], cdt),
          None if p_leaves is None else flat.concat([p_leaves[i] for i in group.indices], cdt),
          tuple(_to_compute(b, cdt) for b in bufs),
          cast(cdt),
          dict(group.flags),
      )
      for i, piece in zip(group.indices, flat.split(u, group)):
        new_u[i] = piece.astype(g_leaves[i].dtype)
      for s, o, b in zip(slot_names, outs, bufs):
        new_bufs[s].append(o.astype(b.dtype))
    new_state = state_cls(
        count=count_inc, hyperparams=h,
        **{s: flat.FlatSlot(v, layout) for s, v in new_bufs.items()})
    return treedef.unflatten(new_u), new_state

  def update_fn(updates, state, params=None, **extra):
    del extra
    if slot_names and isinstance(getattr(state, slot_names[0]), flat.FlatSlot):
      return flat_update(updates, state, params)
    g_leaves, treedef = jax.tree.flatten(updates)
    slot_leaves = []
    for s in slot_names:
      leaves, sdef = jax.tree.flatten(getattr(state, s))
      check_same_structure(sdef, treedef, f"{where}updates",
                           "Pass gradients shaped like the params given to init.")
      slot_leaves.append(leaves)
    p_leaves = leaves_of(params, treedef, needs_params) or [None] * len(g_leaves)
    flag_lists = {k: resolve_mask(m, params if params is not None else updates,
                                  len(g_leaves), where) for k, m in masks.items()}
    h, count_inc, cast = hyper_values(state)

    new_u, new_slots = [], [[] for _ in slot_names]
    for i, g in enumerate(g_leaves):
      cdt = compute_dtype(g.dtype)
      p = p_leaves[i]
      u, outs = step(
          g.astype(cdt),
          None if p is None else p.astype(cdt),
          tuple(_to_compute(sl[i], cdt) for sl in slot_leaves),
          cast(cdt),
          {k: v[i] for k, v in flag_lists.items()},
      )
      new_u.append(u.astype(g.dtype))
      for j, o in enumerate(outs):
        new_slots[j].append(o.astype(slot_leaves[j][i].dtype))

    new_state = state_cls(
        count=count_inc,
        hyperparams=h,
        **{s: treedef.unflatten(v) for s, v in zip(slot_names, new_slots)},
    )
    return treedef.unflatten(new_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
