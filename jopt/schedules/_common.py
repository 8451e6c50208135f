"""Helpers shared by the schedules: argument checks and step/value casting (not public API).

Conventions every schedule follows:

* arguments are checked when the schedule is built, and a bad one raises
  ``ValueError`` naming the function, the argument and the accepted range;
* the schedule accepts a Python int, a NumPy integer or an integer array
  (traced or not, any shape) and returns an array of the default float dtype
  at call time (float32, or float64 under ``jax_enable_x64``);
* integer logic (boundaries, cycles, restarts) is done on the integer step,
  so it is exact for every step an int32 can hold; only the value is float.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate

__all__ = ["float_dtype", "as_step", "as_value", "raise_to", "check_value", "check_positive_int",
           "check_nonneg_int", "check_bool", "check_choice"]


def float_dtype() -> Any:
  """The float dtype schedules return: float64 under ``jax_enable_x64``, else float32."""
  return jnp.result_type(float)


def as_step(step: Any) -> tuple[jax.Array, jax.Array]:
  """``(n, t)``: the step as an array of its own (integer) dtype, and as a float."""
  n = jnp.asarray(step)
  if n.dtype == jnp.bool_ or not jnp.issubdtype(n.dtype, jnp.number):
    raise TypeError(f"a schedule takes an integer step count, got {step!r}.")
  return n, n.astype(float_dtype())


def as_value(value: Any) -> jax.Array:
  """A validated number (or a traced array) as an array of the schedule's float dtype."""
  return jnp.asarray(value, float_dtype())


def raise_to(x: jax.Array, exponent: Any) -> jax.Array:
  """``x ** exponent``; exact repeated multiplication when the exponent is a small integer."""
  try:
    e = float(exponent)
  except (TypeError, jax.errors.ConcretizationTypeError):
    e = None
  if e is not None and e.is_integer() and 1 <= e <= 64:
    return x ** int(e)
  return x ** as_value(exponent)


def check_value(name: str, value: Any, where: str, low: float | None = None,
                high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Any:
  """Check a real number (finite, optionally within a range); return it unchanged."""
  validate.check_range(name, value, low, high, low_open=low_open, high_open=high_open,
                       where=where)
  return value


def _is_int(value: Any) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_positive_int(name: str, value: Any, where: str) -> int:
  """Raise unless ``value`` is an integer >= 1; return it as a Python int."""
  validate.check_positive_int(name, value, where)
  return int(value)


def check_nonneg_int(name: str, value: Any, where: str) -> int:
  """Raise unless ``value`` is an integer >= 0; return it as a Python int."""
  if not _is_int(value):
    raise TypeError(f"{where}{name}={value!r} must be an integer >= 0; pass an int.")
  if value < 0:
    raise ValueError(f"{where}{name}={value!r} must be an integer >= 0.")
  return int(value)


def check_bool(name: str, value: Any, where: str) -> bool:
  validate.check_flag(where, **{name: value})
  return bool(value)


def check_choice(name: str, value: Any, choices: tuple[Any, ...], where: str) -> Any:
  validate.check_choice(name, value, choices, where)
  return value
