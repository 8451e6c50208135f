"""LAMB: Adam steps rescaled per array by a trust ratio, for large batches."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros
from jopt.optimizers._complex import divide, real, scale
from jopt.optimizers.adam import _adam_scalars, corrected_mu, update_moments
from jopt.optimizers.lars import trust_ratio

__all__ = ["lamb", "LambState"]

LambState = state_class(
    "LambState", ("mu", "nu"),
    "State of jopt.lamb (optax's field names): count, hyperparams, mu and nu"
    " (Adam's first and second moments, in mu_dtype and nu_dtype; nu is"
    " real-valued also for complex parameters).")


def _lamb_step(g, p, slots, h, flags):
  hr = real(h)
  mu, nu = update_moments(g, *slots, h)
  r = divide(corrected_mu(g, mu, h, nesterov=False),
             jnp.sqrt(nu / hr["bc2"] + hr["eps_root"]) + hr["eps"])
  if flags["decay"]:
    r = r + h["weight_decay"] * p
  r = scale(r, trust_ratio(p, r, 1.0, 0.0))
  return -h["learning_rate"] * r, (mu, nu)


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-6,
    eps_root: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any = None,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
):
  r"""LAMB: Adam with decoupled decay, each array's step scaled to its parameter norm.

  For each parameter array :math:`\theta`, with Adam's bias-corrected moments
  :math:`\hat m_t, \hat v_t` (see :func:`jopt.adam`):

  .. math::
    r_t = \hat m_t / (\sqrt{\hat v_t + \bar\epsilon} + \epsilon) + \lambda\,\theta_{t-1} \\
    u_t = -\eta_t\, \frac{\|\theta_{t-1}\|}{\|r_t\|}\, r_t
    \quad(\text{the ratio is 1 when either norm is } 0)

  So each array moves by :math:`\eta\,\|\theta\|` per step: a relative step
  size. Same names, defaults and updates as ``optax.lamb`` (trust ratio per
  array, no clipping of :math:`\|\theta\|`), complex parameters included
  (:math:`|g|^2` in :math:`v`, norms of the complex arrays).

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: decay :math:`\beta_1` of the first moment, in [0, 1).
    b2: decay :math:`\beta_2` of the second moment, in [0, 1).
    eps: :math:`\epsilon`, added outside the square root, >= 0.
    eps_root: :math:`\bar\epsilon`, added inside the square root, >= 0.
    weight_decay: :math:`\lambda`, decay added before the trust ratio, >= 0.
    mask: which parameters decay: a tree of bools like the params, or a
      function ``params -> tree``; None decays all.
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    nu_dtype: storage dtype of :math:`v` (default: the parameter's).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`LambState`;
    ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.lamb(1e-3, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> # r_1 = sign(g) + 0.01 * params = [1.01, -1.02], rescaled to norm 1e-3 * ||params||
    >>> print(np.asarray(updates["w"]).round(6))
    [-0.001573  0.001589]
    >>> print(round(float(optax.tree.norm(updates) / optax.tree.norm(params)), 6))
    0.001

  Reference: You et al., *Large Batch Optimization for Deep Learning: Training
  BERT in 76 minutes*, ICLR 2020.
  """
  hyper = HyperSpec("lamb", learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                    eps_root=eps_root, weight_decay=weight_decay)
  return leafwise("lamb", LambState, hyper,
                  {"mu": slot_zeros(mu_dtype, "lamb: mu_dtype"),
                   "nu": slot_zeros(nu_dtype, "lamb: nu_dtype")},
                  _lamb_step, needs_params=True, scalars=_adam_scalars,
                  masks={"decay": mask})
