"""Adamax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import divide, real
from jopt.optimizers._fill import dtype_slot

__all__ = ["adamax", "AdamaxState"]

AdamaxState = state_class(
    "AdamaxState", ("mu", "nu"),
    "State of jopt.adamax (optax's field names): count, hyperparams, mu (first"
    " moment), nu (decayed maximum of :math:`|g|`, real-valued also for complex"
    " parameters).")


def _scalars(h):
  return {"bc1": 1 - h["b1"] ** h["t"]}


def _adamax_rule(eps_in_max: bool):
  def step(g, p, slots, h, flags):
    del p, flags
    mu, nu = slots
    hr = real(h)
    b1, b2, eps = h["b1"], hr["b2"], hr["eps"]
    mu = (1 - b1) * g + b1 * mu
    nu = jnp.real(nu)
    if eps_in_max:
      nu = jnp.maximum(b2 * nu, jnp.abs(g) + eps)
      denom = nu
    else:
      nu = jnp.maximum(b2 * nu, jnp.abs(g))
      denom = nu + eps
    return -h["learning_rate"] * divide(mu / h["bc1"], denom), (mu, nu)

  return step


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    eps_in_max: bool = True,
):
  r"""Adamax: Adam's step normalised by an exponentially decayed maximum of :math:`|g|`.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t \\
    v_t = \max(\beta_2 v_{t-1},\ |g_t| + \epsilon),\qquad
    u_t = -\eta_t\, \frac{m_t}{(1-\beta_1^t)\, v_t} \qquad (\texttt{eps\_in\_max=True}) \\
    v_t = \max(\beta_2 v_{t-1},\ |g_t|),\qquad
    u_t = -\eta_t\, \frac{m_t}{(1-\beta_1^t)(v_t + \epsilon)} \qquad (\texttt{eps\_in\_max=False})

  with :math:`m_0 = v_0 = 0`; :math:`v` needs no bias correction. For complex
  parameters :math:`|g_t|` is the modulus (as in optax), so :math:`v` is real.

  The default, :math:`\epsilon` inside the maximum, is the rule of both
  ``optax.adamax`` (0.2.8) and ``torch.optim.Adamax``, so ``jopt.adamax(lr, b1,
  b2, eps)`` matches either step for step (torch's default :math:`\eta` is
  :math:`2\cdot 10^{-3}`; its ``weight_decay=λ`` is
  ``optax.chain(jopt.add_decayed_weights(λ), jopt.adamax(...))``).
  ``eps_in_max=False`` adds :math:`\epsilon` to the denominator instead, as
  Keras does; the paper has no :math:`\epsilon` at all.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: :math:`\beta_1` in [0, 1).
    b2: :math:`\beta_2` in [0, 1), decay of the running maximum.
    eps: :math:`\epsilon` >= 0.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's). The update
      is always computed in at least float32.
    eps_in_max: where :math:`\epsilon` sits (see above).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AdamaxState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.adamax(2e-3)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> print(state.nu["w"])   # v_1 = max(0, |g| + eps)
    [0.5 1. ]
    >>> # m_1 / (1 - 0.9) = g, so the first step is -lr * g / |g|
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.002  0.002]

  Reference: Kingma & Ba, *Adam: A Method for Stochastic Optimization*, ICLR 2015,
  section 7.1.
  """
  validate.check_flag("adamax: ", eps_in_max=eps_in_max)
  hyper = HyperSpec("adamax", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
  mu_slot = dtype_slot("mu_dtype", mu_dtype, "adamax: ")
  nu_slot = dtype_slot("nu_dtype", nu_dtype, "adamax: ")
  return leafwise("adamax", AdamaxState, hyper,
                  {"mu": mu_slot, "nu": nu_slot},
                  _adamax_rule(bool(eps_in_max)), scalars=_scalars)
