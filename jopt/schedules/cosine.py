"""Cosine schedules: cosine decay, warmup + decay, SGDR, and torch's warm restarts."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import jax.numpy as jnp

from jopt.schedules._common import (as_step, as_value, check_nonneg_int, check_positive_int,
                                    check_value, float_dtype, raise_to)
from jopt.schedules.basic import Schedule, _exponential, _join, _polynomial

__all__ = ["cosine_decay_schedule", "warmup_cosine_decay_schedule",
           "warmup_exponential_decay_schedule", "sgdr_schedule",
           "cosine_warm_restarts_schedule"]


def _cosine(where, init_value, decay_steps, alpha, exponent):
  check_value("init_value", init_value, where)
  steps = check_positive_int("decay_steps", decay_steps, where)
  check_value("alpha", alpha, where)
  check_value("exponent", exponent, where, 0.0, low_open=True)

  def schedule(step):
    n, _ = as_step(step)
    done = jnp.clip(n, 0, steps).astype(float_dtype())
    half_cos = 0.5 * (1 + jnp.cos(jnp.pi * done / steps))
    a = as_value(alpha)
    return as_value(init_value) * ((1 - a) * raise_to(half_cos, exponent) + a)

  return schedule


def cosine_decay_schedule(
    init_value: float,
    decay_steps: int,
    alpha: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
  r"""Cosine decay from ``init_value`` to ``alpha * init_value``, then constant.

  .. math::
    c_t = \tfrac12\left(1 + \cos\frac{\pi \min(t, T)}{T}\right),\qquad
    v_t = I\left((1 - \alpha)\, c_t^{\,p} + \alpha\right)

  with :math:`I` = ``init_value``, :math:`T` = ``decay_steps``, :math:`p` =
  ``exponent``.

  ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max, eta_min)`` equals
  ``cosine_decay_schedule(base_lr, T_max, alpha=eta_min / base_lr)`` for steps
  :math:`0 \le t \le T_{max}`. After ``T_max`` torch keeps following the cosine
  (the value rises back towards ``base_lr`` over the next ``T_max`` steps); this
  schedule, like optax, stays at :math:`\alpha I`.

  Args:
    init_value: the value at step 0.
    decay_steps: the length :math:`T \ge 1` of the decay.
    alpha: the final value as a fraction of ``init_value`` (any finite number;
      0 decays to zero).
    exponent: :math:`p > 0`, applied to the half-cosine; values above 1 decay
      faster early on.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.cosine_decay_schedule(1e-3, decay_steps=10_000, alpha=0.1)
    >>> # halfway, c = 1/2: 1e-3 * (0.9 * 0.5 + 0.1); from step 10_000 on, alpha * 1e-3
    >>> [round(float(v), 8) for v in sched(jnp.array([0, 5_000, 10_000, 20_000]))]
    [0.001, 0.00055, 0.0001, 0.0001]

  Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
  Restarts*, ICLR 2017; ``optax.cosine_decay_schedule``.
  """
  return _cosine("cosine_decay_schedule: ", init_value, decay_steps, alpha, exponent)


def _with_warmup(where, init_value, peak_value, warmup_steps, after):
  """``after`` preceded by a linear warmup from ``init_value`` of ``warmup_steps`` steps."""
  check_value("init_value", init_value, where)
  check_value("peak_value", peak_value, where)
  warmup = check_nonneg_int("warmup_steps", warmup_steps, where)
  if warmup == 0:
    return after
  ramp = _polynomial(where, init_value, peak_value, 1, warmup, 0)
  return _join([ramp, after], [warmup])


def _warmup_cosine(where, init_value, peak_value, warmup_steps, decay_steps, end_value,
                   exponent):
  check_value("end_value", end_value, where)
  warmup = check_nonneg_int("warmup_steps", warmup_steps, where)
  steps = check_positive_int("decay_steps", decay_steps, where)
  if steps <= warmup:
    raise ValueError(
        f"{where}decay_steps={steps} must be > warmup_steps={warmup}: decay_steps is the"
        " total length of the schedule, warmup included.")
  check_value("peak_value", peak_value, where)
  try:
    alpha = 0.0 if float(peak_value) == 0.0 else float(end_value) / float(peak_value)
  except TypeError:  # traced values
    alpha = jnp.where(peak_value == 0, 0.0, end_value / jnp.where(peak_value == 0, 1, peak_value))
  decay = _cosine(where, peak_value, steps - warmup, alpha, exponent)
  return _with_warmup(where, init_value, peak_value, warmup, decay)


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value``.

  With :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (the *total*
  length, warmup included), :math:`P` = ``peak_value``, :math:`E` = ``end_value``
  and :math:`\alpha = E / P` (0 when :math:`P = 0`):

  .. math::
    v_t = \begin{cases}
      I + (P - I)\, t / W, & t < W \\
      P\left((1-\alpha)\, c^{\,p} + \alpha\right),\ \
      c = \tfrac12\left(1 + \cos\frac{\pi \min(t - W,\, D - W)}{D - W}\right), & t \ge W
    \end{cases}

  As in optax, ``end_value`` enters through :math:`\alpha = E/P`, so with
  ``peak_value=0`` the schedule is 0 after the warmup whatever ``end_value``.

  Args:
    init_value: the value at step 0.
    peak_value: the value at the end of the warmup.
    warmup_steps: the warmup length :math:`W \ge 0` (0: start at the peak).
    decay_steps: the total length :math:`D > W`; the cosine part lasts
      :math:`D - W` steps, after which the value stays at ``end_value``.
    end_value: the final value.
    exponent: :math:`p > 0`, applied to the half-cosine.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.warmup_cosine_decay_schedule(0.0, 1e-3, warmup_steps=500,
    ...                                           decay_steps=10_000, end_value=1e-5)
    >>> # halfway through the warmup; the peak; halfway through the cosine; the end
    >>> [round(float(v), 8) for v in sched(jnp.array([250, 500, 5_250, 10_000]))]
    [0.0005, 0.001, 0.000505, 1e-05]

  Reference: Loshchilov & Hutter, *SGDR*, ICLR 2017 (cosine); Goyal et al.,
  *Accurate, Large Minibatch SGD*, 2017 (linear warmup);
  ``optax.warmup_cosine_decay_schedule``.
  """
  return _warmup_cosine("warmup_cosine_decay_schedule: ", init_value, peak_value,
                        warmup_steps, decay_steps, end_value, exponent)


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
  r"""Linear warmup to ``peak_value``, then :func:`exponential_decay` from it.

  .. math::
    v_t = \begin{cases}
      I + (P - I)\, t / W, & t < W \\
      P\, r^{\,p_{t - W}},\ \ p_s = \max(s - B, 0) / T\ \
      (\text{floored when } \texttt{staircase}), & t \ge W
    \end{cases}

  clipped by ``end_value`` as in :func:`exponential_decay`.

  Args:
    init_value: the value at step 0.
    peak_value: the value at the end of the warmup.
    warmup_steps: the warmup length :math:`W \ge 0`.
    transition_steps: :math:`T \ge 1`, steps per factor of ``decay_rate``.
    decay_rate: :math:`r > 0`.
    transition_begin: :math:`B \ge 0`, steps held at ``peak_value`` after the
      warmup before the decay starts.
    staircase: decay once every ``transition_steps``.
    end_value: optional floor (``decay_rate < 1``) or ceiling (``> 1``),
      applied after the warmup.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.warmup_exponential_decay_schedule(
    ...     0.0, 1e-3, warmup_steps=100, transition_steps=1000, decay_rate=0.5)
    >>> [round(float(v), 8) for v in sched(jnp.array([50, 100, 1_100, 2_100]))]
    [0.0005, 0.001, 0.0005, 0.00025]

  Reference: ``optax.warmup_exponential_decay_schedule``.
  """
  where = "warmup_exponential_decay_schedule: "
  decay = _exponential(where, peak_value, transition_steps, decay_rate, transition_begin,
                       staircase, end_value)
  return _with_warmup(where, init_value, peak_value, warmup_steps, decay)


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
  r"""SGD with warm restarts: warmup-cosine cycles run one after another.

  Cycle :math:`k` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and
  lasts its ``decay_steps`` steps; cycle :math:`k` starts at
  :math:`\sum_{j<k} D_j` and counts steps from there. The last cycle holds its
  ``end_value`` after it ends.

  For torch's ``CosineAnnealingWarmRestarts`` (periods growing by ``T_mult``,
  restarting for ever) use :func:`cosine_warm_restarts_schedule`.

  Args:
    cosine_kwargs: a non-empty iterable of dicts of
      :func:`warmup_cosine_decay_schedule` arguments (``init_value``,
      ``peak_value``, ``warmup_steps``, ``decay_steps`` and optionally
      ``end_value``, ``exponent``).

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> cycle = dict(init_value=1e-3, peak_value=1e-3, warmup_steps=0,
    ...              decay_steps=1000, end_value=1e-5)
    >>> sched = jopt.sgdr_schedule([cycle] * 5)
    >>> # mid-cycle 1e-3 * (0.99 * 0.5 + 0.01); a restart at 1000; end_value after 5 cycles
    >>> [round(float(v), 8) for v in sched(jnp.array([0, 500, 1_000, 5_000]))]
    [0.001, 0.000505, 0.001, 1e-05]

  Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
  Restarts*, ICLR 2017; ``optax.sgdr_schedule``.
  """
  schedules, boundaries, start = [], [], 0
  for i, kwargs in enumerate(list(cosine_kwargs)):
    where = f"sgdr_schedule: cosine_kwargs[{i}]: "
    if not isinstance(kwargs, Mapping):
      raise TypeError(f"{where}each entry must be a dict of warmup_cosine_decay_schedule"
                       f" arguments, got {type(kwargs).__name__}.")
    known = ("init_value", "peak_value", "warmup_steps", "decay_steps", "end_value",
             "exponent")
    unknown = sorted(set(kwargs) - set(known))
    missing = [k for k in known[:4] if k not in kwargs]
    if unknown or missing:
      raise ValueError(f"{where}unknown keys {unknown}, missing keys {missing}; the keys are"
                       f" warmup_cosine_decay_schedule's arguments {list(known)}.")
    schedules.append(_warmup_cosine(
        where, kwargs["init_value"], kwargs["peak_value"], kwargs["warmup_steps"],
        kwargs["decay_steps"], kwargs.get("end_value", 0.0), kwargs.get("exponent", 1.0)))
    start += int(kwargs["decay_steps"])
    boundaries.append(start)
  if not schedules:
    raise ValueError("sgdr_schedule: cosine_kwargs must hold at least one cycle, got none.")
  return _join(schedules, boundaries[:-1])


def cosine_warm_restarts_schedule(
    init_value: float,
    first_period: int,
    period_mult: int = 1,
    min_value: float = 0.0,
) -> Schedule:
  r"""Cosine annealing with warm restarts, exactly as torch's ``CosineAnnealingWarmRestarts``.

  Periods have lengths :math:`T_k = T_0 m^k`; cycle :math:`k` starts at
  :math:`S_k = \sum_{j<k} T_j`. At step :math:`t` in cycle :math:`k`, with
  :math:`\tau = t - S_k \in [0, T_k)`:

  .. math::
    v_t = \eta_{min} + \tfrac12 (\eta_{max} - \eta_{min})
          \left(1 + \cos\frac{\pi \tau}{T_k}\right)

  The value restarts at :math:`\eta_{max}` at every :math:`S_k` and never quite
  reaches :math:`\eta_{min}` (the last step of a cycle is :math:`\tau = T_k - 1`).
  Names map to torch's as ``init_value`` = the optimizer's lr (:math:`\eta_{max}`),
  ``first_period`` = ``T_0``, ``period_mult`` = ``T_mult``, ``min_value`` =
  ``eta_min``; the value at step :math:`t` is torch's lr after :math:`t` calls to
  ``scheduler.step()``. The cycle is found with integer arithmetic (torch's
  ``step()`` recursion, not its floating-point ``log`` formula), so restarts land
  on the exact step for every step count.

  Args:
    init_value: :math:`\eta_{max}`, the value at each restart.
    first_period: :math:`T_0 \ge 1`, the length of the first cycle.
    period_mult: :math:`m`, an integer >= 1; each cycle is :math:`m` times longer
      than the one before.
    min_value: :math:`\eta_{min}`, the value the cosine tends to.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.cosine_warm_restarts_schedule(0.1, first_period=10, period_mult=2)
    >>> # restarts at 10, 30, 70, ...; step 9 is 0.05 (1 + cos(0.9 pi)); step 20 is halfway
    >>> [round(float(v), 4) for v in sched(jnp.array([0, 9, 10, 20, 30]))]
    [0.1, 0.0024, 0.1, 0.05, 0.1]

  Reference: Loshchilov & Hutter, *SGDR: Stochastic Gradient Descent with Warm
  Restarts*, ICLR 2017; ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``.
  """
  where = "cosine_warm_restarts_schedule: "
  check_value("init_value", init_value, where)
  t0 = check_positive_int("first_period", first_period, where)
  mult = check_positive_int("period_mult", period_mult, where)
  check_value("min_value", min_value, where)
  starts, periods = [0], [t0]
  if mult > 1:
    while starts[-1] + periods[-1] < 2 ** 63:
      starts.append(starts[-1] + periods[-1])
      periods.append(periods[-1] * mult)

  def schedule(step):
    n, _ = as_step(step)
    n = jnp.maximum(n, 0)
    dt = float_dtype()
    if mult == 1:
      tau, period = jnp.remainder(n, t0).astype(dt), jnp.asarray(t0, dt)
    else:
      limit = jnp.iinfo(n.dtype).max if jnp.issubdtype(n.dtype, jnp.integer) else 2 ** 63
      k_max = sum(1 for s in starts if s <= limit)
      s_arr = jnp.asarray(starts[:k_max], n.dtype)
      k = jnp.zeros(n.shape, jnp.int32)
      for s in starts[1:k_max]:
        k = k + (n >= s).astype(jnp.int32)
      tau = (n - s_arr[k]).astype(dt)
      period = jnp.asarray([float(p) for p in periods[:k_max]], dt)[k]
    lo, hi = as_value(min_value), as_value(init_value)
    return lo + (hi - lo) * (1 + jnp.cos(jnp.pi * tau / period)) / 2

  return schedule
