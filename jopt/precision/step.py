"""A mixed-precision train step: master weights, half-precision compute, a scaled loss."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jopt.precision.loss_scale import LossScaleState, scale_loss
from jopt._core import validate
from jopt._core.tree import path_string
from jopt.precision.policy import KeepRule, Policy, get_policy

__all__ = ["mixed_precision_step"]

_WHERE = "mixed_precision_step: "


def _check_params(params: Any, policy: Policy) -> None:
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = getattr(x, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and (
        jnp.dtype(dtype) != policy.param_dtype):
      raise TypeError(
          f"{_WHERE}params/{path_string(path)} is {jnp.dtype(dtype)}, but the policy keeps"
          f" parameters in {policy.param_dtype}. Pass policy.cast_to_param(params)"
          " (float32 master weights for a mixed policy).")


def mixed_precision_step(
    loss_fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    policy: str | Policy = "mixed_bfloat16",
    *,
    keep_float32: KeepRule = True,
    has_aux: bool = False,
    jit: bool = True,
) -> Callable[[Any, LossScaleState, Any], tuple[Any, LossScaleState, dict[str, Any]]]:
  r"""A train step ``(params, state, batch) -> (params, state, metrics)`` in mixed precision.

  With master parameters :math:`\theta` (in ``policy.param_dtype``), the
  compute cast :math:`c(\cdot)` and the state's loss scale :math:`S`:

  .. math::
    \tilde g = \nabla_\theta \big[S \cdot L(c(\theta), \text{batch})\big], \qquad
    (u, \text{state}) = \text{tx.update}(\tilde g, \text{state}, \theta), \qquad
    \theta \leftarrow \theta + u

  ``loss_fn(compute_params, batch)`` sees the parameters cast by
  ``policy.cast_to_compute(params, keep_float32)`` (norm parameters stay in
  float32 by default) and the batch as given: cast the model's inputs inside
  it (``policy.cast_to_compute(x)``; regression targets are usually best left
  in float32). The gradient of the cast is the cast back, so
  :math:`\tilde g` reaches ``tx`` in the master dtype (float32), scaled;
  ``tx`` must come from :func:`loss_scale`, which unscales, skips non-finite
  steps and adjusts :math:`S`. The loss is scaled in float32 (see
  :func:`scale_loss`); let ``loss_fn`` compute it from ``policy.cast_to_output``
  of the model's outputs.

  Args:
    loss_fn: ``(params, batch) -> loss`` (or ``(loss, aux)`` with ``has_aux``).
    tx: a :func:`loss_scale` transform (``loss_scale(optimizer)``; use
      ``loss_scale(optimizer, 1.0, dynamic=False)`` for bfloat16, which rarely
      needs scaling but still benefits from skipping non-finite steps).
    policy: a :class:`Policy` or a string for :func:`get_policy`.
    keep_float32: the parameter rule of :meth:`Policy.cast_to_compute`.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; ``aux`` is returned in the
      metrics under ``"aux"``.
    jit: compile the step with ``jax.jit`` (no buffer donation).

  Returns:
    ``step(params, state, batch) -> (params, state, metrics)``, where metrics
    holds ``loss`` (the unscaled loss, float32), ``scale`` (the :math:`S` used
    in this step), ``finite`` (bool: the step was applied) and ``skipped`` (the
    running count of skipped steps).

  Raises:
    TypeError: at trace time, when ``state`` is not a :class:`LossScaleState`
      or a floating parameter is not in ``policy.param_dtype``.

  Example:
    >>> from jopt.training import init_mlp, loss_fn
    >>> params = init_mlp(jax.random.key(0), (4, 8, 3))      # float32 master weights
    >>> x, y = jnp.ones((2, 4)), jnp.array([0, 2])
    >>> tx = jopt.precision.loss_scale(jopt.adam(1e-3))
    >>> step = jopt.precision.mixed_precision_step(loss_fn, tx, "mixed_float16")
    >>> state = tx.init(params)
    >>> for _ in range(2):   # at S = 2**16 the float16 backward pass overflows: skip, halve S
    ...   params, state, metrics = step(params, state, (x, y))
    ...   print(bool(metrics["finite"]), float(metrics["scale"]), int(metrics["skipped"]))
    False 65536.0 1
    True 32768.0 1
    >>> params[0]["w"].dtype, metrics["loss"].dtype
    (dtype('float32'), dtype('float32'))

  Reference: Micikevicius et al., *Mixed Precision Training*, ICLR 2018
  (float32 master weights, half-precision compute, loss scaling);
  ``torch.amp.autocast`` with ``GradScaler`` for the loop it replaces.
  """
  if not callable(loss_fn):
    raise TypeError(f"{_WHERE}loss_fn must be callable (params, batch) -> loss, got {loss_fn!r}.")
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(f"{_WHERE}tx must be an optax transform from loss_scale(...), got {tx!r}.")
  validate.check_flag(_WHERE, has_aux=has_aux, jit=jit)
  policy = get_policy(policy)
  policy.cast_to_compute({}, keep_float32)   # validates the rule now, not at trace time

  def step(params, state, batch):
    if not isinstance(state, LossScaleState):
      raise TypeError(
          f"{_WHERE}state is a {type(state).__name__}, not a LossScaleState: wrap the"
          " optimizer, tx = jopt.precision.loss_scale(optimizer), and pass tx.init(params).")
    _check_params(params, policy)

    def scaled(p):
      out = loss_fn(policy.cast_to_compute(p, keep_float32), batch)
      loss, aux = out if has_aux else (out, None)
      loss = jnp.asarray(loss)
      if loss.shape != ():
        raise ValueError(f"{_WHERE}loss_fn must return a scalar loss, got shape {loss.shape}.")
      return scale_loss(loss, state), (loss, aux)

    (_, (loss, aux)), grads = jax.value_and_grad(scaled, has_aux=True)(params)
    updates, new_state = tx.update(grads, state, params)
    new_params = optax.apply_updates(params, updates)
    metrics = {"loss": loss.astype(jnp.float32), "scale": state.scale,
               "finite": new_state.skipped == state.skipped, "skipped": new_state.skipped}
    if has_aux:
      metrics["aux"] = aux
    return new_params, new_state, metrics

  return jax.jit(step) if jit else step
