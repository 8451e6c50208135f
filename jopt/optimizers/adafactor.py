"""Adafactor: second moments stored as row and column statistics, relative step sizes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros
from jopt._core.tree import full_like, zeros_like
from jopt.optimizers._complex import abs_sq, divide, real, scale

__all__ = ["adafactor", "AdafactorState", "AdafactorMomentumState", "factored_dims"]

AdafactorState = state_class(
    "AdafactorState", ("v_row", "v_col", "v"),
    "State of jopt.adafactor (optax's field names): count, hyperparams, and per"
    " parameter either the factored statistics v_row (mean over the largest axis)"
    " and v_col (mean over the second largest axis) or the full second moment v;"
    " the unused slots hold one-element placeholders. The statistics are of"
    " :math:`|g|^2 + \\epsilon`, real-valued also for complex parameters.")
AdafactorMomentumState = state_class(
    "AdafactorMomentumState", ("v_row", "v_col", "v", "ema"),
    "State of jopt.adafactor with momentum: as AdafactorState, plus ema (the"
    " momentum of the relative updates, in dtype_momentum; optax.ema's name).")

validate.register_range("decay_rate", 0.0, None)
validate.register_range("decay_offset", 0.0, None)
validate.register_range("clipping_threshold", 0.0, None, low_open=True)
validate.register_range("weight_decay_rate", 0.0, None)

_MIN_PARAM_SCALE = 1e-3  # Adafactor's epsilon_2: floor of the parameter RMS.


def factored_dims(shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
                  ) -> tuple[int, int] | None:
  """``(second largest axis, largest axis)`` when an array's statistics are factored.

  Arrays of rank >= 2 whose second largest dimension is at least
  ``min_dim_size_to_factor`` are factored (ties keep NumPy's ``argsort`` order,
  as optax does); all others, and every array when ``factored=False``, keep a
  full second moment. Returns None for those.
  """
  if not factored or len(shape) < 2:
    return None
  order = np.argsort(shape)
  if shape[order[-2]] < min_dim_size_to_factor:
    return None
  return int(order[-2]), int(order[-1])


def _empty(p: jax.Array, dtype: Any) -> jax.Array:
  """A one-element placeholder, as optax keeps (orbax cannot save zero-size arrays)."""
  return full_like(p, 0, dtype, shape=(1,))


def _slot_inits(factored: bool, min_dim: int, nu_dtype: Any):
  slot_zeros(nu_dtype, "adafactor: nu_dtype")  # validates nu_dtype

  def reduced(axis):
    def init(p):
      dt = p.dtype if nu_dtype is None else jnp.dtype(nu_dtype)
      dims = factored_dims(p.shape, factored, min_dim)
      if dims is None:
        return _empty(p, dt)
      # A sum of zeros sharded like p: the statistics keep p's sharding on
      # the axes they retain.
      return jnp.sum(zeros_like(p, dt), axis=dims[axis])
    return init

  def full(p):
    dt = p.dtype if nu_dtype is None else jnp.dtype(nu_dtype)
    if factored_dims(p.shape, factored, min_dim) is None:
      return zeros_like(p, dt)
    return _empty(p, dt)

  return {"v_row": reduced(1), "v_col": reduced(0), "v": full}


def _momentum_slot(dtype: Any):
  """The momentum buffer in ``dtype`` (None: the parameter's). For a complex
  parameter a real ``dtype`` means the complex dtype of its precision: a real
  buffer would drop the imaginary part of every step."""
  slot_zeros(dtype)  # validates dtype
  dtype = None if dtype is None else jnp.dtype(dtype)

  def init(p):
    dt = p.dtype if dtype is None else dtype
    if jnp.iscomplexobj(p) and not jnp.issubdtype(dt, jnp.complexfloating):
      dt = jnp.dtype(jnp.complex128 if dt.itemsize == 8 else jnp.complex64)
    return zeros_like(p, dt)

  return init


def _adafactor_rule(factored: bool, min_dim: int, clip: bool, param_scale: bool,
                    momentum: bool, decay: bool):
  def step(g, p, slots, h, flags):
    hr = real(h)  # the statistics are real, also for complex g
    v_row, v_col, v = (jnp.real(x) for x in slots[:3])
    beta = hr["decay_t"]
    g2 = abs_sq(g) + hr["eps"]
    dims = factored_dims(g.shape, factored, min_dim)
    if dims is not None:
      d1, d0 = dims  # second largest, largest
      v_row = beta * v_row + (1 - beta) * jnp.mean(g2, axis=d0)
      v_col = beta * v_col + (1 - beta) * jnp.mean(g2, axis=d1)
      d1_in_row = d1 - 1 if d1 > d0 else d1
      row_scale = v_row / jnp.mean(v_row, axis=d1_in_row, keepdims=True)
      u = scale(scale(g, jnp.expand_dims(row_scale ** -0.5, d0)),
                jnp.expand_dims(v_col ** -0.5, d1))
    else:
      v = beta * v + (1 - beta) * g2
      u = scale(g, v ** -0.5)
    if clip:
      u = divide(u, jnp.maximum(1, jnp.sqrt(jnp.mean(abs_sq(u))) / hr["clipping_threshold"]))
    if param_scale:
      rms = jnp.sqrt(jnp.mean(abs_sq(p)))
      u = scale(u, jnp.where(rms <= _MIN_PARAM_SCALE, _MIN_PARAM_SCALE, rms))
    outs = (v_row, v_col, v)
    if momentum:
      mu = h["momentum"] * slots[3] + (1 - h["momentum"]) * u
      u, outs = mu, outs + (mu,)
    if decay and flags["decay"]:
      u = u + h["weight_decay_rate"] * p
    return -h["learning_rate"] * u, outs

  return step


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: ScalarOrSchedule = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: ScalarOrSchedule | None = 1.0,
    momentum: ScalarOrSchedule | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: ScalarOrSchedule = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
    *,
    nu_dtype: Any = None,
):
  r"""Adafactor: factored second moments and steps relative to the parameter scale.

  With :math:`\hat\beta_t = 1 - (t - t_0)^{-\gamma}` (``decay_rate`` :math:`\gamma`,
  ``decay_offset`` :math:`t_0`, :math:`t` the 1-based step) and
  :math:`G_t = |g_t|^2 + \epsilon`, an array of rank >= 2 whose two largest axes
  both have at least ``min_dim_size_to_factor`` entries keeps only
  the means of :math:`G_t` over its largest axis (``v_row``) and over its second
  largest axis (``v_col``), both averaged with :math:`\hat\beta_t`. For a matrix
  whose rows are the larger side:

  .. math::
    R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_i\, G_t,\quad
    C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_j\, G_t \\
    \hat v_t = C_t R_t / \mathrm{mean}(R_t),\qquad
    \text{(other arrays: } \hat v_t = \hat\beta_t \hat v_{t-1} + (1-\hat\beta_t) G_t)

  .. math::
    a_t = g_t / \sqrt{\hat v_t},\quad
    a_t \leftarrow a_t / \max(1, \mathrm{RMS}(a_t)/d),\quad
    a_t \leftarrow \max(\mathrm{RMS}(\theta_{t-1}), 10^{-3})\, a_t \\
    m_t = \mu\, m_{t-1} + (1-\mu)\, a_t \ (\text{if momentum}),\quad
    u_t = -\eta_t \left(m_t + \lambda\,\theta_{t-1}\right)

  Same names and defaults as ``optax.adafactor``, and the same updates when
  ``weight_decay_rate`` is None and the learning rate constant. Two
  differences by design, so that every jopt update is proportional to the
  current :math:`\eta`:

  * optax adds :math:`\lambda\theta` *after* the learning rate; jopt multiplies
    it by :math:`\eta` like :func:`jopt.adamw`. With ``learning_rate=None``
    (:math:`\eta = 1`) both agree; otherwise pass optax's rate divided by
    the (constant) learning rate to reproduce its absolute decay.
  * optax's momentum averages :math:`\eta`-scaled steps; jopt's averages
    :math:`a_t` and scales the result by the current :math:`\eta` (identical
    for a constant rate).

  The statistics are computed in at least float32 (optax rounds them to the
  parameter dtype first); :math:`\hat\beta_t` is computed in float32 even
  under ``jax_enable_x64``, as in optax. Complex parameters are handled as optax
  does (:math:`|g_t|^2` in the statistics, RMS of :math:`|a_t|` and
  :math:`|\theta|`); the state's fields carry optax's names (``v_row``,
  ``v_col``, ``v``; the momentum buffer is ``ema``, as ``optax.ema`` calls it).

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule; None means
      1 (the step is then set by the parameter scale alone). Stored in state as
      ``learning_rate`` either way.
    min_dim_size_to_factor: factor an array's statistics only when its second
      largest dimension has at least this many entries (integer >= 1). Static:
      it sets the state's shapes, so a traced value is a ``TypeError`` (with
      ``optax.inject_hyperparams``, pass ``static_args=("min_dim_size_to_factor",)``,
      as optax's own tests do).
    decay_rate: :math:`\gamma` >= 0 of the second-moment decay schedule.
    decay_offset: :math:`t_0`, integer >= 0: the step a fine-tuning run starts
      at. Kept in ``state.hyperparams`` (a traced value is used as given).
    multiply_by_parameter_scale: scale steps by :math:`\max(\mathrm{RMS}(\theta), 10^{-3})`;
      if False, :math:`\eta` is an absolute step size.
    clipping_threshold: :math:`d` > 0, the largest RMS of :math:`a_t` per array,
      or None for no clipping.
    momentum: :math:`\mu` in [0, 1), or None for no momentum (no extra memory).
    dtype_momentum: storage dtype of :math:`m` (default float32, as optax;
      None: the parameter's). For complex parameters a real dtype stands for
      the complex dtype of its precision (optax keeps only the real part).
    weight_decay_rate: :math:`\lambda` >= 0 (multiplied by :math:`\eta`, see
      above), or None for no decay.
    eps: :math:`\epsilon` >= 0, added to the squared gradient.
    factored: False keeps a full second moment for every array.
    weight_decay_mask: which parameters decay: a tree of bools like the params,
      or a function ``params -> tree``; None decays all.
    nu_dtype: storage dtype of the second-moment statistics (default: the
      parameter's).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AdafactorState`
    (:class:`AdafactorMomentumState` with momentum). ``update`` needs ``params``
    when ``multiply_by_parameter_scale`` or ``weight_decay_rate`` is set.

  Example:
    >>> params = {"w": jnp.full((256, 128), 2.0)}
    >>> grads = {"w": jnp.full((256, 128), 0.5)}
    >>> tx = jopt.adafactor(1e-2)
    >>> state = tx.init(params)   # a (256, 128) weight keeps 128 + 256 statistics
    >>> print(state.v_row["w"].shape, state.v_col["w"].shape)
    (128,) (256,)
    >>> updates, state = tx.update(grads, state, params)
    >>> # beta_1 = 0, v_hat = g^2, a = g / |g| = 1 (RMS 1, not clipped), times RMS(params) = 2
    >>> print(np.unique(np.asarray(updates["w"]).round(4)))
    [-0.02]

  Reference: Shazeer & Stern, *Adafactor: Adaptive Learning Rates with Sublinear
  Memory Cost*, ICML 2018.
  """
  where = "adafactor: "
  # Static: it decides which arrays are factored, i.e. the state's shapes.
  min_dim = validate.check_positive_int("min_dim_size_to_factor", min_dim_size_to_factor,
                                        where)
  if validate.is_concrete(decay_offset):  # a traced offset (inject_hyperparams) is used live
    validate.static_int("decay_offset", decay_offset, where, 0)
  for name, flag in (("multiply_by_parameter_scale", multiply_by_parameter_scale),
                     ("factored", factored)):
    if not isinstance(flag, (bool, np.bool_)):
      raise TypeError(f"{where}{name} must be True or False, got {flag!r}.")
  values = dict(learning_rate=1.0 if learning_rate is None else learning_rate,
                decay_rate=decay_rate, decay_offset=decay_offset, eps=eps)
  if clipping_threshold is not None:
    values["clipping_threshold"] = clipping_threshold
  if momentum is not None:
    values["momentum"] = momentum
  if weight_decay_rate is not None:
    values["weight_decay_rate"] = weight_decay_rate
  hyper = HyperSpec("adafactor", **values)

  slots = _slot_inits(bool(factored), min_dim, nu_dtype)
  if momentum is not None:
    slots["ema"] = _momentum_slot(dtype_momentum)

  def scalars(h):
    # In float32 whatever the hyperparameter dtype, as optax and the original
    # implementation compute it: float64 runs then follow optax bit for bit
    # (the rounding, ~1e-7 relative, is far below the statistics' own noise).
    # t - t0 is a whole number, exact in the hyperparameter dtype.
    t = (h["t"] - h["decay_offset"]).astype(jnp.float32)
    beta = 1 - t ** (-h["decay_rate"].astype(jnp.float32))
    return {"decay_t": beta.astype(h["t"].dtype)}

  decay = weight_decay_rate is not None
  return leafwise(
      "adafactor",
      AdafactorMomentumState if momentum is not None else AdafactorState,
      hyper,
      slots,
      _adafactor_rule(bool(factored), min_dim,
                      clipping_threshold is not None, bool(multiply_by_parameter_scale),
                      momentum is not None, decay),
      needs_params=bool(multiply_by_parameter_scale) or decay,
      scalars=scalars,
      masks={"decay": weight_decay_mask} if decay else None,
  )
