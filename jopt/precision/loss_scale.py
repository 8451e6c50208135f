"""Loss scaling as a transform: unscale, check finiteness, skip or step, adjust the scale.

Half-precision backward passes lose small gradients: float16's smallest
subnormal is about 6e-8, so cotangents below it flush to zero. Multiplying the
loss by a scale :math:`S` (:func:`scale_loss`) multiplies every cotangent by
:math:`S` and lifts them into range; :func:`loss_scale` divides the gradients
by :math:`S` again, in float32, before the wrapped optimizer sees them, and
skips the step (parameters and optimizer state untouched) when they overflowed.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core import validate
from jopt._core.finite import all_finite, check_axis_name, select_tree, zeros_unless
from jopt._core.tree import compute_dtype, safe_increment, unwrap_variables

__all__ = ["loss_scale", "LossScaleState", "scale_loss", "all_finite"]

_WHERE = "loss_scale: "
_INT32_MAX = 2 ** 31 - 1
_F32_MAX = float(np.finfo(np.float32).max)


class LossScaleState(NamedTuple):
  """State of :func:`loss_scale`; every field but ``inner_state`` is a 0-d array.

  Attributes:
    scale: float32 (always, whatever the parameters' or gradients' dtype), the
      loss scale :math:`S` that the *next* step's loss is multiplied by.
    good_steps: int32, consecutive finite steps since the last growth or
      back-off (torch ``GradScaler``'s growth tracker).
    skipped: int32, the number of steps skipped for non-finite gradients
      (saturating).
    inner_state: the wrapped optimizer's state; it advances only on finite steps.
  """

  scale: jax.Array
  good_steps: jax.Array
  skipped: jax.Array
  inner_state: Any


LossScaleState.__module__ = "jopt"


def scale_loss(loss: jax.Array, state: Any) -> jax.Array:
  r"""Multiply the loss by the state's scale, in at least float32, before differentiating.

  .. math:: \tilde L = \operatorname{cast}_{\max(d_L,\ \text{float32})}(L) \cdot S

  The product is formed in float32 (float64 for a float64 loss), never in the
  loss's half dtype: float16's largest value is 65504, so ``L * 2**16`` in
  float16 is ``inf`` for any ``|L| >= 1``. Scaling still reaches the
  half-precision part of the graph: the gradient of the cast is a cast, so the
  cotangent :math:`S\,\partial L/\partial y` enters the float16 activations
  scaled, which is what keeps small gradients from flushing to zero. Let the
  model's outputs reach the loss in float32 (``Policy.cast_to_output`` with
  ``output_dtype=float32``, or a float32 loss function): then the first
  half-precision cotangent is :math:`S\,\partial L/\partial y` itself. With a
  float16 loss value, its own cotangent is :math:`S` rounded to float16, which
  is ``inf`` for :math:`S > 65504` and the dynamic scale backs off at once (as
  torch's ``GradScaler`` does on a float16 loss).

  Args:
    loss: the scalar loss (any floating dtype).
    state: the :class:`LossScaleState` of :func:`loss_scale` (or any state with a
      ``scale`` field, or a number).

  Returns:
    The scaled loss, float32 (float64 for a float64 loss).

  Example:
    >>> policy = jopt.precision.get_policy("mixed_float16")
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> tx = jopt.precision.loss_scale(optax.sgd(0.1), initial_scale=1024.0)
    >>> opt_state = tx.init(params)
    >>> def scaled(p, state):
    ...   w = policy.cast_to_compute(p)["w"]              # float16 compute
    ...   loss = policy.cast_to_output(jnp.sum(w * w))     # float32 for the loss
    ...   return jopt.precision.scale_loss(loss, state)
    >>> grads = jax.grad(scaled)(params, opt_state)   # S * 2w, in the params' float32
    >>> grads["w"].tolist()
    [2048.0, 4096.0]
    >>> updates, opt_state = tx.update(grads, opt_state, params)   # unscaled: -0.1 * 2w
    >>> [round(u, 4) for u in updates["w"].tolist()]
    [-0.2, -0.4]

  Reference: Micikevicius et al., *Mixed Precision Training*, ICLR 2018
  (loss scaling); ``torch.amp.GradScaler.scale``.
  """
  scale = getattr(state, "scale", state)
  loss = jnp.asarray(loss)
  if not jnp.issubdtype(loss.dtype, jnp.floating):
    raise TypeError(f"scale_loss: loss must be a floating scalar, got dtype {loss.dtype}.")
  dt = compute_dtype(loss.dtype, "scale_loss: loss")
  return loss.astype(dt) * jnp.asarray(scale).astype(dt)


def _check_initial_scale(initial_scale: Any) -> float:
  dtype = getattr(initial_scale, "dtype", None)
  if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize < 4:
    raise TypeError(
        f"{_WHERE}initial_scale has dtype {jnp.dtype(dtype)}, but the loss scale must be"
        " float32: a 16-bit scale cannot hold the default 2**16 (float16's max is"
        " 65504) and rounds grown scales. Pass a Python number (e.g."
        " initial_scale=2.0**16); the state's scale is float32 whatever the compute"
        " dtype.")
  if not validate.is_concrete(initial_scale):
    raise TypeError(f"{_WHERE}initial_scale is a traced value; build the transform"
                    " outside jit with a concrete number (the scale then lives in"
                    " the state, where a traced value is fine).")
  validate.check_range("initial_scale", initial_scale, 0.0, _F32_MAX, low_open=True,
                       where=_WHERE)
  return float(np.asarray(initial_scale))


def loss_scale(
    tx: optax.GradientTransformation,
    initial_scale: float = 2.0 ** 16,
    *,
    dynamic: bool = True,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    growth_interval: int = 2000,
    min_scale: float = 1.0,
    axis_name: str | Sequence[str] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Wrap ``tx`` with loss scaling: unscale the gradients, skip non-finite steps, adjust :math:`S`.

  ``update(scaled_grads, state, params)`` expects the gradients of
  :func:`scale_loss`'s :math:`S L`. With :math:`S` the state's scale,

  .. math::
    g = \operatorname{cast}_{d_g}\!\big(\tilde g \cdot (1/S)\big), \qquad
    \text{ok} = \bigwedge \operatorname{isfinite}(g)

  computed in float32 (float64 for float64 gradients) and returned in the
  gradient's dtype :math:`d_g`. If ok, the updates are ``tx.update(g, ...)``;
  otherwise they are zeros, ``inner_state`` is returned bit for bit (the
  inner optimizer's count does not advance) and ``skipped`` grows by one.
  The choice is a select over the trees (``optax.apply_if_finite`` uses a
  ``lax.cond`` instead): the
  inner update is computed and discarded on a skipped step, which costs a few
  elementwise passes but works unchanged under ``vmap`` and inside
  ``shard_map`` (a ``lax.cond`` there needs both branches to agree on which
  mesh axes each value varies over). With ``dynamic=True``, torch
  ``GradScaler``'s rule with a floor:

  .. math::
    (S, n) \leftarrow \begin{cases}
      (\max(S\beta,\ S_{min}),\ 0) & \text{not ok} \\
      (S\gamma \text{ if finite else } S,\ 0) & \text{ok},\ n + 1 = N \\
      (S,\ n + 1) & \text{ok},\ n + 1 < N
    \end{cases}

  with :math:`\gamma` = ``growth_factor``, :math:`\beta` = ``backoff_factor``,
  :math:`N` = ``growth_interval`` and :math:`n` = ``good_steps``. With
  ``dynamic=False`` the scale never changes (non-finite steps are still
  skipped; ``good_steps`` counts consecutive finite steps).

  Same scale trajectory, unscaled gradients and skipped steps as
  ``torch.amp.GradScaler`` (``init_scale``, ``growth_factor``,
  ``backoff_factor``, ``growth_interval``) until the floor binds: torch has
  no floor, jopt keeps :math:`S \ge S_{min}` (jmp's ``min_loss_scale``, 1 by
  default). Unlike jmp, every constant is part of the compiled update (the
  floor holds under ``jit``) and a 16-bit scale is refused.

  Put ``loss_scale`` outermost: it must see the raw scaled gradients (clip,
  weight decay and the like belong inside ``tx``).

  Args:
    tx: the optimizer to run on the unscaled gradients (any optax transform).
    initial_scale: :math:`S_0 > 0`, a Python number or a 32/64-bit 0-d array
      (stored as float32; a float16 / bfloat16 array is a ``TypeError``).
    dynamic: adjust the scale (True) or keep it fixed (static loss scaling).
    growth_factor: :math:`\gamma > 1`.
    backoff_factor: :math:`\beta \in (0, 1)`.
    growth_interval: :math:`N \ge 1`, consecutive finite steps before a growth.
    min_scale: :math:`S_{min} > 0`, the floor of the dynamic scale (at most
      ``initial_scale``).
    axis_name: inside ``jax.shard_map`` (or ``pmap``), the mesh axis name(s) over
      which the finite check is agreed (``lax.pmin``), so every device skips
      together when any shard overflowed. ``None`` checks locally.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`LossScaleState`; extra keyword arguments are passed to ``tx``.

  Example:
    >>> params, x = {"w": jnp.ones(3)}, jnp.array([1.0, 2.0, 3.0])
    >>> loss_fn = lambda p, x: jnp.sum((p["w"] * x) ** 2)
    >>> tx = jopt.precision.loss_scale(jopt.adam(1e-3))
    >>> state = tx.init(params)
    >>> grads = jax.grad(lambda p: jopt.precision.scale_loss(loss_fn(p, x), state))(params)
    >>> (grads["w"] / 2 ** 16).tolist()                  # S * 2 w x^2 with S = 2**16
    [2.0, 8.0, 18.0]
    >>> updates, state = tx.update(grads, state, params)
    >>> float(state.scale), int(state.good_steps), int(state.skipped)
    (65536.0, 1, 0)
    >>> overflow = {"w": jnp.array([jnp.inf, 0.0, 0.0])}
    >>> updates, state = tx.update(overflow, state, params)   # skipped: zeros, S halved
    >>> updates["w"].tolist(), float(state.scale), int(state.skipped)
    ([0.0, 0.0, 0.0], 32768.0, 1)

  Reference: Micikevicius et al., *Mixed Precision Training*, ICLR 2018;
  ``torch.amp.GradScaler`` (the dynamic rule and its defaults).
  """
  init_value = _check_initial_scale(initial_scale)
  if not isinstance(dynamic, (bool, np.bool_)):
    raise TypeError(f"{_WHERE}dynamic must be True or False, got {dynamic!r}.")
  validate.check_range("growth_factor", growth_factor, 1.0, None, low_open=True, where=_WHERE)
  validate.check_range("backoff_factor", backoff_factor, 0.0, 1.0, low_open=True,
                       high_open=True, where=_WHERE)
  growth_interval = validate.check_positive_int("growth_interval", growth_interval, _WHERE)
  if growth_interval > _INT32_MAX:
    raise ValueError(f"{_WHERE}growth_interval={growth_interval} must be <= 2**31 - 1"
                     " (an int32 count).")
  validate.check_range("min_scale", min_scale, 0.0, None, low_open=True, where=_WHERE)
  if dynamic and float(min_scale) > init_value:
    raise ValueError(f"{_WHERE}initial_scale={init_value!r} is below min_scale={min_scale!r};"
                     " pass initial_scale >= min_scale (or lower min_scale).")
  axes = check_axis_name(axis_name, _WHERE)
  growth = np.float32(growth_factor)
  backoff = np.float32(backoff_factor)
  floor = np.float32(min_scale)

  def init_fn(params):
    params = unwrap_variables(params)
    zero = jnp.zeros([], jnp.int32)
    return LossScaleState(scale=jnp.asarray(init_value, jnp.float32), good_steps=zero,
                          skipped=zero, inner_state=tx.init(params))

  def unscale(g, scale):
    cdt = compute_dtype(g.dtype, f"{_WHERE}gradients")
    inv = jnp.ones([], cdt) / scale.astype(cdt)
    return (g.astype(cdt) * inv).astype(g.dtype)

  def update_fn(updates, state, params=None, **extra):
    if not isinstance(state, LossScaleState):
      raise TypeError(f"{_WHERE}state must be the LossScaleState from this transform's"
                      f" init, got {type(state).__name__}.")
    scale = state.scale
    grads = jax.tree.map(lambda g: unscale(g, scale), updates)
    ok = all_finite(grads, axes)

    stepped, stepped_inner = tx.update(grads, state.inner_state, params, **extra)
    new_updates = zeros_unless(ok, stepped)
    inner = select_tree(ok, stepped_inner, state.inner_state)

    tracked = safe_increment(state.good_steps)
    if dynamic:
      grow = tracked >= growth_interval
      grown = scale * growth
      grown = jnp.where(jnp.isfinite(grown), grown, scale)
      backed = jnp.maximum(scale * backoff, floor)
      new_scale = jnp.where(ok, jnp.where(grow, grown, scale), backed)
      good = jnp.where(ok & ~grow, tracked, jnp.zeros_like(tracked))
    else:
      new_scale = scale
      good = jnp.where(ok, tracked, jnp.zeros_like(tracked))
    new_state = LossScaleState(
        scale=new_scale.astype(jnp.float32), good_steps=good.astype(jnp.int32),
        skipped=jnp.where(ok, state.skipped, safe_increment(state.skipped)),
        inner_state=inner)
    return new_updates, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
