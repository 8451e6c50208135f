r"""The pipeline's stages as data: Prune, Train, Quantize, Distill.

A stage is a frozen dataclass of hyperparameters, checked when it is built
(each error names the argument); :func:`jopt.pipeline.run` executes a list of
them in order, so reordering, repeating or dropping stages is editing a list.
Every training stage keeps the masks the pipeline carries (pruned weights stay
exactly 0.0) and, once a Quantize stage has set a quantization spec, trains
through it (quantize-dequantize forward, straight-through gradient).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, ClassVar

import jax
import numpy as np
import optax

from jopt._core import validate
from jopt.quant import _layout
from jopt.quant.linear import SCHEMES
from jopt.quant.quantizer import METHODS
from jopt.pipeline.compressed import QuantSpec
from jopt.pipeline.model import Model

__all__ = ["Stage", "Prune", "Train", "Quantize", "Distill", "SCHEDULES", "TRANSFERS", "TEACHERS",
           "dense_point"]

SCHEDULES = ("polynomial", "one_shot")
TRANSFERS = ("train", "unlabeled")
TEACHERS = ("dense", "start")


def _steps(where: str, name: str, value: Any, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{where}{name}={value!r} must be an integer >= {minimum}"
                    f" (the number of training steps of this stage).")
  if value < minimum:
    raise ValueError(f"{where}{name}={value!r} must be an integer >= {minimum}"
                     f" (the number of training steps of this stage).")
  return int(value)


def _optimizer(where: str, tx: Any) -> None:
  if tx is not None and not (hasattr(tx, "init") and hasattr(tx, "update")):
    raise TypeError(f"{where}optimizer={tx!r} must be an optax transformation (e.g."
                    " jopt.adam(1e-3)), or None for the pipeline's optimizer.")


def params_digest(params: Any) -> str:
  """A SHA-256 of a tree's structure, shapes, dtypes and bytes (for fingerprints)."""
  h = hashlib.sha256(str(jax.tree.structure(params)).encode())
  for leaf in jax.tree.leaves(params):
    a = np.asarray(leaf)
    h.update(f"{a.shape}{a.dtype}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


class Stage:
  """Base class of the stages: a ``kind``, an optional ``name`` and a JSON description."""

  kind: ClassVar[str] = "stage"
  name: str | None
  optimizer: Any

  @property
  def label(self) -> str:
    """The stage's name in reports and checkpoint folders (``name`` or the kind)."""
    return self.name or self.kind

  def describe(self) -> dict[str, Any]:
    """The stage's hyperparameters as JSON-ready data (the optimizer as ``custom``/None)."""
    out: dict[str, Any] = {"kind": self.kind}
    for f in dataclasses.fields(self):  # type: ignore[arg-type]
      v = getattr(self, f.name)
      if f.name == "optimizer":
        v = None if v is None else "custom"
      elif isinstance(v, Model):
        v = {"apply": getattr(v.apply, "__qualname__", repr(v.apply)),
             "params": params_digest(v.params)}
      elif isinstance(v, tuple):
        v = list(v)
      out[f.name] = v
    return out

  @property
  def train_steps(self) -> int:
    """The number of optimizer steps this stage runs."""
    return int(getattr(self, "steps", 0))


@dataclasses.dataclass(frozen=True)
class Prune(Stage):
  r"""Prune the weight matrices to ``sparsity``: gradual (Zhu & Gupta) by default, with fine-tuning.

  With ``schedule="polynomial"`` the target rises over the first
  :math:`R = \lceil \rho\, T \rceil` of the :math:`T` steps (``ramp`` :math:`\rho`)
  from the carried sparsity :math:`s_i` (0 for a dense model) to :math:`s_f`,

  .. math:: s_t = s_f + (s_i - s_f)\left(1 - \frac{\tau_t}{t_1}\right)^3

  with masks recomputed every :math:`\Delta t` steps (``update_every``, default
  :math:`\max(1, \lfloor R/20 \rfloor)`) up to :math:`t_1`, the last multiple of
  :math:`\Delta t` below :math:`R`, where :math:`s_f` is reached; the remaining steps
  fine-tune at fixed masks. ``schedule="one_shot"`` (and N:M) sets the masks
  once at step 0. The masks come from :func:`jopt.prune` (its ``criterion``,
  ``granularity``, ``scope``, ``allocation``, ``n_m``, ``block``; kernels with
  ``ndim >= 2`` only) and are intersected with the carried masks, so a later
  Prune never revives a weight an earlier stage pruned (its reported sparsity
  is the intersection's).

  Args:
    sparsity: :math:`s_f \in [0, 1)`; None with ``n_m`` (the pattern fixes it).
    steps: :math:`T \ge 1`.
    schedule: ``"polynomial"`` (default) or ``"one_shot"``.
    ramp: :math:`\rho \in (0, 1]`.
    update_every: :math:`\Delta t \ge 1`, or None for the default.
    criterion, granularity, scope, allocation, n_m, block: as in :func:`jopt.prune`.
    optimizer: this stage's optimizer, or None for the pipeline's.
    name: a label for reports.

  Example:
    >>> from jopt import pipeline as pl
    >>> stage = pl.Prune(sparsity=0.95, steps=3000)
    >>> stage.effective_schedule, stage.ramp, stage.label
    ('polynomial', 0.75, 'prune')
    >>> pl.Prune(n_m=(2, 4), steps=100).effective_schedule      # N:M masks: set at step 0
    'one_shot'
    >>> pl.Prune(sparsity=1.2, steps=100)
    Traceback (most recent call last):
    ...
    ValueError: Prune: sparsity=1.2 is outside the accepted range [0.0, 1.0); ...

  Reference: Zhu & Gupta, *To prune, or not to prune*, 2017, eq. 1 (gradual
  pruning, :math:`p = 3`); Han et al., NeurIPS 2015 (magnitude pruning with
  fine-tuning).
  """

  kind: ClassVar[str] = "prune"
  sparsity: float | None = None
  steps: int = 1000
  schedule: str | None = None
  ramp: float = 0.75
  update_every: int | None = None
  criterion: str = "magnitude"
  granularity: str | None = None
  scope: str = "layer"
  allocation: str = "uniform"
  n_m: tuple[int, int] | None = None
  block: tuple[int, int] | None = None
  optimizer: Any = None
  name: str | None = None

  def __post_init__(self):
    where = "Prune: "
    _steps(where, "steps", self.steps)
    _optimizer(where, self.optimizer)
    validate.check_range("ramp", self.ramp, 0.0, 1.0, low_open=True, where=where)
    if self.update_every is not None:
      _steps(where, "update_every", self.update_every)
    gran = self.granularity or ("n_m" if self.n_m is not None else "weight")
    if self.schedule is not None:
      validate.check_choice("schedule", self.schedule, SCHEDULES, where)
    if gran == "n_m" and self.schedule == "polynomial":
      raise ValueError(f"{where}schedule='polynomial' needs a sparsity to ramp to, but N:M"
                       " fixes the pattern; drop schedule (N:M masks are set at step 0).")
    if gran == "n_m" and self.sparsity is not None:
      raise ValueError(f"{where}n_m={self.n_m!r} fixes the sparsity (1 - N/M); drop"
                       f" sparsity={self.sparsity!r}.")
    if self.sparsity is not None and gran != "n_m":
      validate.check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True, where=where)
    try:  # jopt.prune checks every combination of its keywords
      self.transform(optax.identity(), self.sparsity, end_step=0, every=1)
    except (TypeError, ValueError) as e:
      raise type(e)(str(e).replace("prune: ", where)) from None

  @property
  def effective_schedule(self) -> str:
    """``"one_shot"`` for N:M, else ``schedule`` or ``"polynomial"``."""
    if self.granularity == "n_m" or self.n_m is not None:
      return "one_shot"
    return self.schedule or "polynomial"

  def transform(self, tx: Any, sparsity: Any, *, end_step: int, every: int,
                seed: Any = 0) -> Any:
    """``jopt.prune(tx, sparsity, ...)`` with this stage's keywords."""
    from jopt.prune.transform import prune  # pylint: disable=import-outside-toplevel
    gran = self.granularity or ("n_m" if self.n_m is not None else "weight")
    return prune(tx, None if gran == "n_m" else sparsity, criterion=self.criterion,
                 granularity=gran, scope=self.scope, allocation=self.allocation,
                 update_every=every, begin_step=0, end_step=end_step, n_m=self.n_m,
                 block=self.block, seed=seed)


@dataclasses.dataclass(frozen=True)
class Train(Stage):
  r"""Fine-tune on the labels (softmax cross-entropy), keeping masks and quantization.

  .. math:: \min_\theta \tfrac1B \textstyle\sum_i -\log \operatorname{softmax}(f_{\hat\theta}(x_i))_{y_i}

  Args:
    steps: the number of steps, >= 1.
    optimizer: this stage's optimizer, or None for the pipeline's.
    name: a label for reports.

  Example:
    >>> from jopt import pipeline as pl
    >>> stage = pl.Train(steps=500)
    >>> stage.kind, stage.train_steps, pl.Train(steps=500, name="finetune").label
    ('train', 500, 'finetune')

  Reference: the retraining step of Han et al., NeurIPS 2015.
  """

  kind: ClassVar[str] = "train"
  steps: int = 500
  optimizer: Any = None
  name: str | None = None

  def __post_init__(self):
    _steps("Train: ", "steps", self.steps)
    _optimizer("Train: ", self.optimizer)


@dataclasses.dataclass(frozen=True)
class Quantize(Stage):
  r"""Quantize the weight matrices (PTQ), or train through the quantizer first (QAT).

  Sets the pipeline's :class:`QuantSpec`: every floating leaf with
  ``ndim >= 2`` is stored as :func:`jopt.quant.quantize` codes
  (k-means with ``keep_zeros=True``). ``qat_steps = 0`` is post-training
  quantization (no training); ``qat_steps > 0`` first trains that many steps
  with the weights fake-quantized in the forward pass
  (:func:`jopt.quant.fake_quant` for linear, a straight-through
  quantize-dequantize for the other methods), then stores them.

  Args:
    bits: 2..8 (default 8; 4 for ``"nf4"``).
    method: ``"linear"``, ``"kmeans"``, ``"nf4"`` or ``"log2"``.
    granularity, axis, group_size, scheme: as in :func:`jopt.quant.quantize`.
    qat_steps: training steps through the quantizer, >= 0.
    optimizer: this stage's optimizer, or None for the pipeline's.
    name: a label for reports.

  Example:
    >>> from jopt import pipeline as pl
    >>> stage = pl.Quantize(bits=5, method="kmeans")
    >>> stage.spec          # the jopt.quant.quantize keywords every weight matrix gets
    QuantSpec(bits=5, method='kmeans', granularity='tensor', axis=-1, group_size=None,
              scheme=None)
    >>> pl.Quantize(method="nf4").spec.bits, stage.train_steps   # PTQ: no training steps
    (4, 0)

  Reference: Han et al., *Deep Compression*, ICLR 2016 (k-means weight
  sharing); Jacob et al., CVPR 2018 (QAT with fake quantization).
  """

  kind: ClassVar[str] = "quantize"
  bits: int | None = None
  method: str = "linear"
  granularity: str = "tensor"
  axis: int = -1
  group_size: int | None = None
  scheme: str | None = None
  qat_steps: int = 0
  optimizer: Any = None
  name: str | None = None

  def __post_init__(self):
    where = "Quantize: "
    validate.check_choice("method", self.method, METHODS, where)
    bits = self.bits if self.bits is not None else (4 if self.method == "nf4" else 8)
    _layout.check_bits(bits, where)
    if self.method == "nf4" and bits != 4:
      raise ValueError(f"{where}bits={bits}, but method='nf4' has exactly 16 levels; pass"
                       " bits=4 (or leave it out).")
    if self.scheme is not None:
      if self.method != "linear":
        raise ValueError(f"{where}scheme={self.scheme!r} applies to method='linear' only.")
      validate.check_choice("scheme", self.scheme, SCHEMES, where)
    validate.check_choice("granularity", self.granularity, _layout.GRANULARITIES, where)
    if (self.granularity == "group") != (self.group_size is not None):
      raise ValueError(f"{where}group_size={self.group_size!r}: pass a group_size exactly"
                       " when granularity='group'.")
    _steps(where, "qat_steps", self.qat_steps, 0)
    _optimizer(where, self.optimizer)

  @property
  def spec(self) -> QuantSpec:
    """The :class:`QuantSpec` this stage sets."""
    bits = self.bits if self.bits is not None else (4 if self.method == "nf4" else 8)
    return QuantSpec(int(bits), self.method, self.granularity, self.axis, self.group_size,
                     self.scheme)

  @property
  def train_steps(self) -> int:
    return int(self.qat_steps)


@dataclasses.dataclass(frozen=True)
class Distill(Stage):
  r"""Distill a frozen teacher (by default the dense trained model) into the current one or ``student``.

  The teacher is frozen (its logits ``stop_gradient``-ed). Per step, with
  :func:`jopt.distill_loss` (``alpha`` weighs the soft term):

  .. math:: L = \alpha T^2\, \mathrm{KL}(p^T_{teacher} \| q^T_{student})
     + (1 - \alpha)\, \mathrm{CE}(q^1_{student}, y)

  on a training batch (``transfer="train"``), or with the soft term on a batch
  of ``data.unlabeled`` and the hard term on a training batch
  (``transfer="unlabeled"``, Hinton et al.'s transfer set; skipped when
  :math:`\alpha = 1`). Without ``student`` the current compressed model is the
  student (masks and quantization kept). With ``student`` the pipeline
  continues with that model: its params, no masks (its shapes differ), the
  quantization spec kept (the student trains through it and is stored by it).

  The teacher: ``"dense"`` (default) is the uncompressed model after the stage
  list's leading :class:`Train` stages (the given model when the list does not
  start with one), so ``[Train, Prune, Quantize, Distill]`` distills the dense
  trained network into its compressed self; ``"start"`` is the given model;
  a :class:`jopt.pipeline.Model` is any other network with the same classes
  (e.g. a larger one).

  Args:
    steps: the number of steps, >= 1.
    temperature: :math:`T > 0`.
    alpha: :math:`\alpha \in [0, 1]`.
    transfer: ``"train"`` or ``"unlabeled"``.
    student: a :class:`jopt.pipeline.Model` to distill into, or None.
    teacher: ``"dense"``, ``"start"`` or a :class:`jopt.pipeline.Model`.
    optimizer: this stage's optimizer, or None for the pipeline's.
    name: a label for reports.

  Example:
    >>> from jopt import pipeline as pl
    >>> stage = pl.Distill(steps=1000, temperature=4.0, alpha=0.7)
    >>> stage.teacher, stage.transfer, stage.student is None   # dense teacher, train batches
    ('dense', 'train', True)

  Reference: Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural
  Network*, 2015, section 2.
  """

  kind: ClassVar[str] = "distill"
  steps: int = 1000
  temperature: float = 4.0
  alpha: float = 0.7
  transfer: str = "train"
  student: Model | None = None
  teacher: Any = "dense"
  optimizer: Any = None
  name: str | None = None

  def __post_init__(self):
    where = "Distill: "
    if not isinstance(self.teacher, Model):
      validate.check_choice("teacher", self.teacher, TEACHERS, where)
    _steps(where, "steps", self.steps)
    validate.check_range("temperature", self.temperature, 0.0, low_open=True, where=where)
    validate.check_range("alpha", self.alpha, 0.0, 1.0, where=where)
    validate.check_choice("transfer", self.transfer, TRANSFERS, where)
    if self.student is not None and not isinstance(self.student, Model):
      raise TypeError(f"{where}student={self.student!r} must be a jopt.pipeline.Model"
                      " (pl.Model(apply=..., params=...)) or None.")
    _optimizer(where, self.optimizer)


def dense_point(stages: Any) -> int:
  """The number of leading :class:`Train` stages: after them the ``"dense"`` teacher is taken."""
  k = 0
  while k < len(stages) and isinstance(stages[k], Train):
    k += 1
  return k


for _cls in (Stage, Prune, Train, Quantize, Distill):
  _cls.__module__ = "jopt.pipeline"
