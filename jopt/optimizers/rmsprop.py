"""RMSProp: steps scaled by a running root mean square of the gradients."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import abs_sq, divide, real
from jopt.optimizers._fill import dtype_slot, init_value

__all__ = ["rmsprop", "RmspropState", "RmspropMomentumState", "CenteredRmspropState",
           "CenteredRmspropMomentumState"]

# Field names are optax's: nu (scale_by_rms / scale_by_stddev), mu (the centered
# mean), trace (optax.trace, the momentum buffer).
RmspropState = state_class(
    "RmspropState", ("nu",),
    "State of jopt.rmsprop: count, hyperparams, nu (mean of :math:`|g|^2`, real-valued"
    " also for complex parameters).")
RmspropMomentumState = state_class(
    "RmspropMomentumState", ("nu", "trace"),
    "State of jopt.rmsprop(momentum=...): count, hyperparams, nu, trace (the"
    " momentum buffer).")
CenteredRmspropState = state_class(
    "CenteredRmspropState", ("nu", "mu"),
    "State of jopt.rmsprop(centered=True): count, hyperparams, nu, mu (mean gradient).")
CenteredRmspropMomentumState = state_class(
    "CenteredRmspropMomentumState", ("nu", "mu", "trace"),
    "State of jopt.rmsprop(centered=True, momentum=...): count, hyperparams, nu, mu,"
    " trace (the momentum buffer).")

_STATES = {
    (False, False): RmspropState,
    (False, True): RmspropMomentumState,
    (True, False): CenteredRmspropState,
    (True, True): CenteredRmspropMomentumState,
}


def _bias_scalars(h):
  return {"bc": 1 - h["decay"] ** h["t"]}


def _rmsprop_rule(eps_in_sqrt: bool, centered: bool, use_momentum: bool, nesterov: bool,
                  bias_correction: bool):
  def step(g, p, slots, h, flags):
    del p, flags
    slots = list(slots)
    hr = real(h)
    d, dr = h["decay"], hr["decay"]
    nu = (1 - dr) * abs_sq(g) + dr * jnp.real(slots.pop(0))
    out = [nu]
    var = nu / hr["bc"] if bias_correction else nu
    if centered:
      mu = (1 - d) * g + d * slots.pop(0)
      out.append(mu)
      mu_hat = mu / h["bc"] if bias_correction else mu
      # Exact arithmetic gives var >= 0 (and var = 0 at t = 1 with bias
      # correction); rounding can make it slightly negative, so clamp.
      var = jnp.maximum(var - abs_sq(mu_hat), 0)
    if eps_in_sqrt:
      s = divide(g, jnp.sqrt(var + hr["eps"]))
    else:
      s = divide(g, jnp.sqrt(var) + hr["eps"])
    if use_momentum:
      buf = s + h["momentum"] * slots.pop(0)
      out.append(buf)
      s = s + h["momentum"] * buf if nesterov else buf
    return -h["learning_rate"] * s, tuple(out)

  return step


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
):
  r"""RMSProp: gradients divided by a running root mean square, optionally centered.

  .. math::
    v_t = \rho\, v_{t-1} + (1-\rho)\, g_t^2,\qquad v_0 = v_{init} \\
    m_t = \rho\, m_{t-1} + (1-\rho)\, g_t \quad (\text{centered only}),\qquad m_0 = 0 \\
    \sigma^2_t = \hat v_t - \hat m_t^2 \ (\text{centered}) \ \text{or}\ \hat v_t \\
    s_t = g_t / \sqrt{\sigma^2_t + \epsilon} \ \ (\texttt{eps\_in\_sqrt})
    \ \text{or}\ g_t / (\sqrt{\sigma^2_t} + \epsilon) \\
    b_t = \mu\, b_{t-1} + s_t,\qquad
    u_t = -\eta_t\, b_t \ \text{or}\ -\eta_t (s_t + \mu\, b_t)\ (\text{nesterov})

  where :math:`\hat x_t = x_t / (1-\rho^t)` with ``bias_correction`` and
  :math:`x_t` otherwise; without ``momentum``, :math:`u_t = -\eta_t s_t`. The
  centered :math:`\sigma^2_t` is clamped at 0: with ``bias_correction`` it is
  exactly 0 at :math:`t = 1`, and rounding can push it below (where optax
  returns NaN with ``eps_in_sqrt=False``).

  Same names, defaults and results as ``optax.rmsprop``; note optax's default
  puts :math:`\epsilon` *inside* the root, while ``torch.optim.RMSprop(lr,
  alpha, eps, momentum=..., centered=...)`` is ``jopt.rmsprop(lr, decay=alpha,
  eps=eps, eps_in_sqrt=False, momentum=..., centered=...)`` step for step
  (torch's defaults are :math:`\rho = 0.99` and :math:`\eta = 10^{-2}`; its
  ``weight_decay=λ`` is ``optax.chain(jopt.add_decayed_weights(λ), jopt.rmsprop(...))``).
  The momentum buffer :math:`b` holds unscaled steps and is multiplied by the
  current :math:`\eta_t`, as in torch. optax instead accumulates
  :math:`\eta`-scaled steps, so the two agree for a constant learning rate but
  not while a schedule (or :func:`jopt.set_hyperparams`) changes it: here a
  new learning rate applies to the whole step at once. State fields carry
  optax's names (``nu``, ``mu``, ``trace`` for :math:`v`, :math:`m`, :math:`b`);
  complex parameters are handled as optax does (:math:`g_t^2` is
  :math:`|g_t|^2`, :math:`\hat m_t^2` is :math:`|\hat m_t|^2`).

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    decay: :math:`\rho` in [0, 1) for the running averages.
    eps: :math:`\epsilon` >= 0.
    initial_scale: :math:`v_{init}` >= 0, the starting value of :math:`v` (a
      number used only at init; torch uses 0, TF1 used 1).
    eps_in_sqrt: add :math:`\epsilon` inside the square root (optax default)
      or outside it (torch).
    centered: divide by an estimate of the gradient's standard deviation
      rather than its root mean square (Graves 2013); keeps :math:`m`.
    momentum: :math:`\mu` in [0, 1), or ``None`` (the default) for no momentum
      buffer.
    nesterov: Nesterov form of the momentum; needs ``momentum``.
    bias_correction: divide :math:`v` (and :math:`m`) by :math:`1-\rho^t`.
    mu_dtype: storage dtype of :math:`m` and of the momentum buffer :math:`b`
      (default: the parameter's).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's). The update
      is always computed in at least float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is one of
    :class:`RmspropState`, :class:`RmspropMomentumState`,
    :class:`CenteredRmspropState`, :class:`CenteredRmspropMomentumState`.

  Raises:
    ValueError: a hyperparameter outside its range, or ``nesterov`` without
      ``momentum`` (optax ignores it silently).

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.rmsprop(1e-3, decay=0.99, eps_in_sqrt=False, centered=True, momentum=0.9)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # v_1 = 0.01 g^2, m_1 = 0.01 g: sigma_1 = |g| sqrt(0.01 - 0.0001), s_1 = sign(g) / 0.0995
    >>> print(np.asarray(updates["w"]).round(5))
    [-0.01005  0.01005]

  Reference: Hinton, *Neural Networks for Machine Learning*, lecture 6e, 2012;
  Graves, *Generating Sequences With Recurrent Neural Networks*, 2013.
  """
  validate.check_flag("rmsprop: ", eps_in_sqrt=eps_in_sqrt, centered=centered,
                      nesterov=nesterov, bias_correction=bias_correction)
  if nesterov and momentum is None:
    raise ValueError(
        "rmsprop: nesterov=True needs momentum; pass momentum in [0, 1), e.g."
        " rmsprop(learning_rate, momentum=0.9, nesterov=True).")
  v0 = init_value("initial_scale", initial_scale, "rmsprop: ")
  use_momentum = momentum is not None
  values: dict[str, Any] = dict(learning_rate=learning_rate, decay=decay, eps=eps)
  if use_momentum:
    values["momentum"] = momentum
  mu_slot = dtype_slot("mu_dtype", mu_dtype, "rmsprop: ")
  slots = {"nu": dtype_slot("nu_dtype", nu_dtype, "rmsprop: ", v0)}
  if centered:
    slots["mu"] = mu_slot
  if use_momentum:
    slots["trace"] = mu_slot
  return leafwise(
      "rmsprop",
      _STATES[(bool(centered), use_momentum)],
      HyperSpec("rmsprop", **values),
      slots,
      _rmsprop_rule(bool(eps_in_sqrt), bool(centered), use_momentum, bool(nesterov),
                    bool(bias_correction)),
      scalars=_bias_scalars if bias_correction else None,
  )
