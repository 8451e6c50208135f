"""The demo a newcomer runs first: jopt.training and ``python -m jopt demo``."""

import functools
import importlib.metadata
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
  assert "usage: jopt" in out and "demo" in out


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
    cli.main(["demo", "--no-progress", *argv])
  assert info.value.code == 2
  err = capsys.readouterr().err
  assert f"argument {flag}" in err, err


@pytest.mark.parametrize("optimizer", list(cli.OPTIMIZERS))
def test_every_optimizer_runs_30_steps(optimizer, capsys):
  assert cli.main(["demo", "--optimizer", optimizer, "--steps", "30", "--no-progress"]) == 0
  row = _table_row(capsys.readouterr().out)
  assert row["optimizer"] == optimizer and row["steps"] == "30"
  assert math.isfinite(float(row["final loss"]))
  assert float(row["final loss"]) < _initial_loss()   # it learns something in 30 steps
  assert 0 <= _pct(row["test acc"]) <= 1


@pytest.mark.parametrize("schedule", list(cli.SCHEDULES))
def test_every_schedule_runs_30_steps(schedule, capsys):
  assert cli.main(["demo", "--schedule", schedule, "--steps", "30", "--no-progress"]) == 0
  row = _table_row(capsys.readouterr().out)
  assert row["schedule"] == schedule and math.isfinite(float(row["final loss"]))
  assert float(row["final loss"]) < _initial_loss()


def test_divergence_exits_1_with_the_step(capsys):
  assert cli.main(["demo", "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant",
                   "--steps", "50", "--no-progress"]) == 1
  err = capsys.readouterr().err
  assert re.search(r"error: training stopped at step \d+ of 50: ", err), err
  assert "--lr" in err


def test_quick_demo_as_a_subprocess():
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict")
  proc = subprocess.run([sys.executable, "-m", "jopt", "demo", "--quick", "--no-progress"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr
  row = _table_row(proc.stdout)
  assert row["optimizer"] == "adam" and row["schedule"] == "warmup_cosine"
  assert row["steps"] == str(cli.QUICK_STEPS)
  assert _pct(row["test acc"]) > 0.9 and _pct(row["train acc"]) > 0.9
  assert float(row["steps/s"]) > 0 and row["wall time"].endswith(" s")
