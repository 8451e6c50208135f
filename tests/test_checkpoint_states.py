"""Checkpoint and resume for every kind of jopt state: round trips, bitwise resume, kill mid-save.

The kinds (tests/checkpointing.py, ``KINDS``): optimizer moments and
hyperparameters (a warmup-cosine schedule, a learning rate the user changed,
``adam_8bit``'s uint8 codes, Adafactor's factored statistics, schedule-free
AdamW, a plateau scale), pruning masks (weight and N:M granularity, mid-schedule),
a QAT run's histogram observer, a loss scale after an overflow, early stopping
after non-improving checks, accumulation buffers three micro-steps into four,
and skipped-step counters; two of them again with their slots split over an
8-device mesh. Each is

* saved with ``ocp.StandardCheckpointer`` and restored against an abstract
  target (``jax.eval_shape`` of a fresh ``init``, ``jax.ShapeDtypeStruct``
  leaves with a sharding): the same tree structure (jopt's state classes
  included), dtypes, shapes, bytes and shardings;
* resumed at a step ``k`` drawn by a seeded generator (in the test id and a
  ``record_property``): ``k`` steps, a ``CheckpointManager`` save, then, as a
  new process would, a fresh transform, a fresh ``jit`` and a restore against
  the abstract target, continued to ``N``: params and state bitwise equal to
  the uninterrupted run.

A child process killed with SIGKILL while orbax writes its second checkpoint
(CheckpointManager, and the pipeline's ``save_carry``) leaves the first one
complete and the partial one unlisted; ``progress.json`` killed mid-write stays
a complete document; a ``clear`` (``resume=False``) stopped part-way leaves no
progress file naming a deleted stage. No checkpoint directory holds a pickle.

The pipeline's own interrupted-and-resumed run (every stage's params and masks
equal to the uninterrupted run's) is tests/test_pipeline_semantics.py::
test_resume_after_an_interruption_equals_the_uninterrupted_run.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jopt
from jopt.pipeline import checkpoint as pipeline_ckpt
from tests import checkpointing as ck

# two kinds again with their 16-wide slots split over a mesh (8 devices under tests/conftest.py)
N_SPLIT = math.gcd(jax.device_count(), 16)
MESH = jax.make_mesh((N_SPLIT,), ("x",), axis_types=(jax.sharding.AxisType.Auto,),
                     devices=jax.devices()[:N_SPLIT])
KINDS = ck.KINDS + [ck.sharded(k, MESH) for k in ck.KINDS
                    if N_SPLIT > 1 and k.name in ("prune_weight", "accumulate")]
BY_NAME = {k.name: k for k in KINDS}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP_SUFFIX = ".orbax-checkpoint-tmp"   # orbax 0.12 writes <name>.orbax-checkpoint-tmp, then renames


def _resume_step(kind):
  """The resume step of a kind: seeded by its name, in [1, N - 1]."""
  return int(np.random.default_rng(zlib.crc32(kind.name.encode())).integers(1, kind.total))


RESUME_CASES = [pytest.param(k, _resume_step(k), id=f"{k.name}-k{_resume_step(k)}") for k in KINDS]


@functools.lru_cache(maxsize=None)
def _run(name):
  """One run (transform and jitted step) per kind, shared by the straight runs of both tests."""
  return BY_NAME[name].build()


@functools.lru_cache(maxsize=None)
def _trajectory(name):
  """The carries after 0..N straight steps."""
  run, kind = _run(name), BY_NAME[name]
  c = run.init()
  out = [c]
  for i in range(kind.total):
    c = run.step(c, jnp.asarray(i, jnp.int32))
    out.append(c)
  return out


def _leaves_differ(a, b):
  return any(np.asarray(x).tobytes() != np.asarray(y).tobytes()
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_orbax_round_trip_against_an_abstract_target(kind, tmp_path):
  saved = _trajectory(kind.name)[kind.at]
  kind.check(saved)   # the state is mid-flight (non-default counters, masks, scales...)
  assert _leaves_differ(saved["opt_state"], _trajectory(kind.name)[0]["opt_state"])
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", saved)
  target = ck.abstract_like(kind.build().init, kind.mesh)   # a fresh transform, nothing allocated
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(tmp_path / "ckpt", target)
  ck.assert_identical(restored, saved)
  ck.assert_same_shardings(restored, saved)
  if kind.mesh is not None:   # the moments / masks / buffers really are split over the mesh
    assert any(not x.sharding.is_fully_replicated for x in jax.tree.leaves(restored["opt_state"]))
  assert ck.pickle_files(tmp_path) == []


@pytest.mark.parametrize("kind,k", RESUME_CASES)
def test_resume_at_a_random_step_is_bitwise_identical(kind, k, tmp_path, record_property):
  record_property("resume_step", k)
  straight = _trajectory(kind.name)[kind.total]
  # the interrupted run: k steps, a checkpoint, the process ends
  run = _run(kind.name)
  c = run.init()
  for i in range(k):
    c = run.step(c, jnp.asarray(i, jnp.int32))
  with ocp.CheckpointManager(tmp_path / "run") as mngr:
    mngr.save(k, args=ocp.args.StandardSave(c))
  del c
  # a new process: fresh transform and jit, restore against the abstract target, run to N
  fresh = kind.build()
  with ocp.CheckpointManager(tmp_path / "run") as mngr:
    assert mngr.all_steps() == [k] and mngr.latest_step() == k
    c = mngr.restore(k, args=ocp.args.StandardRestore(ck.abstract_like(fresh.init, kind.mesh)))
  ck.assert_identical(c, _trajectory(kind.name)[k])
  for i in range(k, kind.total):
    c = fresh.step(c, jnp.asarray(i, jnp.int32))
  ck.assert_identical(c, straight)
  # the resumed steps did move the state: a restore that lost it could not match
  assert _leaves_differ(straight, _trajectory(kind.name)[k])
  assert ck.pickle_files(tmp_path) == []


def test_quantized_params_and_calibrated_ranges_round_trip(tmp_path):
  """QuantizedArray leaves (a k-means codebook; per-channel zero points) and QuantRanges."""
  params = ck.init_params()
  rules = {"dense1/kernel": {"bits": 3, "method": "kmeans"},
           "dense2/kernel": {"bits": 8, "scheme": "asymmetric", "granularity": "channel"}}

  def build(p):
    ranges = {"hidden": jopt.quant.calibrate([jnp.tanh(p["dense1"]["kernel"])], "minmax"),
              "kernel": jopt.quant.calibrate(p["dense2"]["kernel"], "minmax",
                                             granularity="channel")}
    return {"quantized": jopt.quant.quantize_params(p, rules), "ranges": ranges}

  saved = jax.jit(build)(params)
  q = saved["quantized"]
  assert isinstance(q["dense1"]["kernel"], jopt.quant.QuantizedArray)
  assert q["dense1"]["kernel"].codebook is not None and q["dense2"]["kernel"].zero_point is not None
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", saved)
    restored = ckptr.restore(tmp_path / "ckpt", ck.abstract_like(lambda: build(ck.init_params())))
  ck.assert_identical(restored, saved)
  for name in ("dense1", "dense2"):   # the static metadata came back with the target's structure
    got, want = restored["quantized"][name]["kernel"], q[name]["kernel"]
    np.testing.assert_array_equal(np.asarray(got.dequantize()), np.asarray(want.dequantize()))
  assert ck.pickle_files(tmp_path) == []


def test_the_pickle_scan_finds_a_pickle(tmp_path):
  """The scan is not vacuous: a pickled file (any protocol >= 2, or a .pkl name) is reported."""
  for proto in (2, 4, 5):
    (tmp_path / f"data{proto}").write_bytes(pickle.dumps({"a": 1}, protocol=proto))
  (tmp_path / "state.pkl").write_bytes(b"not even a pickle")
  (tmp_path / "fine.json").write_text("{}")
  assert sorted(os.path.basename(f) for f in ck.pickle_files(tmp_path)) == [
      "data2", "data4", "data5", "state.pkl"]


# -- killed mid-save ------------------------------------------------------------------------------
def _spawn(mode, out, size):
  """The child of tests/checkpointing.py on CPU; its output goes to ``out/child.log``."""
  out.mkdir(parents=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  log = open(out / "child.log", "wb")  # pylint: disable=consider-using-with
  child = subprocess.Popen([sys.executable, "-m", "tests.checkpointing", mode, str(out), str(size)],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
  log.close()
  return child


def _log(out):
  return (out / "child.log").read_text(errors="replace")[-3000:]


def _tmp_dirs(where, name):
  return [e for e in (os.listdir(where) if where.is_dir() else [])
          if e.startswith(name + TMP_SUFFIX)]


def _bytes_under(path):
  total = 0
  for dirpath, _, files in os.walk(path):
    for f in files:
      try:
        total += os.path.getsize(os.path.join(dirpath, f))
      except FileNotFoundError:   # renamed or replaced while we looked
        pass
  return total


KILL_AT_BYTES = 1 << 20   # array data is being written: more than metadata in the temp dir


def _kill_mid_save(tmp_path, mode, folder, name, size, record_property):
  """Start the child; SIGKILL it once orbax has written 1 MiB into ``name``'s temporary directory.

  Returns the output folder of the first attempt where the kill landed mid-save
  (the temporary directory is there, the final one is not, the child never
  reached its "saved" marker). An attempt whose child finished first is retried
  with a 4x larger state; three misses fail the test.
  """
  for attempt in range(3):
    out = tmp_path / f"attempt{attempt}"
    where = out / folder
    child = _spawn(mode, out, size)
    deadline = time.monotonic() + 120
    written = 0
    while child.poll() is None:
      assert time.monotonic() < deadline, f"{mode}: the save never finished: {_log(out)}"
      tmp = _tmp_dirs(where, name)
      written = _bytes_under(where / tmp[0]) if tmp else 0
      if written >= KILL_AT_BYTES:
        os.kill(child.pid, signal.SIGKILL)
        break
      time.sleep(0.002)
    rc = child.wait()
    if rc not in (0, -signal.SIGKILL):
      pytest.fail(f"{mode}: the child failed (rc={rc}): {_log(out)}")
    if _tmp_dirs(where, name) and name not in os.listdir(where):
      assert rc == -signal.SIGKILL and (out / "saving").exists() and not (out / "saved").exists()
      record_property("kill", f"attempt {attempt}, {written} bytes into the temp dir")
      return out
    size *= 4
  pytest.fail(f"{mode}: the child finished its save before every kill; none landed mid-save")


def test_killed_during_a_checkpoint_manager_save_the_previous_step_restores(tmp_path,
                                                                            record_property):
  out = _kill_mid_save(tmp_path, "manager", "ckpt", "2", 4_000_000, record_property)
  step1, _ = ck.manager_trees(10)
  partial = sorted(e for e in os.listdir(out / "ckpt") if e != "1")
  assert len(partial) == 1 and partial[0].startswith("2" + TMP_SUFFIX), partial
  assert not (out / "ckpt" / partial[0] / "commit_success.txt").exists()
  with ocp.CheckpointManager(out / "ckpt") as mngr:
    assert mngr.all_steps() == [1] and mngr.latest_step() == 1   # the partial step is not listed
    restored = mngr.restore(1, args=ocp.args.StandardRestore(ck.abstract_like(lambda: step1)))
    ck.assert_identical(restored, step1)
    # the resumed run saves step 2 over the leftover (orbax replaces an unfinished temp dir)
    mngr.save(2, args=ocp.args.StandardSave(step1))
    mngr.wait_until_finished()
    assert mngr.all_steps() == [1, 2]
  assert sorted(os.listdir(out / "ckpt")) == ["1", "2"]
  assert ck.pickle_files(out) == []


def test_killed_during_a_pipeline_stage_save_the_previous_stage_restores(tmp_path,
                                                                          record_property):
  out = _kill_mid_save(tmp_path, "pipeline", "checkpoints", "2-prune", 4_000_000,
                       record_property)
  root = str(out / "checkpoints")
  (p1, _), (p2, m2) = ck.pipeline_trees(10_000)
  progress = pipeline_ckpt.load_progress(root)
  assert [e["dir"] for e in progress["finished"]] == ["1-train"]
  assert not os.path.exists(os.path.join(root, "2-prune"))
  params, masks = pipeline_ckpt.restore_carry(root, "1-train", p1, False)
  assert masks is None
  ck.assert_identical(params, p1)
  # the resumed run re-runs stage 2 and saves it next to the leftover temporary directory
  pipeline_ckpt.save_carry(root, "2-prune", p2, m2)
  params, masks = pipeline_ckpt.restore_carry(root, "2-prune", p2, True)
  ck.assert_identical((params, masks), (p2, m2))
  assert not any(TMP_SUFFIX in e for e in os.listdir(root))
  assert ck.pickle_files(out) == []


def test_killed_while_writing_progress_json_it_stays_complete(tmp_path, record_property):
  """save_progress in a loop, killed at varying times: progress.json always parses, to its end.

  The kill lands while ``progress.json.tmp`` is half written (it does not parse)
  at least once; a ``save_progress`` that wrote ``progress.json`` in place would
  leave that truncated document where ``load_progress`` reads.
  """
  rows = 40_000
  for attempt in range(5):
    out = tmp_path / f"attempt{attempt}"
    child = _spawn("progress", out, rows)
    deadline = time.monotonic() + 120
    while not (out / "saving").exists():
      assert child.poll() is None, _log(out)
      assert time.monotonic() < deadline, _log(out)
      time.sleep(0.005)
    time.sleep(0.03 + 0.05 * attempt)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, _log(out)
    doc = pipeline_ckpt.load_progress(str(out / "checkpoints"))
    assert doc == ck.progress_doc(doc["version"], rows)
    tmp = out / "checkpoints" / "progress.json.tmp"
    try:
      json.loads(tmp.read_text()) if tmp.exists() else None
    except json.JSONDecodeError:
      record_property("kill", f"attempt {attempt}, version {doc['version']} intact")
      break   # the kill cut a write short, and progress.json was untouched by it
  else:
    pytest.fail("no kill landed while progress.json.tmp was being written")
  assert ck.pickle_files(tmp_path) == []


def test_an_interrupted_clear_never_leaves_progress_listing_a_missing_stage(tmp_path, monkeypatch):
  """resume=False clears the old run; stopped after its first folder, progress.json lists no ghost.

  (Before the fix, ``clear`` removed the folders first and ``progress.json``
  last, so an interruption in between left a progress file whose stages a
  resume would fail to restore.)
  """
  root = str(tmp_path / "checkpoints")
  (p1, _), _ = ck.pipeline_trees(10_000)
  finished = []
  for i, name in enumerate(("1-train", "2-prune"), 1):
    pipeline_ckpt.save_carry(root, name, p1, None)
    finished.append({"index": i, "dir": name, "has_masks": False, "quant": None})
  pipeline_ckpt.save_progress(root, {"fingerprint": {}, "finished": finished, "rows": []})
  real_rmtree = pipeline_ckpt.shutil.rmtree

  def rmtree_then_stop(path, *a, **kw):
    real_rmtree(path, *a, **kw)
    raise KeyboardInterrupt   # the process stops right after the first folder is gone

  monkeypatch.setattr(pipeline_ckpt.shutil, "rmtree", rmtree_then_stop)
  with pytest.raises(KeyboardInterrupt):
    pipeline_ckpt.clear(root, pipeline_ckpt.load_progress(root))
  monkeypatch.undo()
  assert len(os.listdir(root)) < 3   # the clear did start
  progress = pipeline_ckpt.load_progress(root)
  listed = [] if progress is None else [e["dir"] for e in progress["finished"]]
  assert all(os.path.isdir(os.path.join(root, d)) for d in listed), (listed, os.listdir(root))
