"""Sparsity schedules: functions ``step -> sparsity`` for pruning.

Each returns the fraction of weights that should be zero at a step, a value in
``[0, 1)``, for a pruning transform to read. They follow the other schedules'
conventions (see ``jopt/schedules/_common.py``): arguments are checked when the
schedule is built, the step may be a Python int or an integer array (traced or
not, any shape), the result has the default float dtype, and every decision
about *when* the value changes is taken on the integer step, so it is exact.

A constant sparsity is :func:`jopt.constant_schedule`; a schedule of your own
(any function of the step) works wherever these do.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.validate import is_concrete
from jopt.schedules._common import (as_step, as_value, check_nonneg_int,
                                    check_positive_int, check_value, float_dtype,
                                    raise_to)

__all__ = ["polynomial_sparsity_schedule", "one_shot_sparsity_schedule",
           "iterative_sparsity_schedule"]

Schedule = Callable[[Any], jax.Array]


def _check_sparsity(name: str, value: Any, where: str) -> Any:
  """A sparsity must be a real number in [0, 1): a sparsity of 1 removes every weight.

  Returned as a Python float; a traced value (a schedule built inside ``jit``)
  passes unchecked and unchanged.
  """
  check_value(name, value, where, 0.0, 1.0, high_open=True)
  return float(value) if is_concrete(value) else value


def polynomial_sparsity_schedule(
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    *,
    initial_sparsity: float = 0.0,
    frequency: int = 1,
    power: float = 3,
) -> Schedule:
  r"""Gradual pruning: sparsity rises as a polynomial from ``initial`` to ``final``.

  With :math:`s_i` = ``initial_sparsity``, :math:`s_f` = ``final_sparsity``,
  :math:`t_0` = ``begin_step``, :math:`t_1` = ``end_step`` (so
  :math:`n\Delta t = t_1 - t_0`), :math:`\Delta t` = ``frequency`` and
  :math:`p` = ``power`` (3 in the paper):

  .. math::
    \tau_t = \begin{cases}
      t_0 & t < t_0 \\
      t_0 + \Delta t \left\lfloor \frac{t - t_0}{\Delta t} \right\rfloor & t_0 \le t < t_1 \\
      t_1 & t \ge t_1
    \end{cases}
    \qquad
    s_t = s_f + (s_i - s_f)\left(1 - \frac{\tau_t - t_0}{t_1 - t_0}\right)^{p}

  so :math:`s_t = s_i` up to :math:`t_0`, the value changes only at the mask
  updates :math:`t_0 + k\Delta t` and is held in between, and
  :math:`s_t = s_f` from :math:`t_1` on. It is non-decreasing in :math:`t`.
  When :math:`t_1 - t_0` is not a multiple of :math:`\Delta t` the last step
  is shorter: :math:`s_f` is still reached exactly at :math:`t_1` (TF Model
  Optimization's ``PolynomialDecay`` instead never prunes past the last
  multiple of the frequency before ``end_step``).

  Args:
    final_sparsity: :math:`s_f \in [0, 1)`, the sparsity from ``end_step`` on.
    begin_step: :math:`t_0 \ge 0`, the first step of the ramp (``s_i`` before).
    end_step: :math:`t_1 > t_0`, the step where ``final_sparsity`` is reached.
    initial_sparsity: :math:`s_i \in [0, s_f]`, the sparsity up to ``begin_step``.
    frequency: :math:`\Delta t \ge 1`, steps between mask updates.
    power: :math:`p > 0`, the exponent (the paper's 3; 1 is a linear ramp).

  Returns:
    A schedule ``step -> sparsity``.

  Example:
    >>> sched = jopt.polynomial_sparsity_schedule(0.9, begin_step=0, end_step=100)
    >>> print(round(float(sched(50)), 6))   # 0.9 + (0 - 0.9) * (1 - 0.5)**3
    0.7875
    >>> coarse = jopt.polynomial_sparsity_schedule(0.9, 0, 100, frequency=10)
    >>> bool(coarse(59) == coarse(50))   # held between mask updates
    True

  Reference: Zhu & Gupta, *To prune, or not to prune: exploring the efficacy
  of pruning for model compression*, ICLR Workshop 2018 (arXiv 2017), Eq. 1.
  """
  where = "polynomial_sparsity_schedule: "
  s_f = _check_sparsity("final_sparsity", final_sparsity, where)
  s_i = _check_sparsity("initial_sparsity", initial_sparsity, where)
  if is_concrete(s_i) and is_concrete(s_f) and s_i > s_f:
    raise ValueError(f"{where}initial_sparsity={s_i!r} is above final_sparsity={s_f!r};"
                     " sparsity only grows during pruning, so pass initial_sparsity <="
                     " final_sparsity.")
  begin = check_nonneg_int("begin_step", begin_step, where)
  end = check_nonneg_int("end_step", end_step, where)
  if end <= begin:
    raise ValueError(f"{where}end_step={end} must be greater than begin_step={begin};"
                     " for a single pruning step use one_shot_sparsity_schedule.")
  freq = check_positive_int("frequency", frequency, where)
  check_value("power", power, where, 0.0, low_open=True)
  span = end - begin

  def schedule(step):
    n, _ = as_step(step)
    # integer, exact; the comparison first so an unsigned step below begin cannot wrap
    elapsed = jnp.where(n >= begin, jnp.clip(n - begin, 0, span), 0)
    elapsed = jnp.where(elapsed >= span, span, (elapsed // freq) * freq)
    left = (span - elapsed).astype(float_dtype()) / span
    left = jnp.clip(left, 0, 1)   # jit may turn ``/ span`` into ``* (1 / span)``
    init, final = as_value(s_i), as_value(s_f)
    value = final + (init - final) * raise_to(left, power)
    return jnp.where(elapsed >= span, final, jnp.where(elapsed <= 0, init, value))

  return schedule


def one_shot_sparsity_schedule(sparsity: float, step: int) -> Schedule:
  r"""One-shot pruning: sparsity 0 before ``step``, ``sparsity`` from it on.

  .. math:: s_t = \begin{cases} 0 & t < t_p \\ s & t \ge t_p \end{cases}

  Args:
    sparsity: :math:`s \in [0, 1)`, the sparsity from ``step`` on.
    step: :math:`t_p \ge 0`, the step at which the weights are pruned.

  Returns:
    A schedule ``step -> sparsity``.

  Example:
    >>> sched = jopt.one_shot_sparsity_schedule(0.8, step=1000)
    >>> [round(float(v), 6) for v in sched(jnp.array([0, 999, 1000, 5000]))]
    [0.0, 0.0, 0.8, 0.8]

  Reference: the one-shot magnitude pruning baseline of Han et al., *Learning
  both Weights and Connections for Efficient Neural Networks*, NeurIPS 2015
  (prune once, then fine-tune), here without the fine-tuning, which is the
  training that follows ``step``.
  """
  where = "one_shot_sparsity_schedule: "
  s = _check_sparsity("sparsity", sparsity, where)
  at = check_nonneg_int("step", step, where)

  def schedule(t):
    n, _ = as_step(t)
    return jnp.where(n >= at, as_value(s), as_value(0.0))

  return schedule


def _round_targets(final_sparsity: Any, rounds: Any, where: str) -> list[float]:
  """The sparsity after each round: given, or geometric towards ``final_sparsity``."""
  if isinstance(final_sparsity, (Sequence, np.ndarray)) and not isinstance(final_sparsity,
                                                                           str):
    targets = [_check_sparsity(f"final_sparsity[{i}]", s, where)
               for i, s in enumerate(list(final_sparsity))]
    if not targets:
      raise ValueError(f"{where}final_sparsity=[] holds no round; pass a number or one"
                       " target sparsity per round.")
    if rounds is not None and check_positive_int("rounds", rounds, where) != len(targets):
      raise ValueError(f"{where}rounds={rounds} disagrees with the {len(targets)} per-round"
                       " targets in final_sparsity; pass rounds=None with a sequence.")
    for i in range(1, len(targets)):
      if is_concrete(targets[i]) and is_concrete(targets[i - 1]) and (
          targets[i] < targets[i - 1]):
        raise ValueError(f"{where}final_sparsity[{i}]={targets[i]!r} is below the round"
                         f" before it ({targets[i - 1]!r}); per-round targets must be"
                         " non-decreasing (pruned weights stay pruned).")
    return targets
  s_f = _check_sparsity("final_sparsity", final_sparsity, where)
  if rounds is None:
    raise ValueError(f"{where}rounds is required when final_sparsity is a number (the"
                     " number of prune -> fine-tune rounds); or pass final_sparsity as"
                     " a sequence of per-round targets.")
  r = check_positive_int("rounds", rounds, where)
  keep = 1.0 - s_f
  return [1.0 - keep ** (k / r) for k in range(1, r)] + [s_f]


def iterative_sparsity_schedule(
    final_sparsity: float | Sequence[float],
    rounds: int | None = None,
    round_steps: int | None = None,
    *,
    begin_step: int = 0,
) -> Schedule:
  r"""Iterative pruning: prune -> fine-tune rounds, each raising the sparsity.

  Round :math:`k = 1..R` starts at :math:`t_0 + (k-1)T` (``begin_step``,
  ``round_steps``), prunes to :math:`s_k` and fine-tunes for :math:`T` steps;
  :math:`s_R` is held after the last round.

  .. math::
    s_t = \begin{cases} 0 & t < t_0 \\
      s_{k(t)},\ \ k(t) = \min\left(\left\lfloor \frac{t - t_0}{T} \right\rfloor + 1,
      R\right) & t \ge t_0 \end{cases}
    \qquad s_k = 1 - (1 - s_f)^{k/R}

  The geometric targets remove the same fraction :math:`1 - (1-s_f)^{1/R}` of
  the *remaining* weights in every round, so each round's pruning is equally
  aggressive relative to what is left. Or pass ``final_sparsity`` as the list
  :math:`[s_1, \dots, s_R]` of per-round targets (non-decreasing).

  Args:
    final_sparsity: :math:`s_f \in [0, 1)`, the sparsity after the last round
      (reached exactly), or a sequence of per-round targets in ``[0, 1)``.
    rounds: :math:`R \ge 1`, the number of rounds; required with a number,
      ``None`` (or the sequence's length) with a sequence.
    round_steps: :math:`T \ge 1`, the steps of each round (prune, then
      fine-tune); required.
    begin_step: :math:`t_0 \ge 0`, the step of the first pruning.

  Returns:
    A schedule ``step -> sparsity``.

  Example:
    >>> sched = jopt.iterative_sparsity_schedule(0.875, rounds=3, round_steps=100)
    >>> # s_k = 1 - 0.125 ** (k / 3): half of the remaining weights go in every round
    >>> [round(float(v), 6) for v in sched(jnp.array([0, 100, 250, 10_000]))]
    [0.5, 0.75, 0.875, 0.875]
    >>> mine = jopt.iterative_sparsity_schedule([0.5, 0.8, 0.9], round_steps=100)
    >>> [round(float(v), 6) for v in mine(jnp.array([0, 150, 300]))]
    [0.5, 0.8, 0.9]

  Reference: Han et al., *Learning both Weights and Connections for Efficient
  Neural Networks*, NeurIPS 2015 (Sec. 3.3, iterative pruning and retraining;
  the paper picks each round's thresholds by hand per layer, here a global
  target per round). The geometric rate is that of Frankle & Carbin, *The
  Lottery Ticket Hypothesis*, ICLR 2019 (prune p% of the remaining weights per
  round).
  """
  where = "iterative_sparsity_schedule: "
  targets = _round_targets(final_sparsity, rounds, where)
  if round_steps is None:
    raise ValueError(f"{where}round_steps is required: the steps of each prune ->"
                     " fine-tune round (an integer >= 1).")
  length = check_positive_int("round_steps", round_steps, where)
  begin = check_nonneg_int("begin_step", begin_step, where)
  num = len(targets)

  def schedule(step):
    n, _ = as_step(step)
    started = n >= begin
    k = jnp.clip((jnp.maximum(n - begin, 0) // length) + 1, 1, num)
    k = jnp.where(started, k, 0)
    table = jnp.stack([as_value(0.0)] + [as_value(s) for s in targets])
    return table[k]

  return schedule
