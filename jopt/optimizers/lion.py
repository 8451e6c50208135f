"""Lion: the sign of an interpolated momentum, with decoupled weight decay."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_zeros

__all__ = ["lion", "LionState"]

LionState = state_class(
    "LionState", ("mu",),
    "State of jopt.lion (optax's field name): count, hyperparams, mu (the momentum"
    " m, in mu_dtype).")


def _lion_step(g, p, slots, h, flags):
  (mu,) = slots
  b1, b2 = h["b1"], h["b2"]
  # The step direction interpolates with b1; the stored momentum decays with b2.
  u = jnp.sign(b1 * mu + (1 - b1) * g)
  if flags["decay"]:
    u = u + h["weight_decay"] * p
  mu = b2 * mu + (1 - b2) * g
  return -h["learning_rate"] * u, (mu,)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any = None,
):
  r"""Lion: step along the sign of an interpolated momentum.

  .. math::
    c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
    u_t = -\eta_t \left(\operatorname{sign}(c_t) + \lambda\,\theta_{t-1}\right) \\
    m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

  Every coordinate moves by exactly :math:`\eta` (plus decay), so Lion's good
  learning rates are 3-10x smaller than AdamW's and its weight decay 3-10x
  larger. Same names and defaults as ``optax.lion``; all numbers live in
  ``state.hyperparams``. (optax's ``lion`` takes no complex parameters; jopt's
  uses the complex sign :math:`c/|c|`, so every coordinate moves by :math:`\eta`
  in modulus.)

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    b1: :math:`\beta_1`, the interpolation weight of the step direction, in [0, 1).
    b2: :math:`\beta_2`, the decay of the stored momentum, in [0, 1).
    mu_dtype: storage dtype of :math:`m` (default: the parameter's).
    weight_decay: :math:`\lambda`, decoupled decay (multiplied by :math:`\eta`), >= 0.
    mask: which parameters decay: a tree of bools like the params, or a
      function ``params -> tree``; None decays all.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`LionState`;
    ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.lion(3e-4, weight_decay=1e-2)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> print(np.asarray(updates["w"]).round(6))   # -3e-4 * (sign(0.1 g) + 0.01 * params)
    [-0.000303  0.000306]

  Reference: Chen et al., *Symbolic Discovery of Optimization Algorithms*, NeurIPS 2023.
  """
  hyper = HyperSpec("lion", learning_rate=learning_rate, b1=b1, b2=b2,
                    weight_decay=weight_decay)
  return leafwise("lion", LionState, hyper, {"mu": slot_zeros(mu_dtype, "lion: mu_dtype")}, _lion_step,
                  needs_params=True, masks={"decay": mask})
