r"""The pipeline's training loop: masked updates, quantization-aware forward, optional teacher.

One jitted step serves every training stage. With masks :math:`m` (fixed during
the step), the quantization spec's straight-through quantize-dequantize
:math:`\tilde Q` (identity without a spec) and the optimizer ``tx``:

.. math::
  g = m \odot \nabla_\theta L(f(\tilde Q(\theta), x), \cdot), \quad
  (u, S) = \mathrm{tx.update}(g, S, \theta), \quad
  \theta \leftarrow \theta + (m \odot u - (1 - m) \odot \theta)

so a pruned entry is exactly 0.0 after every step, whatever ``tx`` does
(weight decay, momentum, a ``jopt.prune`` wrapper). :math:`L` is the softmax
cross-entropy, or :func:`jopt.distill_loss` against a frozen teacher.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt.distill.logits import distill_loss
from jopt.pipeline.compressed import CompressedModel
from jopt.pipeline.data import Data, batch_indices

__all__ = ["Teacher", "train_stage", "cross_entropy"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Mean softmax cross-entropy with integer labels, :math:`-\frac1B\sum_i \log q_{y_i}`."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen teacher for distillation: its apply, params and the loss's hyperparameters."""

  apply: Callable[[Any, Any], Any]
  params: Any
  temperature: float
  alpha: float
  unlabeled: bool


def _where(m: Any, a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.where(m, a, b.astype(a.dtype))


@dataclasses.dataclass(frozen=True)
class _Loss:
  """The loss of a step, hashable so the compiled step is shared by stages with the same one."""

  apply: Callable[[Any, Any], Any]
  spec: Any
  teacher_apply: Any = None
  temperature: float = 1.0
  alpha: float = 0.0
  unlabeled: bool = False

  def __call__(self, params, t_params, x, y, xu):
    q = CompressedModel(self.apply, None, None, self.spec).forward_params(params)
    apply = self.apply
    if self.teacher_apply is None:
      return cross_entropy(apply(q, x), y)
    t, a = self.temperature, self.alpha
    if not self.unlabeled:
      s_logits = apply(q, x)
      t_logits = jax.lax.stop_gradient(self.teacher_apply(t_params, x))
      return distill_loss(s_logits, t_logits, y, temperature=t, alpha=a)
    su = apply(q, xu)
    tu = jax.lax.stop_gradient(self.teacher_apply(t_params, xu))
    soft = distill_loss(su, tu, None, temperature=t, alpha=1.0)
    if a == 1.0:
      return soft
    return a * soft + (1.0 - a) * cross_entropy(apply(q, x), y)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step(loss, tx, params, state, m, tp, xt, yt, xu, i, j):
  value, g = jax.value_and_grad(loss)(params, tp, xt[i], yt[i], xu[j])
  if m is not None:
    g = jax.tree.map(lambda gg, mm: _where(mm, gg, jnp.zeros((), gg.dtype)), g, m)
  u, state = tx.update(g, state, params)
  if m is not None:
    u = jax.tree.map(lambda uu, mm, p: _where(mm, uu, -p), u, m, params)
  return optax.apply_updates(params, u), state, value


def train_stage(model: CompressedModel, tx: optax.GradientTransformation, data: Data, *,
                steps: int, batch_size: int, seed: int, index: int,
                teacher: Teacher | None = None, progress: bool = True,
                desc: str = "") -> tuple[Any, Any]:
  r"""Run ``steps`` masked (and, with a spec, quantization-aware) updates; return params and state.

  .. math:: \theta_{t+1} = \theta_t + m \odot u_t - (1 - m) \odot \theta_t

  Batches come from :func:`jopt.pipeline.data.batch_indices` with
  ``(seed, index)``; the optimizer state starts fresh (``tx.init``).

  Args:
    model: the carried :class:`CompressedModel` (apply, params, masks, spec).
    tx: the optimizer (possibly wrapped by ``jopt.prune``).
    data: the validated :class:`Data`.
    steps: the number of updates, >= 1.
    batch_size: examples per batch.
    seed: the run's seed.
    index: the stage's index (1-based; 0 is the start row).
    teacher: a :class:`Teacher` for distillation, or None for cross-entropy.
    progress: show a tqdm bar.
    desc: the bar's label.

  Returns:
    ``(params, opt_state)`` after the last step.

  Example:
    >>> params, state = train_stage(cm, jopt.adam(1e-3), data, steps=100, batch_size=32,
    ...                             seed=0, index=1)

  Reference: the masked retraining of Han et al., NeurIPS 2015, and the
  frozen-teacher step of Hinton et al., 2015.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  if teacher is None:
    loss = _Loss(model.apply, model.quant)
  else:
    loss = _Loss(model.apply, model.quant, teacher.apply, teacher.temperature, teacher.alpha,
                 teacher.unlabeled)
  masks = model.masks
  x_train, y_train = jnp.asarray(data.train[0]), jnp.asarray(data.train[1])
  use_u = teacher is not None and teacher.unlabeled
  x_u = jnp.asarray(data.unlabeled) if use_u else jnp.zeros((1,) + x_train.shape[1:],
                                                            x_train.dtype)
  idx = batch_indices(len(data.train[1]), batch_size, steps, seed, index)
  u_idx = (batch_indices(len(x_u), batch_size, steps, seed, index, stream=1) if use_u
           else np.zeros((steps, 1), np.int32))
  t_params = teacher.params if teacher is not None else ()

  params = model.params
  state = tx.init(params)
  every = max(1, steps // 20)
  bar = tqdm(range(steps), desc=desc, disable=not progress, leave=True, dynamic_ncols=True)
  for t in bar:
    params, state, value = _step(loss, tx, params, state, masks, t_params, x_train, y_train, x_u,
                                jnp.asarray(idx[t]), jnp.asarray(u_idx[t]))
    if progress and (t % every == 0 or t == steps - 1):
      bar.set_postfix(loss=f"{float(value):.4f}")
  bar.close()
  return params, state
