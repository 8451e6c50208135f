"""Argument checks that fail at construction, naming the argument and the fix.

Every numeric hyperparameter is checked against one table, keyed by its name,
both when a transform is built and when :func:`jopt.set_hyperparams` changes it.
A schedule is checked by evaluating it at step 0.

Only concrete values are checked. A traced value (a factory called inside
``jit`` or ``vmap``, or by ``optax.inject_hyperparams``' jitted ``init``) passes
through unchecked and is used as given, so no decision that shapes the program
may depend on it; arguments that do shape it (:func:`static_int`) refuse a
traced value with an error saying how to pass it as a static argument.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_hyperparam", "check_range", "check_positive_int", "check_choice",
           "check_flag", "is_schedule", "is_concrete", "register_range", "static_int",
           "real_value"]


def is_schedule(value: Any) -> bool:
  """True when ``value`` is a callable ``step -> value`` rather than a number."""
  return callable(value)


def _concrete_float(value: Any) -> float | None:
  """``value`` as a Python float, or None when it is traced or not a real scalar.

  Any real 0-d array counts (float16, bfloat16, float64, integers), and so
  does a complex one whose imaginary part is exactly 0 (``optax.inject_hyperparams``
  casts hyperparameters to the parameters' dtype, complex for complex
  parameters); booleans and other complex numbers do not.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  if isinstance(value, (bool, np.bool_)):
    return None
  try:
    arr = np.asarray(value)
  except Exception:  # pylint: disable=broad-except
    return None
  if arr.shape != () or arr.dtype == np.bool_:
    return None
  if jnp.issubdtype(arr.dtype, jnp.complexfloating):
    if arr.imag != 0:
      return None
    arr = arr.real
  if not (jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)):
    return None
  return float(arr)


def real_value(value: Any) -> Any:
  """``value`` with a complex dtype's (zero, when checked) imaginary part
  dropped, so storing it as a real hyperparameter raises no ``ComplexWarning``;
  anything else unchanged. Traced values too."""
  if jnp.iscomplexobj(value):
    return jnp.real(value)
  return value


def is_concrete(value: Any) -> bool:
  """False for a traced value (inside ``jit``, ``vmap`` or ``inject_hyperparams``'s
  jitted ``init``): checks that need the number are skipped for it."""
  return not isinstance(value, jax.core.Tracer)


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    where: str = "",
) -> None:
  """Raise ``ValueError`` unless ``low (<|<=) value (<|<=) high`` and finite."""
  x = _concrete_float(value)
  if x is None:
    if isinstance(value, jax.core.Tracer):
      return
    raise TypeError(
        f"{where}{name} must be a real number or a schedule step -> number,"
        f" got {value!r} of type {type(value).__name__}."
    )
  lo = "-inf" if low is None else (f"({low}" if low_open else f"[{low}")
  hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
  accepted = f"{lo}, {hi}" if low is not None else f"(-inf, {hi}"
  bad = not math.isfinite(x)
  if low is not None:
    bad |= x <= low if low_open else x < low
  if high is not None:
    bad |= x >= high if high_open else x > high
  if bad:
    raise ValueError(
        f"{where}{name}={x!r} is outside the accepted range {accepted};"
        f" pass a finite value in that range."
    )


# name -> (low, high, low_open, high_open). Names not listed accept any finite value.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "learning_rate": (0.0, None, False, False),
    "b1": (0.0, 1.0, False, True),
    "b2": (0.0, 1.0, False, True),
    "b3": (0.0, 1.0, False, True),
    "beta": (0.0, 1.0, False, True),
    "momentum": (0.0, 1.0, False, True),
    "decay": (0.0, 1.0, False, True),
    "rho": (0.0, 1.0, False, True),
    "eps": (0.0, None, False, False),
    "eps_root": (0.0, None, False, False),
    "weight_decay": (0.0, None, False, False),
    "initial_accumulator_value": (0.0, None, False, False),
    "initial_scale": (0.0, None, False, False),
    "trust_coefficient": (0.0, None, False, False),
    "lr_decay": (0.0, None, False, False),
}


def register_range(name: str, low: float | None = None, high: float | None = None, *,
                   low_open: bool = False, high_open: bool = False) -> None:
  """Declare the accepted range of a hyperparameter name (used at construction
  and by ``set_hyperparams``). Registering a name twice with a different range fails."""
  spec = (low, high, low_open, high_open)
  if _RANGES.setdefault(name, spec) != spec:
    raise ValueError(f"hyperparameter {name!r} already has range {_RANGES[name]}, not {spec}.")


def check_hyperparam(name: str, value: Any, where: str = "") -> None:
  """Check a hyperparameter (number or schedule) against the table above."""
  if is_schedule(value):
    try:
      value = value(0)
    except Exception as e:  # pylint: disable=broad-except
      raise TypeError(
          f"{where}{name} is callable, so it must be a schedule step -> value;"
          f" calling it at step 0 failed with {type(e).__name__}: {e}"
      ) from e
    where = f"{where}the schedule given as "
  low, high, low_open, high_open = _RANGES.get(name, (None, None, False, False))
  check_range(name, value, low, high, low_open=low_open, high_open=high_open,
              where=where)


def static_int(name: str, value: Any, where: str = "", minimum: int = 0) -> int:
  """``value`` as a Python int >= ``minimum``, for an argument that fixes the
  program or the state's shapes (so it cannot be a traced value).

  Python and NumPy integers and concrete 0-d integer arrays are accepted (what
  ``optax.inject_hyperparams`` passes outside ``jit``). A traced value is a
  ``TypeError`` naming the argument and saying how to pass it as a static one;
  so is a value that is not an integer (a float, a string, a bool); an integer
  below ``minimum`` is a ``ValueError``.
  """
  if not is_concrete(value):
    raise TypeError(
        f"{where}{name} is a traced value, but it fixes the program (which arrays"
        " are computed, and their shapes), so it must be a concrete integer. Pass"
        " it as a static argument: jax.jit(..., static_argnames=...) or"
        f" optax.inject_hyperparams(..., static_args=({name!r},)).")
  arr = None
  if not isinstance(value, (bool, np.bool_)):
    try:
      arr = np.asarray(value)
    except Exception:  # pylint: disable=broad-except
      arr = None
  if arr is None or arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f"{where}{name}={value!r} must be an integer >= {minimum};"
                    f" got {type(value).__name__}, pass an int.")
  if int(arr) < minimum:
    raise ValueError(f"{where}{name}={value!r} must be an integer >= {minimum}.")
  return int(arr)


def check_positive_int(name: str, value: Any, where: str = "") -> int:
  """``value`` as an int; raise unless it is an integer >= 1 (see :func:`static_int`)."""
  return static_int(name, value, where, 1)


def check_choice(name: str, value: Any, choices: tuple[Any, ...], where: str = "") -> None:
  """Raise unless ``value`` is one of ``choices``."""
  if (choices and all(isinstance(c, str) for c in choices)
      and not isinstance(value, str)):
    raise TypeError(f"{where}{name}={value!r} must be a string, one of {choices!r}.")
  if value not in choices:
    raise ValueError(f"{where}{name}={value!r} is not one of {choices!r}.")


def check_flag(where: str, **flags: Any) -> None:
  """Raise ``TypeError`` unless every keyword's value is a bool (``True`` or
  ``False``, NumPy bools too): a flag that is a string or a number is a mistake,
  never read as truthy."""
  for name, value in flags.items():
    if not isinstance(value, (bool, np.bool_)):
      raise TypeError(f"{where}{name}={value!r} must be True or False.")


Validator = Callable[[str, Any], None]
