"""RAdam: Adam with the variance of its adaptive step rectified early in training."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import divide, real, scale
from jopt.optimizers._fill import dtype_slot
from jopt.optimizers.adam import corrected_mu, update_moments

__all__ = ["radam", "RadamState"]

RadamState = state_class(
    "RadamState", ("mu", "nu"),
    "State of jopt.radam (optax's field names): count, hyperparams, mu (first"
    " moment), nu (second moment of :math:`|g|`, real-valued also for complex"
    " parameters).")

_CONVENTIONS = ("optax", "torch")


def _radam_scalars(torch_convention: bool):
  def scalars(h):
    t, b1, b2 = h["t"], h["b1"], h["b2"]
    b2t = b2 ** t
    bc2 = 1 - b2t
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2t / bc2
    # The rectifier is real only where it is used (rho >= threshold >= 4); the
    # clamp keeps the unused branch finite for any threshold and for gradients.
    ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
    rect = rho > h["threshold"] if torch_convention else rho >= h["threshold"]
    eps = h["eps"] / jnp.sqrt(bc2) if torch_convention else h["eps"]
    return {
        "bc1": 1 - b1 ** t,
        "bc1_next": 1 - b1 ** (t + 1),
        "bc2": bc2,
        "r": jnp.sqrt(jnp.maximum(ratio, 0)),
        "rect": rect.astype(rho.dtype),
        "eps_eff": eps,
    }

  return scalars


def _radam_rule(nesterov: bool):
  def step(g, p, slots, h, flags):
    del p, flags
    hr = real(h)
    mu, nu = update_moments(g, *slots, h)
    m_hat = corrected_mu(g, mu, h, nesterov)
    adaptive = divide(scale(m_hat, hr["r"]),
                      jnp.sqrt(nu / hr["bc2"] + hr["eps_root"]) + hr["eps_eff"])
    u = jnp.where(hr["rect"] > 0, adaptive, m_hat)
    return -h["learning_rate"] * u, (mu, nu)

  return step


def radam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    threshold: ScalarOrSchedule = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    convention: str = "optax",
):
  r"""RAdam: Adam's adaptive step, rectified, once its variance is tractable.

  .. math::
    m_t, v_t, \hat m_t, \hat v_t \ \text{as in Adam} \\
    \rho_\infty = \frac{2}{1-\beta_2} - 1,\qquad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t},\qquad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \\
    u_t = \begin{cases}
      -\eta_t\, r_t\, \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon_t)
        & \rho_t \ge \tau \\
      -\eta_t\, \hat m_t & \text{otherwise (SGD with momentum)}
    \end{cases}

  With ``nesterov=True``, :math:`\hat m_t` is the Nesterov-corrected moment of
  :func:`jopt.nadam`.

  Two conventions (``convention=``):

  * ``"optax"`` (default, same numbers as ``optax.radam``): :math:`\epsilon_t =
    \epsilon` is added to the bias-corrected root, and the rectified step is
    taken when :math:`\rho_t \ge \tau`.
  * ``"torch"`` (same numbers as ``torch.optim.RAdam``): torch adds
    :math:`\epsilon` to :math:`\sqrt{v_t}` *before* the bias correction, i.e.
    :math:`\epsilon_t = \epsilon/\sqrt{1-\beta_2^t}` here, and rectifies only
    when :math:`\rho_t > \tau` (strictly; torch fixes :math:`\tau = 5`).
    Torch's ``weight_decay=λ`` is ``optax.chain(jopt.add_decayed_weights(λ),
    jopt.radam(..., convention="torch"))``; its ``decoupled_weight_decay`` has
    no counterpart here.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: :math:`\beta_1` in [0, 1).
    b2: :math:`\beta_2` in [0, 1).
    eps: :math:`\epsilon` >= 0, outside the square root.
    eps_root: :math:`\bar\epsilon` >= 0, inside the square root.
    threshold: :math:`\tau`, the :math:`\rho_t` from which the rectified
      adaptive step is used (5 in the paper and torch). Where :math:`r_t` would
      be imaginary (:math:`2 < \rho_t < 4`, only reachable with
      :math:`\tau < 4`) it is taken as 0 instead of NaN.
    nesterov: use the Nesterov-corrected first moment.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's). The update
      is always computed in at least float32.
    convention: ``"optax"`` or ``"torch"``, see above.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`RadamState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.radam(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # rho_1 = 1999 - 2 * 0.999 / 0.001 = 1 < 5: an SGD-with-momentum step, -lr * m_hat = -lr * g
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.05  0.1 ]

  Reference: Liu et al., *On the Variance of the Adaptive Learning Rate and
  Beyond*, ICLR 2020.
  """
  validate.check_choice("convention", convention, _CONVENTIONS, "radam: ")
  validate.check_flag("radam: ", nesterov=nesterov)
  hyper = HyperSpec("radam", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                    eps_root=eps_root, threshold=threshold)
  mu_slot = dtype_slot("mu_dtype", mu_dtype, "radam: ")
  nu_slot = dtype_slot("nu_dtype", nu_dtype, "radam: ")
  return leafwise(
      "radam",
      RadamState,
      hyper,
      {"mu": mu_slot, "nu": nu_slot},
      _radam_rule(bool(nesterov)),
      scalars=_radam_scalars(convention == "torch"),
  )
