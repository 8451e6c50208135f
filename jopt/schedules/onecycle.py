"""One-cycle schedules (optax's conventions): up to a peak, down far below the start."""

from __future__ import annotations

import jax.numpy as jnp

from jopt.schedules._common import as_step, as_value, check_positive_int, check_value, float_dtype
from jopt.schedules.basic import Schedule

__all__ = ["cosine_onecycle_schedule", "linear_onecycle_schedule"]


def _linear(start, end, pct):
  return (end - start) * pct + start


def _cosine(start, end, pct):
  return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


def _interpolated(interp, bounds, values):
  """Interpolate ``values[i] -> values[i+1]`` over ``[bounds[i], bounds[i+1])``, then hold.

  ``bounds`` are non-decreasing integer steps starting at 0; ``values`` are
  callables returning 0-d arrays (evaluated at call time, in the call's dtype).
  """

  def schedule(step):
    n, _ = as_step(step)
    n = jnp.maximum(n, 0)
    vals = [v() for v in values]
    out = jnp.broadcast_to(vals[-1], n.shape)
    for i in range(len(bounds) - 2, -1, -1):
      lo, hi = bounds[i], bounds[i + 1]
      if hi <= lo:
        continue  # an empty phase
      pct = (n - lo).astype(float_dtype()) / (hi - lo)
      out = jnp.where(n < hi, interp(vals[i], vals[i + 1], pct), out)
    return out

  return schedule


def _check_common(where, transition_steps, peak_value, pct_start, div_factor,
                  final_div_factor):
  steps = check_positive_int("transition_steps", transition_steps, where)
  check_value("peak_value", peak_value, where)
  check_value("pct_start", pct_start, where, 0.0, 1.0, low_open=True, high_open=True)
  check_value("div_factor", div_factor, where, 0.0, low_open=True)
  check_value("final_div_factor", final_div_factor, where, 0.0, low_open=True)
  return steps


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  r"""One cycle with cosine phases: up to ``peak_value``, then down to a tiny final value.

  With :math:`T` = ``transition_steps``, :math:`a = \lfloor \text{pct\_start}\cdot T\rfloor`,
  :math:`v_0 = P/\text{div\_factor}`, :math:`v_{end} = v_0/\text{final\_div\_factor}`
  and :math:`\kappa(x, y, u) = y + \tfrac12 (x - y)(1 + \cos \pi u)`:

  .. math::
    v_t = \begin{cases}
      \kappa(v_0, P, t/a), & 0 \le t < a \\
      \kappa(P, v_{end}, (t - a)/(T - a)), & a \le t < T \\
      v_{end}, & t \ge T
    \end{cases}

  This is optax's convention. ``torch.optim.lr_scheduler.OneCycleLR`` (with
  ``anneal_strategy="cos"``) reaches the peak at step ``pct_start * total_steps - 1``
  (not floored), ends at ``total_steps - 1`` and also cycles momentum, so its
  values are close but not equal.

  Args:
    transition_steps: the cycle length :math:`T \ge 1`.
    peak_value: :math:`P`, the value at step :math:`a`.
    pct_start: the fraction of the cycle spent rising, in (0, 1).
    div_factor: :math:`> 0`; the start value is ``peak_value / div_factor``.
    final_div_factor: :math:`> 0`; the final value is the start value divided by it.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.cosine_onecycle_schedule(1000, peak_value=0.1)
    >>> # 0.1 / 25 at the start, the peak at step 300, 0.1 / 25 / 1e4 at the end
    >>> [round(float(v), 8) for v in sched(jnp.array([0, 150, 300, 1000]))]
    [0.004, 0.052, 0.1, 4e-07]

  Reference: Smith & Topin, *Super-Convergence: Very Fast Training of Neural
  Networks Using Large Learning Rates*, 2018; ``optax.cosine_onecycle_schedule``.
  """
  where = "cosine_onecycle_schedule: "
  steps = _check_common(where, transition_steps, peak_value, pct_start, div_factor,
                        final_div_factor)
  up = int(pct_start * steps)
  start = lambda: as_value(peak_value) / as_value(div_factor)
  return _interpolated(_cosine, [0, up, steps], [
      start, lambda: as_value(peak_value), lambda: start() / as_value(final_div_factor)])


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
  r"""One cycle with linear phases: up to the peak, back to the start, then far below.

  With :math:`T` = ``transition_steps``, :math:`a = \lfloor \text{pct\_start}\cdot T\rfloor`,
  :math:`b = \lfloor \text{pct\_final}\cdot T\rfloor`, :math:`v_0 = P/\text{div\_factor}`
  and :math:`v_{end} = v_0/\text{final\_div\_factor}`, the value moves linearly
  :math:`v_0 \to P` over :math:`[0, a)`, :math:`P \to v_0` over :math:`[a, b)`,
  :math:`v_0 \to v_{end}` over :math:`[b, T)`, and stays at :math:`v_{end}` from
  :math:`T` on. This is optax's convention (torch's ``OneCycleLR`` with
  ``three_phase=True, anneal_strategy="linear"`` ends each phase one step earlier).

  Args:
    transition_steps: the cycle length :math:`T`; it must be long enough that
      :math:`a < b`.
    peak_value: :math:`P`, the value at step :math:`a`.
    pct_start: the fraction of the cycle spent rising, in (0, 1).
    pct_final: the fraction at which the value is back at :math:`v_0`, in
      (pct_start, 1).
    div_factor: :math:`> 0`; the start value is ``peak_value / div_factor``.
    final_div_factor: :math:`> 0`; the final value is the start value divided by it.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.linear_onecycle_schedule(1000, peak_value=0.1)
    >>> [round(float(v), 8) for v in sched(jnp.array([0, 150, 300, 850, 1000]))]
    [0.004, 0.052, 0.1, 0.004, 4e-07]

  Reference: Smith & Topin, *Super-Convergence: Very Fast Training of Neural
  Networks Using Large Learning Rates*, 2018; ``optax.linear_onecycle_schedule``.
  """
  where = "linear_onecycle_schedule: "
  steps = _check_common(where, transition_steps, peak_value, pct_start, div_factor,
                        final_div_factor)
  check_value("pct_final", pct_final, where, 0.0, 1.0, low_open=True, high_open=True)
  if not pct_final > pct_start:
    raise ValueError(f"{where}pct_final={pct_final!r} must be > pct_start={pct_start!r}.")
  up, back = int(pct_start * steps), int(pct_final * steps)
  if back <= up:
    raise ValueError(
        f"{where}transition_steps={steps} is too short for pct_start={pct_start!r} and"
        f" pct_final={pct_final!r}: the peak step int(pct_start * transition_steps) ="
        f" {up} must be < int(pct_final * transition_steps) = {back}.")
  start = lambda: as_value(peak_value) / as_value(div_factor)
  return _interpolated(_linear, [0, up, back, steps], [
      start, lambda: as_value(peak_value), start,
      lambda: start() / as_value(final_div_factor)])
