"""Proximal L1: soft-threshold the tentative parameters after an optimizer step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jopt._core import validate
from jopt._core.hyperparams import HyperSpec, ScalarOrSchedule, state_class
from jopt._core.leafwise import leafwise
from jopt.regularizers.penalties import mask_flags

__all__ = ["proximal_l1", "ProximalL1State"]

validate.register_range("l1_strength", 0.0)
validate.register_range("l1_learning_rate", 0.0)

ProximalL1State = state_class(
    "ProximalL1State", (),
    "State of jopt.proximal_l1: count, hyperparams (l1_strength, l1_learning_rate).")


def _rule(u, p, slots, h, flags):
  del slots
  if not flags["l1"]:
    return u, ()
  tau = (h["l1_strength"] * h["l1_learning_rate"]).real
  z = p + u
  mag = jnp.abs(z)
  keep = mag > tau
  if jnp.issubdtype(z.dtype, jnp.complexfloating):
    # S_tau(z) = z (|z| - tau) / |z|: the modulus shrinks, the phase is kept.
    ratio = jnp.where(keep, (mag - tau) / jnp.where(keep, mag, 1), 0)
    shrunk = z * ratio.astype(z.dtype)
  else:
    shrunk = jnp.sign(z) * jnp.maximum(mag - tau, 0)
  # Where z is thresholded return -p exactly: apply_updates' p + (-p) is exactly 0.
  return jnp.where(keep, shrunk - p, -p), ()


def proximal_l1(strength: ScalarOrSchedule, learning_rate: ScalarOrSchedule = 1.0,
                mask: Any = None):
  r"""Turn the preceding step into a proximal-gradient (ISTA) step for an L1 penalty.

  Chained *after* an optimizer's full step (its learning-rate scaling
  included), with the incoming update :math:`u` and the parameters
  :math:`\theta`, the tentative point is :math:`z = \theta + u` and

  .. math::
    \tau = \lambda\,\eta, \qquad
    S_\tau(z) = \operatorname{sign}(z)\,\max(|z| - \tau,\ 0), \qquad
    u' = S_\tau(z) - \theta

  so ``optax.apply_updates`` lands on :math:`S_\tau(z)`, the proximal point of
  :math:`\tau\|\cdot\|_1`. Where :math:`|z| \le \tau` the returned update is
  exactly :math:`-\theta`, so ``apply_updates``' :math:`\theta + (-\theta)` is
  exactly 0.0: thresholded weights become exact zeros (and stay zero until a
  gradient step pushes them past :math:`\tau`). This needs an update dtype
  that holds the params exactly (the same dtype, or a wider one); bfloat16
  updates for float32 params round :math:`-\theta` and leave tiny residues.

  With ``jopt.sgd(lr)`` before it and ``learning_rate=lr`` this is exactly
  ISTA for :math:`f(\theta) + \lambda\|\theta\|_1` (Beck & Teboulle's
  proximal gradient method with a constant step). With momentum or an
  adaptive optimizer it is the common heuristic that thresholds each step by
  the scalar :math:`\lambda\eta`, not the proximal step in the optimizer's
  preconditioned metric (and not FISTA's extrapolation); ``learning_rate``
  should be the optimizer's learning rate (the same number or schedule).
  Complex parameters shrink the modulus and keep the phase,
  :math:`S_\tau(z) = z \max(|z| - \tau, 0) / |z|`.

  :math:`\lambda` and :math:`\eta` live in ``state.hyperparams`` as
  ``l1_strength`` and ``l1_learning_rate`` (distinct from the optimizer's
  ``learning_rate``, so :func:`jopt.hyperparams` works on the whole chain);
  :func:`jopt.set_hyperparams` changes them without a recompile.

  Args:
    strength: :math:`\lambda \ge 0`, the L1 weight (as in
      :func:`jopt.regularizers.l1_penalty`), a number or a schedule.
    learning_rate: :math:`\eta \ge 0`, the step size of the preceding
      optimizer, a number or a schedule (default 1: ``strength`` is then the
      threshold itself).
    mask: which leaves are thresholded; ``None`` (default) is
      :func:`jopt.regularizers.weights_mask`, leaves with ``ndim >= 2``
      (biases and normalization scales are left dense). ``True`` all, ``False``
      none, a tree or prefix of Python bools, or a function ``params -> tree``.
      Masked-out updates pass through unchanged.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`ProximalL1State`; ``update`` needs ``params``.

  Example:
    >>> params = {"w": jnp.array([[0.5, -2.0]]), "b": jnp.array([0.01])}
    >>> grads = {"w": jnp.array([[4.8, 1.0]]), "b": jnp.array([0.0])}
    >>> tx = optax.chain(jopt.sgd(0.1), jopt.proximal_l1(0.5, learning_rate=0.1))
    >>> state = tx.init(params)
    >>> updates, state = tx.update(grads, state, params)
    >>> params = optax.apply_updates(params, updates)   # exact zeros appear
    >>> # z = w - 0.1 g = [0.02, -2.1], shrunk by tau = 0.5 * 0.1; the 1-D bias is left dense
    >>> print(np.asarray(params["w"]).round(4), params["b"], bool(params["w"][0, 0] == 0))
    [[ 0.   -2.05]] [0.01] True

  Reference: Beck & Teboulle, *A Fast Iterative Shrinkage-Thresholding
  Algorithm for Linear Inverse Problems*, SIAM J. Imaging Sci. 2009 (ISTA);
  Parikh & Boyd, *Proximal Algorithms*, Found. Trends Optim. 2014, sec. 6.5.2.
  """
  where = "proximal_l1: "
  for name, value in (("strength", strength), ("learning_rate", learning_rate)):
    # Named as the caller wrote them (state.hyperparams calls them l1_*).
    if validate.is_schedule(value):
      try:
        value = value(0)
      except Exception as e:  # pylint: disable=broad-except
        raise TypeError(f"{where}{name} is callable, so it must be a schedule step ->"
                        f" value; calling it at step 0 failed: {e}") from e
      validate.check_range(name, value, 0.0, where=f"{where}the schedule given as ")
    else:
      validate.check_range(name, value, 0.0, where=where)
  flags_fn = lambda params: _mask_tree(mask, params, where)  # noqa: E731
  return leafwise(
      "proximal_l1",
      ProximalL1State,
      HyperSpec("proximal_l1", l1_strength=strength, l1_learning_rate=learning_rate),
      {},
      _rule,
      needs_params=True,
      masks={"l1": flags_fn},
  )


def _mask_tree(mask: Any, params: Any, where: str) -> Any:
  """The mask as a full tree of bools (checked, with the expected structure named)."""
  flags = mask_flags(mask, params, where)
  return jax.tree.structure(params).unflatten(flags)
