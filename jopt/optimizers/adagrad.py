"""Adagrad: steps scaled by the root of the running sum of squared gradients."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import abs_sq, scale
from jopt.optimizers._fill import dtype_slot, init_value

__all__ = ["adagrad", "AdagradState"]

AdagradState = state_class(
    "AdagradState", ("sum_of_squares",),
    "State of jopt.adagrad (optax's field name): count, hyperparams, sum_of_squares"
    " (the accumulator G of :math:`|g|^2`, real-valued also for complex parameters).")


def _adagrad_rule(eps_in_sqrt: bool):
  def step(g, p, slots, h, flags):
    del p, flags
    (acc,) = slots
    acc = jnp.real(acc) + abs_sq(g)
    eps = jnp.real(h["eps"])
    if eps_in_sqrt:
      factor = jnp.where(acc > 0, 1 / jnp.sqrt(acc + eps), 0)
    else:
      factor = jnp.where(acc > 0, 1 / (jnp.sqrt(acc) + eps), 0)
    lr = h["learning_rate"] / (1 + (h["t"] - 1) * h["lr_decay"])
    return -lr * scale(g, factor), (acc,)

  return step


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: ScalarOrSchedule = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    nu_dtype: Any = None,
    lr_decay: ScalarOrSchedule = 0.0,
):
  r"""Adagrad: per-coordinate steps shrinking with the sum of all squared gradients.

  .. math::
    G_t = G_{t-1} + g_t^2,\qquad G_0 = G_{init} \\
    \eta'_t = \eta_t / (1 + (t-1)\,\delta) \\
    u_t = \begin{cases} -\eta'_t\, g_t / \sqrt{G_t + \epsilon} & \texttt{eps\_in\_sqrt} \\
                        -\eta'_t\, g_t / (\sqrt{G_t} + \epsilon) & \text{otherwise}
          \end{cases}

  and :math:`u_t = 0` wherever :math:`G_t = 0` (a coordinate that has only seen
  zero gradients does not move, even with :math:`\epsilon = 0`). For complex
  parameters :math:`g_t^2` is :math:`|g_t|^2`, as in optax.

  Same names and defaults as ``optax.adagrad`` (which puts :math:`\epsilon`
  inside the root and starts :math:`G` at 0.1). ``torch.optim.Adagrad`` puts
  :math:`\epsilon` outside the root, starts :math:`G` at 0 and uses
  :math:`\epsilon = 10^{-10}`, :math:`\eta = 10^{-2}`: ``jopt.adagrad(lr,
  initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False, lr_decay=...)``
  reproduces it step for step. Torch's ``weight_decay=λ`` is
  ``optax.chain(jopt.add_decayed_weights(λ), jopt.adagrad(...))``.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    initial_accumulator_value: :math:`G_{init}` >= 0, the accumulator's value
      at init (a number; it is not kept as a hyperparameter since it only
      matters once; a traced value, as ``optax.inject_hyperparams`` passes
      inside a jitted ``init``, fills the accumulator unchecked).
    eps: :math:`\epsilon` >= 0.
    eps_in_sqrt: add :math:`\epsilon` inside the square root (optax) or outside
      it (torch).
    nu_dtype: storage dtype of :math:`G` (default: the parameter's). The update
      is always computed in at least float32.
    lr_decay: :math:`\delta` >= 0, torch's learning-rate decay; 0 (the default)
      leaves :math:`\eta` unchanged.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AdagradState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.adagrad(0.1)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> print(state.sum_of_squares["w"])   # G_1 = 0.1 + g^2
    [0.35 1.1 ]
    >>> # -0.1 * g / sqrt(G_1 + 1e-7): -0.05 / sqrt(0.35) and 0.1 / sqrt(1.1)
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.0845  0.0953]

  Reference: Duchi, Hazan & Singer, *Adaptive Subgradient Methods for Online
  Learning and Stochastic Optimization*, JMLR 2011.
  """
  validate.check_flag("adagrad: ", eps_in_sqrt=eps_in_sqrt)
  g0 = init_value("initial_accumulator_value", initial_accumulator_value, "adagrad: ")
  hyper = HyperSpec("adagrad", learning_rate=learning_rate, eps=eps, lr_decay=lr_decay)
  return leafwise("adagrad", AdagradState, hyper,
                  {"sum_of_squares": dtype_slot("nu_dtype", nu_dtype, "adagrad: ", g0)},
                  _adagrad_rule(bool(eps_in_sqrt)))
