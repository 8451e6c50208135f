"""Schedule-Free AdamW: interpolation and online averaging in place of momentum and decay."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, hyper_dtype, state_class
from jopt._core.leafwise import slot_zeros
from jopt.optimizers._complex import abs_sq
from jopt._core.tree import (check_leaf, check_same_structure, compute_dtype, leaf_paths,
                             safe_increment, store, unwrap_variables)

__all__ = ["schedule_free_adamw", "schedule_free_eval_params", "ScheduleFreeState"]

ScheduleFreeState = state_class(
    "ScheduleFreeState", ("z", "nu", "weight_sum", "max_lr"),
    "State of jopt.schedule_free_adamw: count, hyperparams, z (the base"
    " iterate, in state_dtype), nu (the second moment, in nu_dtype), and the"
    " 0-d weight_sum and max_lr of the online average.")

validate.register_range("weight_lr_power", 0.0, None)


def _warmup(step: jax.Array, warmup_steps: int | None) -> jax.Array:
  """Linear warmup factor ``min(step / warmup_steps, 1)`` (1 without warmup).

  Evaluated in ``step``'s dtype (the hyperparameter dtype): optax computes the
  same factor in float32 from int32 counts, even under x64.
  """
  if warmup_steps is None:
    return jnp.ones_like(step)
  return jnp.clip(step, 0, warmup_steps) / warmup_steps


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2.0,
    state_dtype: Any = None,
    *,
    nu_dtype: Any = None,
):
  r"""Schedule-Free AdamW: no learning-rate decay, no momentum buffer.

  The parameters :math:`y` the gradient is taken at interpolate between a base
  iterate :math:`z` (driven by an RMS-scaled step, Adam without momentum) and
  its weighted running average :math:`x`, the point to evaluate at:

  .. math::
    v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^2,\quad
    z_t = z_{t-1} - \gamma_{t-1} \left( \frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}
          + \lambda\, y_{t-1} \right) \\
    c_t = \frac{\bar\gamma_t^{\,p}}{\sum_{k=1}^{t} \bar\gamma_k^{\,p}},\quad
    \bar\gamma_t = \max_{1 \le k \le t} \gamma_k,\quad
    x_t = (1 - c_t)\, x_{t-1} + c_t z_t,\quad
    y_t = \beta_1 x_t + (1-\beta_1)\, z_t \\
    \gamma_k = \eta(k)\, \min(k/T_w, 1)

  for the update :math:`t = 1, 2, \ldots`, with :math:`g_t = \nabla f(y_{t-1})`,
  :math:`x_0 = z_0 = y_0`, :math:`\eta(k)` the learning rate (or schedule) at
  step count :math:`k` and the warmup factor 1 without ``warmup_steps``. Only
  :math:`z` is stored; :math:`x` is recovered as
  :math:`(y - (1-\beta_1) z)/\beta_1`, so evaluate with
  :func:`schedule_free_eval_params`. The update returned is :math:`y_t - y_{t-1}`.

  **Warmup and schedule convention: optax 0.2.8's.** Update :math:`t` moves
  :math:`z` with the rate of count :math:`t-1` (``state.count`` before the
  update, so a warmup from 0 leaves :math:`z` in place on the first update),
  while the averaging weight :math:`\bar\gamma_t` (``state.max_lr``, its
  powers summed in ``state.weight_sum``) takes the rate of count :math:`t`,
  the next update's :math:`z` rate. This is what
  ``optax.contrib.schedule_free_adamw`` computes (its base optimizer's schedule
  runs on a count from 0, the averaging on a count from 1), kept so that
  switching from optax changes nothing; tests/test_schedule_free.py compares
  the two in float64 step by step. Where jopt departs from optax: the warmup
  is evaluated in the hyperparameter dtype (float64 under ``jax_enable_x64``),
  while optax's ``warmup_constant_schedule`` runs in float32 on int32 counts
  even under x64, as :math:`(0-\eta)(1-k/T_w)+\eta`, which cancels early in
  the warmup (so the two are up to ~1e-6 apart in ``max_lr`` and
  ``weight_sum``, a few 1e-8 in the parameters; pass
  ``optax.warmup_constant_schedule(0., lr, T)`` as ``learning_rate`` to get
  optax's numbers exactly); ``max_lr`` and ``weight_sum`` are kept in the
  hyperparameter dtype, not, as in optax, in the parameters' lowest dtype
  (e.g. bfloat16). Where optax and jopt depart from
  the paper's reference code (``AdamWScheduleFree``, facebookresearch/
  schedule_free): there step :math:`k = 0, 1, \ldots` warms up with
  :math:`\min((k+1)/T_w, 1)` and uses that one rate for both the :math:`z`
  step and the average, so its :math:`z` is one warmup step ahead of this
  one (its averaging weights are the same); it also offers a polynomial
  weight :math:`(k+1)^r` (default :math:`r = 0`), absent here.

  Same names, defaults and updates as ``optax.contrib.schedule_free_adamw``.
  Note that the average keeps moving when :math:`\eta` is set to 0 after some
  steps (:math:`c_t > 0` because :math:`\bar\gamma` is a running maximum), so
  the parameters then drift from :math:`y` towards :math:`x`; :math:`z` stands
  still. Changing ``b1`` between steps changes the recovered :math:`x`.

  Args:
    learning_rate: peak step size :math:`\eta` (no decay needed), a number or a
      schedule ``step -> value``.
    warmup_steps: length :math:`T_w` of a linear warmup from 0, an integer >= 1,
      or None.
    b1: :math:`\beta_1`, the interpolation weight, in (0, 1).
    b2: :math:`\beta_2`, the decay of the second moment, in [0, 1).
    eps: :math:`\epsilon` >= 0, added outside the square root.
    weight_decay: :math:`\lambda` >= 0, applied at :math:`y` and multiplied by
      :math:`\gamma_t`.
    weight_lr_power: :math:`p` >= 0, how strongly large rates weigh in the
      average (down-weights warmup steps).
    state_dtype: storage dtype of :math:`z` (default: the parameter's).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`ScheduleFreeState`; ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}   # the same gradient twice
    >>> tx = jopt.schedule_free_adamw(0.1)   # warmup_steps=... adds a linear warmup
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> # z moves by -0.1 * sign(g) per step; c_1 = 1, c_2 = 1/2: x_2 = params_0 - 0.15 * sign(g)
    >>> eval_params = jopt.schedule_free_eval_params(state, params)
    >>> print(np.asarray(eval_params["w"]).round(4))
    [ 0.85 -1.85]
    >>> print(np.asarray(params["w"]).round(4))   # y_2 = 0.9 x_2 + 0.1 z_2
    [ 0.845 -1.845]

  Reference: Defazio et al., *The Road Less Scheduled*, NeurIPS 2024.
  """
  name = "schedule_free_adamw"
  where = f"{name}: "
  if warmup_steps is not None:
    validate.check_positive_int("warmup_steps", warmup_steps, where)
    warmup_steps = int(warmup_steps)
  hyper = HyperSpec(name, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                    weight_decay=weight_decay, weight_lr_power=weight_lr_power)
  # b1 divides when x is recovered: it must be strictly positive.
  b1_0 = b1(0) if validate.is_schedule(b1) else b1
  validate.check_range("b1", b1_0, 0.0, 1.0, low_open=True, high_open=True, where=where)
  slot_zeros(state_dtype, f"{where}state_dtype")  # validates the dtype
  nu_init = slot_zeros(nu_dtype, f"{where}nu_dtype")
  lr_value = hyper.values["learning_rate"]

  cls = hyper.state_type(ScheduleFreeState)  # records schedule-driven names

  def init_fn(params):
    params = unwrap_variables(params)
    leaves, treedef = jax.tree.flatten(params)
    z = []
    for path, p in zip(leaf_paths(params), leaves):
      compute_dtype(p.dtype, f"{where}{path}")
      dt = p.dtype if state_dtype is None else jnp.dtype(state_dtype)
      z.append(jnp.array(p, dtype=dt, copy=True))  # a distinct buffer (donation-safe)
    hd = hyper_dtype()
    return cls(
        count=jnp.zeros([], jnp.int32), hyperparams=hyper.init(),
        z=treedef.unflatten(z), nu=treedef.unflatten([nu_init(p) for p in leaves]),
        weight_sum=jnp.zeros([], hd), max_lr=jnp.zeros([], hd))

  def update_fn(updates, state, params=None, **extra):
    del extra
    updates = unwrap_variables(updates)
    g_leaves, treedef = jax.tree.flatten(updates)
    for slot in ("z", "nu"):
      check_same_structure(jax.tree.structure(getattr(state, slot)), treedef,
                           f"{where}updates", "Pass gradients shaped like the params given to init.")
    if params is None:
      raise ValueError(f"{where}this optimizer needs the current parameters: call"
                       " tx.update(grads, state, params).")
    params = unwrap_variables(params)
    y_leaves, pdef = jax.tree.flatten(params)
    check_same_structure(treedef, pdef, f"{where}params",
                         "Pass params with the same structure as the gradients.")
    paths = leaf_paths(updates)
    for path, g, y in zip(paths, g_leaves, y_leaves):
      check_leaf(where, path, g, y.shape, y.dtype)

    h = hyper.resolve(state.hyperparams, state.count)
    count_inc = safe_increment(state.count)
    hd = hyper_dtype()
    t = count_inc.astype(hd)
    # optax's convention (see the docstring): z moves with the rate of count
    # t - 1, the average is weighted with the rate of count t
    lr_z = h["learning_rate"] * _warmup(state.count.astype(hd), warmup_steps)
    lr_next = (jnp.asarray(lr_value(count_inc), hd) if validate.is_schedule(lr_value)
               else h["learning_rate"])
    lr_w = lr_next * _warmup(t, warmup_steps)
    max_lr = jnp.maximum(state.max_lr, lr_w)
    weight = max_lr ** h["weight_lr_power"]
    weight_sum = state.weight_sum + weight
    ratio = jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf)  # 0/0 (zero rates so far) -> 0
    ck = jnp.where(jnp.isnan(weight) | jnp.isnan(weight_sum), jnp.nan, ratio)
    scal = dict(h, lr_z=lr_z, ck=ck, bc2=1 - h["b2"] ** t)

    z_leaves = jax.tree.leaves(state.z)
    nu_leaves = jax.tree.leaves(state.nu)
    new_u, new_z, new_nu = [], [], []
    cache: dict[Any, dict[str, jax.Array]] = {}
    for path, g, y, z, nu in zip(paths, g_leaves, y_leaves, z_leaves, nu_leaves):
      cdt = compute_dtype(g.dtype, f"{where}{path}")
      if cdt not in cache:
        cache[cdt] = {k: v.astype(cdt) for k, v in scal.items()}
      s = cache[cdt]
      g_, y_, z_, nu_ = g.astype(cdt), y.astype(cdt), z.astype(cdt), nu.astype(cdt)
      b1_ = s["b1"]
      sq = abs_sq(g_)  # |g|^2, as optax
      nu_ = s["b2"] * nu_ + (1 - s["b2"]) * sq.astype(cdt)
      step = g_ / (jnp.sqrt(nu_ / s["bc2"]) + s["eps"]) + s["weight_decay"] * y_
      z_new = store(z_ - s["lr_z"] * step, z.dtype).astype(cdt)
      x_prev = (y_ - (1 - b1_) * z_) / b1_
      x = (1 - s["ck"]) * x_prev + s["ck"] * z_new
      y_new = b1_ * x + (1 - b1_) * z_new
      new_u.append((y_new - y_).astype(g.dtype))
      new_z.append(store(z_new, z.dtype))
      new_nu.append(store(nu_, nu.dtype))

    new_state = cls(
        count=count_inc, hyperparams=h, z=treedef.unflatten(new_z),
        nu=treedef.unflatten(new_nu), weight_sum=weight_sum, max_lr=max_lr)
    return treedef.unflatten(new_u), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_state(state: Any) -> Any:
  if isinstance(state, ScheduleFreeState):
    return state
  found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScheduleFreeState))
           if isinstance(s, ScheduleFreeState)]
  if len(found) == 1:
    return found[0]
  if not found and hasattr(state, "b1") and hasattr(state, "z"):
    return state  # optax.contrib's ScheduleFreeState
  raise ValueError(
      "schedule_free_eval_params: expected the state of jopt.schedule_free_adamw (or a"
      f" tree holding exactly one), found {len(found)} such states; pass that"
      " transform's own state.")


def schedule_free_eval_params(state: Any, params: Any) -> Any:
  r"""The averaged iterate :math:`x = (y - (1-\beta_1) z)/\beta_1` to evaluate at.

  Schedule-Free trains at :math:`y` (the parameters you hold) but its
  guarantees are for the average :math:`x`; use these parameters for
  validation, test and checkpoints meant for inference.

  Args:
    state: the state of :func:`schedule_free_adamw`, or a tree (e.g. an
      ``optax.chain`` state) that holds exactly one such state. The state of
      ``optax.contrib.schedule_free`` is accepted too.
    params: the current parameters :math:`y`.

  Returns:
    A tree like ``params``, in the parameters' dtypes.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> tx = jopt.schedule_free_adamw(0.1, b1=0.9)
    >>> opt_state = tx.init(params)
    >>> updates, opt_state = tx.update({"w": jnp.array([0.5, -1.0])}, opt_state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> eval_params = jopt.schedule_free_eval_params(opt_state, params)
    >>> # after one step x_1 = z_1 = y_1: the first average is the first iterate
    >>> print(np.asarray(eval_params["w"]).round(4), np.asarray(params["w"]).round(4))
    [ 0.9 -1.9] [ 0.9 -1.9]
    >>> val_loss = jnp.sum(eval_params["w"] ** 2)   # evaluate (validation, test) at x

  Reference: Defazio et al., *The Road Less Scheduled*, NeurIPS 2024.
  """
  s = _find_state(state)
  b1 = s.hyperparams["b1"] if isinstance(s, ScheduleFreeState) else jnp.asarray(s.b1)
  if isinstance(b1, (float, int, np.floating)):
    b1 = jnp.asarray(b1)

  def one(y, z):
    cdt = jnp.promote_types(compute_dtype(y.dtype), compute_dtype(z.dtype))
    b = b1.astype(cdt)
    return ((y.astype(cdt) - (1 - b) * z.astype(cdt)) / b).astype(y.dtype)

  return jax.tree.map(one, params, s.z)
