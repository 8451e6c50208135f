"""Build an optimizer from one per-array update rule.

An optimizer is written as ``step(g, p, slots, h, flags) -> (u, new_slots)`` for a
single parameter array: ``g`` the gradient, ``p`` the parameter (or None),
``slots`` a tuple of that array's state slots, ``h`` the hyperparameters and
per-update scalars as 0-d arrays, ``flags`` static per-array booleans (masks).
:func:`leafwise` turns it into an ``optax.GradientTransformationExtraArgs``
that owns the plumbing every optimizer shares:

* step counting (int32, saturating) and hyperparameters kept in state;
* dtypes: the rule runs in ``promote(g.dtype, float32)``; updates come back in
  the gradient's dtype and each slot in the dtype it was created with;
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
import optax

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
  """A mask (None/True/False, a tree of bools, or ``params -> tree``) as one bool per leaf."""
  if mask is None or mask is True:
    return [True] * n
  if mask is False:
    return [False] * n
  if callable(mask):
    mask = mask(tree)
  leaves = jax.tree.leaves(mask)
  if len(leaves) != n or not all(isinstance(b, (bool,)) or getattr(b, "dtype", None) == bool
                                 for b in leaves):
    raise ValueError(
        f"{where}mask must be a tree of Python bools with one leaf per parameter"
        f" ({n}), got {len(leaves)} leaves."
    )
  return [bool(b) for b in leaves]


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
  """
  where = f"{name}: "
  slot_names = tuple(slots)
  masks = dict(masks or {})

  def init_fn(params):
    leaves, treedef = jax.tree.flatten(params)
    for p in leaves:
      compute_dtype(p.dtype)  # integer params: fail at init, naming the fix
    trees = {s: treedef.unflatten([f(p) for p in leaves]) for s, f in slots.items()}
    return state_cls(count=jnp.zeros([], jnp.int32), hyperparams=hyper.init(), **trees)

  def update_fn(updates, state, params=None, **extra):
    del extra
    g_leaves, treedef = jax.tree.flatten(updates)
    slot_leaves = []
    for s in slot_names:
      leaves, sdef = jax.tree.flatten(getattr(state, s))
      check_same_structure(sdef, treedef, f"{where}updates",
                           "Pass gradients shaped like the params given to init.")
      slot_leaves.append(leaves)
    if params is None:
      if needs_params:
        raise ValueError(
            f"{where}this optimizer needs the current parameters: call"
            " tx.update(grads, state, params)."
        )
      p_leaves = [None] * len(g_leaves)
    else:
      p_leaves, pdef = jax.tree.flatten(params)
      check_same_structure(treedef, pdef, f"{where}params",
                           "Pass params with the same structure as the gradients.")
    flag_lists = {k: resolve_mask(m, params if params is not None else updates,
                                  len(g_leaves), where) for k, m in masks.items()}

    h = hyper.resolve(state.hyperparams, state.count)
    count_inc = safe_increment(state.count)
    h_all = dict(h, t=count_inc.astype(hyper_dtype()))
    if scalars is not None:
      h_all.update(scalars(h_all))

    cast_cache: dict[Any, dict[str, jax.Array]] = {}
    new_u, new_slots = [], [[] for _ in slot_names]
    for i, g in enumerate(g_leaves):
      cdt = compute_dtype(g.dtype)
      if cdt not in cast_cache:
        cast_cache[cdt] = {k: v.astype(cdt) for k, v in h_all.items()}
      p = p_leaves[i]
      u, outs = step(
          g.astype(cdt),
          None if p is None else p.astype(cdt),
          tuple(sl[i].astype(cdt) for sl in slot_leaves),
          cast_cache[cdt],
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
