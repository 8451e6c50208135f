"""Adadelta: steps whose units come from a running average of past steps."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.optimizers._complex import abs_sq, real, scale
from jopt.optimizers._fill import dtype_slot

__all__ = ["adadelta", "AdadeltaState"]

AdadeltaState = state_class(
    "AdadeltaState", ("e_g", "e_x"),
    "State of jopt.adadelta (optax's field names): count, hyperparams, e_g (mean"
    " of :math:`|g|^2`), e_x (mean of :math:`|\\Delta|^2`); both real-valued also for"
    " complex parameters.")


def _adadelta_rule(decay: bool):
  def step(g, p, slots, h, flags):
    e_g, e_x = slots
    if decay and flags["decay"]:
      g = g + h["weight_decay"] * p
    hr = real(h)
    rho, eps = hr["rho"], hr["eps"]
    e_x = jnp.real(e_x)
    e_g = rho * jnp.real(e_g) + (1 - rho) * abs_sq(g)
    d = scale(g, jnp.sqrt(e_x + eps) / jnp.sqrt(e_g + eps))
    e_x = rho * e_x + (1 - rho) * abs_sq(d)
    return -h["learning_rate"] * d, (e_g, e_x)

  return step


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule | None = None,
    weight_decay_mask: Any = None,
    *,
    nu_dtype: Any = None,
):
  r"""Adadelta: a step sized by the ratio of running RMS of past steps and gradients.

  With :math:`\tilde g_t = g_t + \lambda\,\theta_{t-1}` (coupled L2, off by
  default):

  .. math::
    E[g^2]_t = \rho\, E[g^2]_{t-1} + (1-\rho)\, \tilde g_t^2 \\
    \Delta_t = \tilde g_t\, \sqrt{E[\Delta^2]_{t-1} + \epsilon} \,/\, \sqrt{E[g^2]_t + \epsilon} \\
    E[\Delta^2]_t = \rho\, E[\Delta^2]_{t-1} + (1-\rho)\, \Delta_t^2 \\
    u_t = -\eta_t\, \Delta_t

  with both averages starting at 0. The running average of steps tracks the
  unscaled :math:`\Delta`, so :math:`\eta` only scales what is applied.

  Same names and defaults as ``optax.adadelta`` and the same numbers for any
  given ``learning_rate``. ``learning_rate=None`` means the paper's rule,
  :math:`\eta = 1` (``torch.optim.Adadelta``'s default ``lr=1.0``), kept in
  state so :func:`jopt.set_hyperparams` can change it. (optax 0.2.8 maps
  ``None`` to "no scaling" and so skips the sign flip too: its
  ``adadelta(None)`` steps *up* the gradient; jopt does not copy that.)
  ``torch.optim.Adadelta(lr, rho, eps, weight_decay)`` is the same rule step
  for step, with the same coupled weight decay. optax's ``adadelta`` does not
  take complex parameters; jopt's does, with :math:`|\tilde g_t|^2` and
  :math:`|\Delta_t|^2` in the two averages.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule; ``None``
      means 1.
    rho: :math:`\rho` in [0, 1) for both running averages.
    eps: :math:`\epsilon` >= 0, inside both square roots (it also sets the size
      of the first steps, since :math:`E[\Delta^2]_0 = 0`).
    weight_decay: :math:`\lambda` >= 0, coupled L2 added to the gradient. The
      default None (optax: 0.0, the same numbers) adds no term, keeps no
      hyperparameter and needs no params; a number (0 included) or a schedule
      lives in ``state.hyperparams`` and ``update`` then needs ``params``. None
      rather than 0 marks "off" so that the state's layout never depends on a
      value: ``optax.inject_hyperparams`` injects every numeric default.
    weight_decay_mask: which parameters decay: a tree of bools like the params,
      or a function ``params -> tree``; None decays all.
    nu_dtype: storage dtype of both running averages (default: the
      parameter's). The update is always computed in at least float32.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`AdadeltaState`.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.adadelta(1.0, rho=0.95)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # E[g^2]_1 = 0.05 g^2, E[Delta^2]_0 = 0: the first step is about sqrt(1e-6 / 0.05) = 0.0045
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.0045  0.0045]

  Reference: Zeiler, *ADADELTA: An Adaptive Learning Rate Method*, arXiv:1212.5701, 2012.
  """
  if learning_rate is None:
    learning_rate = 1.0
  values: dict[str, Any] = dict(learning_rate=learning_rate, rho=rho, eps=eps)
  decay = weight_decay is not None
  if decay:
    values["weight_decay"] = weight_decay
  return leafwise(
      "adadelta",
      AdadeltaState,
      HyperSpec("adadelta", **values),
      {"e_g": dtype_slot("nu_dtype", nu_dtype, "adadelta: "),
       "e_x": dtype_slot("nu_dtype", nu_dtype, "adadelta: ")},
      _adadelta_rule(decay),
      needs_params=decay,
      masks={"decay": weight_decay_mask} if decay else None,
  )
