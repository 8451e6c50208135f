"""Data parallelism on 8 fake CPU devices: jit, shard_map and pmap equal one device.

The reference is the same loss and optimizer run by a plain ``jax.jit`` step on one
device with the whole batch. The shard_map pitfall (a replicated parameter's gradient
is already summed over the mesh) is measured on the naive versions: N times too large.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

import jopt
from jopt.parallel.data import (data_parallel_step, pmap_replicate, pmap_shard_batch,
                                pmap_step, pmap_unreplicate, shard_map_step)
from jopt.parallel.mesh import batch_sharding, data_mesh, replicate, shard_batch
from jopt.training import init_mlp, load_digits, loss_fn

N = 8
STEPS = 10
BATCH = 64
TOL = 2e-6  # the issue asks for <= 1e-5; float32 measures <= 2.4e-7


def _batches():
  it = load_digits().train.batches(BATCH, seed=1)
  return [tuple(np.asarray(a) for a in b) for b in itertools.islice(it, STEPS)]


def _params():
  return jax.tree.map(np.asarray, init_mlp(jax.random.key(0), (64, 32, 10)))


def _grad_keeper():
  """A transform whose state is the last gradient and whose update is zero."""
  def init(params):
    return jax.tree.map(jnp.zeros_like, params)

  def update(grads, state, params=None):
    del state, params
    return jax.tree.map(jnp.zeros_like, grads), grads
  return optax.GradientTransformation(init, update)


def _reference(tx, params, batches):
  @jax.jit
  def step(p, s, b):
    loss, g = jax.value_and_grad(loss_fn)(p, b)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  p = jax.tree.map(jnp.asarray, params)
  s = tx.init(p)
  losses = []
  for b in batches:
    p, s, loss = step(p, s, b)
    losses.append(float(loss))
  return p, s, np.array(losses)


def _run_mesh(make_step, tx, params, batches):
  mesh = data_mesh()
  p = replicate(params, mesh)
  s = tx.init(p)
  step = make_step(loss_fn, tx, mesh)
  losses = []
  for b in batches:
    p, s, loss = step(p, s, b)
    losses.append(float(loss))
  return p, s, np.array(losses)


def _run_pmap(tx, params, batches):
  step = pmap_step(loss_fn, tx)
  p = pmap_replicate(params)
  s = pmap_replicate(tx.init(jax.tree.map(jnp.asarray, params)))
  losses = []
  for b in batches:
    p, s, loss = step(p, s, b)
    assert loss.shape == (N,)
    losses.append(float(loss[0]))
  return pmap_unreplicate(p), pmap_unreplicate(s), np.array(losses)


RUNNERS = {
    "jit": lambda tx, p, b: _run_mesh(data_parallel_step, tx, p, b),
    "shard_map": lambda tx, p, b: _run_mesh(shard_map_step, tx, p, b),
    "pmap": _run_pmap,
}


def _max_err(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("path", sorted(RUNNERS))
def test_gradients_equal_one_device(path, record_property):
  assert jax.device_count() == N
  params, batches = _params(), _batches()[:2]
  _, ref_g, ref_loss = _reference(_grad_keeper(), params, batches)
  _, g, loss = RUNNERS[path](_grad_keeper(), params, batches)
  err = _max_err(g, ref_g)
  record_property("max_abs_grad_err", err)
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(ref_g))
  assert scale > 1e-2  # a real gradient, not zeros
  assert err <= TOL, err
  np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=TOL)


@pytest.mark.parametrize("path", sorted(RUNNERS))
def test_adam_trajectory_equals_one_device(path, record_property):
  params, batches = _params(), _batches()
  tx = jopt.adam(1e-2)
  ref_p, ref_s, ref_loss = _reference(tx, params, batches)
  p, s, loss = RUNNERS[path](tx, params, batches)
  perr = _max_err(p, ref_p)
  lerr = float(np.max(np.abs(loss - ref_loss)))
  record_property("max_abs_param_err", perr)
  record_property("max_abs_loss_err", lerr)
  assert ref_loss[-1] < ref_loss[0] - 0.3  # it trains
  assert lerr <= TOL, lerr
  assert perr <= TOL, perr
  assert _max_err(s, ref_s) <= TOL


def test_jit_path_keeps_params_and_state_replicated_and_batch_split():
  mesh = data_mesh()
  tx = jopt.adam(1e-2)
  p = replicate(_params(), mesh)
  s = tx.init(p)
  b = shard_batch(_batches()[0], mesh)
  assert b[0].sharding.is_equivalent_to(batch_sharding(mesh), 2)
  assert {sh.data.shape for sh in b[0].addressable_shards} == {(BATCH // N, 64)}
  p, s, _ = data_parallel_step(loss_fn, tx, mesh)(p, s, b)
  for leaf in jax.tree.leaves((p, s)):
    assert len(leaf.sharding.device_set) == N
    assert leaf.sharding.is_fully_replicated


def _naive_grads(body, check_vma=True):
  mesh = data_mesh()
  f = jax.shard_map(body, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(),
                    check_vma=check_vma)
  params = replicate(_params(), mesh)
  return jax.jit(f)(params, shard_batch(_batches()[0], mesh))


def test_shard_map_pitfall_is_real_and_the_helper_avoids_it(record_property):
  """Inside shard_map the gradient of a replicated parameter is already psum'ed."""
  params, batch = _params(), _batches()[0]
  _, ref, _ = _reference(_grad_keeper(), params, [batch])
  ref_leaves = jax.tree.leaves(ref)

  def ratio(g):
    return [np.asarray(a) / np.where(np.abs(b) > 1e-4, np.asarray(b), np.nan)
            for a, b in zip(jax.tree.leaves(g), ref_leaves)]

  naive = {
      # pmap habit: pmean of the local loss's gradients (already summed: pmean keeps N x)
      "pmean(grad(local))": lambda p, b: lax.pmean(jax.grad(loss_fn)(p, b), "data"),
      # "sum the losses, then average the gradients"
      "pmean(grad(psum(local)))": lambda p, b: lax.pmean(
          jax.grad(lambda q: lax.psum(loss_fn(q, b), "data"))(p), "data"),
  }
  for name, body in naive.items():
    for r in ratio(_naive_grads(body)):
      np.testing.assert_allclose(r[np.isfinite(r)], N, rtol=1e-4, err_msg=name)
  # without varying-axes checks, the psum'ed loss's gradient pmean'ed is N x as well
  body = naive["pmean(grad(psum(local)))"]
  for r in ratio(_naive_grads(body, check_vma=False)):
    np.testing.assert_allclose(r[np.isfinite(r)], N, rtol=1e-4)
  _, g, _ = _run_mesh(shard_map_step, _grad_keeper(), params, [batch])
  err = _max_err(g, ref)
  record_property("helper_max_abs_grad_err", err)
  assert err <= TOL


@pytest.mark.parametrize("make", [data_parallel_step, shard_map_step])
def test_has_aux(make):
  mesh = data_mesh()
  tx = optax.sgd(0.1)

  def loss_aux(p, b):
    loss = loss_fn(p, b)
    return loss, {"n": jnp.asarray(b[0].shape[0], jnp.int32)}

  p = replicate(_params(), mesh)
  p, s, loss, aux = make(loss_aux, tx, mesh, has_aux=True)(p, tx.init(p), _batches()[0])
  expected = BATCH if make is data_parallel_step else np.full(N, BATCH // N)
  np.testing.assert_array_equal(aux["n"], expected)


def test_explicit_axis_mesh():
  params, batches = _params(), _batches()[:3]
  tx = jopt.adam(1e-2)
  _, _, ref_loss = _reference(tx, params, batches)
  mesh = data_mesh(axis_type="explicit")
  p = replicate(params, mesh)
  s = tx.init(p)
  for make in (data_parallel_step, shard_map_step):
    step, q, t, losses = make(loss_fn, tx, mesh), p, s, []
    for b in batches:
      q, t, loss = step(q, t, b)
      losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_loss, rtol=0, atol=TOL)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("make", [data_parallel_step, shard_map_step])
def test_batch_not_divisible_names_sizes_and_fix(make):
  mesh = data_mesh()
  tx = optax.sgd(0.1)
  p = replicate(_params(), mesh)
  x, y = _batches()[0]
  with pytest.raises(ValueError, match=r"batch size 60 .* not divisible by the 8 devices of"
                     r" mesh axis 'data'.*multiple of 8 \(e\.g\. 56 or 64\)"):
    make(loss_fn, tx, mesh)(p, tx.init(p), (x[:60], y[:60]))


def test_shard_batch_and_pmap_batch_errors():
  mesh = data_mesh()
  with pytest.raises(ValueError, match="batch size 12 .* 8 devices"):
    shard_batch(np.zeros((12, 3), np.float32), mesh)
  with pytest.raises(ValueError, match="batch size 10 .* 8 pmap devices"):
    pmap_shard_batch(np.zeros((10, 3), np.float32))
  with pytest.raises(ValueError, match="different leading sizes"):
    shard_batch((np.zeros((16, 3)), np.zeros((8,))), mesh)
  with pytest.raises(ValueError, match="scalar"):
    shard_batch({"x": np.zeros((16, 3)), "lr": np.float32(0.1)}, mesh)


def test_mesh_axis_names_must_match():
  mesh = data_mesh(axis="batch")
  tx = optax.sgd(0.1)
  for make in (data_parallel_step, shard_map_step):
    with pytest.raises(ValueError, match=r"axis='data' is not an axis of the mesh, whose axis"
                       r" names are \('batch',\)"):
      make(loss_fn, tx, mesh)
  with pytest.raises(ValueError, match="axis='model'"):
    batch_sharding(mesh, "model")
  with pytest.raises(ValueError, match=r"n=9 must be an integer in \[1, 8\]"):
    data_mesh(9)
  with pytest.raises(ValueError, match="axis_type"):
    data_mesh(axis_type="manual")
  with pytest.raises(TypeError, match="jax.sharding.Mesh"):
    data_parallel_step(loss_fn, tx, "data")


def test_pmap_helpers_round_trip():
  tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
  rep = pmap_replicate(tree)
  assert rep["w"].shape == (N, 2, 3)
  assert len(rep["w"].sharding.device_set) == N
  np.testing.assert_array_equal(pmap_unreplicate(rep)["w"], tree["w"])
  xs = pmap_shard_batch(np.arange(16 * 2).reshape(16, 2))
  assert xs.shape == (N, 2, 2)
  np.testing.assert_array_equal(xs[3], np.arange(16 * 2).reshape(16, 2)[6:8])
