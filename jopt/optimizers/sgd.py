"""SGD: plain, heavy-ball momentum and Nesterov momentum, with optional coupled L2."""

from __future__ import annotations

from typing import Any

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise, slot_placeholder
from jopt.optimizers._fill import dtype_slot

__all__ = ["sgd", "SgdState", "SgdMomentumState"]

SgdState = state_class(
    "SgdState", ("tree",),
    "State of jopt.sgd without momentum: count, hyperparams, tree (a one-element"
    " placeholder per parameter, kept only so update can check the gradient tree).")
SgdMomentumState = state_class(
    "SgdMomentumState", ("trace",),
    "State of jopt.sgd with momentum: count, hyperparams, trace (the momentum"
    " buffer m; optax's name for it).")


# A one-element placeholder for each parameter: the state then has the parameter
# tree's structure, so a mismatched gradient tree is caught without params
# (plain SGD keeps no other per-parameter state; shapes are checked against params).
_structure_slot = slot_placeholder()


def _sgd_rule(use_momentum: bool, nesterov: bool, decay: bool):
  def step(g, p, slots, h, flags):
    del flags
    if decay:
      g = g + h["weight_decay"] * p
    if not use_momentum:
      return -h["learning_rate"] * g, slots
    (m,) = slots
    m = g + h["momentum"] * m
    d = g + h["momentum"] * m if nesterov else m
    return -h["learning_rate"] * d, (m,)

  return step


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    weight_decay: ScalarOrSchedule | None = None,
):
  r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

  With :math:`\tilde g_t = g_t + \lambda\,\theta_{t-1}` (coupled L2, off by
  default):

  .. math::
    \text{plain:}\quad u_t = -\eta_t\,\tilde g_t \\
    m_t = \mu\, m_{t-1} + \tilde g_t,\qquad
    u_t = \begin{cases} -\eta_t\, m_t & \text{heavy ball} \\
                        -\eta_t\,(\tilde g_t + \mu\, m_t) & \text{nesterov}
          \end{cases}

  with :math:`m_0 = 0`. Same names and defaults as ``optax.sgd``; with
  ``weight_decay`` it is also step for step ``torch.optim.SGD(lr, momentum,
  weight_decay=..., nesterov=...)`` with ``dampening=0`` (torch starts its
  buffer at :math:`\tilde g_1`, which is the same as :math:`m_0 = 0` here).
  The momentum buffer holds gradients, not steps, so a changed learning rate
  takes effect at once; it is ``state.trace``, optax's name for it.

  Args:
    learning_rate: step size :math:`\eta`, a number or a schedule ``step -> value``.
    momentum: :math:`\mu` in [0, 1), a number or a schedule; ``None`` (the
      default) keeps no buffer at all.
    nesterov: use the Nesterov form; needs ``momentum``.
    accumulator_dtype: storage dtype of the momentum buffer (default: the
      parameter's). The update is always computed in at least float32.
    weight_decay: :math:`\lambda` >= 0, coupled L2 added to the gradient before
      the momentum (a jopt addition, as ``torch.optim.SGD``'s ``weight_decay``).
      The default None adds no term, keeps no hyperparameter and needs no
      params; a number (0 included) or a schedule lives in
      ``state.hyperparams`` and then ``update`` needs ``params``. Same as
      ``optax.chain(jopt.add_decayed_weights(weight_decay), jopt.sgd(...))``.
      None rather than 0 marks "off" so that the state's layout never depends
      on a value: ``optax.inject_hyperparams`` injects every numeric default.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`SgdState`
    (no momentum) or :class:`SgdMomentumState`.

  Raises:
    ValueError: a hyperparameter outside its range, or ``nesterov`` without
      ``momentum``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = jopt.sgd(0.1, momentum=0.9, nesterov=True)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state)
    >>> # m_1 = g, so the Nesterov step is -0.1 * (g + 0.9 * m_1) = -0.19 * g
    >>> print(np.asarray(updates["w"]).round(4))
    [-0.095  0.19 ]
    >>> print(state.trace["w"])   # the momentum buffer m_1
    [ 0.5 -1. ]

  Reference: Sutskever et al., *On the importance of initialization and momentum
  in deep learning*, ICML 2013.
  """
  validate.check_flag("sgd: ", nesterov=nesterov)
  if nesterov and momentum is None:
    raise ValueError(
        "sgd: nesterov=True needs momentum; pass momentum in [0, 1), e.g."
        " sgd(learning_rate, momentum=0.9, nesterov=True).")
  values: dict[str, Any] = dict(learning_rate=learning_rate)
  use_momentum = momentum is not None
  if use_momentum:
    values["momentum"] = momentum
  decay = weight_decay is not None
  if decay:
    values["weight_decay"] = weight_decay
  hyper = HyperSpec("sgd", **values)
  momentum_slot = dtype_slot("accumulator_dtype", accumulator_dtype, "sgd: ")
  if use_momentum:
    state_cls, slots = SgdMomentumState, {"trace": momentum_slot}
  else:
    state_cls, slots = SgdState, {"tree": _structure_slot}
  return leafwise("sgd", state_cls, hyper, slots,
                  _sgd_rule(use_momentum, bool(nesterov), decay), needs_params=decay)
