"""LARS: SGD with momentum whose per-array step is scaled by a trust ratio."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros
from jopt.optimizers._complex import abs_sq, real, scale

__all__ = ["lars", "LarsState"]

LarsState = state_class(
    "LarsState", ("trace",),
    "State of jopt.lars: count, hyperparams, trace (the momentum buffer m, in"
    " mu_dtype; optax's name for it).")


def _norm(x: jax.Array) -> jax.Array:
  """Euclidean norm of the whole array (the root of the sum of ``|x|**2``: real
  for complex ``x`` too), with a finite gradient at zero."""
  sq = jnp.sum(abs_sq(x))
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1)), 0)


def trust_ratio(p: jax.Array, u: jax.Array, coefficient: Any, eps: Any) -> jax.Array:
  r"""``coefficient * ||p|| / (||u|| + eps)``, or 1 where either norm is zero.

  A zero parameter (fresh bias) or a zero update would otherwise never move
  or divide by zero; both take the plain step instead (ratio 1). The ratio is
  real; ``coefficient`` and ``eps`` must be real too.
  """
  p_norm, u_norm = _norm(p), _norm(u)
  ratio = coefficient * p_norm / (u_norm + eps)
  return jnp.where((p_norm == 0) | (u_norm == 0), jnp.ones_like(ratio), ratio)


def _lars_rule(nesterov: bool):
  def step(g, p, slots, h, flags):
    (mu,) = slots
    hr = real(h)
    u = g
    if flags["decay"]:
      u = u + h["weight_decay"] * p
    if flags["trust"]:
      u = scale(u, trust_ratio(p, u, hr["trust_coefficient"], hr["eps"]))
    mu = h["momentum"] * mu + u
    d = u + h["momentum"] * mu if nesterov else mu
    return -h["learning_rate"] * d, (mu,)

  return step


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: ScalarOrSchedule = 0.001,
    eps: ScalarOrSchedule = 0.0,
    trust_ratio_mask: Any = True,
    momentum: ScalarOrSchedule = 0.9,
    nesterov: bool = False,
    *,
    mu_dtype: Any = None,
):
  r"""LARS: layer-wise adaptive rate scaling for large-batch SGD.

  For each parameter array :math:`\theta` (a "layer"):

  .. math::
    d_t = g_t + \lambda\,\theta_{t-1},\quad
    r_t = \kappa\, \frac{\|\theta_{t-1}\|}{\|d_t\| + \epsilon}
          \ (r_t = 1 \text{ if either norm is } 0) \\
    m_t = \mu\, m_{t-1} + r_t d_t,\quad
    u_t = -\eta_t\, m_t \quad(\text{Nesterov: } u_t = -\eta_t (r_t d_t + \mu\, m_t))

  Same names and defaults as ``optax.lars``, and the same updates for a
  constant learning rate. One difference by design: optax scales by
  :math:`\eta` *before* the momentum buffer, jopt after it, so every jopt update
  is proportional to the current :math:`\eta` (setting it to 0 stops training at
  once). Under a learning-rate schedule, jopt's buffer holds unscaled steps and
  the current rate multiplies the whole buffer. Complex parameters work as in
  optax (the norms are :math:`\sqrt{\sum |x|^2}`, real). The buffer is
  ``state.trace``, optax's name for it.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    weight_decay: :math:`\lambda`, coupled L2 decay added before the trust ratio, >= 0.
    weight_decay_mask: which parameters decay: True (all), False (none), a tree
      of bools like the params, or a function ``params -> tree``.
    trust_coefficient: :math:`\kappa`, >= 0.
    eps: :math:`\epsilon`, added to the update norm, >= 0.
    trust_ratio_mask: which parameters get the trust ratio (others use
      :math:`r_t = 1`), same forms as ``weight_decay_mask``. Biases and
      normalisation scales are commonly excluded.
    momentum: :math:`\mu`, in [0, 1).
    nesterov: use Nesterov momentum.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`LarsState`;
    ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.lars(1.0, weight_decay=1e-4)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> # d_1 = g + 1e-4 * params, r_1 = 0.001 * ||params|| / ||d_1||:
    >>> # a step of norm about 0.001 * ||params||, along d_1
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.001  0.002]

  Reference: You, Gitman & Ginsburg, *Large Batch Training of Convolutional
  Networks*, 2017 (arXiv:1708.03888).
  """
  validate.check_flag("lars: ", nesterov=nesterov)
  hyper = HyperSpec("lars", learning_rate=learning_rate, weight_decay=weight_decay,
                    trust_coefficient=trust_coefficient, eps=eps, momentum=momentum)
  return leafwise("lars", LarsState, hyper, {"trace": slot_zeros(mu_dtype, "lars: mu_dtype")},
                  _lars_rule(bool(nesterov)), needs_params=True,
                  masks={"decay": weight_decay_mask, "trust": trust_ratio_mask})
