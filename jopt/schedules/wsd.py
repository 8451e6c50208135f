"""Warmup-stable-decay (WSD): linear warmup, a constant plateau, then a short cool-down."""

from __future__ import annotations

import jax.numpy as jnp

from jopt.schedules._common import (as_step, as_value, check_choice, check_nonneg_int,
                                    check_positive_int, check_value, float_dtype)
from jopt.schedules.basic import Schedule

__all__ = ["warmup_stable_decay_schedule"]

_DECAYS = ("linear", "cosine", "1-sqrt", "inverse_sqrt")


def _shape(decay_type, s):
  """The cool-down shape ``g(s)``: 1 at ``s = 0``, 0 at ``s = 1``, non-increasing."""
  if decay_type == "linear":
    return 1 - s
  if decay_type == "cosine":
    return (1 + jnp.cos(jnp.pi * s)) / 2
  if decay_type == "1-sqrt":
    return 1 - jnp.sqrt(s)
  return 2 / jnp.sqrt(1 + 3 * s) - 1  # inverse_sqrt


def warmup_stable_decay_schedule(
    peak_value: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
    decay_type: str = "linear",
) -> Schedule:
  r"""Warmup-stable-decay: linear warmup, a long plateau at the peak, then a cool-down.

  With :math:`W` = ``warmup_steps``, :math:`S` = ``stable_steps``, :math:`D` =
  ``decay_steps``, :math:`I` = ``init_value``, :math:`P` = ``peak_value``,
  :math:`E` = ``end_value`` and :math:`s = (t - W - S) / D`:

  .. math::
    v_t = \begin{cases}
      I + (P - I)\, t / W, & 0 \le t < W \\
      P, & W \le t \le W + S \\
      E + (P - E)\, g(s), & W + S < t < W + S + D \\
      E, & t \ge W + S + D
    \end{cases}

  where the cool-down shape :math:`g` (:math:`g(0) = 1`, :math:`g(1) = 0`,
  non-increasing) is chosen by ``decay_type``:

  * ``"linear"``: :math:`g(s) = 1 - s`;
  * ``"cosine"``: :math:`g(s) = \tfrac12(1 + \cos \pi s)`;
  * ``"1-sqrt"``: :math:`g(s) = 1 - \sqrt{s}` (the cool-down of Hägele et al.,
    which falls fastest at its start);
  * ``"inverse_sqrt"``: :math:`g(s) = 2/\sqrt{1 + 3s} - 1`, the reciprocal square
    root :math:`1/\sqrt{1 + 3s}` (which halves over the cool-down) mapped
    affinely so that it runs from :math:`P` at :math:`s = 0` to exactly
    :math:`E` at :math:`s = 1`.

  The plateau means the run can be extended (or checkpointed and cooled down
  from any point) without committing to a total length, unlike cosine decay.
  The value at the first and last step of each phase is exact: :math:`I` at
  step 0, :math:`P` from :math:`W` to :math:`W + S`, :math:`E` from
  :math:`W + S + D` on.

  Args:
    peak_value: :math:`P`, the plateau value.
    warmup_steps: :math:`W \ge 0`, the linear warmup length (0: start at the peak).
    stable_steps: :math:`S \ge 0`, the plateau length.
    decay_steps: :math:`D \ge 1`, the cool-down length.
    init_value: :math:`I`, the value at step 0.
    end_value: :math:`E`, the value at the end of the cool-down and after it.
    decay_type: ``"linear"``, ``"cosine"``, ``"1-sqrt"`` or ``"inverse_sqrt"``.

  Returns:
    A schedule ``step -> value``.

  Example:
    >>> sched = jopt.warmup_stable_decay_schedule(
    ...     3e-4, warmup_steps=2_000, stable_steps=80_000, decay_steps=18_000,
    ...     decay_type="1-sqrt")
    >>> # mid-warmup, the plateau, mid-cool-down (1 - sqrt(1/2)) * 3e-4, the end
    >>> [round(float(v), 9) for v in sched(jnp.array([1_000, 50_000, 91_000, 100_000]))]
    [0.00015, 0.0003, 8.7868e-05, 0.0]

  Reference: Hu et al., *MiniCPM: Unveiling the Potential of Small Language
  Models with Scalable Training Strategies*, 2024; Hägele et al., *Scaling Laws
  and Compute-Optimal Training Beyond Fixed Training Durations*, NeurIPS 2024.
  """
  where = "warmup_stable_decay_schedule: "
  check_value("peak_value", peak_value, where)
  warmup = check_nonneg_int("warmup_steps", warmup_steps, where)
  stable = check_nonneg_int("stable_steps", stable_steps, where)
  decay = check_positive_int("decay_steps", decay_steps, where)
  check_value("init_value", init_value, where)
  check_value("end_value", end_value, where)
  check_choice("decay_type", decay_type, _DECAYS, where)
  cool = warmup + stable

  def schedule(step):
    n, _ = as_step(step)
    dt = float_dtype()
    init, peak, end = as_value(init_value), as_value(peak_value), as_value(end_value)
    k = jnp.clip(n - cool, 0, decay)
    cooled = end + (peak - end) * _shape(decay_type, k.astype(dt) / decay)
    out = jnp.where(k <= 0, peak, jnp.where(k >= decay, end, cooled))
    if warmup > 0:
      ramp = init + (peak - init) * (jnp.maximum(n, 0).astype(dt) / warmup)
      out = jnp.where(n < warmup, ramp, out)
    return out

  return schedule
