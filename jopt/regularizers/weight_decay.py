"""Weight decay as a transform: add a multiple of the parameters to the updates."""

from __future__ import annotations

from typing import Any

from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise

__all__ = ["add_decayed_weights", "AddDecayedWeightsState"]

AddDecayedWeightsState = state_class(
    "AddDecayedWeightsState", (),
    "State of jopt.add_decayed_weights: count, hyperparams (weight_decay).")


def _rule(g, p, slots, h, flags):
  del slots
  if flags["decay"]:
    g = g + h["weight_decay"] * p
  return g, ()


def add_decayed_weights(weight_decay: ScalarOrSchedule = 0.0, mask: Any = None):
  r"""Add :math:`\lambda\,\theta` to the incoming updates.

  .. math:: u_t = g_t + \lambda_t\, \theta_{t-1}

  Placed *before* an optimizer in ``optax.chain`` this is coupled L2
  regularisation (the ``weight_decay`` of ``torch.optim.SGD``, ``Adagrad``,
  ``RMSprop``, ``Adamax``, ``RAdam``); placed after the optimizer's
  scaling and before a learning-rate scale it is decoupled (AdamW-style) decay.

  Same names, defaults and results as ``optax.add_decayed_weights``;
  :math:`\lambda` lives in ``state.hyperparams`` (also when it is a number), so
  :func:`jopt.set_hyperparams` changes it without a recompile. Complex
  parameters work as in optax.

  Args:
    weight_decay: :math:`\lambda` >= 0, a number or a schedule ``step -> value``.
    mask: which parameters decay: a tree of bools like the params or a prefix
      of it (one bool for a whole subtree), or a function ``params -> tree``;
      ``None`` decays all. Masked-out updates pass through unchanged.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`AddDecayedWeightsState`; ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> grads = {"w": jnp.array([0.5, -1.0])}
    >>> tx = optax.chain(jopt.add_decayed_weights(1e-2), jopt.sgd(0.1, momentum=0.9))
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> print(np.asarray(updates["w"]).round(4))   # -0.1 * (g + 0.01 * params)
    [-0.051  0.102]

  Reference: Krogh & Hertz, *A Simple Weight Decay Can Improve Generalization*,
  NeurIPS 1991.
  """
  return leafwise(
      "add_decayed_weights",
      AddDecayedWeightsState,
      HyperSpec("add_decayed_weights", weight_decay=weight_decay),
      {},
      _rule,
      needs_params=True,
      masks={"decay": mask},
  )
