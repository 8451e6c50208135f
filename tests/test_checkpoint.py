"""Checkpoints: every registry optimizer's state round-trips bit for bit, and a run resumes exactly.

Two routes: ``flax.serialization`` (msgpack bytes and state dicts, restored into
the structure of a freshly built ``tx.init(params)``) and orbax-checkpoint
(``StandardCheckpointer`` for one checkpoint, ``CheckpointManager`` for a train
loop that saves every few steps), restored against an abstract target of
``jax.ShapeDtypeStruct`` leaves that carry each array's sharding. "Identical"
means the same tree structure (the jopt state classes included), the same
dtypes and shapes and the same bytes in every leaf.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import serialization

import jopt
from tests import problems
from tests.checkpointing import assert_identical, assert_same_shardings
from tests.registry import all_entries

ENTRIES = all_entries()
BY_NAME = {e.name: e for e in ENTRIES}
TOTAL, AT = 6, 3  # the resume test runs TOTAL steps and checkpoints after AT


def _step_fn(tx):
  @jax.jit
  def step(p, s):
    updates, s = tx.update(jax.grad(problems.parity_loss)(p), s, p)
    return optax.apply_updates(p, updates), s
  return step


@functools.lru_cache(maxsize=None)
def _compiled(name):
  """One optimizer and its jitted step, shared by the tests (one compile per optimizer)."""
  tx = BY_NAME[name].make()
  return tx, _step_fn(tx)


@functools.lru_cache(maxsize=None)
def _trajectory(name):
  """``[(params, state)]`` after 0..TOTAL jitted steps of one optimizer."""
  tx, step = _compiled(name)
  p = problems.parity_init(jnp.float32)
  s = tx.init(p)
  out = [(p, s)]
  for _ in range(TOTAL):
    p, s = step(p, s)
    out.append((p, s))
  return out


def _fresh(entry):
  """What a restarting process builds before restoring: a new tx and its initial state."""
  tx = entry.make()
  p = problems.parity_init(jnp.float32)
  return tx, {"params": p, "opt_state": tx.init(p)}


def _assert_orbax_can_save(tree):
  """orbax-checkpoint refuses zero-size arrays ("Cannot save arrays with zero size").

  Checked up front so such a state fails here, naming the leaves, instead of
  inside orbax's save threads (which can then hold the process at exit).
  """
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  empty = [jax.tree_util.keystr(k) for k, x in flat if np.size(x) == 0]
  assert not empty, f"zero-size arrays in the state, which orbax cannot save: {empty}"


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_flax_serialization_round_trip(entry):
  p, s = _trajectory(entry.name)[AT]
  saved = {"params": p, "opt_state": s}
  _, target = _fresh(entry)
  assert_identical(serialization.from_bytes(target, serialization.to_bytes(saved)), saved)
  state_dict = serialization.to_state_dict(saved)
  assert_identical(serialization.from_state_dict(target, state_dict), saved)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_orbax_round_trip(entry, tmp_path):
  p, s = _trajectory(entry.name)[AT]
  saved = {"params": p, "opt_state": s}
  _assert_orbax_can_save(saved)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(tmp_path / "ckpt", saved)
  _, fresh = _fresh(entry)
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(tmp_path / "ckpt", _abstract(fresh))
  assert_identical(restored, saved)
  assert_same_shardings(restored, saved)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_resume_from_orbax_checkpoint_is_bit_identical(entry, tmp_path):
  # the uninterrupted run, which also checkpoints as it goes
  tx, step = _compiled(entry.name)
  p = problems.parity_init(jnp.float32)
  s = tx.init(p)
  _assert_orbax_can_save(s)
  options = ocp.CheckpointManagerOptions(save_interval_steps=AT, max_to_keep=2)
  with ocp.CheckpointManager(tmp_path / "run", options=options) as mngr:
    for i in range(1, TOTAL + 1):
      p, s = step(p, s)
      mngr.save(i, args=ocp.args.Composite(params=ocp.args.StandardSave(p),
                                           opt_state=ocp.args.StandardSave(s)))
  uninterrupted = {"params": p, "opt_state": s}
  assert_identical(uninterrupted, dict(zip(("params", "opt_state"),
                                            _trajectory(entry.name)[TOTAL])))

  # as a new process would: a fresh tx and jitted step, restore step AT, run to TOTAL
  tx, fresh = _fresh(entry)
  abstract = _abstract(fresh)
  with ocp.CheckpointManager(tmp_path / "run") as mngr:
    assert mngr.all_steps() == [AT, TOTAL]
    restored = mngr.restore(AT, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract["params"]),
        opt_state=ocp.args.StandardRestore(abstract["opt_state"])))
  p, s = restored["params"], restored["opt_state"]
  assert_identical({"params": p, "opt_state": s},
                    dict(zip(("params", "opt_state"), _trajectory(entry.name)[AT])))
  step = _step_fn(tx)
  for _ in range(TOTAL - AT):
    p, s = step(p, s)
  assert_identical({"params": p, "opt_state": s}, uninterrupted)


def test_low_precision_state_round_trips(tmp_path):
  """bfloat16 parameters and moments, uint8 codes: dtypes survive both routes."""
  p = jax.tree.map(lambda x: x.astype(jnp.bfloat16), problems.parity_init(jnp.float32))
  g = jax.tree.map(lambda x: x * 0.5, p)
  for tx in (jopt.adam(1e-2, mu_dtype=jnp.bfloat16),
             jopt.adam_8bit(1e-2, block_size=4, min_8bit_size=0)):
    _, s = jax.jit(tx.update)(g, tx.init(p), p)
    saved = {"params": p, "opt_state": s}
    target = {"params": p, "opt_state": tx.init(p)}
    assert {x.dtype for x in jax.tree.leaves(s)} & {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.uint8)}
    assert_identical(serialization.from_bytes(target, serialization.to_bytes(saved)), saved)
    path = tmp_path / type(s).__name__
    _assert_orbax_can_save(saved)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, saved)
      restored = ckptr.restore(path, _abstract(target))
    assert_identical(restored, saved)
