"""The command a newcomer runs first: ``python -m jopt demo`` (the compression pipeline) and
``python -m jopt train-demo`` (the optimizer demo on jopt.training).

The pipeline demo's printed table and summary are checked against its report.json, and
its joined report against an independent evaluation of the teacher it used.
"""

import functools
import importlib.metadata
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt import cli
from jopt.training import (Digits, Split, TrainingDiverged, TrainingInterrupted, evaluate,
                           init_mlp, load_digits, make_train_step, train)

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEADERS = ["optimizer", "schedule", "steps", "final loss", "train acc", "test acc", "steps/s",
           "wall time"]


def _table_row(stdout: str) -> dict[str, str]:
  """The results row of the demo's table as ``{header: cell}``."""
  lines = stdout.strip().splitlines()
  head = next(i for i, l in enumerate(lines) if l.startswith("optimizer"))
  assert re.fullmatch(r"[- ]+", lines[head + 1]), lines[head + 1]
  for h in HEADERS:
    assert h in lines[head], (h, lines[head])
  cells = re.split(r"\s{2,}", lines[head + 2].strip())
  assert len(cells) == len(HEADERS), cells
  return dict(zip(HEADERS, cells))


def _pct(cell: str) -> float:
  assert cell.endswith("%"), cell
  return float(cell[:-1]) / 100


@functools.cache
def _initial_loss() -> float:
  """Training-set loss of the demo's initial parameters (seed 0)."""
  return evaluate(init_mlp(jax.random.key(0)), load_digits().train)[0]


def _tree_equal(a, b) -> bool:
  return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _all_finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# --- data and training -------------------------------------------------------------------


def test_digits_split_is_deterministic_disjoint_and_scaled():
  a, b = load_digits(seed=0), load_digits(seed=0)
  np.testing.assert_array_equal(a.test.x, b.test.x)
  assert len(a.train) + len(a.test) == 1797
  assert 0.19 < len(a.test) / 1797 < 0.21
  assert a.train.x.dtype == np.float32 and a.train.y.dtype == np.int32
  assert a.train.x.min() >= 0.0 and a.train.x.max() <= 1.0
  train_rows = {r.tobytes() for r in a.train.x}
  overlap = sum(r.tobytes() in train_rows for r in a.test.x)
  assert overlap <= 5   # the raw data holds a few duplicate images, nothing more
  assert not np.array_equal(load_digits(seed=1).test.y, a.test.y)
  x, y = next(a.train.batches(32, seed=3))
  x2, _ = next(a.train.batches(32, seed=3))
  assert x.shape == (32, 64) and y.shape == (32,) and x.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(x), np.asarray(x2))
  with pytest.raises(ValueError, match="batch_size"):
    next(a.train.batches(0))


def test_adam_reaches_90_percent_test_accuracy_in_300_steps():
  result = train(jopt.adam(3e-3), steps=300, seed=0)
  assert result.steps == 300 and result.loss_history.shape == (300,)
  assert np.all(np.isfinite(result.loss_history))
  assert result.test_accuracy > 0.90, result
  assert result.train_accuracy > 0.95
  assert result.final_loss < 0.3 < result.loss_history[0]
  assert result.steps_per_sec is not None and result.steps_per_sec > 0
  assert result.wall_time > 0


def test_train_step_compiles_once_and_takes_any_optax_transform():
  tx = optax.chain(optax.clip_by_global_norm(1.0), jopt.adam(1e-2))
  params = init_mlp(jax.random.key(0))
  state = tx.init(params)
  step = make_train_step(tx)
  batches = load_digits().train.batches(64)
  for _ in range(3):
    params, state, loss = step(params, state, next(batches))
  state = jopt.set_hyperparams(state, learning_rate=1e-3)
  params, state, loss = step(params, state, next(batches))
  assert step._cache_size() == 1   # pylint: disable=protected-access
  assert np.isfinite(float(loss))


def test_nan_updates_stop_at_step_1_and_keep_the_initial_params():
  with pytest.raises(TrainingDiverged, match=r"step 1 of 20") as info:
    train(optax.scale(float("nan")), steps=20)
  err = info.value
  assert err.step == 1 and err.result.steps == 0
  assert "non-finite" in str(err) and "initial parameters" in str(err)
  assert _tree_equal(err.result.params, init_mlp(jax.random.key(0)))
  assert err.result.loss_history.shape == (0,)


def test_divergence_mid_run_keeps_the_last_finite_params():
  # Plain SGD for five steps, then every update becomes NaN.
  poison = optax.scale_by_schedule(lambda count: jnp.where(count < 5, 1.0, jnp.nan))
  with pytest.raises(TrainingDiverged, match=r"step 6 of 50") as info:
    train(optax.chain(optax.sgd(0.1), poison), steps=50, seed=2)
  err = info.value
  assert err.step == 6 and err.result.steps == 5
  assert "after step 5" in str(err)
  assert _all_finite(err.result.params)
  reference = train(optax.sgd(0.1), steps=5, seed=2)
  assert _tree_equal(err.result.params, reference.params)
  np.testing.assert_array_equal(err.result.loss_history, reference.loss_history)
  assert math.isfinite(err.result.final_loss) and err.result.test_accuracy > 0


def test_a_non_finite_loss_is_reported_with_its_step():
  data = load_digits()
  x = np.array(data.train.x)
  x[:, 0] = np.nan
  bad = Digits(train=Split(x, data.train.y), test=data.test)
  with pytest.raises(TrainingDiverged, match=r"step 1 of 10: the loss was nan"):
    train(jopt.adam(1e-3), steps=10, data=bad)


class _InterruptedAfter7(Split):
  """A split whose batch stream is cut by Ctrl-C after 7 batches."""

  def batches(self, batch_size, seed=0):
    stream = super().batches(batch_size, seed)
    for _ in range(7):
      yield next(stream)
    raise KeyboardInterrupt


def test_ctrl_c_keeps_the_completed_steps():
  data = load_digits()
  cut = Digits(train=_InterruptedAfter7(data.train.x, data.train.y), test=data.test)
  with pytest.raises(TrainingInterrupted, match=r"interrupted at step 8 of 100") as info:
    train(jopt.adam(1e-3), steps=100, data=cut)
  assert isinstance(info.value, KeyboardInterrupt)
  assert info.value.result.steps == 7 and _all_finite(info.value.result.params)
  reference = train(jopt.adam(1e-3), steps=7, data=data)
  assert _tree_equal(info.value.result.params, reference.params)


def test_train_rejects_bad_steps():
  with pytest.raises(ValueError, match="steps"):
    train(jopt.adam(1e-3), steps=0)


# --- the command line --------------------------------------------------------------------


def test_optimizer_choices_are_every_jopt_optimizer():
  # Every lower-case optimizer constructor (State classes and the eval helper excluded).
  exported = {n for n in jopt.optimizers.__all__
              if n[0].islower() and n in jopt.__all__ and n != "schedule_free_eval_params"}
  assert set(cli.OPTIMIZERS) == exported
  assert cli.OPTIMIZERS["adam"].lr == 3e-3 and cli.OPTIMIZERS["sgd"].lr == 0.1


def test_console_script_points_at_main():
  scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
  entry = importlib.metadata.EntryPoint(name="jopt", value=scripts["jopt"], group="console_scripts")
  assert entry.load() is cli.main


def test_no_subcommand_prints_help(capsys):
  assert cli.main([]) == 0
  out = capsys.readouterr().out
  assert "usage: jopt" in out and re.search(r"^\s+demo\s", out, re.M) and "train-demo" in out


def test_help_lists_both_commands(capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["--help"])
  assert info.value.code == 0
  out = capsys.readouterr().out
  assert re.search(r"^\s+demo\s+compress LeNet-300-100", out, re.M), out
  assert re.search(r"^\s+train-demo\b", out, re.M), out
  for command, flags in [("demo", ["--quick", "--out", "--seed", "--no-progress"]),
                         ("train-demo", ["--optimizer", "--schedule", "--lr", "--steps",
                                         "--batch-size", "--seed", "--quick", "--no-progress"])]:
    with pytest.raises(SystemExit) as info:
      cli.main([command, "--help"])
    assert info.value.code == 0
    sub = capsys.readouterr().out
    assert f"usage: jopt {command}" in sub
    for flag in flags:
      assert flag in sub, (command, flag)


@pytest.mark.parametrize("argv, flag", [
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--optimizer", "adamm"], "--optimizer"),
    (["--schedule", "linear"], "--schedule"),
])
def test_bad_arguments_exit_2_naming_the_flag(argv, flag, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["train-demo", "--no-progress", *argv])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert f"argument {flag}" in err, err


@pytest.mark.parametrize("optimizer", list(cli.OPTIMIZERS))
def test_every_optimizer_runs_30_steps(optimizer, capsys):
  assert cli.main(["train-demo", "--optimizer", optimizer, "--steps", "30", "--no-progress"]) == 0
  row = _table_row(capsys.readouterr().out)
  assert row["optimizer"] == optimizer and row["steps"] == "30"
  assert math.isfinite(float(row["final loss"]))
  assert float(row["final loss"]) < _initial_loss()   # it learns something in 30 steps
  assert 0 <= _pct(row["test acc"]) <= 1


@pytest.mark.parametrize("schedule", list(cli.SCHEDULES))
def test_every_schedule_runs_30_steps(schedule, capsys):
  assert cli.main(["train-demo", "--schedule", schedule, "--steps", "30", "--no-progress"]) == 0
  row = _table_row(capsys.readouterr().out)
  assert row["schedule"] == schedule and math.isfinite(float(row["final loss"]))
  assert float(row["final loss"]) < _initial_loss()


def test_divergence_exits_1_with_the_step(capsys):
  assert cli.main(["train-demo", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant",
                   "--steps", "50", "--no-progress"]) == 1
  err = capsys.readouterr().err
  assert re.search(r"error: training stopped at step \d+ of 50: ", err), err
  assert "--lr" in err


def test_quick_train_demo_as_a_subprocess():
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict")
  proc = subprocess.run([sys.executable, "-m", "jopt", "train-demo", "--quick", "--no-progress"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  row = _table_row(proc.stdout)
  assert row["optimizer"] == "adam" and row["schedule"] == "warmup_cosine"
  assert row["steps"] == str(cli.QUICK_STEPS)
  assert _pct(row["test acc"]) > 0.9 and _pct(row["train acc"]) > 0.9
  assert float(row["steps/s"]) > 0 and row["wall time"].endswith(" s")


# --- the pipeline demo: python -m jopt demo ------------------------------------------------

_MD_ROW = re.compile(r"^\| (\d+) \| (\S+) \| (\S+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \|"
                     r" ([\d.]+)% \| (\d+) \([^)]*\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$")


def _printed_rows(stdout: str) -> list[tuple[str, ...]]:
  """The rows of the report table printed by ``jopt demo``."""
  lines = stdout.splitlines()
  head = next(i for i, l in enumerate(lines) if l.startswith("| # | stage |"))
  rows = []
  for line in lines[head + 2:]:
    if not line.startswith("|"):
      break
    m = _MD_ROW.match(line)
    assert m, line
    rows.append(m.groups())
  return rows


def test_pipeline_demo_quick_as_a_subprocess(tmp_path):
  out = tmp_path / "demo out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict")
  proc = subprocess.run([sys.executable, "-m", "jopt", "demo", "--quick", "--no-progress",
                         "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[-1] == str(out.resolve())   # the last line is the folder's absolute path
  for name in ("report.json", "report.md", "report.png"):
    assert (out / name).stat().st_size > 0, name
  assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  stored = json.loads((out / "report.json").read_text())["stages"]
  rows = _printed_rows(proc.stdout)
  assert [r[1] for r in rows] == ["start", "dense", "prune", "finetune", "quantize", "distill"]
  assert len(rows) == len(stored)
  for row, s in zip(rows, stored):
    idx, name, kind, acc, loss, params, nonzeros, sparsity, nbytes, ratio, lat, sec = row
    assert (int(idx), name, kind) == (s["index"], s["name"], s["kind"])
    assert acc == f"{s['accuracy']:.2f}" and loss == f"{s['loss']:.4f}"
    assert (int(params), int(nonzeros), int(nbytes)) == (s["params"], s["nonzeros"], s["bytes"])
    assert sum(l["bytes"] for l in s["layers"]) == s["bytes"]
    assert sparsity == f"{100 * (1 - s['nonzeros'] / s['params']):.1f}"
    assert ratio == f"{stored[0]['bytes'] / s['bytes']:.1f}" == f"{s['compression']:.1f}"
    assert lat == f"{s['latency_ms']:.3f}" and sec == f"{s['seconds']:.1f}"
  # the summary states the ratio and the drop against the dense-trained row (row 1)
  dense, last = stored[1], stored[-1]
  text = proc.stdout
  assert (f"{dense['bytes'] / last['bytes']:.1f}x fewer bytes than the dense-trained float32"
          f" model (row 1: {dense['bytes']:,} B -> {last['bytes']:,} B)") in text
  assert (f"{last['accuracy']:.2f}% against {dense['accuracy']:.2f}% for the dense-trained"
          f" model (row 1): a drop of {dense['accuracy'] - last['accuracy']:+.2f} points") in text
  # the quick run still prunes to 95% and shares the kernels' weights in 5 bits
  kernels = [l for l in stored[-1]["layers"] if len(l["shape"]) == 2]
  assert len(kernels) == 3 and all(l["bits"] == 5 for l in kernels)
  assert 0.94 < 1 - sum(l["nonzeros"] for l in kernels) / sum(l["params"] for l in kernels) < 0.96
  assert dense["accuracy"] > 85.0 and stored[0]["accuracy"] < 30.0
  md = (out / "report.md").read_text()
  assert "| 5 | distill | distill |" in md and "Target (>= 40x" in md


def _refuse_training(monkeypatch):
  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel

  def fail(*args, **kwargs):
    raise AssertionError("training started")

  monkeypatch.setattr(demo, "run_demo", fail)
  monkeypatch.setattr(demo, "run", fail)


def test_pipeline_demo_unwritable_out_exits_2_before_training(tmp_path, monkeypatch, capsys):
  _refuse_training(monkeypatch)
  blocker = tmp_path / "a-file"
  blocker.write_text("not a folder")
  assert cli.main(["demo", "--quick", "--no-progress", "--out", str(blocker / "sub")]) == 2
  captured = capsys.readouterr()
  assert "argument --out: cannot write to" in captured.err and str(blocker / "sub") in captured.err
  assert "| # | stage |" not in captured.out
  assert cli.main(["demo", "--quick", "--no-progress", "--out", str(blocker)]) == 2
  assert "argument --out" in capsys.readouterr().err


def test_pipeline_demo_without_mlxtend_exits_2_with_the_install_line(tmp_path, monkeypatch,
                                                                     capsys):
  _refuse_training(monkeypatch)
  real = cli.importlib.util.find_spec
  monkeypatch.setattr(cli.importlib.util, "find_spec",
                      lambda name, *a: None if name == "mlxtend" else real(name, *a))
  assert cli.main(["demo", "--quick", "--out", str(tmp_path / "o")]) == 2
  err = capsys.readouterr().err
  assert 'pip install -e ".[demo]"' in err and "mlxtend" in err
  assert not (tmp_path / "o").exists()


@pytest.fixture
def fast_compiles():
  """XLA's optimizations off for a test of tiny pipeline runs: compiling dominates them."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def _small_mnist():
  from jopt import pipeline as pl  # pylint: disable=import-outside-toplevel
  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel
  d = demo.demo_data()
  return pl.Data(train=(d.train[0][:640], d.train[1][:640]),
                 test=(d.test[0][:300], d.test[1][:300]))


def test_demo_stages_are_the_recipe():
  from jopt import pipeline as pl  # pylint: disable=import-outside-toplevel
  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel
  for quick in (False, True):
    stages = demo.demo_stages(quick)
    assert [type(s) for s in stages] == [pl.Train, pl.Prune, pl.Train, pl.Quantize, pl.Distill]
    assert stages[1].sparsity == 0.95 and stages[1].effective_schedule == "polynomial"
    assert stages[1].scope == "global" and stages[1].criterion == "magnitude"
    assert stages[0].optimizer is None and stages[1].optimizer is None   # the run's Adam 1e-3
    assert stages[2].optimizer is not None and stages[4].optimizer is not None
    assert (stages[4].temperature, stages[4].alpha, stages[4].teacher) == (4.0, 0.7, "dense")
    assert (stages[3].bits, stages[3].method, stages[3].qat_steps) == (5, "kmeans", 0)
  full, quick = demo.demo_stages(False), demo.demo_stages(True)
  assert all(f.train_steps > q.train_steps for f, q in zip(full, quick) if f.train_steps)


@pytest.mark.usefixtures("fast_compiles")
def test_run_demo_distills_from_the_dense_trained_model_and_resumes(tmp_path, monkeypatch):
  from jopt import pipeline as pl  # pylint: disable=import-outside-toplevel
  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel
  from jopt.pipeline import execute as execute_module  # pylint: disable=import-outside-toplevel
  from jopt.training import compression_lab as lab  # pylint: disable=import-outside-toplevel

  teachers = []
  real_teacher = execute_module.Teacher

  def spy(apply, params, *args):
    teachers.append(params)
    return real_teacher(apply, params, *args)

  monkeypatch.setattr(execute_module, "Teacher", spy)
  data = _small_mnist()
  stages = [pl.Train(40, name="dense"), pl.Prune(0.9, steps=6, name="prune"),
            pl.Quantize(bits=4, method="kmeans", name="quantize"),
            pl.Distill(steps=3, name="distill")]
  report = demo.run_demo(str(tmp_path / "o"), seed=1, progress=False, data=data, stages=stages,
                         latency_repeats=1)
  rows = report.stages
  assert [r.index for r in rows] == [0, 1, 2, 3, 4]
  assert [r.name for r in rows] == ["start", "dense", "prune", "quantize", "distill"]
  for r in rows:
    assert r.compression == rows[0].bytes / r.bytes
  # the teacher is the dense-trained model of row 1, not the untrained start of row 0
  assert len(teachers) == 1
  x, y = data.test
  teacher_acc = 100 * np.mean(np.argmax(np.asarray(lab.apply_lenet(teachers[0], x)), -1) == y)
  init = demo.demo_model(1).params
  init_acc = 100 * np.mean(np.argmax(np.asarray(lab.apply_lenet(init, x)), -1) == y)
  assert teacher_acc == pytest.approx(rows[1].accuracy, abs=1e-9)
  assert init_acc == pytest.approx(rows[0].accuracy, abs=1e-9)
  assert teacher_acc > init_acc + 30
  s = demo.summarize(report)
  assert s.ratio == rows[1].bytes / rows[-1].bytes and s.ratio_vs_start == rows[-1].compression
  assert s.drop == rows[1].accuracy - rows[-1].accuracy
  assert s.met == (s.ratio >= 40 and s.drop <= 1.0)
  assert pl.Report.from_json((tmp_path / "o" / "report.json").read_text()) == report
  # a rerun of the same recipe resumes (nothing trains) and reports the same numbers; another
  # recipe in the same folder starts over instead of failing
  monkeypatch.setattr(execute_module, "train_stage", _no_training)
  again = demo.run_demo(str(tmp_path / "o"), seed=1, progress=False, data=data, stages=stages,
                        latency_repeats=1)
  assert [(r.accuracy, r.bytes, r.nonzeros) for r in again.stages] == \
      [(r.accuracy, r.bytes, r.nonzeros) for r in rows]
  monkeypatch.undo()
  other = demo.run_demo(str(tmp_path / "o"), seed=1, progress=False, data=data,
                        stages=stages[:2], latency_repeats=1)
  assert [r.name for r in other.stages] == ["start", "dense", "prune"]


def _no_training(*args, **kwargs):
  raise AssertionError("a resumed run trained again")


def test_run_demo_rejects_a_recipe_without_a_dense_stage():
  from jopt import pipeline as pl  # pylint: disable=import-outside-toplevel
  from jopt.pipeline import demo  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="stages must start with a pl.Train"):
    demo.run_demo(stages=[pl.Prune(0.9, steps=3)], data=_small_mnist())
  with pytest.raises(ValueError, match="no compression stage"):
    demo.run_demo(stages=[pl.Train(3)], data=_small_mnist())
