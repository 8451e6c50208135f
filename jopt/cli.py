"""The ``jopt`` command: ``jopt demo`` trains a small MLP on digits with any jopt optimizer.

  $ python -m jopt demo --optimizer lion --schedule onecycle --quick

Every ``--optimizer`` choice is a jopt optimizer built as
``jopt.<name>(learning_rate=schedule, **extra)``, every ``--schedule`` choice a
jopt schedule peaking at ``--lr``. The run ends with a plain-text table of the
final loss, train/test accuracy, steps per second and wall time. Exit status:
0 on success, 1 when training diverges or an optimizer is unavailable, 2 for
bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any, Callable, Sequence

__all__ = ["main", "build_parser", "build_schedule", "build_optimizer", "OPTIMIZERS",
           "SCHEDULES", "format_table"]


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


def build_parser() -> argparse.ArgumentParser:
  """The ``jopt`` argument parser with its ``demo`` sub-command."""
  parser = argparse.ArgumentParser(
      prog="jopt", description="jopt: optax-compatible optimizers and schedules for JAX.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  demo = sub.add_parser(
      "demo", help="train a small MLP on scikit-learn's digits and print a results table",
      description="Train a 64-128-10 MLP on scikit-learn's bundled digits (no download)"
      " with a jopt optimizer and schedule, then print loss, accuracy and speed.",
      epilog="The table's final loss is the cross-entropy on the whole training set;"
      " steps/s is measured after the first (compiling) step; wall time covers data"
      " loading, compilation, training and evaluation, not Python and JAX start-up.")
  demo.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam",
                    help="which jopt optimizer (default: adam)")
  demo.add_argument("--schedule", choices=list(SCHEDULES), default="warmup_cosine",
                    help="learning-rate schedule, peaking at --lr (default: warmup_cosine)")
  demo.add_argument("--lr", type=_positive_float, default=None,
                    help="peak learning rate (default: per optimizer, e.g. 3e-3 for adam,"
                    " 0.1 for sgd)")
  demo.add_argument("--steps", type=_int_at_least(1), default=None,
                    help=f"training steps (default: {DEFAULT_STEPS}, or {QUICK_STEPS} with --quick)")
  demo.add_argument("--batch-size", type=_int_at_least(1), default=128, help="examples per step (default: 128)")
  demo.add_argument("--seed", type=_int_at_least(0), default=0,
                    help="seed of the init and the batch order; the train/test split is"
                    " fixed (default: 0)")
  demo.add_argument("--quick", action="store_true",
                    help=f"a short run of {QUICK_STEPS} steps (an explicit --steps wins)")
  demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  demo.set_defaults(demo_parser=demo)
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


def _demo(args: argparse.Namespace) -> int:
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
    print(f"jopt demo: error: this build of jopt does not implement {e} yet"
          f" (--optimizer {args.optimizer}, --schedule {args.schedule}).", file=sys.stderr)
    return 1
  except (TypeError, ValueError) as e:
    print(f"jopt demo: error: could not build --optimizer {args.optimizer} with --schedule"
          f" {args.schedule} (--lr {lr:g}): {e}", file=sys.stderr)
    return 2

  eval_fn = None
  if choice.schedule_free:
    import jopt  # pylint: disable=import-outside-toplevel
    eval_fn = lambda params, state: jopt.schedule_free_eval_params(state, params)  # noqa: E731

  print(f"jopt demo: {args.optimizer} + {args.schedule} (peak lr {lr:g}), {steps} steps,"
        f" batch {args.batch_size}, seed {args.seed}; digits: {len(data.train)} train /"
        f" {len(data.test)} test", flush=True)
  try:
    r = train(tx, steps, batch_size=args.batch_size, seed=args.seed, data=data,
              eval_params_fn=eval_fn, progress=not args.no_progress, description=args.optimizer)
  except TrainingDiverged as e:
    print(f"jopt demo: error: training stopped at step {e.step} of {steps}: {e.reason}."
          f" The last finite parameters (after {e.result.steps} step"
          f"{'' if e.result.steps == 1 else 's'}) reach"
          f" {100 * e.result.test_accuracy:.2f}% test accuracy. Try a smaller --lr"
          f" (this run used {lr:g}) or another --schedule.", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:
    print(f"jopt demo: {e or 'interrupted'}", file=sys.stderr)
    return 130

  speed = "n/a" if r.steps_per_sec is None else f"{r.steps_per_sec:.0f}"
  print(format_table(
      ["optimizer", "schedule", "steps", "final loss", "train acc", "test acc", "steps/s",
       "wall time"],
      [[args.optimizer, args.schedule, str(r.steps), f"{max(r.final_loss, 0.0):.4g}",
        f"{100 * r.train_accuracy:.2f}%", f"{100 * r.test_accuracy:.2f}%", speed,
        f"{r.wall_time:.1f} s"]]))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Run the ``jopt`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

  Example:
    >>> main(["demo", "--quick", "--no-progress"])
    0
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  return _demo(args)
