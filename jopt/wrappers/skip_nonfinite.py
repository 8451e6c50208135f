"""Skip any step whose gradients, updates or new state would carry a NaN or an Inf."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core.finite import (agree, all_finite, check_axis_name, select_tree, stays_finite,
                               zeros_unless)
from jopt._core.tree import check_same_structure, safe_increment, unwrap_variables

__all__ = ["skip_nonfinite", "SkipNonfiniteState"]

_WHERE = "skip_nonfinite: "


class SkipNonfiniteState(NamedTuple):
  """State of :func:`skip_nonfinite`; both counters are 0-d int32 arrays.

  Attributes:
    skipped: the number of steps skipped so far (saturating); optax's
      ``total_notfinite``.
    consecutive: the number of steps skipped in a row up to now, 0 after a
      step that was taken (optax's ``notfinite_count``); stop the run when it
      grows past what you tolerate.
    inner_state: the wrapped transform's state, advanced only on taken steps.
  """

  skipped: jax.Array
  consecutive: jax.Array
  inner_state: Any


SkipNonfiniteState.__module__ = "jopt"


def _refuse_loss_scale(inner_state: Any) -> None:
  # Imported here: the check is the only tie between the wrappers and precision.
  from jopt.precision.loss_scale import LossScaleState  # pylint: disable=import-outside-toplevel
  is_ls = lambda x: isinstance(x, LossScaleState)
  if any(is_ls(x) for x in jax.tree.leaves(inner_state, is_leaf=is_ls)):
    raise ValueError(
        f"{_WHERE}tx contains a jopt.precision.loss_scale, whose scale must back off on"
        " an overflowing step; skip_nonfinite would undo that back-off and skip every"
        " later step. Put skip_nonfinite inside it instead:"
        " loss_scale(skip_nonfinite(tx), ...).")


def skip_nonfinite(
    tx: optax.GradientTransformation,
    *,
    check_outputs: bool = True,
    axis_name: str | Sequence[str] | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Wrap ``tx`` so a NaN or Inf never reaches the parameters or its state: such steps are skipped.

  With gradients :math:`g`, :math:`(u, s') = \mathrm{tx.update}(g, s, \theta)` and
  :math:`\theta' = \theta + u` (what ``optax.apply_updates`` computes, in the
  parameter's dtype), a step is taken when

  .. math::
    \text{ok} = \bigwedge_{\text{devices}} \Big[\, \textstyle\bigwedge
      \operatorname{isfinite}(g) \wedge \bigwedge \operatorname{isfinite}(u)
      \wedge \bigwedge \big(\operatorname{isfinite}(s') \vee
      \neg\operatorname{isfinite}(s)\big) \wedge \bigwedge
      \big(\operatorname{isfinite}(\theta') \vee
      \neg\operatorname{isfinite}(\theta)\big) \Big]

  (the last three terms with ``check_outputs=True``, the last one only when
  ``params`` are passed; integer, boolean and key leaves are always finite).
  The updates are then :math:`u` and the state :math:`s'`, bit for bit what
  ``tx`` alone returns. Otherwise the updates are zeros in each update's own
  dtype, the inner state is returned bit for bit (the inner step count does
  not advance), ``skipped`` and ``consecutive`` grow by one. So a run with
  skipped steps equals, bit for bit, a run of ``tx`` that never saw those
  batches. The output terms catch what the gradient check cannot: finite
  gradients that overflow inside ``tx`` (Adam's :math:`g^2` above float32's
  :math:`3.4\cdot 10^{38}`), or an update that overflows a parameter. A state
  entry that is already non-finite (early stopping's ``best = +inf`` before
  its first check) does not block a step, nor does a non-finite parameter
  the wrapper did not make so; the wrapper never *introduces* one. The
  ``value=`` metric and other extra keywords are passed to ``tx`` and not
  checked: a NaN metric is data for early stopping or a plateau schedule.

  The choice is a select over the trees (``jnp.where``), as in
  :func:`jopt.precision.loss_scale`: on a skipped step the inner update is
  computed and discarded, which costs a few elementwise passes but works
  under ``vmap`` and inside ``shard_map``. Put ``skip_nonfinite`` outermost,
  except for ``loss_scale``, which must stay outside it
  (``loss_scale(skip_nonfinite(tx))``, a ``ValueError`` otherwise): its scale
  must back off on the very steps this wrapper would undo.

  Args:
    tx: the transform to protect (any optax transform or chain); extra keyword
      arguments of ``update`` (``value=``, ...) are passed to it.
    check_outputs: also check the updates, the new inner state and the new
      parameters as above (default). ``False`` checks the gradients only, as
      ``optax.apply_if_finite`` does.
    axis_name: inside ``jax.shard_map`` (or ``pmap``), the mesh axis name(s) over
      which ``ok`` is agreed (``lax.pmin``), so every device skips together when
      any shard saw a non-finite value. ``None`` decides locally.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`SkipNonfiniteState`.

  Example:
    >>> tx = jopt.skip_nonfinite(optax.sgd(0.1))
    >>> params = {"w": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
    >>> updates["w"].tolist(), int(state.skipped), int(state.consecutive)
    ([0.0, 0.0], 1, 1)

  Reference: ``optax.apply_if_finite`` (its counters ``total_notfinite`` and
  ``notfinite_count`` are ``skipped`` and ``consecutive`` here). Where jopt
  departs: optax gives up after ``max_consecutive_errors`` skips in a row and
  applies the non-finite update, jopt never does (the counter reports, the
  loop decides); optax checks the gradients only, jopt also the outputs
  (``check_outputs``); optax uses a ``lax.cond`` and cannot agree across
  devices, jopt selects and takes ``axis_name``.
  """
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"{_WHERE}tx={tx!r} must be an optax transformation (with init and"
                    " update).")
  if not isinstance(check_outputs, (bool, np.bool_)):
    raise TypeError(f"{_WHERE}check_outputs must be True or False, got {check_outputs!r}.")
  check_outputs = bool(check_outputs)
  axes = check_axis_name(axis_name, _WHERE)
  inner_tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    inner_state = inner_tx.init(unwrap_variables(params))
    _refuse_loss_scale(inner_state)
    zero = jnp.zeros([], jnp.int32)
    return SkipNonfiniteState(skipped=zero, consecutive=zero, inner_state=inner_state)

  def new_params_finite(updates, params):
    check_same_structure(jax.tree.structure(updates), jax.tree.structure(params),
                         f"{_WHERE}params", "Pass the params the gradients belong to.")

    def moved(p, u):
      wide = jnp.promote_types(p.dtype, u.dtype)
      return (p.astype(wide) + u.astype(wide)).astype(p.dtype)

    return stays_finite(jax.tree.map(moved, params, updates), params)

  def update_fn(updates, state, params=None, **extra):
    if not isinstance(state, SkipNonfiniteState):
      raise TypeError(f"{_WHERE}state must be the SkipNonfiniteState from this transform's"
                      f" init, got {type(state).__name__}.")
    ok = all_finite(updates)
    stepped, stepped_inner = inner_tx.update(updates, state.inner_state, params, **extra)
    if check_outputs:
      ok = ok & all_finite(stepped) & stays_finite(stepped_inner, state.inner_state)
      if params is not None:
        ok = ok & new_params_finite(stepped, unwrap_variables(params))
    ok = agree(ok, axes)
    new_state = SkipNonfiniteState(
        skipped=jnp.where(ok, state.skipped, safe_increment(state.skipped)),
        consecutive=jnp.where(ok, jnp.zeros_like(state.consecutive),
                              safe_increment(state.consecutive)),
        inner_state=select_tree(ok, stepped_inner, state.inner_state))
    return zeros_unless(ok, stepped), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
