"""Hyperparameters that live in optimizer state, so changing them never recompiles.

Every jopt optimizer keeps its numeric hyperparameters (learning rate, betas,
weight decay, ...) as 0-d arrays in ``state.hyperparams``. A value given as a
schedule ``step -> value`` is re-evaluated at each update and the result stored,
so ``hyperparams(state)`` always reports the values used by the latest step.

  >>> tx = jopt.adam(1e-3)
  >>> state = tx.init(params)
  >>> state = jopt.set_hyperparams(state, learning_rate=3e-4)   # no retrace
  >>> jopt.hyperparams(state)["learning_rate"]
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jopt._core import validate

__all__ = ["state_class", "HyperSpec", "hyperparams", "set_hyperparams", "is_jopt_state"]

_STATE_CLASSES: set[type] = set()


def state_class(name: str, slots: tuple[str, ...], doc: str = "") -> type:
  """Create ``<Name>State(count, hyperparams, *slots)``, a registered NamedTuple.

  ``count`` is an int32 step counter, ``hyperparams`` a dict of 0-d arrays and
  each slot a pytree shaped like the parameters (or any arrays the optimizer keeps).
  """
  fields = [("count", jax.Array), ("hyperparams", dict)] + [(s, Any) for s in slots]
  cls = NamedTuple(name, fields)
  cls.__doc__ = doc or f"State of a jopt transform: count, hyperparams, {', '.join(slots)}."
  cls.__module__ = "jopt"
  _STATE_CLASSES.add(cls)
  return cls


def is_jopt_state(x: Any) -> bool:
  return type(x) in _STATE_CLASSES


def hyper_dtype() -> Any:
  """float64 when ``jax_enable_x64`` is on, else float32."""
  return jnp.result_type(float)


class HyperSpec:
  """The numeric hyperparameters of one transform: numbers or schedules.

  Values are validated at construction against :mod:`jopt._core.validate`.
  """

  def __init__(self, where: str, **values: Any):
    self.where = f"{where}: " if where else ""
    self.values = dict(values)
    for k, v in self.values.items():
      validate.check_hyperparam(k, v, self.where)

  def init(self) -> dict[str, jax.Array]:
    """Values at step 0 as non-weak 0-d arrays."""
    dt = hyper_dtype()
    return {
        k: jnp.asarray(v(0) if validate.is_schedule(v) else v, dtype=dt)
        for k, v in self.values.items()
    }

  def resolve(self, stored: Mapping[str, jax.Array], count: jax.Array) -> dict[str, jax.Array]:
    """The values for the step whose 0-based index is ``count``.

    Schedules are evaluated at ``count``; numbers come from state, so
    :func:`set_hyperparams` takes effect without a recompile.
    """
    out = {}
    for k, v in self.values.items():
      if validate.is_schedule(v):
        out[k] = jnp.asarray(v(count), dtype=stored[k].dtype)
      else:
        out[k] = stored[k]
    return out


def _find(state: Any) -> list[Any]:
  found = []

  def visit(x):
    if is_jopt_state(x):
      found.append(x)
    return x

  jax.tree.map(visit, state, is_leaf=is_jopt_state)
  return found


def hyperparams(state: Any) -> dict[str, jax.Array]:
  """The current numeric hyperparameters held anywhere in ``state``.

  Works on a single jopt optimizer state or on any pytree holding jopt states
  (an ``optax.chain`` state, a ``TrainState.opt_state``). Raises when two
  transforms in the tree hold the same name: pass the sub-state instead.

  Example:
    >>> jopt.hyperparams(jopt.adam(1e-3).init(params))["b1"]   # Array(0.9)
  """
  out: dict[str, jax.Array] = {}
  for s in _find(state):
    for k, v in s.hyperparams.items():
      if k in out:
        raise ValueError(
            f"two transforms in this state both hold a hyperparameter named {k!r};"
            " pass the sub-state of the one you mean (e.g. state[0])."
        )
      out[k] = v
  return out


def set_hyperparams(state: Any, **values: Any) -> Any:
  """Return ``state`` with the named hyperparameters replaced.

  The new values keep the stored dtype and shape, so a jitted train step that
  takes the state is not retraced. A hyperparameter driven by a schedule is
  overwritten by the schedule at the next update: change the schedule instead.

  Example:
    >>> state = jopt.set_hyperparams(state, learning_rate=1e-4, b2=0.98)
  """
  states = _find(state)
  known = {k for s in states for k in s.hyperparams}
  for k, v in values.items():
    if k not in known:
      raise ValueError(
          f"set_hyperparams: no hyperparameter named {k!r} in this state;"
          f" it holds {sorted(known)}."
      )
    owners = [s for s in states if k in s.hyperparams]
    if len(owners) > 1:
      raise ValueError(
          f"set_hyperparams: {len(owners)} transforms hold {k!r}; pass the"
          " sub-state of the one you mean."
      )
    validate.check_hyperparam(k, v, "set_hyperparams: ")

  def replace(x):
    if not is_jopt_state(x):
      return x
    new = dict(x.hyperparams)
    for k, v in values.items():
      if k in new:
        old = new[k]
        new[k] = jnp.asarray(v, dtype=old.dtype).reshape(old.shape)
    return x._replace(hyperparams=new)

  return jax.tree.map(replace, state, is_leaf=is_jopt_state)


ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]
