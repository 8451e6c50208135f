"""Cyclical learning rates (torch's ``CyclicLR``): triangular, triangular2, exp_range."""

from __future__ import annotations

import jax.numpy as jnp

from jopt.schedules._common import (as_step, as_value, check_choice, check_positive_int,
                                    check_value, float_dtype)
from jopt.schedules.basic import Schedule

__all__ = ["cyclic_schedule"]

_MODES = ("triangular", "triangular2", "exp_range")


def cyclic_schedule(
    base_value: float,
    max_value: float,
    step_size_up: int,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> Schedule:
  r"""A triangle wave between ``base_value`` and ``max_value`` (torch's ``CyclicLR``).

  With :math:`u` = ``step_size_up``, :math:`d` = ``step_size_down``, cycle
  length :math:`L = u + d`, cycle number :math:`c = \lfloor t / L\rfloor + 1`
  and position :math:`\tau = t - (c - 1) L`:

  .. math::
    h_t = \begin{cases} \tau / u, & \tau \le u \\ (L - \tau)/d, & \tau > u \end{cases}
    \qquad
    v_t = b + (m - b)\, h_t\, s_t

  with the amplitude scale :math:`s_t = 1` (``"triangular"``),
  :math:`2^{-(c-1)}` (``"triangular2"``, halved every cycle) or
  :math:`\gamma^{t}` (``"exp_range"``, decayed every step).

  The value at step :math:`t` equals torch's lr after :math:`t` calls to
  ``scheduler.step()`` (``CyclicLR(base_lr=b, max_lr=m, step_size_up=u,
  step_size_down=d, mode=mode, gamma=gamma)``). torch finds :math:`\tau` through
  the float :math:`1 + t/L - c`; here it is an exact integer, so the values agree
  to rounding (about :math:`10^{-16} c` relative in float64) and stay exact in
  float32 late in training. Momentum cycling (torch's ``cycle_momentum``) is not
  part of a learning-rate schedule: use a second ``cyclic_schedule`` from
  ``max_momentum`` to ``base_momentum`` for that. Custom ``scale_fn`` is not
  offered; compose schedules instead.

  Args:
    base_value: :math:`b`, the value at the start of every cycle.
    max_value: :math:`m`, the value at the top of the first cycle (the amplitude
      is :math:`m - b`; any finite value, though usually :math:`m > b`).
    step_size_up: :math:`u \ge 1`, steps from the bottom to the top of a cycle.
    step_size_down: :math:`d \ge 1`, steps from the top back down; ``None``
      means :math:`d = u`. torch accepts non-integer sizes; these must be ints.
    mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
    gamma: :math:`\gamma \in (0, 1]`, the per-step amplitude decay of
      ``"exp_range"`` (ignored by the other modes). torch accepts any value;
      :math:`\gamma > 1` would grow without bound.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.cyclic_schedule(1e-4, 1e-2, step_size_up=2000, mode="triangular2")
    >>> # the top of cycle 1 at 2000, its bottom at 4000, the top of cycle 2 (halved) at 6000
    >>> [round(float(v), 8) for v in sched(jnp.array([0, 1000, 2000, 4000, 6000]))]
    [0.0001, 0.00505, 0.01, 0.0001, 0.00505]

  Reference: Smith, *Cyclical Learning Rates for Training Neural Networks*,
  WACV 2017; ``torch.optim.lr_scheduler.CyclicLR``.
  """
  where = "cyclic_schedule: "
  check_value("base_value", base_value, where)
  check_value("max_value", max_value, where)
  up = check_positive_int("step_size_up", step_size_up, where)
  down = up if step_size_down is None else check_positive_int(
      "step_size_down", step_size_down, where)
  check_choice("mode", mode, _MODES, where)
  check_value("gamma", gamma, where, 0.0, 1.0, low_open=True)
  total = up + down

  def schedule(step):
    n, t = as_step(step)
    n = jnp.maximum(n, 0)
    dt = float_dtype()
    done_cycles = n // total
    tau = n - done_cycles * total
    height = jnp.where(tau <= up, tau.astype(dt) / up, (total - tau).astype(dt) / down)
    height = jnp.clip(height, 0, 1)   # an ulp over 1 if jit turns / into * (1 / .)
    lo = as_value(base_value)
    wave = (as_value(max_value) - lo) * height
    if mode == "triangular2":
      wave = wave * jnp.exp2(-done_cycles.astype(dt))
    elif mode == "exp_range":
      wave = wave * jnp.power(as_value(gamma), jnp.maximum(t, 0))
    return lo + wave

  return schedule
