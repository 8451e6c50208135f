"""Hyperparameters that live in optimizer state, so changing them never recompiles.

Every jopt optimizer keeps its numeric hyperparameters (learning rate, betas,
weight decay, ...) as 0-d arrays in ``state.hyperparams``. A value given as a
schedule ``step -> value`` is re-evaluated at each update and the result stored,
so ``hyperparams(state)`` always reports the values used by the latest step.

  >>> tx = jopt.adam(1e-3)
  >>> state = tx.init({"w": jnp.zeros(3)})
  >>> state = jopt.set_hyperparams(state, learning_rate=3e-4)   # no retrace
  >>> print(round(float(jopt.hyperparams(state)["learning_rate"]), 6))
  0.0003
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt._core.tree import unwrap_variables

__all__ = ["state_class", "scheduled_class", "HyperSpec", "hyperparams", "set_hyperparams", "is_jopt_state"]

_STATE_CLASSES: set[type] = set()
_SCHEDULED_CLASSES: dict[tuple[type, frozenset[str]], type] = {}


def state_class(name: str, slots: tuple[str, ...], doc: str = "") -> type:
  """Create ``<Name>State(count, hyperparams, *slots)``, a registered NamedTuple.

  ``count`` is an int32 step counter, ``hyperparams`` a dict of 0-d arrays and
  each slot a pytree shaped like the parameters (or any arrays the optimizer keeps).
  """
  fields = [("count", jax.Array), ("hyperparams", dict)] + [(s, Any) for s in slots]
  cls = NamedTuple(name, fields)
  cls.__doc__ = doc or f"State of a jopt transform: count, hyperparams, {', '.join(slots)}."
  cls.__module__ = "jopt"
  cls._jopt_scheduled = frozenset()
  _STATE_CLASSES.add(cls)
  return cls


def scheduled_class(cls: type, scheduled: frozenset[str]) -> type:
  """``cls``, or its subclass that records which hyperparameters a schedule drives.

  The names are static facts about the transform, so they live in the state's
  *type* (part of its pytree structure, like a treedef), never in its leaves:
  the state stays a tuple of arrays that ``jit``, ``flax.serialization`` and
  orbax accept, and ``isinstance(state, cls)`` holds. :func:`set_hyperparams`
  reads them to refuse writes that the next update would silently overwrite.
  """
  if not scheduled:
    return cls
  key = (cls, frozenset(scheduled))
  if key not in _SCHEDULED_CLASSES:
    sub = type(cls.__name__, (cls,), {
        "__slots__": (), "__module__": cls.__module__, "__doc__": cls.__doc__,
        "_jopt_scheduled": frozenset(scheduled)})
    _STATE_CLASSES.add(sub)
    _SCHEDULED_CLASSES[key] = sub
  return _SCHEDULED_CLASSES[key]


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
    self.scheduled = frozenset(k for k, v in self.values.items() if validate.is_schedule(v))

  def state_type(self, cls: type) -> type:
    """The state class for this spec: ``cls``, marked with the scheduled names."""
    return scheduled_class(cls, self.scheduled)

  def init(self) -> dict[str, jax.Array]:
    """Values at step 0 as non-weak 0-d arrays."""
    dt = hyper_dtype()
    return {
        k: jnp.asarray(validate.real_value(v(0) if validate.is_schedule(v) else v), dtype=dt)
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
      elif not validate.is_concrete(v):
        # A traced value given to the factory (optax.inject_hyperparams rebuilds
        # the optimizer at every update with its current values): it is the
        # caller's live value, so it wins over the stored copy.
        out[k] = jnp.asarray(validate.real_value(v)).astype(stored[k].dtype)
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
    >>> state = jopt.adam(1e-3).init({"w": jnp.zeros(3)})
    >>> hp = jopt.hyperparams(state)
    >>> sorted(hp)
    ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
    >>> print(round(float(hp["b1"]), 6), hp["b1"].dtype)   # float64 under jax_enable_x64
    0.9 float32
    >>> chain = optax.chain(jopt.add_decayed_weights(1e-4), jopt.sgd(0.1))
    >>> print(round(float(jopt.hyperparams(chain.init({"w": jnp.zeros(3)}))["weight_decay"]), 6))
    0.0001
  """
  out: dict[str, jax.Array] = {}
  for s in _find(state):
    for k, v in s.hyperparams.items():
      if k in out:
        raise ValueError(
            f"two transforms in this state both hold a hyperparameter named {k!r};"
            " pass the sub-state of the one you mean (e.g. state[0])."
        )
      out[k] = unwrap_variables(v)  # nnx.Optimizer's opt_state wraps leaves in OptArray
  return out


def set_hyperparams(state: Any, **values: Any) -> Any:
  """Return ``state`` with the named hyperparameters replaced.

  The new values keep the stored dtype and shape, so a jitted train step that
  takes the state is not retraced. Any real number or real 0-d array (float16,
  bfloat16, ..., or a traced value inside ``jit``) is accepted.

  A hyperparameter driven by a schedule cannot be set: the schedule overwrites
  it at every update, so the write would be lost. To take manual control, build
  the optimizer with a number for that argument (``set_hyperparams`` then
  changes it freely); to change the curve, build it with another schedule.

  Raises:
    ValueError: an unknown name, a name two transforms hold, a value outside
      the accepted range, or a schedule-driven name.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = jopt.adam(1e-3)
    >>> traces = []
    >>> @jax.jit
    ... def step(grads, state):
    ...   traces.append(1)   # runs once per trace
    ...   return tx.update(grads, state)
    >>> state = tx.init(params)
    >>> state = jopt.set_hyperparams(state, learning_rate=0.1, b2=0.98)
    >>> updates, state = step({"w": jnp.array([0.5, -1.0])}, state)   # uses lr = 0.1
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.1  0.1]
    >>> state = jopt.set_hyperparams(state, learning_rate=0.01)   # same dtype: no retrace
    >>> updates, state = step({"w": jnp.array([0.5, -1.0])}, state)
    >>> print(np.asarray(updates["w"]).round(4), len(traces))
    [-0.01  0.01] 1
    >>> jopt.set_hyperparams(jopt.adam(optax.linear_schedule(1.0, 0.0, 10)).init(params),
    ...                      learning_rate=0.1)
    Traceback (most recent call last):
    ...
    ValueError: set_hyperparams: 'learning_rate' of this AdamState is driven by the schedule ...
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
    owner = owners[0]
    if k in type(owner)._jopt_scheduled:
      raise ValueError(
          f"set_hyperparams: {k!r} of this {type(owner).__name__} is driven by the"
          f" schedule given as {k}= when the optimizer was built; the schedule"
          " overwrites it at every update, so the value set here would be lost."
          f" Build the optimizer with a number for {k} to set it by hand, or with"
          " another schedule to change its curve."
      )
    validate.check_hyperparam(k, v, "set_hyperparams: ")

  def replace(x):
    if not is_jopt_state(x):
      return x
    new = dict(x.hyperparams)
    for k, v in values.items():
      if k in new:
        old = new[k]
        new[k] = jnp.asarray(validate.real_value(v)).astype(old.dtype).reshape(old.shape)
    return x._replace(hyperparams=new)

  return jax.tree.map(replace, state, is_leaf=is_jopt_state)


ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]
