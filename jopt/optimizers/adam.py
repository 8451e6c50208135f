"""Adam, AdamW and NAdam: bias-corrected first and second moment estimates."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros
from jopt.optimizers._complex import abs_sq, divide, re, real, scale

__all__ = ["adam", "adamw", "nadam", "nadamw", "AdamState"]

AdamState = state_class(
    "AdamState", ("mu", "nu"),
    "State of jopt.adam, adamw, nadam and nadamw (optax's field names): count,"
    " hyperparams, mu (first moment, in mu_dtype) and nu (second moment of"
    " :math:`|g|`, in nu_dtype; real-valued also for complex parameters).")


def _adam_scalars(h):
  """Bias corrections, and the factors Adam's step folds them into (once per update).

  ``omb1 = 1 - b1``, ``omb2 = 1 - b2``, ``step_mu = -lr / bc1`` (NAdam:
  ``nesterov_mu = -lr b1 / bc1_next``, ``nesterov_g = -lr (1 - b1) / bc1``),
  ``inv_bc2 = 1 / bc2``, ``step_wd = -lr wd``: each parameter then does one
  multiply where it would do a divide, a multiply and a negation (optax:
  ``mu / bc1``, ``nu / bc2``, ``* -lr``), and tracing emits no per-array
  scalar arithmetic.
  """
  t, b1, b2, lr = h["t"], h["b1"], h["b2"], h["learning_rate"]
  bc1, bc2, bc1_next = 1 - b1 ** t, 1 - b2 ** t, 1 - b1 ** (t + 1)
  out = {"bc1": bc1, "bc2": bc2, "bc1_next": bc1_next, "inv_bc2": 1 / bc2,
         "omb1": 1 - b1, "omb2": 1 - b2, "step_mu": -lr / bc1,
         "nesterov_mu": -lr * b1 / bc1_next, "nesterov_g": -lr * (1 - b1) / bc1}
  if "weight_decay" in h:
    out["step_wd"] = -lr * h["weight_decay"]
  return out


def update_moments(g, mu, nu, h):
  """The two moving averages of the Adam family: (m_t, v_t) from g_t, b1, b2.

  :math:`v_t` averages :math:`|g_t|^2` and is real (for complex ``g`` too)."""
  b1, b2 = h["b1"], re(h["b2"])
  # 1 - b1 and 1 - b2 come precomputed from _adam_scalars (once per update)
  omb1 = h["omb1"] if "omb1" in h else 1 - b1
  omb2 = re(h["omb2"]) if "omb2" in h else 1 - b2
  return omb1 * g + b1 * mu, omb2 * abs_sq(g) + b2 * re(nu)




def corrected_mu(g, mu, h, nesterov: bool):
  """Bias-corrected first moment, or its Nesterov form (needs bc1, bc1_next in h)."""
  if nesterov:
    b1 = h["b1"]
    return b1 * (mu / h["bc1_next"]) + (1 - b1) * (g / h["bc1"])
  return mu / h["bc1"]


def _adam_rule(nesterov: bool, decoupled: bool):
  # -lr * m_hat / (sqrt(nu / bc2 + eps_root) + eps) [+ -lr * wd * p], with the
  # per-update factors of _adam_scalars: per element one divide (optax: two)
  # and no more operations than optax's step.
  def step(g, p, slots, h, flags):
    hr = real(h) if jnp.iscomplexobj(g) else h
    mu, nu = update_moments(g, *slots, h)
    if nesterov:
      num = scale(mu, hr["nesterov_mu"]) + scale(g, hr["nesterov_g"])
    else:
      num = scale(mu, hr["step_mu"])
    u = divide(num, jnp.sqrt(nu * hr["inv_bc2"] + hr["eps_root"]) + hr["eps"])
    if decoupled and flags["decay"]:
      u = u + scale(p, hr["step_wd"])
    return u, (mu, nu)

  return step


def _build(name, learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov,
           weight_decay=None, mask=None):
  validate.check_flag(f"{name}: ", nesterov=nesterov)
  values = dict(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
  decoupled = weight_decay is not None
  if decoupled:
    values["weight_decay"] = weight_decay
  return leafwise(
      name,
      AdamState,
      HyperSpec(name, **values),
      {"mu": slot_zeros(mu_dtype, f"{name}: mu_dtype"),
       "nu": slot_zeros(nu_dtype, f"{name}: nu_dtype")},
      _adam_rule(nesterov, decoupled),
      needs_params=decoupled,
      scalars=_adam_scalars,
      masks={"decay": mask} if decoupled else None,
  )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
):
  r"""Adam: steps scaled by bias-corrected first and second moment estimates.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \hat m_t = m_t / (1-\beta_1^t),\quad \hat v_t = v_t / (1-\beta_2^t) \\
    u_t = -\eta_t\, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

  With ``nesterov=True`` (NAdam), :math:`\hat m_t = \beta_1 m_t/(1-\beta_1^{t+1})
  + (1-\beta_1) g_t/(1-\beta_1^t)`.

  Same names and defaults as ``optax.adam``; ``eps`` sits outside the square
  root as in ``torch.optim.Adam``. Every number may also be a schedule, and all
  live in ``state.hyperparams`` (change them with :func:`jopt.set_hyperparams`).
  Complex parameters are handled as optax does: :math:`g_t^2` is
  :math:`|g_t|^2`, so :math:`v_t` is real and the step keeps :math:`m_t`'s phase.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: decay :math:`\beta_1` of the first moment, in [0, 1).
    b2: decay :math:`\beta_2` of the second moment, in [0, 1).
    eps: :math:`\epsilon`, added outside the square root, >= 0.
    eps_root: :math:`\bar\epsilon`, added inside the square root, >= 0.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    nesterov: use the Nesterov-corrected first moment (NAdam).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's). The update
      is always computed in at least float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AdamState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.adam(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # step 1: m_hat = g and v_hat = g^2, so the update is -lr * sign(g)
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.1  0.1]

  Reference: Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015.
  """
  return _build("adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov)


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
):
  r"""NAdam: Adam with a Nesterov-corrected first moment (``adam(nesterov=True)``).

  .. math::
    \hat m_t = \beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t),\quad
    u_t = -\eta_t\, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)

  Matches ``optax.nadam``. ``torch.optim.NAdam`` adds a momentum-decay schedule
  :math:`\mu_t = \beta_1(1 - 0.5\cdot 0.96^{t\psi})` that this form does not have.

  Args: as :func:`adam`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.nadam(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # step 1: m_hat = (0.9 * 0.1 / 0.19 + 1) g = 1.4737 g and v_hat = g^2
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.1474  0.1474]

  Reference: Dozat, *Incorporating Nesterov Momentum into Adam*, ICLR workshop 2016.
  """
  return _build("nadam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov)


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
):
  r"""AdamW: Adam with weight decay decoupled from the gradient.

  .. math::
    u_t = -\eta_t \left( \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
          + \lambda\, \theta_{t-1} \right)

  Same as ``optax.adamw`` (default :math:`\lambda = 10^{-4}`). ``torch.optim.AdamW``
  multiplies the parameters by :math:`1 - \eta\lambda` before its Adam step, which
  is the same update; its default is :math:`\lambda = 10^{-2}`.

  Args:
    learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`adam`.
    weight_decay: :math:`\lambda`, >= 0, a number or a schedule.
    mask: which parameters decay: a tree of bools like the params, or a
      function ``params -> tree``; None decays all.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.adamw(0.1, weight_decay=0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> print(np.asarray(updates["w"]).round(4))   # -0.1 * (sign(g) + 0.1 * params)
    [-0.11  0.12]

  Reference: Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, ICLR 2019.
  """
  return _build("adamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov,
                weight_decay, mask)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
):
  r"""NAdamW: :func:`adamw` with the Nesterov-corrected first moment of :func:`nadam`.

  .. math::
    u_t = -\eta_t \left( \hat m^{nes}_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon)
          + \lambda \theta_{t-1} \right)

  Args: as :func:`adamw`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.nadamw(0.1, weight_decay=0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> print(np.asarray(updates["w"]).round(4))   # -0.1 * (1.4737 sign(g) + 0.1 * params)
    [-0.1574  0.1674]

  Reference: Dozat 2016; Loshchilov & Hutter 2019.
  """
  return _build("nadamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nu_dtype, nesterov,
                weight_decay, mask)
