"""Slot initializers for the classic optimizers: dtype options checked by name,
and slots that start at a constant other than zero (Adagrad, RMSProp)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.leafwise import param_like, slot_zeros
from jopt._core.tree import full_like

__all__ = ["init_value", "slot_full", "dtype_slot"]


def init_value(name: str, value: Any, where: str) -> Any:
  """A number used only to fill a slot at init: validated, never a schedule.

  A traced value (``optax.inject_hyperparams`` builds the optimizer inside a
  jitted ``init``) cannot be checked and is returned as is; the slot is filled
  with it."""
  if validate.is_schedule(value):
    raise TypeError(
        f"{where}{name} only sets the accumulator's starting value, so it must be"
        f" a number, not a schedule; got {value!r}.")
  validate.check_hyperparam(name, value, where)
  value = validate.real_value(value)  # inject_hyperparams' complex dtype, for complex params
  return float(value) if validate.is_concrete(value) else value


def dtype_slot(name: str, dtype: Any, where: str, fill: Any = 0.0):
  """A slot initializer for the dtype option ``name``; a non-float dtype is a
  ``TypeError`` naming that option. ``fill`` may be traced (see :func:`init_value`)."""
  if dtype is not None:
    try:
      ok = jnp.issubdtype(jnp.dtype(dtype), jnp.inexact)
    except TypeError:
      ok = False
    if not ok:
      raise TypeError(
          f"{where}{name}={dtype!r} must be a floating or complex dtype (e.g."
          " jnp.float32, jnp.bfloat16) or None for the parameter's dtype.")
  if validate.is_concrete(fill) and float(fill) == 0.0:
    return slot_zeros(dtype)
  return slot_full(fill, dtype)


def slot_full(value: Any, dtype: Any = None):
  """A slot initializer: ``value`` everywhere, shaped and sharded like the parameter."""
  slot_zeros(dtype)  # validates dtype
  dtype = None if dtype is None else jnp.dtype(dtype)
  return param_like(lambda p: full_like(p, value, dtype), same_dtype=dtype is None)
