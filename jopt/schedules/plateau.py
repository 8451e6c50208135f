"""Reduce on plateau: scale the updates down when a monitored metric stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jopt._core.tree import compute_dtype, safe_increment
from jopt.schedules._common import (check_choice, check_nonneg_int, check_value,
                                    float_dtype)

__all__ = ["reduce_on_plateau", "ReduceOnPlateauState"]

_INT32_MAX = 2 ** 31 - 1


class ReduceOnPlateauState(NamedTuple):
  """State of :func:`reduce_on_plateau`; every field is a 0-d array.

  Attributes:
    count: int32, the number of ``update`` calls (metrics seen), saturating.
    scale: float, the factor the updates are multiplied by; starts at 1.
    best: float, the best metric so far (``+inf`` in mode ``"min"`` and
      ``-inf`` in mode ``"max"`` before the first one).
    num_bad_epochs: int32, consecutive metrics without improvement (torch's
      ``num_bad_epochs``).
    cooldown_counter: int32, steps left in the cool-down after a reduction.
  """

  count: jax.Array
  scale: jax.Array
  best: jax.Array
  num_bad_epochs: jax.Array
  cooldown_counter: jax.Array


ReduceOnPlateauState.__module__ = "jopt"


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    mode: str = "min",
    cooldown: int = 0,
    min_scale: float = 0.0,
    eps: float = 1e-8,
    *,
    dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Multiply updates by a scale that drops by ``factor`` when a metric plateaus.

  Each ``update(updates, state, value=metric)`` is one call of torch's
  ``ReduceLROnPlateau.step(metric)`` and takes the same decisions. With the
  best metric :math:`\beta` (starting at :math:`+\infty` for ``mode="min"``),
  a metric :math:`x` is an improvement when

  .. math::
    \begin{array}{ll}
      x < \beta (1 - \theta) & \text{min, rel} \qquad x < \beta - \theta \quad \text{min, abs} \\
      x > \beta (1 + \theta) & \text{max, rel} \qquad x > \beta + \theta \quad \text{max, abs}
    \end{array}

  An improvement sets :math:`\beta = x` and the bad-step count :math:`n = 0`;
  otherwise :math:`n \mathrel{+}= 1`. During a cool-down the cool-down
  counter drops by one and :math:`n` is reset to 0. When :math:`n >`
  ``patience``:

  .. math::
    s' = \max(s\cdot f,\ s_{min}),\qquad s \leftarrow s' \ \text{if}\ s - s' > \epsilon

  and the cool-down counter is set to ``cooldown`` and :math:`n = 0` (even when
  :math:`s` did not change). The updates are multiplied by the *new* scale, so
  a decision taken from the metric passed with this update already applies to
  it (torch's lr after ``step(metric)`` is what the next optimizer step uses;
  pass the metric of the current parameters, e.g. the loss computed with these
  gradients or the latest validation loss).

  Conventions that differ from torch:

  * the scale is relative: the effective learning rate is ``base_lr * scale``,
    so torch's ``min_lr`` is ``min_scale * base_lr`` and torch's ``eps``
    (an absolute lr difference) is ``eps * base_lr`` here;
  * a NaN metric is, as in torch, never an improvement: it counts as a bad
    step, so a run of NaN metrics reduces the scale after ``patience`` steps.
    ``best`` only ever takes non-NaN metrics and ``scale`` only ever takes
    values of :math:`\max(s f, s_{min})`, so the state stays finite.
  * ``threshold`` is checked at construction: >= 0, and < 1 in ``"rel"`` mode
    (torch accepts any value; with ``threshold >= 1`` and ``mode="min"`` its
    first comparison is against :math:`\infty \cdot 0 = \mathrm{NaN}`). As in
    torch, ``"rel"`` mode with a negative best metric makes the bar *easier*
    to clear (:math:`\beta(1-\theta) > \beta`); use ``"abs"`` for metrics that
    can be negative.

  Unlike ``optax.contrib.reduce_on_plateau`` (which counts ``plateau_count ==
  patience`` and has no ``eps`` or ``mode``), this follows torch exactly:
  the scale drops on the ``patience + 1``-th bad step.

  Args:
    factor: :math:`f \in (0, 1)`, the multiplier applied at each reduction.
    patience: integer >= 0, bad steps tolerated before a reduction.
    threshold: :math:`\theta \ge 0` (and < 1 in ``"rel"`` mode), the margin an
      improvement must clear.
    threshold_mode: ``"rel"`` or ``"abs"``.
    mode: ``"min"`` (lower metric is better, e.g. a loss) or ``"max"``
      (higher is better, e.g. accuracy).
    cooldown: integer >= 0, steps after a reduction during which bad steps
      are not counted.
    min_scale: :math:`s_{min} \in [0, 1]`, the lowest scale.
    eps: :math:`\epsilon \ge 0`; a reduction smaller than this (in scale
      units) is skipped.
    dtype: dtype of ``scale`` and ``best`` (default: float32, or float64 under
      ``jax_enable_x64``, at ``init``). Updates are scaled in
      ``promote(update dtype, float32)`` and returned in their own dtype.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`ReduceOnPlateauState`; ``update`` needs the keyword ``value=``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = optax.chain(jopt.adam(1e-3), jopt.reduce_on_plateau(factor=0.5, patience=1))
    >>> state = tx.init(params)
    >>> scales = []
    >>> for val_loss in [1.0, 1.0, 1.0, 1.0]:   # the second bad step (> patience) halves
    ...   updates, state = tx.update(grads, state, params, value=val_loss)
    ...   scales.append(float(state[1].scale))   # the current multiplier of the learning rate
    >>> scales
    [1.0, 1.0, 0.5, 0.5]
    >>> print(np.asarray(updates["w"]).round(6))   # Adam's -1e-3 * sign(g), halved
    [-0.0005  0.0005]

  Reference: ``torch.optim.lr_scheduler.ReduceLROnPlateau``; the policy is the
  "reduce the learning rate when the validation error plateaus" practice of,
  e.g., He et al., *Deep Residual Learning for Image Recognition*, 2016.
  """
  where = "reduce_on_plateau: "
  check_value("factor", factor, where, 0.0, 1.0, low_open=True, high_open=True)
  patience = check_nonneg_int("patience", patience, where)
  if patience >= _INT32_MAX:
    raise ValueError(f"{where}patience={patience} must be < 2**31 - 1 (an int32 count).")
  check_choice("threshold_mode", threshold_mode, ("rel", "abs"), where)
  if threshold_mode == "rel":
    check_value("threshold", threshold, where, 0.0, 1.0, high_open=True)
  else:
    check_value("threshold", threshold, where, 0.0)
  check_choice("mode", mode, ("min", "max"), where)
  cooldown = check_nonneg_int("cooldown", cooldown, where)
  if cooldown > _INT32_MAX:
    raise ValueError(f"{where}cooldown={cooldown} must be <= 2**31 - 1 (an int32 count).")
  check_value("min_scale", min_scale, where, 0.0, 1.0)
  check_value("eps", eps, where, 0.0)
  if dtype is not None:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"{where}dtype={dtype} must be a floating dtype.")
  worst = float("inf") if mode == "min" else float("-inf")

  def init_fn(params):
    del params
    dt = dtype or float_dtype()
    zero = jnp.zeros([], jnp.int32)
    return ReduceOnPlateauState(count=zero, scale=jnp.ones([], dt),
                                best=jnp.full([], worst, dt), num_bad_epochs=zero,
                                cooldown_counter=zero)

  def is_better(x, best):
    if mode == "min":
      bar = best * (1 - threshold) if threshold_mode == "rel" else best - threshold
      return x < bar
    bar = best * (1 + threshold) if threshold_mode == "rel" else best + threshold
    return x > bar

  def update_fn(updates, state, params=None, *, value=None, **extra):
    del params, extra
    if value is None:
      raise TypeError(
          f"{where}update needs the monitored metric: call"
          " tx.update(updates, state, params, value=metric) (with optax.chain, pass"
          " value= to the chain's update).")
    dt = state.best.dtype
    try:
      x = jnp.asarray(value)
    except TypeError:
      raise TypeError(f"{where}value={value!r} must be a real number (the monitored"
                      " metric).") from None
    if x.shape != ():
      raise ValueError(f"{where}value must be a scalar metric, got shape {x.shape}.")
    x = x.astype(dt)

    better = is_better(x, state.best)
    best = jnp.where(better, x, state.best)
    bad = jnp.where(better, 0, safe_increment(state.num_bad_epochs))
    cooling = state.cooldown_counter > 0
    cooldown_counter = jnp.where(cooling, state.cooldown_counter - 1,
                                 state.cooldown_counter)
    bad = jnp.where(cooling, 0, bad)

    reduce = bad > patience
    scale = state.scale
    candidate = jnp.maximum(scale * factor, jnp.asarray(min_scale, scale.dtype))
    scale = jnp.where(reduce & (scale - candidate > eps), candidate, scale)
    cooldown_counter = jnp.where(reduce, cooldown, cooldown_counter).astype(jnp.int32)
    bad = jnp.where(reduce, 0, bad).astype(jnp.int32)

    new_state = ReduceOnPlateauState(
        count=safe_increment(state.count), scale=scale, best=best,
        num_bad_epochs=bad, cooldown_counter=cooldown_counter)

    def apply(u):
      cdt = compute_dtype(u.dtype)
      return (u.astype(cdt) * scale.astype(cdt)).astype(u.dtype)

    return jax.tree.map(apply, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
