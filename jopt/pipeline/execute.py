r"""Executing one stage: from the carried :class:`CompressedModel` to the next one.

* Prune: ``jopt.prune`` around the optimizer, masks intersected with the carried ones;
* Train: masked (and quantization-aware) cross-entropy training;
* Quantize: set the spec; ``qat_steps`` of training through it;
* Distill: a frozen teacher (the dense trained model by default) teaches the current model
  (or a new student).

A stage's batches come from ``(seed, index)`` and ``criterion="random"``
pruning scores from the seed ``(seed * 1000003 + index) mod 2**31``, so a stage run after a resume
gives bit for bit what it gives in an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jopt.pipeline.compressed import CompressedModel
from jopt.pipeline.data import Data
from jopt.pipeline.model import Model
from jopt.pipeline.stages import Distill, Prune, Quantize, Stage, Train
from jopt.pipeline.train import Teacher, train_stage
from jopt.prune.transform import PruneState
from jopt.schedules.sparsity import polynomial_sparsity_schedule

__all__ = ["Context", "execute", "prune_plan", "carried_sparsity"]


@dataclasses.dataclass(frozen=True)
class Context:
  """What every stage needs besides the carry: data, optimizer, batch size, seed, teachers.

  ``start`` is the given model; ``dense`` the model after the leading Train
  stages (None until they have run).
  """

  data: Data
  optimizer: Any
  batch_size: int
  seed: int
  start: Model
  progress: bool
  total: int
  dense: Model | None = None


def carried_sparsity(model: CompressedModel) -> float:
  r"""The pruned fraction of the prunable leaves (``ndim >= 2``) of the carried masks.

  .. math:: s = \frac{\sum_{\ell:\ \mathrm{ndim} \ge 2} \#\{m_\ell = 0\}}{\sum_\ell n_\ell}
  """
  if model.masks is None:
    return 0.0
  zeros = size = 0
  for m in jax.tree.leaves(model.masks):
    if np.ndim(m) >= 2:
      a = np.asarray(m)
      zeros += int(a.size - np.count_nonzero(a))
      size += int(a.size)
  return zeros / size if size else 0.0


def prune_plan(stage: Prune, initial: float) -> tuple[Any, int, int]:
  r"""``(sparsity or schedule, end_step, update_every)`` of a Prune stage (see :class:`Prune`).

  .. math:: R = \lceil \rho T \rceil,\quad \Delta t = \max(1, \lfloor R / 20 \rfloor),\quad
     t_1 = \Delta t \lfloor (R - 1) / \Delta t \rfloor
  """
  if stage.effective_schedule == "one_shot":
    return stage.sparsity, 0, 1
  ramp = max(1, math.ceil(stage.ramp * stage.steps))
  every = stage.update_every or max(1, ramp // 20)
  end = every * ((ramp - 1) // every)
  if end == 0:
    return stage.sparsity, 0, every
  final = float(stage.sparsity)
  sched = polynomial_sparsity_schedule(final, 0, end, initial_sparsity=min(initial, final),
                                       frequency=every)
  return sched, end, every


@functools.lru_cache(maxsize=32)
def _prune_tx(stage: Prune, initial: float, tx: Any, seed: int) -> Any:
  """The stage's ``jopt.prune`` transform, built once per (stage, start sparsity, optimizer, seed)

  so that a compiled training step is reused by identical Prune stages."""
  sparsity, end, every = prune_plan(stage, initial)
  return stage.transform(tx, sparsity, end_step=end, every=every, seed=seed)


def _and(a: Any, b: Any) -> Any:
  if a is None:
    return b
  return jax.tree.map(jnp.logical_and, a, b)


def _train(model: CompressedModel, stage: Stage, index: int, ctx: Context, tx: Any,
           steps: int, teacher: Teacher | None = None) -> tuple[Any, Any]:
  desc = f"[{index}/{ctx.total}] {stage.label}"
  return train_stage(model, tx, ctx.data, steps=steps, batch_size=ctx.batch_size,
                     seed=ctx.seed, index=index, teacher=teacher, progress=ctx.progress,
                     desc=desc)


def execute(stage: Stage, index: int, model: CompressedModel, ctx: Context) -> CompressedModel:
  r"""Run one stage on the carried model and return the next carry.

  .. math:: (\theta, m, Q) \mapsto (\theta', m', Q')

  Args:
    stage: a :class:`Prune`, :class:`Train`, :class:`Quantize` or :class:`Distill`.
    index: its 1-based position in the stage list.
    model: the carried :class:`CompressedModel`.
    ctx: the run's :class:`Context`.

  Returns:
    The new :class:`CompressedModel`.

  Example:
    >>> cm = execute(pl.Train(steps=10), 1, cm, ctx)

  Reference: the stage sequence of Han et al., *Deep Compression*, ICLR 2016
  (prune, retrain, share weights, retrain).
  """
  tx = stage.optimizer or ctx.optimizer
  if isinstance(stage, Prune):
    seed = (ctx.seed * 1_000_003 + index) % (2 ** 31) if stage.criterion == "random" else 0
    ptx = _prune_tx(stage, carried_sparsity(model), tx, seed)
    params, state = _train(model, stage, index, ctx, ptx, stage.steps)
    if not isinstance(state, PruneState):
      raise TypeError("Prune: internal error, the optimizer state is not a PruneState.")
    masks = _and(model.masks, state.masks)
    params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks)
    return model.replace(params=params, masks=masks)
  if isinstance(stage, Train):
    params, _ = _train(model, stage, index, ctx, tx, stage.steps)
    return model.replace(params=params)
  if isinstance(stage, Quantize):
    model = model.replace(quant=stage.spec)
    if stage.qat_steps:
      params, _ = _train(model, stage, index, ctx, tx, stage.qat_steps)
      model = model.replace(params=params)
    return model
  if isinstance(stage, Distill):
    if stage.student is not None:
      model = CompressedModel(stage.student.apply, stage.student.params, None, model.quant)
    if isinstance(stage.teacher, Model):
      source = stage.teacher
    elif stage.teacher == "start":
      source = ctx.start
    else:
      source = ctx.dense if ctx.dense is not None else ctx.start
    teacher = Teacher(source.apply, source.params, float(stage.temperature),
                      float(stage.alpha), stage.transfer == "unlabeled")
    params, _ = _train(model, stage, index, ctx, tx, stage.steps, teacher)
    return model.replace(params=params)
  raise TypeError(f"run: stages[{index - 1}]={stage!r} is not a pipeline stage.")
