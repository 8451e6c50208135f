"""Logit distillation: Hinton et al.'s softened-teacher loss mixed with the hard-label loss.

Also the small input helpers the other distillation losses share: floating-point
checks, the compute dtype (at least float32) and a norm whose gradient is finite at 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt._core.validate import check_range, is_concrete

__all__ = ["distill_loss", "soft_targets"]

_WHERE = "distill_loss: "


def as_float(x: Any, name: str, where: str, what: str = "logits") -> jax.Array:
  """``x`` as a floating-point array; integer, boolean or complex input is a ``TypeError``."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}{name} must be floating-point {what}, got dtype {x.dtype};"
                    f" pass the model's raw float outputs (cast with .astype(jnp.float32)).")
  return x


def compute_dtype(*arrays: jax.Array) -> Any:
  """The widest floating dtype of ``arrays``, and at least float32.

  bf16/fp16 inputs are computed in float32 (``exp(x / T)`` and squared distances
  lose too much in 8 or 11 mantissa bits). Chosen explicitly, so mixing float32
  and float64 inputs works under ``jax_numpy_dtype_promotion="strict"``.
  """
  return max([jnp.dtype(jnp.float32)] + [jnp.dtype(a.dtype) for a in arrays],
             key=lambda d: d.itemsize)


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
  """The L2 norm over ``axis`` with gradient 0 (not NaN) where the norm is 0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, jnp.ones_like(sq))), jnp.zeros_like(sq))


def _concrete_number(value: Any) -> float | None:
  """``value`` as a float when it is a concrete real scalar, else None."""
  if not is_concrete(value) or isinstance(value, (bool, np.bool_)):
    return None
  arr = np.asarray(value)
  return float(arr) if arr.shape == () and np.issubdtype(arr.dtype, np.number) else None


def soft_targets(teacher_logits: Any, temperature: Any) -> jax.Array:
  r"""The teacher's softened distribution :math:`p^T = \operatorname{softmax}(z_t / T)`.

  Gradients are stopped: the teacher is a constant of the student's loss.

  Args:
    teacher_logits: ``[..., classes]`` floating-point logits.
    temperature: :math:`T > 0`.

  Returns:
    Probabilities of ``teacher_logits``' shape, in at least float32.

  Example:
    >>> p = jopt.distill.soft_targets(jnp.array([[2.0, 0.0]]), temperature=2.0)
    >>> print(np.round(np.asarray(p), 4))   # softmax([1, 0])
    [[0.7311 0.2689]]

  Reference: Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural
  Network*, 2015, eq. (1).
  """
  where = "soft_targets: "
  check_range("temperature", temperature, 0.0, low_open=True, where=where)
  t = as_float(teacher_logits, "teacher_logits", where)
  if t.ndim == 0:
    raise ValueError(f"{where}teacher_logits must have a classes axis (shape [..., classes]),"
                     f" got a scalar.")
  dtype = compute_dtype(t)
  t = jax.lax.stop_gradient(t.astype(dtype))
  return jax.nn.softmax(t / jnp.asarray(temperature, dtype), axis=-1)


def distill_loss(student_logits: Any, teacher_logits: Any, labels: Any = None, *,
                 temperature: Any, alpha: Any) -> jax.Array:
  r"""Knowledge-distillation loss: T²-scaled KL to the softened teacher, mixed with hard-label CE.

  With :math:`p^T = \operatorname{softmax}(z_t/T)` (the teacher, gradient stopped),
  :math:`q^T = \operatorname{softmax}(z_s/T)` (the student) and the mean
  :math:`\langle\cdot\rangle` over every leading (batch) axis:

  .. math::
    L = \alpha\, T^2 \big\langle \mathrm{KL}(p^T \,\|\, q^T) \big\rangle
        + (1-\alpha) \big\langle -\log q^1_{y} \big\rangle

  **α weighs the soft (teacher) term**; :math:`1-\alpha` weighs the cross-entropy
  with the true labels at :math:`T = 1`. Per example, the soft term's gradient is
  :math:`\partial L_\text{soft}/\partial z_s = \alpha T (q^T - p^T)` (divided by the
  batch size through the mean); as :math:`q^T - p^T` shrinks like :math:`1/T^2` for
  large T, the :math:`T^2` factor keeps it on the hard term's scale when T changes
  (Hinton et al., section 2). KL rather than the paper's soft cross-entropy: they
  differ by the teacher's entropy, a constant, so the gradient is the same and the
  soft term is 0 when the student matches. The soft term equals torch's
  ``F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T * T``
  for 2-D logits. Teacher logits of ``-inf`` (masked classes) contribute 0.

  Inputs below 32 bits (bf16, fp16) are computed in float32; float32 and float64
  inputs mix explicitly (the wider wins).

  Args:
    student_logits: ``[..., classes]`` floating-point logits of the student.
    teacher_logits: logits of the teacher, the same shape (an ensemble: average
      its members' logits first). Gradients through it are stopped.
    labels: integer class labels of shape ``student_logits.shape[:-1]``, in
      ``[0, classes)``, or ``None`` for pure distillation (then ``alpha`` must be
      1, e.g. on an unlabelled transfer set).
    temperature: :math:`T > 0`, the softening temperature.
    alpha: in :math:`[0, 1]`, the soft term's weight.

  Returns:
    The scalar loss, in at least float32.

  Example:
    >>> s, t = jnp.array([[1.0, 0.0, -1.0]]), jnp.array([[2.0, 0.5, -1.0]])
    >>> loss = jopt.distill_loss(s, t, jnp.array([0]), temperature=4.0, alpha=0.9)
    >>> print(f"{float(loss):.4f}")
    0.1117

  Reference: Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural
  Network*, NIPS Deep Learning Workshop 2015, section 2 (soft targets at a raised
  temperature, the :math:`T^2` scaling, a weighted average with the hard-label
  objective).
  """
  check_range("temperature", temperature, 0.0, low_open=True, where=_WHERE)
  check_range("alpha", alpha, 0.0, 1.0, where=_WHERE)
  s = as_float(student_logits, "student_logits", _WHERE)
  t = as_float(teacher_logits, "teacher_logits", _WHERE)
  if s.ndim == 0:
    raise ValueError(f"{_WHERE}student_logits must have a classes axis (shape [..., classes]),"
                     f" got a scalar.")
  if s.shape != t.shape:
    raise ValueError(f"{_WHERE}student_logits {s.shape} and teacher_logits {t.shape} must have"
                     f" the same shape: student and teacher must predict the same classes for"
                     f" the same inputs.")
  if labels is None:
    a_val = _concrete_number(alpha)
    if a_val is not None and a_val != 1.0:
      raise ValueError(f"{_WHERE}labels=None leaves no hard-label term, so alpha must be 1.0,"
                       f" got alpha={a_val!r}; pass labels, or alpha=1.0 for pure"
                       f" distillation.")
  else:
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(f"{_WHERE}labels must be integer class indices, got dtype {labels.dtype};"
                      f" pass argmax of one-hot labels.")
    if labels.shape != s.shape[:-1]:
      raise ValueError(f"{_WHERE}labels {labels.shape} must have the logits' shape without the"
                       f" classes axis, {s.shape[:-1]}.")
    if is_concrete(labels) and labels.size:
      lab = np.asarray(labels)   # concrete, also as a constant inside a jit trace
      lo, hi = int(lab.min()), int(lab.max())
      if lo < 0 or hi >= s.shape[-1]:
        raise ValueError(f"{_WHERE}labels must be in [0, {s.shape[-1]}) (the classes axis of"
                         f" the logits), got values in [{lo}, {hi}].")
  return _distill(s, t, labels, temperature, alpha)


@jax.jit
def _distill(s: jax.Array, t: jax.Array, labels: Any, temperature: Any, alpha: Any) -> jax.Array:
  """The checked loss, compiled once per shape (so eager calls are not op-by-op)."""
  dtype = compute_dtype(s, t)
  s, t = s.astype(dtype), jax.lax.stop_gradient(t.astype(dtype))
  temp = jnp.asarray(temperature).astype(dtype)
  a = jnp.asarray(alpha).astype(dtype)
  log_p = jax.nn.log_softmax(t / temp, axis=-1)
  log_q = jax.nn.log_softmax(s / temp, axis=-1)
  p = jnp.exp(log_p)
  zero = jnp.zeros((), dtype)
  kl = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), zero), axis=-1)
  loss = a * temp * temp * jnp.mean(kl)
  if labels is not None:
    log_q1 = jax.nn.log_softmax(s, axis=-1)
    ce = -jnp.take_along_axis(log_q1, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    loss = loss + (jnp.ones((), dtype) - a) * jnp.mean(ce)
  return loss
