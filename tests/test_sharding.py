"""Optimizer state keeps each parameter's sharding: eagerly, under jit, under a mesh.

optax 0.2.8's ``jax.jit(tx.init)`` puts every moment on one device when it sees
sharded parameters; jopt ties each slot to its parameter's sharding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from tests.registry import all_entries

ENTRIES = all_entries()
IDS = [e.name for e in ENTRIES]
SPECS = {"w": P("d", None), "v": P("d"), "m": P(None, "d"), "s": P()}
SHAPES = {"w": (8, 4), "v": (16,), "m": (4, 8), "s": ()}


def _params(mesh):
  rng = np.random.default_rng(0)
  return {k: jax.device_put(jnp.asarray(rng.normal(size=SHAPES[k]), jnp.float32),
                            NamedSharding(mesh, SPECS[k])) for k in SHAPES}


def _loss(p):
  return sum(jnp.sum(jnp.sin(x) * x) for x in jax.tree.leaves(p))


def _assert_slots_follow_params(state, params):
  by_shape = {x.shape: x for x in jax.tree.leaves(params) if x.ndim > 0}
  matched = 0
  for leaf in jax.tree.leaves(state):
    p = by_shape.get(leaf.shape)
    if p is None:
      continue
    matched += 1
    assert len(leaf.sharding.device_set) == 8, leaf.sharding
    assert leaf.sharding.is_equivalent_to(p.sharding, leaf.ndim), (leaf.sharding, p.sharding)
  return matched


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_state_follows_param_sharding(entry, axis_type):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("d",), axis_types=(axis_type,))
  params = _params(mesh)
  tx = entry.make()
  eager = tx.init(params)
  n = _assert_slots_follow_params(eager, params)
  with jax.set_mesh(mesh):
    jitted = jax.jit(tx.init)(params)
  assert _assert_slots_follow_params(jitted, params) == n
  if axis_type == AxisType.Auto:  # no mesh context needed for auto axes
    assert _assert_slots_follow_params(jax.jit(tx.init)(params), params) == n

  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  with jax.set_mesh(mesh):
    new_p, new_s = jax.jit(step)(params, jitted)
  assert _assert_slots_follow_params(new_s, params) == n
  for k in ("w", "v", "m"):
    assert new_p[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim)


def test_optax_trap_is_real():
  """The behaviour jopt fixes: optax's jitted init collapses state onto one device."""
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  params = _params(mesh)
  with jax.numpy_dtype_promotion("standard"):
    state = jax.jit(optax.adam(1e-3).init)(params)
  assert len(state[0].mu["w"].sharding.device_set) == 1
