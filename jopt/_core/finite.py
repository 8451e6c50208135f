"""Finite checks and tree selects shared by the transforms that skip non-finite steps.

:func:`jopt.precision.loss_scale` and :func:`jopt.wrappers.skip_nonfinite` decide
"take this step or not" with one 0-d boolean and apply it with a select over the
trees (``jnp.where``), never a ``lax.cond``: a select works unchanged under
``vmap`` and inside ``shard_map``, where the two branches of a ``cond`` would have
to agree on which mesh axes every value varies over.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

__all__ = ["all_finite", "stays_finite", "agree", "select_tree", "zeros_unless",
           "check_axis_name"]


def _inexact(x: Any) -> bool:
  dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
  return jnp.issubdtype(dtype, jnp.inexact)


def agree(ok: jax.Array, axis_name: str | Sequence[str] | None) -> jax.Array:
  """``ok`` on every device of ``axis_name`` (``lax.pmin``); ``ok`` itself for ``None``."""
  if axis_name is None:
    return ok
  return jax.lax.pmin(ok.astype(jnp.int32), axis_name) > 0


def all_finite(tree: Any, axis_name: str | Sequence[str] | None = None) -> jax.Array:
  r"""One boolean: every entry of every leaf is finite (agreed across devices with ``axis_name``).

  .. math::
    \text{ok} = \bigwedge_{\text{devices}} \bigwedge_{\ell, i} \operatorname{isfinite}(g_{\ell, i})

  Integer, boolean and PRNG-key leaves are finite by definition and are not
  looked at.

  Args:
    tree: a pytree of arrays (an empty tree is finite).
    axis_name: inside ``jax.shard_map`` / ``pmap``, the mesh axis name (or names)
      to agree over with ``lax.pmin``: any device's non-finite value makes
      every device's answer False. ``None`` checks the local values only.

  Returns:
    A 0-d boolean array.

  Example:
    >>> jopt.precision.all_finite({"w": jnp.ones(3), "step": jnp.array(7)})
    Array(True, dtype=bool)
    >>> jopt.precision.all_finite({"w": jnp.ones(3), "b": jnp.array([jnp.inf])})
    Array(False, dtype=bool)

  Reference: ``jmp.all_finite``; optax's ``apply_if_finite`` check.
  """
  axis_name = check_axis_name(axis_name, "all_finite: ")
  ok = jnp.asarray(True)
  for x in jax.tree.leaves(tree):
    if _inexact(x):
      ok = ok & jnp.all(jnp.isfinite(x))
  return agree(ok, axis_name)


def stays_finite(new: Any, old: Any) -> jax.Array:
  """True when no floating entry that is finite in ``old`` is non-finite in ``new``.

  Entries already non-finite in ``old`` (early stopping's ``best = +inf`` before
  the first check) may stay so or become finite. ``new`` and ``old`` have one
  tree structure and matching shapes (a transform's state before and after).
  """
  ok = jnp.asarray(True)
  for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
    if _inexact(n) and _inexact(o) and jnp.shape(n) == jnp.shape(o):
      ok = ok & jnp.all(jnp.isfinite(n) | ~jnp.isfinite(o))
  return ok


def select_tree(ok: jax.Array, new: Any, old: Any) -> Any:
  """``new`` where ``ok`` else ``old``, leaf by leaf (bit for bit either way)."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def zeros_unless(ok: jax.Array, updates: Any) -> Any:
  """``updates`` where ``ok``, else zeros of each update's own dtype and shape."""
  return jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)


def check_axis_name(axis_name: Any, where: str) -> str | tuple[str, ...] | None:
  """``axis_name`` as ``lax.pmin`` takes it (a list becomes a tuple); TypeError otherwise."""
  if axis_name is not None and not (isinstance(axis_name, str) or (
      isinstance(axis_name, (tuple, list)) and all(isinstance(a, str) for a in axis_name))):
    raise TypeError(f"{where}axis_name must be a mesh axis name, a tuple of them, or"
                    f" None; got {axis_name!r}.")
  return tuple(axis_name) if isinstance(axis_name, list) else axis_name
