"""A pure, jit-compiled distillation train step with a frozen teacher (or teacher ensemble)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jopt._core.validate import check_range
from jopt.distill.logits import compute_dtype, distill_loss

__all__ = ["distill_step"]

_WHERE = "distill_step: "


def _split(out: Any, has_aux: bool, who: str) -> tuple[Any, Any]:
  """``(logits, aux)`` of an apply function's output."""
  if has_aux:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
      raise TypeError(f"{_WHERE}with has_aux=True, {who} must return (logits, aux), got"
                      f" {type(out).__name__}.")
    return out[0], out[1]
  if not hasattr(out, "shape"):
    raise TypeError(f"{_WHERE}{who} must return a logits array, got {type(out).__name__};"
                    f" if it returns (logits, features), pass has_aux=True.")
  return out, out


def distill_step(
    student_apply: Callable[[Any, Any], Any],
    teacher_apply: Callable[[Any, Any], Any] | Sequence[Callable[[Any, Any], Any]],
    tx: optax.GradientTransformation,
    *,
    temperature: Any,
    alpha: Any,
    extra_loss: Callable[..., Any] | None = None,
    has_aux: bool = False,
    jit: bool = True,
) -> Callable[..., tuple[Any, Any, dict[str, jax.Array]]]:
  r"""Build a pure train step that distills a frozen teacher (or ensemble) into a student.

  The returned ``step(student_params, opt_state, teacher_params, x, y=None)`` computes

  .. math::
    z_t = \operatorname{sg}\Big(\tfrac1K \sum_{k=1}^{K} f_k(\theta_k, x)\Big), \qquad
    L(\theta_s) = \mathrm{distill\_loss}(f_s(\theta_s, x), z_t, y; T, \alpha)
                  + L_\text{extra}, \qquad
    \theta_s \leftarrow \theta_s + \mathrm{tx}(\nabla_{\theta_s} L)

  and returns ``(student_params, opt_state, metrics)``. The teacher runs under
  ``stop_gradient`` (:math:`\operatorname{sg}`, on its params and its outputs): it
  receives no gradient and its params are neither updated nor returned.

  * **Ensemble.** A list/tuple of ``teacher_apply`` functions makes an ensemble of
    :math:`K` teachers: ``teacher_params`` is then a list/tuple of their :math:`K`
    param trees, in the same order (for :math:`K` copies of one architecture pass
    ``[apply] * K``). Their **logits** are averaged (not their probabilities)
    before softening. A single function takes one teacher's params, whatever
    pytree they are (a list of layers included).
  * **Batch norm / state.** Apply functions are pure ``(params, x) -> logits``.
    A teacher with batch-norm statistics (or dropout) must be closed over in
    inference mode, e.g. ``lambda p, x: model.apply({"params": p, **stats}, x,
    train=False)``; its statistics are then constants and are left untouched. A
    student with mutable state needs its own step.
  * **Extra terms.** ``extra_loss(student_params, student_aux, teacher_aux, x, y)``
    returns a scalar added to the loss (hint, attention-transfer or RKD terms,
    with projection params kept inside ``student_params``). With ``has_aux=True``
    every apply function returns ``(logits, aux)`` (e.g. intermediate features)
    and the aux trees are passed (``teacher_aux`` is a tuple over the members of
    an ensemble); with ``has_aux=False`` the student's logits and the averaged
    teacher logits are passed instead.
  * **Optimizer.** ``tx.update(grads, opt_state, student_params)`` receives the
    params, so a :func:`jopt.prune`-wrapped optimizer (masks in its state) works;
    build the state with ``tx.init(student_params)``.

  ``temperature`` and ``alpha`` are compiled in: a new value needs a new step (one
  compilation). Shape mismatches and ``y=None`` with ``alpha != 1`` fail at the
  first call, before any update.

  Args:
    student_apply: ``(student_params, x) -> logits`` (or ``(logits, aux)``).
    teacher_apply: ``(teacher_params, x) -> logits`` (or ``(logits, aux)``), or a
      list/tuple of such functions for an ensemble.
    tx: an optax gradient transformation (any jopt optimizer, optionally
      wrapped by :func:`jopt.prune`).
    temperature: :math:`T > 0` of :func:`jopt.distill_loss`.
    alpha: :math:`\alpha \in [0, 1]`, the soft term's weight (1 for an unlabelled
      transfer set, ``y=None``).
    extra_loss: optional ``(student_params, student_aux, teacher_aux, x, y) ->
      scalar`` added to the loss.
    has_aux: whether the apply functions return ``(logits, aux)``.
    jit: compile the step with :func:`jax.jit` (default True; False for debugging).

  Returns:
    ``step(student_params, opt_state, teacher_params, x, y=None) ->
    (student_params, opt_state, metrics)``, ``metrics`` a dict of scalars, all at
    the params before the update: ``"loss"`` (total), ``"distill_loss"`` and
    ``"extra_loss"`` (when given) in their compute dtype (at least float32), and,
    in float32, ``"agreement"`` (fraction of argmaxes equal to the teacher's) and
    ``"accuracy"`` (the student's, when ``y`` is given).

  Example:
    >>> def apply(p, x): return x @ p["w"]
    >>> tp = {"w": jax.random.normal(jax.random.key(0), (4, 3))}
    >>> sp = {"w": jnp.zeros((4, 3))}
    >>> tx = optax.sgd(0.1)
    >>> step = jopt.distill.distill_step(apply, apply, tx, temperature=2.0, alpha=1.0)
    >>> sp, opt_state, metrics = step(sp, tx.init(sp), tp, jnp.ones((8, 4)))
    >>> sorted(metrics)
    ['agreement', 'distill_loss', 'loss']

  Reference: Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural
  Network*, 2015 (the frozen teacher, ensembles as teachers, the transfer set).
  """
  if not callable(student_apply):
    raise TypeError(f"{_WHERE}student_apply={student_apply!r} must be a function"
                    f" (params, x) -> logits.")
  ensemble = isinstance(teacher_apply, (list, tuple))
  applies = tuple(teacher_apply) if ensemble else (teacher_apply,)
  if not applies:
    raise ValueError(f"{_WHERE}teacher_apply is an empty list; pass one function, or one per"
                     f" ensemble member.")
  for f in applies:
    if not callable(f):
      raise TypeError(f"{_WHERE}teacher_apply must be a function (params, x) -> logits or a"
                      f" list of them, got an element {f!r}.")
  if not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"{_WHERE}tx={tx!r} must be an optax gradient transformation (with init"
                    f" and update), e.g. jopt.adam(1e-3).")
  check_range("temperature", temperature, 0.0, low_open=True, where=_WHERE)
  check_range("alpha", alpha, 0.0, 1.0, where=_WHERE)
  if extra_loss is not None and not callable(extra_loss):
    raise TypeError(f"{_WHERE}extra_loss={extra_loss!r} must be None or a function"
                    f" (student_params, student_aux, teacher_aux, x, y) -> scalar.")
  if not isinstance(has_aux, bool) or not isinstance(jit, bool):
    raise TypeError(f"{_WHERE}has_aux={has_aux!r} and jit={jit!r} must be bools.")

  def teacher(teacher_params, x):
    if ensemble:
      if not isinstance(teacher_params, (list, tuple)) or len(teacher_params) != len(applies):
        got = (f"a {type(teacher_params).__name__} of {len(teacher_params)}"
               if isinstance(teacher_params, (list, tuple)) else type(teacher_params).__name__)
        raise ValueError(f"{_WHERE}an ensemble of {len(applies)} teacher_apply functions needs"
                         f" teacher_params as a list/tuple of {len(applies)} param trees, got"
                         f" {got}.")
      members = tuple(teacher_params)
    else:
      members = (teacher_params,)
    members = jax.lax.stop_gradient(members)
    outs = [_split(f(p, x), has_aux, "teacher_apply") for f, p in zip(applies, members)]
    logits = [jnp.asarray(o[0]) for o in outs]
    if len({z.shape for z in logits}) != 1:
      raise ValueError(f"{_WHERE}the ensemble's teachers return logits of different shapes"
                       f" {[z.shape for z in logits]}; they must predict the same classes.")
    if ensemble:
      dtype = compute_dtype(*logits)
      mean = jnp.mean(jnp.stack([z.astype(dtype) for z in logits]), axis=0)
      aux = tuple(o[1] for o in outs) if has_aux else mean
    else:
      mean, aux = logits[0], outs[0][1]
    return jax.lax.stop_gradient(mean), jax.lax.stop_gradient(aux)

  def loss_fn(student_params, t_logits, t_aux, x, y):
    s_logits, s_aux = _split(student_apply(student_params, x), has_aux, "student_apply")
    d = distill_loss(s_logits, t_logits, y, temperature=temperature, alpha=alpha)
    metrics = {"distill_loss": d}
    total = d
    if extra_loss is not None:
      e = jnp.asarray(extra_loss(student_params, s_aux, t_aux, x, y))
      if e.shape != () or not jnp.issubdtype(e.dtype, jnp.floating):
        raise ValueError(f"{_WHERE}extra_loss must return a floating scalar, got shape"
                         f" {e.shape} and dtype {e.dtype}.")
      dtype = compute_dtype(d, e)
      total = d.astype(dtype) + e.astype(dtype)
      metrics["extra_loss"] = e
    return total, (metrics, s_logits)

  def step(student_params, opt_state, teacher_params, x, y=None):
    t_logits, t_aux = teacher(teacher_params, x)
    (loss, (metrics, s_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        student_params, t_logits, t_aux, x, y)
    updates, opt_state = tx.update(grads, opt_state, student_params)
    student_params = optax.apply_updates(student_params, updates)
    pred = jnp.argmax(s_logits, axis=-1)
    out = {"loss": loss, **metrics,
           "agreement": jnp.mean((pred == jnp.argmax(t_logits, axis=-1)).astype(jnp.float32))}
    if y is not None:
      out["accuracy"] = jnp.mean((pred == jnp.asarray(y).astype(pred.dtype)).astype(jnp.float32))
    return student_params, opt_state, out

  return jax.jit(step) if jit else step
