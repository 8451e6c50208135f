"""Early stopping as a transform: zero the updates once a monitored metric stops improving."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core import validate
from jopt._core.leafwise import slot_placeholder
from jopt._core.tree import (check_same_structure, safe_increment, unwrap_variables)

__all__ = ["early_stopping", "EarlyStoppingState", "stop_requested", "early_stopping_state"]

_INT32_MAX = 2 ** 31 - 1


class EarlyStoppingState(NamedTuple):
  """State of :func:`early_stopping`; every field but ``best_params`` is a 0-d array.

  Attributes:
    count: int32, the number of ``update`` calls, saturating.
    checks: int32, the number of checks seen (calls with ``check=True`` before
      the stop): the index the next check gets, Keras's ``epoch``.
    best: float, the best monitored value so far (``+inf`` for ``mode="min"``,
      ``-inf`` for ``"max"`` before the first improvement); never NaN.
    wait: int32, Keras's ``wait``: monitored checks since the last one that
      beat both the best and the baseline.
    best_step: int32, the check index of the best value (Keras's
      ``best_epoch``), -1 before the first monitored check.
    stopped: bool, True from the check that stops on.
    stopped_step: int32, the check index that stopped (Keras's
      ``stopped_epoch``), -1 while running.
    best_params: with ``restore_best=True`` a copy of the params at check
      ``best_step`` (the params' tree and dtypes; the params given to ``init``
      before the first monitored check); otherwise a one-element placeholder
      per parameter (4 bytes a leaf, the params' tree structure).
  """

  count: jax.Array
  checks: jax.Array
  best: jax.Array
  wait: jax.Array
  best_step: jax.Array
  stopped: jax.Array
  stopped_step: jax.Array
  best_params: Any


EarlyStoppingState.__module__ = "jopt"


def _static_float(name: str, value: Any, where: str, low: float | None = None) -> float:
  if not validate.is_concrete(value):
    raise TypeError(f"{where}{name} is a traced value, but it is fixed when the transform"
                    " is built: pass a concrete number.")
  validate.check_range(name, value, low, where=where)
  return float(np.asarray(value))


def early_stopping(
    patience: int = 0,
    min_delta: float = 0.0,
    *,
    mode: str = "min",
    min_delta_mode: str = "abs",
    start_from_epoch: int = 0,
    baseline: float | None = None,
    restore_best: bool = False,
    dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Stop training (zero every later update) when a monitored metric stops improving.

  Chain it after the optimizer. Each ``update(..., value=metric)`` is one call
  of Keras 3's ``EarlyStopping.on_epoch_end`` and takes the same decisions.
  For check :math:`e` (0-based) with value :math:`x`, best :math:`\beta`
  (starting at :math:`+\infty` in ``"min"`` mode, :math:`-\infty` in ``"max"``)
  and margin :math:`\delta`, ":math:`x` improves on :math:`r`" means

  .. math::
    x + \delta_r < r \ \ (\text{min}), \qquad x - \delta_r > r \ \ (\text{max}),
    \qquad \delta_r = \begin{cases} \delta & \text{abs} \\
      \delta\,|r| \ (0 \text{ if } r = \pm\infty) & \text{rel} \end{cases}

  Checks with :math:`e <` ``start_from_epoch`` are ignored. Otherwise
  ``wait`` :math:`\mathrel{+}= 1`; if :math:`x` improves on :math:`\beta`:
  :math:`\beta = x`, ``best_step`` :math:`= e` and, when :math:`x` also
  improves on ``baseline`` (or there is none), ``wait = 0``. If it does not,
  training stops when ``wait >= patience`` and :math:`e > 0`. A NaN value is
  never an improvement (it counts as a bad check; ``best`` stays finite).
  ``min_delta_mode="rel"`` is jopt's extension: the margin is
  ``min_delta * |reference|`` (the best, or the baseline), as torch's relative
  threshold but symmetric in the sign of the metric.

  After the check that stops, the output updates are zeros of the update
  dtype, so ``apply_updates`` leaves the params as they are (the inner
  optimizer's own state keeps advancing; end the loop with
  :func:`stop_requested`). With ``restore_best=True`` they are instead
  ``best_params - params``: the call that stops moves the params onto the
  best ones, and later calls return exactly zero once they are there. Where
  one subtraction cannot land exactly (a best weight tiny next to the current
  one, e.g. one that crossed zero) ``p + (b - p)`` rounds, and each further
  call removes the residue (bit-exact within a call or two in practice); the
  exact copy is always ``early_stopping_state(opt_state).best_params``.

  Pass the metric of the params given to the same call (e.g. the validation
  loss of the current params): ``best_params`` copies those. Training loops
  that step every batch and evaluate every epoch pass ``check=False`` on the
  other steps: ``value=`` stays mandatory (pass anything, e.g. the last
  metric), the decision logic is skipped, and the updates pass through (or
  are zeroed after a stop). ``check`` may be a traced bool.

  Differences from Keras: ``mode="auto"`` does not exist (no metric names
  here); ``min_delta < 0`` is refused rather than made positive; an unknown
  mode is an error, not a warning; ``best_step`` is set at the first
  monitored check also with ``restore_best=False`` (Keras leaves its
  ``best_epoch`` at 0 then unless the value improves); ``stopped_step`` is -1
  while running (Keras: 0).

  Args:
    patience: integer >= 0, monitored checks without improvement tolerated.
    min_delta: :math:`\delta \ge 0`, the margin an improvement must clear.
    mode: ``"min"`` (lower is better, a loss) or ``"max"`` (e.g. accuracy).
    min_delta_mode: ``"abs"`` (Keras) or ``"rel"`` (see above).
    start_from_epoch: integer >= 0, checks ignored at the start (warm-up).
    baseline: ``None`` or a finite number the value must improve on for
      ``wait`` to reset (Keras's ``baseline``).
    restore_best: keep a copy of the params at the best check and move there
      when stopping (Keras's ``restore_best_weights``); ``update`` then needs
      ``params``.
    dtype: dtype of ``best`` and of the comparisons (default: float32, or
      float64 under ``jax_enable_x64``, at ``init``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`EarlyStoppingState`; ``update`` needs the keyword ``value=`` and
    accepts ``check=``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = optax.chain(jopt.adam(1e-3), jopt.regularizers.early_stopping(patience=2))
    >>> state = tx.init(params)
    >>> stops = []
    >>> for val_loss in [1.0, 0.8, 0.9, 0.85, 0.7]:   # no improvement on 0.8 at checks 2, 3
    ...   updates, state = tx.update(grads, state, params, value=val_loss)
    ...   stops.append(bool(jopt.regularizers.stop_requested(state)))
    >>> stops
    [False, False, False, True, True]
    >>> print(updates["w"])   # after the stop every update is zero
    [0. 0.]

  Reference: ``keras.callbacks.EarlyStopping`` (Keras 3); the practice of
  Prechelt, *Early Stopping -- But When?*, Neural Networks: Tricks of the
  Trade, 1998.
  """
  where = "early_stopping: "
  patience = validate.static_int("patience", patience, where, 0)
  if patience >= _INT32_MAX:
    raise ValueError(f"{where}patience={patience} must be < 2**31 - 1 (an int32 count).")
  min_delta = _static_float("min_delta", min_delta, where, 0.0)
  validate.check_choice("mode", mode, ("min", "max"), where)
  validate.check_choice("min_delta_mode", min_delta_mode, ("abs", "rel"), where)
  start_from_epoch = validate.static_int("start_from_epoch", start_from_epoch, where, 0)
  if start_from_epoch > _INT32_MAX:
    raise ValueError(f"{where}start_from_epoch={start_from_epoch} must be <= 2**31 - 1.")
  if baseline is not None:
    baseline = _static_float("baseline", baseline, where)
  if not isinstance(restore_best, (bool, np.bool_)):
    raise TypeError(f"{where}restore_best={restore_best!r} must be True or False.")
  restore_best = bool(restore_best)
  if dtype is not None:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"{where}dtype={dtype} must be a real floating dtype.")
  worst = math.inf if mode == "min" else -math.inf
  placeholder = slot_placeholder()

  def init_fn(params):
    params = unwrap_variables(params)
    if restore_best:
      best_params = jax.tree.map(jnp.copy, params)
    else:
      best_params = jax.tree.map(placeholder, params)
    dt = dtype or jnp.result_type(float)
    minus_one = jnp.full([], -1, jnp.int32)
    zero = jnp.zeros([], jnp.int32)
    return EarlyStoppingState(
        count=zero, checks=zero, best=jnp.full([], worst, dt), wait=zero,
        best_step=minus_one, stopped=jnp.zeros([], jnp.bool_), stopped_step=minus_one,
        best_params=best_params)

  def improves(x, ref):
    """Keras's ``monitor_op(x - min_delta, ref)`` (min_delta negated in min mode)."""
    if min_delta_mode == "abs":
      margin = min_delta
    else:
      margin = jnp.where(jnp.isfinite(ref), min_delta * jnp.abs(ref), jnp.zeros_like(ref))
    if mode == "min":
      return x + margin < ref
    return x - margin > ref

  def update_fn(updates, state, params=None, *, value=None, check=True, **extra):
    del extra
    if value is None:
      raise TypeError(
          f"{where}update needs the monitored metric: call"
          " tx.update(updates, state, params, value=metric) (with optax.chain, pass"
          " value= to the chain's update; on steps without a fresh metric pass"
          " check=False and any value, e.g. the last one).")
    try:
      x = jnp.asarray(value)
    except TypeError:
      raise TypeError(f"{where}value={value!r} must be a real number (the monitored"
                      " metric).") from None
    if x.shape != ():
      raise ValueError(f"{where}value must be a scalar metric, got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.number) or jnp.issubdtype(x.dtype,
                                                                 jnp.complexfloating):
      raise TypeError(f"{where}value must be a real number, got dtype {x.dtype}.")
    chk = jnp.asarray(check)
    if chk.shape != () or chk.dtype != jnp.bool_:
      raise TypeError(f"{where}check must be a Python bool or a 0-d bool array, got"
                      f" {check!r}.")
    updates = unwrap_variables(updates)
    u_leaves, treedef = jax.tree.flatten(updates)
    check_same_structure(jax.tree.structure(state.best_params), treedef, f"{where}updates",
                         "Pass updates shaped like the params given to init.")
    if params is not None:
      params = unwrap_variables(params)
      check_same_structure(treedef, jax.tree.structure(params), f"{where}params",
                           "Pass params with the same structure as the updates.")
    elif restore_best:
      raise ValueError(
          f"{where}restore_best=True needs the current parameters: call"
          " tx.update(updates, state, params, value=metric).")

    dt = state.best.dtype
    x = x.astype(dt)
    e = state.checks
    monitored = chk & ~state.stopped & (e >= start_from_epoch)
    first = monitored & (state.best_step < 0)
    better = monitored & improves(x, state.best)
    if baseline is None:
      resets = better
    else:
      resets = better & improves(x, jnp.asarray(baseline, dt))
    wait_inc = safe_increment(state.wait)
    wait = jnp.where(monitored, jnp.where(resets, 0, wait_inc), state.wait).astype(jnp.int32)
    stop = monitored & ~better & (wait_inc >= patience) & (e > 0)
    take = better | first
    best = jnp.where(better, x, state.best)
    best_step = jnp.where(take, e, state.best_step).astype(jnp.int32)
    stopped = state.stopped | stop
    stopped_step = jnp.where(stop, e, state.stopped_step).astype(jnp.int32)
    checks = jnp.where(chk & ~state.stopped, safe_increment(e), e).astype(jnp.int32)

    if restore_best:
      p_leaves = jax.tree.leaves(params)
      b_leaves = [jnp.where(take, p, b) for p, b in
                  zip(p_leaves, jax.tree.leaves(state.best_params))]

      def out(u, p, b):
        cdt = jnp.promote_types(u.dtype, p.dtype)
        back = (b.astype(cdt) - p.astype(cdt)).astype(u.dtype)
        return jnp.where(stopped, back, u)

      new_u = [out(u, p, b) for u, p, b in zip(u_leaves, p_leaves, b_leaves)]
      best_params = treedef.unflatten(b_leaves)
    else:
      new_u = [jnp.where(stopped, jnp.zeros_like(u), u) for u in u_leaves]
      best_params = state.best_params

    new_state = EarlyStoppingState(
        count=safe_increment(state.count), checks=checks, best=best, wait=wait,
        best_step=best_step, stopped=stopped, stopped_step=stopped_step,
        best_params=best_params)
    return treedef.unflatten(new_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def early_stopping_state(opt_state: Any) -> EarlyStoppingState:
  r"""Find the one :class:`EarlyStoppingState` inside an optimizer state.

  Searches any pytree: an ``optax.chain`` state, nested chains, a
  ``TrainState.opt_state`` or an ``nnx.Optimizer``'s ``opt_state`` (whose
  ``nnx.Variable`` leaves are unwrapped). Nothing is copied to the host.
  The result's ``best_params`` is the exact copy kept with
  ``restore_best=True``, e.g. to restore the best params when training ends
  without a stop (Keras restores them at ``on_train_end``):
  :math:`\theta \leftarrow \theta_{\text{best\_step}}`.

  Args:
    opt_state: a pytree holding exactly one :class:`EarlyStoppingState`.

  Returns:
    That state, with plain arrays.

  Raises:
    ValueError: none or several early-stopping states are found.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = optax.chain(jopt.sgd(0.1),
    ...                  jopt.regularizers.early_stopping(patience=1, restore_best=True))
    >>> opt_state = tx.init(params)
    >>> for val_loss in [0.5, 0.4, 0.6]:   # the best is check 1; check 2 stops
    ...   updates, opt_state = tx.update({"w": jnp.array([0.5, -1.0])}, opt_state, params,
    ...                                  value=val_loss)
    ...   params = optax.apply_updates(params, updates)
    >>> es = jopt.regularizers.early_stopping_state(opt_state)
    >>> int(es.best_step), round(float(es.best), 4)
    (1, 0.4)
    >>> print(es.best_params["w"], params["w"])   # the stop moved params back onto the best
    [ 0.95 -1.9 ] [ 0.95 -1.9 ]

  Reference: Keras's ``EarlyStopping.best_weights`` / ``best_epoch``.
  """
  is_es = lambda x: isinstance(x, EarlyStoppingState)  # noqa: E731
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_es) if is_es(x)]
  if not found:
    raise ValueError(
        "early_stopping_state: no EarlyStoppingState in this optimizer state; chain"
        " jopt.regularizers.early_stopping(...) into the transformation first.")
  if len(found) > 1:
    raise ValueError(
        f"early_stopping_state: {len(found)} EarlyStoppingStates in this optimizer"
        " state; pass the sub-state of the one you mean (e.g. opt_state[1]).")
  return unwrap_variables(found[0])


def stop_requested(opt_state: Any) -> jax.Array:
  r"""The stop flag of the early-stopping transform inside ``opt_state``, as a device array.

  .. math:: \text{stop} = [\text{wait} \ge \text{patience} \wedge e > 0]
            \text{ at some monitored check } e

  Returns the 0-d bool array without reading it, so it costs nothing; reading
  it (``bool(flag)``) waits for the step that computed it. To keep the device
  busy, start the copy after a step and read it one step later::

    flag = None
    for batch in data:
      params, opt_state = train_step(params, opt_state, batch, value=metric)
      if flag is not None and bool(flag):   # the previous step's flag: ready by now
        break
      flag = jopt.regularizers.stop_requested(opt_state)
      flag.copy_to_host_async()

  or check it every ``k`` steps. The extra step after a stop is harmless:
  stopped updates are zeros (or, with ``restore_best``, keep the params on
  the best ones).

  Args:
    opt_state: a pytree holding exactly one :class:`EarlyStoppingState` (see
      :func:`early_stopping_state`).

  Returns:
    A 0-d bool ``jax.Array``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = optax.chain(jopt.sgd(0.1), jopt.regularizers.early_stopping(patience=1))
    >>> opt_state = tx.init(params)
    >>> for step, val_loss in enumerate([0.5, 0.4, 0.45, 0.3]):
    ...   updates, opt_state = tx.update({"w": jnp.array([0.5, -1.0])}, opt_state, params,
    ...                                  value=val_loss)
    ...   params = optax.apply_updates(params, updates)
    ...   if jopt.regularizers.stop_requested(opt_state):
    ...     break
    >>> step   # 0.45 does not improve on 0.4: the stop comes at check 2
    2

  Reference: Keras's ``model.stop_training``, set by ``EarlyStopping``.
  """
  return early_stopping_state(opt_state).stopped
