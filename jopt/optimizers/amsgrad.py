"""AMSGrad: Adam whose second moment never decreases."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import divide, real
from jopt.optimizers._fill import dtype_slot
from jopt.optimizers.adam import update_moments

__all__ = ["amsgrad", "AmsgradState"]

AmsgradState = state_class(
    "AmsgradState", ("mu", "nu", "nu_max"),
    "State of jopt.amsgrad (optax's field names): count, hyperparams, mu, nu and"
    " nu_max (running maximum of nu, bias-corrected by default); nu and nu_max"
    " are real-valued also for complex parameters.")


def _scalars(h):
  t = h["t"]
  return {"bc1": 1 - h["b1"] ** t, "bc2": 1 - h["b2"] ** t}


def _amsgrad_rule(bias_correction_mu: bool, bias_correction_nu: bool):
  def step(g, p, slots, h, flags):
    del p, flags
    mu, nu, nu_max = slots
    hr = real(h)
    mu, nu = update_moments(g, mu, nu, h)
    m_hat = mu / h["bc1"] if bias_correction_mu else mu
    v_eff = nu / hr["bc2"] if bias_correction_nu else nu
    nu_max = jnp.maximum(jnp.real(nu_max), v_eff)
    u = divide(m_hat, jnp.sqrt(nu_max + hr["eps_root"]) + hr["eps"])
    return -h["learning_rate"] * u, (mu, nu, nu_max)

  return step


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Any = None,
):
  r"""AMSGrad: Adam normalised by the running maximum of its second moment.

  .. math::
    m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
    \hat m_t = m_t/(1-\beta_1^t),\quad \hat v_t = v_t/(1-\beta_2^t),\quad
    \bar v_t = \max(\bar v_{t-1}, \hat v_t) \\
    u_t = -\eta_t\, \hat m_t / (\sqrt{\bar v_t + \bar\epsilon} + \epsilon)

  ``bias_correction_mu=False`` uses :math:`m_t` for :math:`\hat m_t`, and
  ``bias_correction_nu=False`` takes the maximum of the raw :math:`v_t` (both
  off: the algorithm of Reddi et al.).

  Same names, defaults and results as ``optax.amsgrad``: the maximum is taken
  over *bias-corrected* second moments (of :math:`|g_t|^2` for complex
  parameters, as optax). ``torch.optim.Adam(amsgrad=True)``
  instead keeps the maximum of the raw :math:`v_t` and divides it by the
  current :math:`1-\beta_2^t`; with the default :math:`\beta_2` the two differ
  only in the first steps, but they are not the same rule.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: :math:`\beta_1` in [0, 1).
    b2: :math:`\beta_2` in [0, 1).
    eps: :math:`\epsilon` >= 0, outside the square root.
    eps_root: :math:`\bar\epsilon` >= 0, inside the square root.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    bias_correction_mu: divide :math:`m_t` by :math:`1-\beta_1^t`.
    bias_correction_nu: divide :math:`v_t` by :math:`1-\beta_2^t` before the maximum.
    nu_dtype: storage dtype of :math:`v` and :math:`\bar v` (default: the
      parameter's). The update is always computed in at least float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AmsgradState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.amsgrad(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> print(np.asarray(state.nu_max["w"]).round(4))   # v_bar_1 = v_hat_1 = g^2
    [0.25 1.  ]
    >>> updates, state = tx.update({"w": jnp.array([0.5, -0.1])}, state)
    >>> print(np.asarray(state.nu_max["w"]).round(4))   # the maximum keeps 1.0 for the second entry
    [0.25 1.  ]

  Reference: Reddi, Kale & Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018.
  """
  validate.check_flag("amsgrad: ", bias_correction_mu=bias_correction_mu,
                      bias_correction_nu=bias_correction_nu)
  hyper = HyperSpec("amsgrad", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                    eps_root=eps_root)
  mu_slot = dtype_slot("mu_dtype", mu_dtype, "amsgrad: ")
  nu_slot = dtype_slot("nu_dtype", nu_dtype, "amsgrad: ")
  return leafwise(
      "amsgrad",
      AmsgradState,
      hyper,
      {"mu": mu_slot, "nu": nu_slot, "nu_max": nu_slot},
      _amsgrad_rule(bool(bias_correction_mu), bool(bias_correction_nu)),
      scalars=_scalars,
  )
