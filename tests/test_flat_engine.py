"""The flat multi-tensor engine: same numbers as per-leaf state, few state arrays.

It is the default in a one-device process with at least two small leaves
(jopt/_core/flat.py gives the measurements behind the limits tested here); these
tests run on 8 fake devices, so they ask for it or pretend to have one device.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jopt
from jopt._core import flat
from jopt._core.flat import FlatSlot, layout_override
from tests import problems
from tests.registry import all_entries


def _is_flat(state):
  return any(isinstance(x, FlatSlot)
             for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, FlatSlot)))


def _flat_init(tx, params):
  with layout_override("flat"):
    return tx.init(params)


FLAT = [e for e in all_entries() if _is_flat(_flat_init(e.make(), problems.quadratic_init()))]
EXPECTED_FLAT = {"adam", "adamw", "nadam", "nadamw", "sgd_momentum", "sgd_nesterov", "adagrad",
                 "rmsprop", "rmsprop_centered", "adadelta", "amsgrad", "adamax", "radam", "lion"}


def test_elementwise_optimizers_can_use_the_flat_engine():
  assert EXPECTED_FLAT <= {e.name for e in FLAT}


@pytest.fixture
def one_device(monkeypatch):
  monkeypatch.setattr(flat, "_device_count", lambda: 1)


def test_default_is_flat_on_one_device(one_device):
  for entry in FLAT:
    tx = entry.make()
    s = tx.init(problems.quadratic_init())
    assert _is_flat(s), entry.name
    # jit(init) sees tracers, not arrays: it must still choose the same layout
    assert jax.tree.structure(jax.jit(tx.init)(problems.quadratic_init())) == \
        jax.tree.structure(s), entry.name


def test_default_is_per_leaf_on_several_devices():
  assert jax.device_count() == 8
  p = problems.quadratic_init()
  for entry in FLAT:
    tx = entry.make()
    assert not _is_flat(tx.init(p)), entry.name
    assert jax.tree.structure(jax.jit(tx.init)(p)) == jax.tree.structure(tx.init(p))


def test_default_is_per_leaf_without_two_small_leaves(one_device):
  big = flat.SMALL + 1
  for params in ({"a": jnp.ones(big), "b": jnp.ones(big)},   # nothing to group
                 {"a": jnp.ones(big), "b": jnp.ones(3)},     # one small leaf alone
                 {"a": jnp.ones(3)}):
    s = jopt.adam(1e-3).init(params)
    assert not _is_flat(s), jax.tree.map(jnp.shape, params)
    assert jax.tree.structure(s.mu) == jax.tree.structure(params)


def test_large_leaves_keep_their_own_buffer():
  big = flat.SMALL + 1
  p = {"a": jnp.ones(3), "b": jnp.ones((big,)), "c": jnp.ones((2, 2))}
  s = _flat_init(jopt.adam(1e-3), p)
  assert _is_flat(s)
  assert [g.indices for g in s.mu.layout.groups] == [(0, 2), (1,)]
  assert [b.shape for b in s.mu.buffers] == [(7,), (big,)]  # a leaf alone keeps its shape
  u, _ = jopt.adam(1e-3).update(p, s, p)
  assert jax.tree.map(jnp.shape, u) == jax.tree.map(jnp.shape, p)


def test_group_limits(monkeypatch):
  monkeypatch.setattr(flat, "MAX_LEAVES", 4)
  monkeypatch.setattr(flat, "MAX_GROUP", 7)
  for size, per_group in ((1, 4), (3, 2)):  # leaf cap binds, then element cap binds
    p = {f"w{i:02d}": jnp.ones((size,)) for i in range(20)}
    groups = _flat_init(jopt.adam(1e-3), p).mu.layout.groups
    assert [g.indices for g in groups] == [
        tuple(range(k, k + per_group)) for k in range(0, 20, per_group)]


def _trajectory(entry, mode, steps=60):
  p = problems.parity_init(jnp.float64)
  args = entry.parity[-1] if entry.parity else entry.args
  with layout_override(mode):
    tx = entry.fn(**args)
    s = tx.init(p)
  assert _is_flat(s) == (mode == "flat")
  step = jax.jit(lambda p, s: (lambda us: (optax.apply_updates(p, us[0]), us[1]))(
      tx.update(jax.grad(problems.parity_loss)(p), s, p)))
  for _ in range(steps):
    p, s = step(p, s)
  return p, s


@pytest.mark.parametrize("entry", FLAT, ids=[e.name for e in FLAT])
def test_flat_equals_per_leaf_float64(entry, x64):
  p_flat, s_flat = _trajectory(entry, "flat")
  p_leaf, s_leaf = _trajectory(entry, "per_leaf")
  assert problems.rel_err(p_flat, p_leaf) <= 1e-13
  slots_flat = [x.tree() for x in jax.tree.leaves(s_flat, is_leaf=lambda x: isinstance(x, FlatSlot))
                if isinstance(x, FlatSlot)]
  assert slots_flat
  for tree in slots_flat:
    assert jax.tree.structure(tree) == jax.tree.structure(p_leaf)


def test_groups_by_dtype_and_mask():
  p = {"a": jnp.ones((3, 4)), "b": jnp.ones((5,)), "c": jnp.ones((2, 2), jnp.bfloat16),
       "d": jnp.ones((7,))}
  tx = jopt.adamw(0.1, mask={"a": True, "b": False, "c": True, "d": True})
  s = _flat_init(tx, p)
  assert isinstance(s.mu, FlatSlot)
  groups = s.mu.layout.groups
  assert len(groups) == 3  # (f32, decay), (f32, no decay), (bf16, decay)
  assert sorted(b.size for b in s.mu.buffers) == [4, 5, 19]
  assert {b.dtype for b in s.mu.buffers} == {jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)}
  u, s = tx.update(p, s, p)
  assert jax.tree.structure(u) == jax.tree.structure(p)
  assert u["c"].dtype == jnp.bfloat16 and u["a"].shape == (3, 4)


def test_many_leaves_become_few_state_arrays():
  p = {f"w{i:04d}": jnp.ones((i % 7 + 1, 3)) for i in range(1000)}
  s = _flat_init(jopt.adam(1e-3), p)
  per_slot = -(-1000 // flat.MAX_LEAVES)  # groups of MAX_LEAVES leaves
  assert len(jax.tree.leaves(s)) == 1 + 5 + 2 * per_slot  # count, 5 hyperparameters, mu, nu
  with layout_override("per_leaf"):
    assert len(jax.tree.leaves(jopt.adam(1e-3).init(p))) == 2006


def test_sharded_params_keep_per_leaf_state():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  p = {"w": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("d", None))),
       "b": jnp.ones((3,))}
  s = _flat_init(jopt.adam(1e-3), p)
  assert not _is_flat(s)
  assert s.mu["w"].sharding.is_equivalent_to(p["w"].sharding, 2)
  # replicated over every device counts as unsharded
  r = {"w": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P()))}
  assert _is_flat(_flat_init(jopt.adam(1e-3), r))


def test_checkpoint_round_trip_through_numpy():
  """State leaves saved as plain arrays restore into tx.init's structure exactly."""
  tx = jopt.adamw(0.05, weight_decay=0.1)
  p = problems.parity_init(jnp.float32)
  s = _flat_init(tx, p)
  assert _is_flat(s)
  step = jax.jit(lambda p, s: (lambda us: (optax.apply_updates(p, us[0]), us[1]))(
      tx.update(jax.grad(problems.parity_loss)(p), s, p)))
  for _ in range(5):
    p, s = step(p, s)
  saved = [np.asarray(x) for x in jax.tree.leaves(s)]
  restored = jax.tree.unflatten(jax.tree.structure(_flat_init(tx, p)),
                                [jnp.asarray(x) for x in saved])
  a, _ = step(p, s)
  b, _ = step(p, restored)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_flat_structure_mismatch_is_an_error():
  tx = jopt.adam(1e-3)
  s = _flat_init(tx, {"a": jnp.ones(3), "b": jnp.ones(2)})
  assert _is_flat(s)
  with pytest.raises(ValueError, match="structure"):
    tx.update({"a": jnp.ones(3), "c": jnp.ones(2)}, s)


def test_portable_state_round_trip(x64):
  """unflatten_state gives the per-leaf state exactly; flatten_state packs it back."""
  entry = next(e for e in FLAT if e.name == "adamw")
  p_flat, s_flat = _trajectory(entry, "flat", steps=7)
  _, s_leaf = _trajectory(entry, "per_leaf", steps=7)
  portable = jopt.unflatten_state(s_flat)
  assert jax.tree.structure(portable) == jax.tree.structure(s_leaf)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=0), portable, s_leaf)
  like = _flat_init(entry.fn(**(entry.parity[-1] if entry.parity else entry.args)), p_flat)
  back = jopt.flatten_state(portable, like=like)
  assert jax.tree.structure(back) == jax.tree.structure(s_flat)
  jax.tree.map(np.testing.assert_array_equal, back, s_flat)
  # a per-leaf state passes through flatten_state unchanged when `like` is per leaf too
  assert jax.tree.structure(jopt.flatten_state(s_leaf, like=s_leaf)) == jax.tree.structure(s_leaf)


def test_flatten_state_names_a_mismatch():
  like = _flat_init(jopt.adam(1e-3), {"a": jnp.ones(3), "b": jnp.ones(2)})
  with layout_override("per_leaf"):
    other = jopt.adam(1e-3).init({"a": jnp.ones(3), "c": jnp.ones(2)})
  with pytest.raises(ValueError, match="flatten_state.*like=tx.init"):
    jopt.flatten_state(other, like=like)


def test_flat_state_inside_accumulate_and_chain(x64):
  """Wrappers (lax.cond in accumulate, chain) carry flat state like any pytree."""
  p = problems.parity_init(jnp.float64)

  def run(mode):
    with layout_override(mode):
      tx = optax.chain(jopt.accumulate(jopt.adamw(0.05, weight_decay=0.1), every_k=3),
                       optax.identity())
      s = tx.init(p)
    assert _is_flat(s) == (mode == "flat")
    step = jax.jit(lambda q, s: (lambda us: (optax.apply_updates(q, us[0]), us[1]))(
        tx.update(jax.grad(problems.parity_loss)(q), s, q)))
    q = p
    for _ in range(9):
      q, s = step(q, s)
    return q

  assert problems.rel_err(run("flat"), run("per_leaf")) <= 1e-13
