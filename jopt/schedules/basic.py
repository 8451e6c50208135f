"""Basic schedules: constant, polynomial and linear ramps, exponential decay, steps, joins.

Each function returns a pure schedule ``step -> value`` with optax's name,
argument names, defaults and values. Where optax only logs a message for a
meaningless argument (a non-positive ``transition_steps``, a negative
``transition_begin``, a zero ``decay_rate``) and quietly returns something else,
these raise ``ValueError`` naming the argument and the accepted range.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt.schedules._common import (as_step, as_value, check_bool, check_nonneg_int,
                                    check_positive_int, check_value, float_dtype,
                                    raise_to)

__all__ = ["constant_schedule", "linear_schedule", "polynomial_schedule",
           "exponential_decay", "piecewise_constant_schedule", "join_schedules"]

Schedule = Callable[[Any], jax.Array]


def constant_schedule(value: float) -> Schedule:
  r"""A schedule that returns the same value at every step.

  .. math:: v_t = v

  Args:
    value: the value, a finite real number.

  Returns:
    A schedule ``step -> value``; the result has the shape of ``step`` and the
    default float dtype (optax returns ``value`` itself, unchanged).

  Example:
    >>> sched = jopt.constant_schedule(0.1)
    >>> print(round(float(sched(1000)), 6), sched(1000).dtype)   # float64 under jax_enable_x64
    0.1 float32
    >>> sched(jnp.arange(3)).shape   # the shape of the step
    (3,)

  Reference: ``optax.constant_schedule``.
  """
  check_value("value", value, "constant_schedule: ")

  def schedule(step):
    n, _ = as_step(step)
    return jnp.full(n.shape, value, float_dtype())

  return schedule


def _polynomial(where, init_value, end_value, power, transition_steps, transition_begin):
  check_value("init_value", init_value, where)
  check_value("end_value", end_value, where)
  check_value("power", power, where, 0.0, low_open=True)
  steps = check_positive_int("transition_steps", transition_steps, where)
  begin = check_nonneg_int("transition_begin", transition_begin, where)

  def schedule(step):
    n, _ = as_step(step)
    left = steps - jnp.clip(n - begin, 0, steps)   # integer: exactly 0 at the end
    # clip: under jit XLA may turn ``/ steps`` into ``* (1 / steps)``, off by an ulp
    frac = jnp.clip(left.astype(float_dtype()) / steps, 0, 1)
    init, end = as_value(init_value), as_value(end_value)
    return jnp.where(left >= steps, init, (init - end) * raise_to(frac, power) + end)

  return schedule


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""A polynomial ramp from ``init_value`` to ``end_value``, then constant.

  With :math:`I` = ``init_value``, :math:`E` = ``end_value``, :math:`P` =
  ``power``, :math:`B` = ``transition_begin``, :math:`T` = ``transition_steps``:

  .. math::
    v_t = (I - E)\left(1 - \frac{\min(\max(t - B, 0), T)}{T}\right)^{P} + E

  so :math:`v_t = I` for :math:`t \le B` and :math:`v_t = E` for :math:`t \ge B + T`.

  ``torch.optim.lr_scheduler.PolynomialLR(total_iters=T, power=P)`` is
  ``polynomial_schedule(base_lr, 0.0, P, T)``.

  Args:
    init_value: the value up to ``transition_begin``.
    end_value: the value from ``transition_begin + transition_steps`` on.
    power: the exponent :math:`P > 0` (1 is linear; 2 is quadratic, ...).
    transition_steps: the length :math:`T \ge 1` of the ramp. optax turns a
      value <= 0 into a constant schedule; this raises.
    transition_begin: steps :math:`B \ge 0` held at ``init_value`` first
      (optax replaces a negative value by 0; this raises).

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.polynomial_schedule(1.0, 0.01, power=2, transition_steps=100)
    >>> print(round(float(sched(50)), 6))   # (1 - 0.01) * 0.5**2 + 0.01
    0.2575
    >>> [round(float(v), 6) for v in sched(jnp.array([0, 100, 200]))]
    [1.0, 0.01, 0.01]

  Reference: ``optax.polynomial_schedule``.
  """
  return _polynomial("polynomial_schedule: ", init_value, end_value, power,
                     transition_steps, transition_begin)


def linear_schedule(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
  r"""A linear ramp from ``init_value`` to ``end_value``, then constant.

  .. math::
    v_t = (I - E)\left(1 - \frac{\min(\max(t - B, 0), T)}{T}\right) + E

  The :func:`polynomial_schedule` with ``power=1``.
  ``torch.optim.lr_scheduler.LinearLR(start_factor=a, end_factor=b,
  total_iters=T)`` is ``linear_schedule(a * base_lr, b * base_lr, T)``.

  Args:
    init_value: the value up to ``transition_begin``.
    end_value: the value from ``transition_begin + transition_steps`` on.
    transition_steps: the length :math:`T \ge 1` of the ramp (optax turns a
      value <= 0 into a constant; this raises).
    transition_begin: steps :math:`B \ge 0` held at ``init_value`` first.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> warmup = jopt.linear_schedule(0.0, 1e-3, transition_steps=1000)
    >>> [round(float(v), 8) for v in warmup(jnp.array([0, 250, 1000, 2000]))]
    [0.0, 0.00025, 0.001, 0.001]

  Reference: ``optax.linear_schedule``.
  """
  return _polynomial("linear_schedule: ", init_value, end_value, 1, transition_steps,
                     transition_begin)


def _exponential(where, init_value, transition_steps, decay_rate, transition_begin,
                 staircase, end_value):
  check_value("init_value", init_value, where)
  steps = check_positive_int("transition_steps", transition_steps, where)
  check_value("decay_rate", decay_rate, where, 0.0, low_open=True)
  begin = check_nonneg_int("transition_begin", transition_begin, where)
  staircase = check_bool("staircase", staircase, where)
  if end_value is not None:
    check_value("end_value", end_value, where)
  grows = float(decay_rate) > 1.0

  def schedule(step):
    n, _ = as_step(step)
    elapsed = jnp.maximum(n - begin, 0)
    if staircase:
      p = (elapsed // steps).astype(float_dtype())
    else:
      p = elapsed.astype(float_dtype()) / steps
    factor = jnp.power(as_value(decay_rate), p)
    if grows:  # keep 0 * factor finite when the factor overflows
      factor = jnp.minimum(factor, jnp.finfo(float_dtype()).max)
    value = as_value(init_value) * factor
    if end_value is not None:
      bound = jnp.minimum if grows else jnp.maximum
      value = bound(value, as_value(end_value))
    return value

  return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
  r"""Exponential decay, continuous or in steps, optionally bounded by ``end_value``.

  With :math:`I` = ``init_value``, :math:`r` = ``decay_rate``, :math:`B` =
  ``transition_begin``, :math:`T` = ``transition_steps``:

  .. math::
    p_t = \frac{\max(t - B, 0)}{T}\ \ (\text{floored when } \texttt{staircase}),
    \qquad v_t = I\, r^{p_t}

  then clipped from below by ``end_value`` when :math:`r < 1` (from above when
  :math:`r > 1`).

  torch equivalents: ``ExponentialLR(gamma)`` is
  ``exponential_decay(base_lr, 1, gamma)``; ``StepLR(step_size, gamma)`` is
  ``exponential_decay(base_lr, step_size, gamma, staircase=True)``.

  Args:
    init_value: the value up to ``transition_begin``.
    transition_steps: steps :math:`T \ge 1` per factor of ``decay_rate``
      (optax turns a value <= 0 into a constant; this raises).
    decay_rate: the factor :math:`r > 0` per ``transition_steps``; below 1
      decays, above 1 grows (optax turns 0 into a constant; this raises).
    transition_begin: steps :math:`B \ge 0` held at ``init_value`` first.
    staircase: decay once every ``transition_steps`` instead of continuously.
    end_value: optional bound: a floor when ``decay_rate < 1``, a ceiling when
      ``decay_rate > 1``. The floor also applies before ``transition_begin``.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.exponential_decay(0.1, transition_steps=30, decay_rate=0.1,
    ...                                staircase=True)   # torch StepLR(30, 0.1)
    >>> [round(float(v), 6) for v in sched(jnp.array([0, 29, 30, 65]))]   # 65: 0.1 * 0.1**2
    [0.1, 0.1, 0.01, 0.001]

  Reference: ``optax.exponential_decay``.
  """
  return _exponential("exponential_decay: ", init_value, transition_steps, decay_rate,
                      transition_begin, staircase, end_value)


def piecewise_constant_schedule(
    init_value: float,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
  r"""A step function: ``init_value`` times every scale whose boundary has been reached.

  .. math:: v_t = I \prod_{i:\ t \ge b_i} s_i

  ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)`` is
  ``piecewise_constant_schedule(base_lr, {m: gamma for m in milestones})``.

  Args:
    init_value: the value before the first boundary.
    boundaries_and_scales: a mapping ``{step b_i: scale s_i}``; from step
      :math:`b_i` on, the value is multiplied by :math:`s_i`. Steps are
      integers >= 0, scales finite and >= 0. ``None`` or ``{}`` gives a
      constant schedule.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.5})
    >>> [round(float(v), 6) for v in sched(jnp.array([99, 100, 200]))]   # 200: 1.0 * 0.1 * 0.5
    [1.0, 0.1, 0.05]

  Reference: ``optax.piecewise_constant_schedule``.
  """
  where = "piecewise_constant_schedule: "
  check_value("init_value", init_value, where)
  if boundaries_and_scales is None:
    boundaries_and_scales = {}
  if not isinstance(boundaries_and_scales, Mapping):
    raise TypeError(f"{where}boundaries_and_scales must be a mapping {{step: scale}},"
                     f" got {type(boundaries_and_scales).__name__}.")
  for b, s in boundaries_and_scales.items():
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
      raise TypeError(f"{where}boundaries_and_scales has the key {b!r}; its keys are"
                      " the steps where a scale applies, integers >= 0.")
    if b < 0:
      raise ValueError(f"{where}boundaries_and_scales has the key {b!r}; its keys are"
                       " the steps where a scale applies, integers >= 0.")
    check_value(f"boundaries_and_scales[{b!r}]", s, where, 0.0)
  items = sorted((int(b), s) for b, s in boundaries_and_scales.items())

  def schedule(step):
    n, _ = as_step(step)
    value = as_value(init_value)
    out = jnp.broadcast_to(value, n.shape)
    limit = jnp.iinfo(n.dtype).max if jnp.issubdtype(n.dtype, jnp.integer) else None
    for b, s in items:
      value = value * as_value(s)
      if limit is not None and b > limit:
        break  # a step of this dtype never reaches b
      out = jnp.where(n >= b, value, out)
    return out

  return schedule


def _check_boundaries(boundaries, n_schedules, where):
  boundaries = list(boundaries)
  if len(boundaries) != n_schedules - 1:
    raise ValueError(f"{where}boundaries must hold len(schedules) - 1 ="
                     f" {n_schedules - 1} steps, got {len(boundaries)}.")
  for i, b in enumerate(boundaries):
    check_nonneg_int(f"boundaries[{i}]", b, where)
  if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
    raise ValueError(f"{where}boundaries={boundaries} must be strictly increasing.")
  return [int(b) for b in boundaries]


def _join(schedules, boundaries):
  """Join without checks: ``schedules[i]`` runs on ``step - boundaries[i-1]``."""

  def schedule(step):
    n, _ = as_step(step)
    out = jnp.asarray(schedules[0](n), float_dtype())
    for b, sched in zip(boundaries, schedules[1:]):
      out = jnp.where(n < b, out, jnp.asarray(sched(n - b), float_dtype()))
    return out

  return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
  r"""Run schedules one after another, each counting steps from its own start.

  .. math::
    v_t = \sigma_k(t - b_{k-1}) \quad\text{for}\ b_{k-1} \le t < b_k
    \qquad (b_{-1} = 0,\ b_{K} = \infty)

  Args:
    schedules: a non-empty sequence of schedules ``step -> value`` (jopt's,
      optax's or any function of an integer array).
    boundaries: ``len(schedules) - 1`` strictly increasing integer steps >= 0;
      schedule ``k`` takes over at step ``boundaries[k - 1]`` and receives
      ``step - boundaries[k - 1]``.

  Returns:
    A schedule ``step -> value`` in the default float dtype.

  Example:
    >>> sched = jopt.join_schedules(
    ...     [jopt.linear_schedule(0.0, 1.0, 10), jopt.cosine_decay_schedule(1.0, 90)],
    ...     boundaries=[10])
    >>> # steps 0-9: the ramp; step 10 is the cosine's step 0, step 55 its step 45 (halfway)
    >>> [round(float(v), 6) for v in sched(jnp.array([0, 5, 10, 55, 100]))]
    [0.0, 0.5, 1.0, 0.5, 0.0]

  Reference: ``optax.join_schedules``.
  """
  where = "join_schedules: "
  schedules = list(schedules)
  if not schedules:
    raise ValueError(f"{where}schedules must hold at least one schedule, got none.")
  for i, s in enumerate(schedules):
    if not callable(s):
      raise TypeError(f"{where}schedules[{i}]={s!r} must be a schedule step -> value.")
  return _join(schedules, _check_boundaries(boundaries, len(schedules), where))
