"""Two processes on 127.0.0.1 train data-parallel to the same losses as one process.

Each child is a fresh Python with 2 fake CPU devices (not this file's 8-device
conftest), started by :func:`jopt.parallel.distributed.initialize` from the
``JAX_*`` environment variables, with a hard subprocess timeout: a missing peer
aborts a process in a way Python cannot catch.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.parallel.distributed import ENV_VARS, initialize, process_batch
from jopt.parallel.mesh import data_mesh
from jopt.training import init_mlp, load_digits, loss_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, BATCH, LOCAL_DEVICES = 6, 32, 2
HARD_TIMEOUT = 120

CHILD = textwrap.dedent(f"""
    import itertools, json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", {LOCAL_DEVICES})
    from jopt.parallel.distributed import initialize, process_batch
    info = initialize(timeout_s=float(sys.argv[1]), heartbeat_timeout_s=10)
    import numpy as np
    import jopt
    from jopt.parallel.data import data_parallel_step, shard_map_step
    from jopt.parallel.mesh import data_mesh, replicate, shard_batch
    from jopt.training import init_mlp, load_digits, loss_fn
    mesh = data_mesh()
    assert jax.process_count() == 2 and jax.device_count() == {2 * LOCAL_DEVICES}
    assert jax.config.jax_cpu_collectives_implementation == "gloo"
    init = jax.tree.map(np.asarray, init_mlp(jax.random.key(0), (64, 32, 10)))
    batches = list(itertools.islice(load_digits().train.batches({BATCH}, seed=1), {STEPS}))
    out = {{"info": list(info), "local_rows": []}}
    for name, make in (("jit", data_parallel_step), ("shard_map", shard_map_step)):
      tx = jopt.adam(1e-2)
      params = replicate(init, mesh)
      state = tx.init(params)
      step, losses = make(loss_fn, tx, mesh), []
      for b in batches:
        local = process_batch(tuple(np.asarray(a) for a in b), mesh)
        out["local_rows"].append(int(local[0].shape[0]))
        params, state, loss = step(params, state, shard_batch(local, mesh, process_local=True))
        losses.append(float(loss))
      out[name] = losses
    print("RESULT " + json.dumps(out), flush=True)
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _child_env(port, num, pid):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "XLA_", "SLURM_", "OMPI_", "JOPT_"))}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
             JAX_NUM_PROCESSES=str(num), JAX_PROCESS_ID=str(pid))
  return env


def _launch(port, num, pids, timeout_s, code=CHILD):
  procs = [subprocess.Popen([sys.executable, "-c", code, str(timeout_s)], cwd=ROOT,
                            env=_child_env(port, num, pid), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for pid in pids]
  outs, start = [], time.monotonic()
  try:
    for p in procs:
      left = max(1.0, HARD_TIMEOUT - (time.monotonic() - start))
      outs.append(p.communicate(timeout=left) + (p.returncode,))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return outs, time.monotonic() - start


def _reference_losses():
  tx = jopt.adam(1e-2)

  @jax.jit
  def step(p, s, b):
    loss, g = jax.value_and_grad(loss_fn)(p, b)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  p = init_mlp(jax.random.key(0), (64, 32, 10))
  s = tx.init(p)
  losses = []
  for b in itertools.islice(load_digits().train.batches(BATCH, seed=1), STEPS):
    p, s, loss = step(p, s, b)
    losses.append(float(loss))
  return np.array(losses)


def test_two_processes_train_to_the_same_losses_as_one(record_property):
  outs, elapsed = _launch(_free_port(), 2, [0, 1], timeout_s=60)
  results = []
  for pid, (stdout, stderr, rc) in enumerate(outs):
    assert rc == 0, f"process {pid} failed (rc={rc}):\n{stderr[-3000:]}"
    line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert line, stdout
    results.append(json.loads(line[0][len("RESULT "):]))
  ref = _reference_losses()
  assert ref[-1] < ref[0] - 0.2  # it trains
  err = 0.0
  for pid, r in enumerate(results):
    assert r["info"][1:] == [2, pid, "jax"]
    assert set(r["local_rows"]) == {BATCH // 2}  # each process fed only its half
    for path in ("jit", "shard_map"):
      err = max(err, float(np.max(np.abs(np.array(r[path]) - ref))))
  record_property("max_abs_loss_err", err)
  record_property("seconds", elapsed)
  assert err <= 2e-6, err


def test_a_missing_peer_aborts_with_a_clear_message_in_bounded_time(record_property):
  outs, elapsed = _launch(_free_port(), 2, [0], timeout_s=4)
  (_, stderr, rc), = outs
  record_property("seconds", elapsed)
  assert rc != 0
  assert elapsed < 60, elapsed
  assert "jopt.parallel.initialize: process 0 of 2 is still waiting" in stderr, stderr
  assert "same coordinator_address and num_processes" in stderr
  assert "DEADLINE_EXCEEDED" in stderr


def test_an_unreachable_coordinator_raises_timeout_error():
  code = textwrap.dedent("""
      import sys
      from jopt.parallel.distributed import initialize
      try:
        initialize(timeout_s=2)
      except TimeoutError as e:
        print("TIMEOUT " + str(e)); sys.exit(3)
  """)
  outs, elapsed = _launch(_free_port(), 2, [1], timeout_s=2, code=code)
  (stdout, stderr, rc), = outs
  assert rc == 3, stderr
  assert elapsed < 60
  assert "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in stdout
  assert "Start process 0" in stdout


# ---------------------------------------------------------------- in-process checks

def test_bad_arguments_are_refused_before_anything_starts(monkeypatch):
  for var in [v for group in ENV_VARS for v in group[1:] if v]:
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
    initialize("127.0.0.1:1234", 2, 2)
  with pytest.raises(ValueError, match="coordinator_address='localhost' must be 'host:port'"):
    initialize("localhost", 2, 0)
  with pytest.raises(ValueError, match="timeout_s=0 must be a number of seconds"):
    initialize("127.0.0.1:1234", 2, 0, timeout_s=0)
  with pytest.raises(ValueError, match="cpu_collectives='nccl'"):
    initialize("127.0.0.1:1234", 2, 0, cpu_collectives="nccl")
  monkeypatch.setenv("SLURM_NTASKS", "two")
  monkeypatch.setenv("SLURM_PROCID", "0")
  with pytest.raises(ValueError, match="SLURM_NTASKS='two' is not an integer"):
    initialize()
  monkeypatch.setenv("SLURM_NTASKS", "2")
  monkeypatch.setenv("SLURM_PROCID", "5")
  with pytest.raises(ValueError, match=r"process_id=5 must be in \[0, num_processes=2\)"):
    initialize("127.0.0.1:1234")
  # good arguments, but this pytest process already started JAX's backend
  monkeypatch.setenv("SLURM_PROCID", "0")
  with pytest.raises(RuntimeError, match="backend has already started.*initialize first"):
    initialize("127.0.0.1:1234")


def test_process_batch_is_the_whole_batch_on_one_process():
  mesh = data_mesh()
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  local = process_batch({"x": x, "y": np.arange(16)}, mesh)
  np.testing.assert_array_equal(local["x"], x)
  with pytest.raises(ValueError, match="batch size 12 .* 8 devices"):
    process_batch(x[:12], mesh)
  assert isinstance(jnp.asarray(local["y"]), jax.Array)
