r"""``run``: execute a list of stages on a model and return the evaluation report.

Every argument is checked before any training starts (each error names the
argument and the fix); then the start row is evaluated, and each stage runs,
is evaluated on its stored model and (with ``out_dir``) checkpointed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jopt.pipeline import checkpoint as ckpt
from jopt.pipeline.compressed import CompressedModel, quantizes
from jopt.pipeline.data import Data
from jopt.pipeline.evaluate import evaluate
from jopt.pipeline.execute import Context, execute
from jopt.pipeline.model import Model
from jopt.pipeline.report import Report, StageReport
from jopt.pipeline.stages import Distill, Prune, Quantize, Stage, dense_point, params_digest

__all__ = ["run"]

_WHERE = "run: "


def _check_int(name: str, value: Any, low: int, high: int | None = None, why: str = "") -> int:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
  if ok and high is not None:
    ok = value <= high
  if not ok:
    rng = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{_WHERE}{name}={value!r} must be an integer {rng}{why}.")
    raise ValueError(f"{_WHERE}{name}={value!r} must be an integer {rng}{why}.")
  return int(value)


def _output(apply: Any, params: Any, x: np.ndarray, what: str) -> tuple[int, ...]:
  try:
    out = jax.eval_shape(apply, params, jax.ShapeDtypeStruct(x.shape, jnp.float32))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{_WHERE}{what} fails on a test batch of shape {x.shape}:"
                     f" {type(e).__name__}: {e}") from e
  shape = tuple(getattr(out, "shape", ()))
  if len(shape) != 2 or shape[0] != x.shape[0]:
    raise ValueError(f"{_WHERE}{what} returns shape {shape} for a batch of {x.shape[0]};"
                     " it must return logits of shape (batch, classes).")
  return shape


def _check_stages(model: Model, stages: Sequence[Stage], data: Data, batch_size: int) -> None:
  x = data.test[0][:min(batch_size, len(data.test[0]))]
  classes = _output(model.apply, model.params, x, "model.apply")[1]
  top = int(max(data.train[1].max(), data.test[1].max()))
  if top >= classes:
    raise ValueError(f"{_WHERE}data has label {top}, but the model has {classes} outputs;"
                     " pass a model with one logit per class.")
  params = model.params
  for i, stage in enumerate(stages):
    where = f"{_WHERE}stages[{i}] ({stage.label}): "
    if isinstance(stage, Distill):
      if stage.transfer == "unlabeled":
        if data.unlabeled is None:
          raise ValueError(f"{where}Distill(transfer='unlabeled') needs data.unlabeled; pass"
                           " pl.Data(train=..., test=..., unlabeled=x) or transfer='train'.")
        if batch_size > len(data.unlabeled):
          raise ValueError(f"{where}batch_size={batch_size} exceeds the {len(data.unlabeled)}"
                           " unlabeled examples; pass a smaller batch_size.")
      if isinstance(stage.teacher, Model):
        shape = _output(stage.teacher.apply, stage.teacher.params, x, f"{where}teacher.apply")
        if shape[1] != classes:
          raise ValueError(f"{where}the teacher's output shape {shape} differs from the"
                           f" model's {(x.shape[0], classes)}; the teacher must predict the"
                           " same classes.")
      if stage.student is not None:
        shape = _output(stage.student.apply, stage.student.params, x, f"{where}student.apply")
        if shape[1] != classes:
          raise ValueError(f"{where}the student's output shape {shape} differs from the"
                           f" teacher's {(x.shape[0], classes)}; the student must predict the"
                           " same classes.")
        params = stage.student.params
    elif isinstance(stage, Quantize):
      spec = stage.spec
      for leaf in jax.tree.leaves(params):
        if quantizes(leaf):
          try:
            jax.eval_shape(spec.quantize, leaf)
          except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None
    elif isinstance(stage, Prune):
      tx = stage.transform(_identity(), stage.sparsity, end_step=0, every=1)
      try:
        jax.eval_shape(tx.init, params)
      except (TypeError, ValueError) as e:
        raise type(e)(f"{where}{e}") from None


def _identity():
  import optax  # pylint: disable=import-outside-toplevel
  return optax.identity()


def _probe(out_dir: str) -> None:
  why = ckpt.unwritable(out_dir)
  if why is not None:
    raise ValueError(f"{_WHERE}out_dir={out_dir!r} cannot be written ({why}); pass a"
                     " folder you can write to, or out_dir=None to skip checkpoints.")


def _fingerprint(model: Model, stages: Sequence[Stage], data: Data, seed: int,
                 batch_size: int) -> dict[str, Any]:
  return {"stages": [s.describe() for s in stages], "seed": seed, "batch_size": batch_size,
          "model": {"apply": getattr(model.apply, "__qualname__", repr(model.apply)),
                    "params": params_digest(model.params)},
          "data": data.describe()}


def _model_at(model: Model, stages: Sequence[Stage], done: int) -> Model:
  """The architecture carried after ``done`` stages (the last student, or the start model)."""
  current = model
  for stage in stages[:done]:
    if isinstance(stage, Distill) and stage.student is not None:
      current = stage.student
  return current


def run(model: Model, stages: Sequence[Stage], data: Data, *, optimizer: Any = None,
        batch_size: int = 128, seed: int = 0, out_dir: str | None = None,
        progress: bool = True, resume: bool = True, latency_repeats: int = 30) -> Report:
  r"""Run the stages in order on ``model`` and return the evaluation :class:`Report`.

  The pipeline carries :math:`(f, \theta, m, Q)`: the current apply function,
  float params, masks (None before a Prune) and quantization spec (None before
  a Quantize). Each stage maps it to the next (see :mod:`jopt.pipeline.stages`);
  every training stage keeps the masks (pruned weights stay exactly 0.0) and
  trains through :math:`Q` once it is set. Row :math:`i` of the report
  evaluates the stored model :math:`\operatorname{dequantize}(Q(m \odot \theta))`
  on ``data.test``; the start row is the given model, dense float32.

  Determinism: stage :math:`i`'s batches come from ``(seed, i)`` (and random
  pruning scores from ``seed * 1000003 + i``); optimizer state starts fresh in
  every stage. A stage that leaves non-finite params raises ``FloatingPointError``. With ``out_dir``, each finished stage's params and masks are
  saved with orbax under ``out_dir/checkpoints/<i>-<name>/`` with the report
  rows so far; ``resume=True`` continues after the last finished stage of a
  run with the same fingerprint (stage list, seed, batch size, starting
  params, data) and gives the same params and report (times and latencies
  aside) as an uninterrupted run. The report files are written by
  :meth:`Report.save`.

  Args:
    model: a :class:`jopt.pipeline.Model`.
    stages: a non-empty list of :class:`Prune`, :class:`Train`,
      :class:`Quantize` and :class:`Distill`.
    data: a :class:`jopt.pipeline.Data`.
    optimizer: the optax transformation of every stage without its own
      (default ``jopt.adam(1e-3)``); not part of the fingerprint.
    batch_size: examples per training batch, in ``[1, len(train)]``; also the
      latency batch (capped at the test set's size).
    seed: an int.
    out_dir: a folder for checkpoints, or None (no checkpoints, no resume).
    progress: tqdm bars per training stage; False silences them.
    resume: continue a matching run found in ``out_dir`` (False starts over).
    latency_repeats: timed forward passes per row (the median is reported).

  Returns:
    A :class:`Report` whose ``model`` is the final :class:`CompressedModel`.

  Example:
    >>> import tempfile
    >>> from jopt import pipeline as pl
    >>> def apply(params, x):                         # a 4 -> 3 linear softmax model
    ...   return x @ params["w"] + params["b"]
    >>> params = {"w": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.zeros(3)}
    >>> x = np.asarray(jax.random.normal(jax.random.key(1), (32, 4)))
    >>> data = pl.Data(train=(x, x[:, :3].argmax(1)), test=(x, x[:, :3].argmax(1)))
    >>> with tempfile.TemporaryDirectory() as out_dir:   # checkpoints (for resume)
    ...   report = pl.run(pl.Model(apply, params), [pl.Prune(0.5, steps=4), pl.Train(2),
    ...                   pl.Quantize(bits=5, method="kmeans")], data, batch_size=16,
    ...                   out_dir=out_dir, progress=False)
    >>> [(row.name, row.layers[1].path, row.layers[1].nonzeros) for row in report.stages]
    [('start', 'w', 12), ('prune', 'w', 6), ('train', 'w', 6), ('quantize', 'w', 6)]
    >>> report.model.quant.bits, report.model.quant.method
    (5, 'kmeans')

    ``print(report.to_markdown(layers=False))`` shows the whole table (accuracy, loss,
    bytes, compression, latency, seconds per row).

  Reference: Han et al., *Deep Compression*, ICLR 2016 (prune, retrain, share
  weights, with each stage's size and accuracy); Hinton et al., 2015
  (distillation); Zhu & Gupta, 2017 (gradual pruning).
  """
  if not isinstance(model, Model):
    raise TypeError(f"{_WHERE}model={type(model).__name__} must be a jopt.pipeline.Model;"
                    " wrap it as pl.Model(apply=apply_fn, params=params).")
  if isinstance(stages, Stage) or not isinstance(stages, (list, tuple)):
    raise TypeError(f"{_WHERE}stages must be a list of stages, e.g. [pl.Prune(0.9, steps=100)].")
  if not stages:
    raise ValueError(f"{_WHERE}stages is empty; pass at least one stage, e.g."
                     " [pl.Train(steps=100)].")
  for i, s in enumerate(stages):
    if not isinstance(s, Stage):
      raise TypeError(f"{_WHERE}stages[{i}]={s!r} is not a pipeline stage; use pl.Prune,"
                      " pl.Train, pl.Quantize or pl.Distill.")
  if not isinstance(data, Data):
    raise TypeError(f"{_WHERE}data={type(data).__name__} must be a jopt.pipeline.Data;"
                    " pass pl.Data(train=(x, y), test=(x, y)).")
  if optimizer is None:
    from jopt.optimizers import adam  # pylint: disable=import-outside-toplevel
    optimizer = adam(1e-3)
  elif not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise TypeError(f"{_WHERE}optimizer={optimizer!r} must be an optax transformation.")
  batch_size = _check_int("batch_size", batch_size, 1, len(data.train[1]),
                          " (at most the number of training examples)")
  seed = _check_int("seed", seed, 0)
  latency_repeats = _check_int("latency_repeats", latency_repeats, 1)
  _check_stages(model, stages, data, batch_size)
  if out_dir is not None:
    _probe(out_dir)

  fingerprint = _fingerprint(model, stages, data, seed, batch_size)
  root = ckpt.checkpoint_dir(out_dir) if out_dir is not None else None
  saved = ckpt.load_progress(root) if root else None
  if saved is not None and resume:
    ckpt.check_fingerprint(saved["fingerprint"], fingerprint, out_dir)
  elif saved is not None:
    ckpt.clear(root, saved)
    saved = None

  latency_batch = min(batch_size, len(data.test[1]))
  meta = {"seed": seed, "batch_size": batch_size, "latency_batch": latency_batch,
          "latency_device": str(jax.devices("cpu")[0].device_kind), "jopt": _version(),
          "stages": [s.describe() for s in stages]}
  rows: list[StageReport] = []
  finished: list[dict[str, Any]] = []
  carry = CompressedModel(model.apply, model.params)
  if saved is not None:
    rows = [StageReport.from_dict(r) for r in saved["rows"]]
    finished = list(saved["finished"])
    if finished:
      last = finished[-1]
      like = _model_at(model, stages, last["index"])
      params, masks = ckpt.restore_carry(root, last["dir"], like.params, last["has_masks"])
      from jopt.pipeline.compressed import QuantSpec  # pylint: disable=import-outside-toplevel
      quant = None if last["quant"] is None else QuantSpec.from_dict(last["quant"])
      carry = CompressedModel(like.apply, params, masks, quant)
  if not rows:
    rows.append(evaluate(carry, data, index=0, name="start", kind="start", start_bytes=None,
                         seconds=0.0, latency_batch=latency_batch,
                         latency_repeats=latency_repeats))
    if root:
      ckpt.save_progress(root, {"fingerprint": fingerprint, "finished": [],
                                "rows": [r.to_dict() for r in rows]})
  k = dense_point(stages)
  dense = model if k == 0 else None
  if dense is None and len(finished) >= k:
    params, _ = ckpt.restore_carry(root, finished[k - 1]["dir"], model.params, False)
    dense = Model(apply=model.apply, params=params)
  ctx = Context(data, optimizer, batch_size, seed, model, progress, len(stages), dense)
  for i in range(len(finished) + 1, len(stages) + 1):
    stage = stages[i - 1]
    t0 = time.perf_counter()
    carry = execute(stage, i, carry, ctx)
    if i == k:
      ctx = dataclasses.replace(ctx, dense=Model(apply=carry.apply, params=carry.params))
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(carry.params)
               if jnp.issubdtype(p.dtype, jnp.inexact)):
      raise FloatingPointError(f"{_WHERE}stages[{i - 1}] ({stage.label}) left non-finite"
                               " params (training diverged); lower the learning rate.")
    rows.append(evaluate(carry, data, index=i, name=stage.label, kind=stage.kind,
                         start_bytes=rows[0].bytes, seconds=time.perf_counter() - t0,
                         latency_batch=latency_batch, latency_repeats=latency_repeats))
    if root:
      name = f"{i}-{stage.label}"
      ckpt.save_carry(root, name, carry.params, carry.masks)
      finished.append({"index": i, "dir": name, "has_masks": carry.masks is not None,
                       "quant": None if carry.quant is None else carry.quant.to_dict()})
      ckpt.save_progress(root, {"fingerprint": fingerprint, "finished": finished,
                                "rows": [r.to_dict() for r in rows]})
  return Report(rows, meta, carry)


def _version() -> str:
  try:
    import jopt  # pylint: disable=import-outside-toplevel
    return str(getattr(jopt, "__version__", "unknown"))
  except Exception:  # pylint: disable=broad-except
    return "unknown"
