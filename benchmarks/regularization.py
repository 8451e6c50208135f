"""Do jopt's regularizers regularize? Train, validation and test accuracy, alone and combined.

Run:  python -m benchmarks.regularization [--quick] [--md PATH] [--json PATH]

Over-parameterized models (:class:`jopt.training.RegMLP`, a 2x512 MLP, and
:class:`jopt.training.RegCNN`, a two-layer strided CNN with a dense head) train on
a deliberately small training set (300 digits, 500 MNIST images) with a fixed
step budget, so that they fit it perfectly and overfit; a validation set held out
of the training data drives early stopping and "steps to best validation
accuracy"; the test split measures generalization. Each configuration runs for
several seeds (init, batch order, dropout and augmentation keys) and the table
gives the mean +- std over them.

The second table is the dropout x batch-norm order effect of Li et al. (CVPR
2019): a 3x512 MLP with batch norm and dropout 0.5 placed after every block
(so the later batch norms see dropped-out inputs: ``dropout_bn``) or only after
the last batch norm (``bn_dropout``), with the variance shift of each BN layer
(running variance over the variance of its input at test time) measured by
:func:`jopt.training.variance_shift`.

``--quick`` is the smoke test's run (digits only, one seed, 12 steps, tiny
models, compiled with ``jax_disable_most_optimizations``): its numbers only show
that every configuration runs and the tables are complete.

Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

import jopt
import jopt.augment as aug
import jopt.regularizers as reg
from jopt.training import (RegCNN, RegMLP, fit_seeds, lab_data, load_digits, load_mnist_subset,
                           variance_shift)

from benchmarks.machine import log, machine_facts, write_report

HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Settings:
  seeds: tuple[int, ...]
  steps: int
  eval_every: int
  batch_size: int
  learning_rate: float
  datasets: tuple[str, ...]
  train_size: dict[str, int]
  val_size: dict[str, int]
  mlp_hidden: tuple[int, ...]
  cnn_channels: tuple[int, ...]
  order_hidden: tuple[int, ...]
  l2: float = 1e-3
  weight_decay: float = 1.0
  l1: float = 0.3
  dropout: float = 0.5
  spatial_dropout: float = 0.1
  patience: int = 4
  mixup_alpha: float = 0.2
  cnn_rows: tuple[str, ...] | None = None   # None: every row


FULL = Settings(seeds=(0, 1, 2), steps=400, eval_every=25, batch_size=64, learning_rate=1e-3,
                datasets=("digits", "mnist5k"), train_size={"digits": 300, "mnist5k": 500},
                val_size={"digits": 300, "mnist5k": 500}, mlp_hidden=(512, 512),
                cnn_channels=(32, 64), order_hidden=(512, 512, 512))
QUICK = Settings(seeds=(0,), steps=12, eval_every=6, batch_size=32, learning_rate=1e-3,
                 datasets=("digits",), train_size={"digits": 64}, val_size={"digits": 64},
                 mlp_hidden=(32,), cnn_channels=(4, 8), order_hidden=(32, 32),
                 cnn_rows=("none", "dropout", "batch norm"))

AUGMENT_NOTE = (
    "Augmentation is a small random affine map (rotation up to 10 degrees, shift up to 10%,"
    " scale 0.9-1.1), cutout of a quarter-side square with probability 0.5, and Gaussian"
    " noise (std 0.03), all from `jopt.augment`. No flips: a mirrored 2, 3, 4, 5 or 7 is not"
    " a digit of its class, and an upside-down 6 is a 9, so flips teach the model wrong"
    " labels; small rotations, shifts, occlusions and noise are what handwriting varies by.")


def _augment(image_shape) -> Callable[..., Any]:
  side = max(1, image_shape[0] // 4)
  return aug.sequence(
      functools.partial(aug.random_affine, degrees=10.0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
      functools.partial(aug.cutout, size=side, p=0.5),
      functools.partial(aug.gaussian_noise, std=0.03))


def _rows(kind: str, s: Settings, image_shape) -> list[tuple[str, Any, Any, dict[str, Any]]]:
  """(regularizer, model, tx, fit keywords) for each row of the main table."""
  lr = s.learning_rate
  if kind == "mlp":
    plain = RegMLP(hidden=s.mlp_hidden)
    drop = RegMLP(hidden=s.mlp_hidden, dropout=s.dropout)
    bn = RegMLP(hidden=s.mlp_hidden, batch_norm=True)
  else:
    plain = RegCNN(channels=s.cnn_channels, head="dense")
    drop = RegCNN(channels=s.cnn_channels, head="dense", spatial_dropout=s.spatial_dropout,
                  dropout=s.dropout)
    bn = RegCNN(channels=s.cnn_channels, head="dense", batch_norm=True)
  adam = jopt.adam(lr)
  adamw = jopt.adamw(lr, weight_decay=s.weight_decay, mask=reg.weights_mask)
  def stop():
    return reg.early_stopping(patience=s.patience, mode="max", restore_best=True)

  augment = _augment(image_shape)
  return [
      ("none", plain, adam, {}),
      ("l2 penalty", plain, adam, {"penalty": functools.partial(reg.l2_penalty, strength=s.l2)}),
      ("weight decay (adamw)", plain, adamw, {}),
      ("l1 (proximal)", plain, optax.chain(adam, reg.proximal_l1(s.l1, learning_rate=lr)), {}),
      ("dropout", drop, adam, {}),
      ("batch norm", bn, adam, {}),
      ("early stopping", plain, optax.chain(adam, stop()), {}),
      ("augmentation", plain, adam, {"augment": augment}),
      ("mixup", plain, adam, {"mixup_alpha": s.mixup_alpha}),
      ("dropout + weight decay + augmentation", drop, adamw, {"augment": augment}),
      ("batch norm + augmentation + early stopping", bn, optax.chain(adam, stop()),
       {"augment": augment}),
  ]


def _per_layer(values: np.ndarray) -> dict[str, Any]:
  """Mean and sample std over the seeds (axis 0) of a (seeds, layers) array."""
  std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1])
  return {"mean": values.mean(0).tolist(), "std": std.tolist(), "values": values.tolist()}


def _summary(values) -> dict[str, Any]:
  values = [float(v) for v in values]
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def _load(name: str, s: Settings):
  data = load_digits() if name == "digits" else load_mnist_subset()
  return lab_data(data, train_size=s.train_size[name], val_size=s.val_size[name], seed=0)


def run(s: Settings, log=print) -> dict[str, Any]:
  """Every configuration of both tables: a JSON-ready dict."""
  main, order = [], []
  for name in s.datasets:
    lab = _load(name, s)
    for kind in ("mlp", "cnn"):
      for label, model, tx, kwargs in _rows(kind, s, lab.image_shape):
        if kind == "cnn" and s.cnn_rows is not None and label not in s.cnn_rows:
          continue
        t0 = time.perf_counter()
        rs = fit_seeds(model, tx, lab, steps=s.steps, seeds=s.seeds, batch_size=s.batch_size,
                       eval_every=s.eval_every, **kwargs)
        row = {"model": kind, "dataset": name, "regularizer": label,
               "train_acc": _summary(r.train_accuracy for r in rs),
               "test_acc": _summary(r.test_accuracy for r in rs),
               "gap": _summary(r.gap for r in rs),
               "best_step": _summary(r.best_step for r in rs),
               "sparsity": _summary(r.sparsity for r in rs),
               "steps_run": _summary(r.steps for r in rs),
               "seconds": time.perf_counter() - t0}
        main.append(row)
        log(f"{name:8s} {kind} {label:45s} test {row['test_acc']['mean']:.3f}"
            f" gap {row['gap']['mean']:+.3f} ({row['seconds']:.1f} s)")
    for where in ("dropout_bn", "bn_dropout"):
      t0 = time.perf_counter()
      model = RegMLP(hidden=s.order_hidden, dropout=s.dropout, batch_norm=True, order=where)
      rs = fit_seeds(model, jopt.adam(s.learning_rate), lab, steps=s.steps, seeds=s.seeds,
                     batch_size=s.batch_size, eval_every=s.eval_every)
      shifts = [variance_shift(model, r.params, r.stats, lab.test.x) for r in rs]
      ratio = np.stack([v["ratio"] for v in shifts])
      shift = np.stack([v["shift"] for v in shifts])
      row = {"dataset": name, "order": where,
             "train_acc": _summary(r.train_accuracy for r in rs),
             "test_acc": _summary(r.test_accuracy for r in rs),
             "variance_ratio": _per_layer(ratio), "variance_shift": _per_layer(shift),
             "seconds": time.perf_counter() - t0}
      order.append(row)
      log(f"{name:8s} order {where}: test {row['test_acc']['mean']:.3f}, ratio per BN layer"
          f" {np.round(ratio.mean(0), 2).tolist()} ({row['seconds']:.1f} s)")
  return {"main": main, "order": order}


# ---------------------------------------------------------------- the report
def _pct(d: dict[str, Any], sign: bool = False) -> str:
  fmt = "{:+.1f}" if sign else "{:.1f}"
  return f"{fmt.format(100 * d['mean'])} ± {100 * d['std']:.1f}"


def markdown(result: dict[str, Any]) -> str:
  s, m = result["settings"], result["machine"]
  how = ("the smoke test's tiny run; the full run is `python -m benchmarks.regularization`"
         if result["quick"] else "about 10 minutes on 2 shared CPU cores; `--quick` is the"
         " smoke test's tiny run")
  out = [
      "# Do jopt's regularizers regularize?",
      "",
      f"Generated by `{result['command']}` ({how}); do not edit by hand.",
      "",
      f"- machine: {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; {m['platform']}",
      f"- versions: jax {m['jax']}, optax {m['optax']}, numpy {m['numpy']}, jopt {m['jopt']},"
      f" Python {m['python']}",
      f"- run time: {result['seconds'] / 60:.1f} min for both tables",
      f"- protocol: train on {_sizes(s['train_size'])} examples (stratified, from the training"
      f" split), validate on {_sizes(s['val_size'])} more, test on the whole test split"
      " (digits 359, mnist5k 1,000); Adam, learning rate"
      f" {s['learning_rate']:g}, batch {s['batch_size']}, {s['steps']} steps, evaluated every"
      f" {s['eval_every']} steps; seeds {tuple(s['seeds'])}, mean ± sample std over them.",
      f"- models: MLP {'x'.join(map(str, s['mlp_hidden']))} ReLU"
      f" ({_count_mlp(s['mlp_hidden'])}); CNN: 3x3 stride-2 convolutions with"
      f" {'/'.join(map(str, s['cnn_channels']))} channels and a dense head.",
      f"- settings: L2 penalty strength {s['l2']:g} (in the loss, `jopt.regularizers.l2_penalty`);"
      f" decoupled weight decay {s['weight_decay']:g} (`jopt.adamw(..., mask=weights_mask)`,"
      f" biases and BN exempt); L1 {s['l1']:g} by `jopt.regularizers.proximal_l1` after Adam"
      f" (threshold {s['l1']:g} x lr per step); dropout {s['dropout']:g} (CNN: spatial dropout"
      f" {s['spatial_dropout']:g} after each conv and dropout {s['dropout']:g} before the head);"
      f" batch norm after every dense / conv layer; early stopping on validation accuracy,"
      f" patience {s['patience']} evaluations, `restore_best=True`; mixup alpha"
      f" {s['mixup_alpha']:g}.",
      f"- {AUGMENT_NOTE}",
      "",
      "Columns: accuracies of the final parameters (after early stopping: the restored best"
      " ones) in eval mode; `gap` = train - test accuracy; `best step` = the step of the best"
      " validation accuracy among the evaluations; `sparsity` = share of exactly-zero weights"
      " (biases excluded); `steps` = steps run (fewer when early stopping ended the run).",
      "",
      "| model | dataset | regularizer | train acc % | test acc % | gap (points) | best step"
      " | sparsity % | steps |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in result["main"]:
    out.append(
        f"| {r['model']} | {r['dataset']} | {r['regularizer']} | {_pct(r['train_acc'])}"
        f" | {_pct(r['test_acc'])} | {_pct(r['gap'], sign=True)}"
        f" | {r['best_step']['mean']:.0f} ± {r['best_step']['std']:.0f}"
        f" | {_pct(r['sparsity'])} | {r['steps_run']['mean']:.0f} |")
  out += [
      "",
      "## The dropout x batch-norm order and the variance shift",
      "",
      f"MLP {'x'.join(map(str, s['order_hidden']))} with batch norm before each ReLU and dropout"
      f" {s['dropout']:g}. `dropout_bn`: dropout after every block, so every batch norm but the"
      " first sees dropped-out inputs (dropout *before* BN); `bn_dropout`: one dropout after the"
      " last block, before the head, so no batch norm sees dropout (Li et al.'s remedy: dropout"
      " after all BN layers). `variance ratio` per BN layer = running variance accumulated in"
      " training / variance of the layer's input on the test set in eval mode, averaged over"
      " channels (1 = no shift, > 1: BN divides by too large a variance at test time);"
      " `variance shift` = the mean of max(ratio, 1/ratio), the measure of Li et al.'s Figure 1."
      " The running variance is torch's (unbiased batch variances), so about"
      f" {s['batch_size'] / (s['batch_size'] - 1):.3f} is no shift at all.",
      "",
      "| dataset | order | train acc % | test acc % | variance ratio per BN layer"
      " | variance shift per BN layer |",
      "| --- | --- | --- | --- | --- | --- |",
  ]
  for r in result["order"]:
    ratio = ", ".join(f"{a:.2f} ± {b:.2f}" for a, b in zip(r["variance_ratio"]["mean"],
                                                          r["variance_ratio"]["std"]))
    shift = ", ".join(f"{a:.2f}" for a in r["variance_shift"]["mean"])
    out.append(f"| {r['dataset']} | {r['order']} | {_pct(r['train_acc'])} | {_pct(r['test_acc'])}"
               f" | {ratio} | {shift} |")
  out += ["", "Reference: Li, Chen, Hu & Yang, *Understanding the Disharmony between Dropout and"
          " Batch Normalization by Variance Shift*, CVPR 2019.", ""]
  return "\n".join(out)


def _sizes(d: dict[str, int]) -> str:
  return ", ".join(f"{v} ({k})" for k, v in d.items())


def _count_mlp(hidden) -> str:
  counts = []
  for name, n_in in (("digits", 64), ("mnist5k", 784)):
    sizes = (n_in, *hidden, 10)
    counts.append(f"{sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])) / 1e6:.2f}M"
                  f" parameters on {name}")
  return ", ".join(counts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.regularization",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a tiny run for the smoke test: digits only, one seed, 12 steps,"
                      " tiny models, three CNN rows, XLA optimizations off")
  parser.add_argument("--md", default=str(HERE / "REGULARIZATION.md"), help="the markdown report")
  parser.add_argument("--json", default=str(HERE / "regularization.json"), help="the raw results")
  args = parser.parse_args(argv)
  settings = QUICK if args.quick else FULL
  if args.quick:
    # A smoke test compiles ~50 tiny programs and runs each for 12 steps: compile time is
    # all of it, and XLA's optimizations would double it.
    jax.config.update("jax_disable_most_optimizations", True)
  start = time.perf_counter()
  result = run(settings, log=log)
  result.update(settings=dataclasses.asdict(settings), machine=machine_facts(), quick=args.quick,
                seconds=time.perf_counter() - start,
                command="python -m benchmarks.regularization" + (" --quick" if args.quick else ""))
  write_report(result, markdown(result), args.md, args.json, result["seconds"])
  return 0


if __name__ == "__main__":
  sys.exit(main())
