"""Synchronized batch norm: ``axis_name`` inside ``jax.shard_map`` over the 8 fake CPU devices.

A batch split across 8 devices and normalized with ``axis_name`` must give what
one device gives on the whole batch (outputs, running statistics, gradients),
including the unbiased correction's global count; without ``axis_name`` each
shard really does use its own statistics. Measured maximum errors (float32)
are recorded.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jopt.nn as jnn

NDEV = 8


@pytest.fixture(scope="module", params=["explicit", "auto"])
def mesh(request):
  """jax.make_mesh's default (explicit axes) and an auto-sharded Mesh."""
  assert len(jax.devices()) == NDEV
  if request.param == "explicit":
    return jax.make_mesh((NDEV,), ("data",))
  return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


def _split(mesh, x):
  """The batch split over the devices (what a data loader does before the step)."""
  return jax.device_put(x, NamedSharding(mesh, P("data")))


def _err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _inputs(shape, axis, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  c = shape[axis]
  bshape = [1] * len(shape)
  bshape[axis] = c
  loc = jnp.linspace(-2.0, 3.0, c).reshape(bshape)
  x = jax.random.normal(k1, shape) * 1.5 + loc
  return x, 1.0 + 0.1 * jax.random.normal(k2, (c,)), 0.1 * jax.random.normal(k3, (c,))


def _synced(mesh, axis, train=True, **kw):
  f = functools.partial(jnn.batch_norm, train=train, axis=axis, axis_name="data", **kw)
  g = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P("data"), P(), P(), P()),
                            out_specs=(P("data"), P())))
  return lambda x, *args: g(_split(mesh, x), *args)


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nc_one_per_device"])
def test_synced_equals_one_device_on_the_full_batch(mesh, layout, record_property):
  shape, axis = {"nhwc": ((32, 3, 3, 4), -1), "nchw": ((16, 4, 3, 3), 1),
                 "nc_one_per_device": ((NDEV, 5), -1)}[layout]
  c = shape[axis]
  synced = _synced(mesh, axis, momentum=0.2)
  single = jax.jit(functools.partial(jnn.batch_norm, train=True, axis=axis, momentum=0.2))
  s_sync = s_one = jnn.batch_norm_stats(c)
  errs = {"y": 0.0, "mean": 0.0, "var": 0.0}
  for step in range(3):
    x, scale, bias = _inputs(shape, axis, step)
    y_sync, s_sync = synced(x, scale, bias, s_sync)
    y_one, s_one = single(x, scale, bias, s_one)
    errs["y"] = max(errs["y"], _err(y_sync, y_one))
    errs["mean"] = max(errs["mean"], _err(s_sync.mean, s_one.mean))
    errs["var"] = max(errs["var"], _err(s_sync.var, s_one.var))
  y_eval, _ = _synced(mesh, axis, train=False)(x, scale, bias, s_sync)
  errs["y_eval"] = _err(y_eval, jnn.batch_norm(x, scale, bias, s_one, train=False, axis=axis)[0])
  for k, v in errs.items():
    record_property(f"max_abs_err_{k}", v)
  # float32, |y| <= ~4.3 (ulp 4.8e-7), stats O(1): measured <= 9.6e-7 (2 ulps)
  assert max(errs.values()) <= 1e-6, errs


def test_unbiased_count_is_global(mesh):
  """One example per device: n = 8 over the mesh (the local n = 1 would be refused)."""
  x, scale, bias = _inputs((NDEV, 3), -1)
  _, s = _synced(mesh, -1)(x, scale, bias, jnn.batch_norm_stats(3))
  xs = np.asarray(x, np.float64)
  np.testing.assert_allclose(s.var, 0.9 + 0.1 * xs.var(0, ddof=1), rtol=1e-6)
  local = jax.shard_map(functools.partial(jnn.batch_norm, train=True), mesh=mesh,
                        in_specs=(P("data"), P(), P(), P()), out_specs=(P("data"), P("data")))
  with pytest.raises(ValueError, match=r"n=1"):
    local(_split(mesh, x), scale, bias, jnn.batch_norm_stats(3))


def test_without_axis_name_each_shard_uses_its_own_statistics(mesh, record_property):
  shape = (32, 2, 2, 3)
  x, scale, bias = _inputs(shape, -1)
  # make the shards differ: shift each device's examples by its index
  x = x + jnp.repeat(jnp.arange(NDEV, dtype=jnp.float32), 32 // NDEV)[:, None, None, None]
  s0 = jnn.batch_norm_stats(3)
  local = jax.jit(jax.shard_map(functools.partial(jnn.batch_norm, train=True), mesh=mesh,
                                in_specs=(P("data"), P(), P(), P()),
                                out_specs=(P("data"), P("data"))))
  y_local, s_local = local(_split(mesh, x), scale, bias, s0)
  y_local = np.asarray(y_local)
  mean_local = np.asarray(s_local.mean).reshape(NDEV, 3)
  for d in range(NDEV):
    shard = x[d * 4:(d + 1) * 4]
    y_d, s_d = jnn.batch_norm(shard, scale, bias, s0, train=True)
    np.testing.assert_allclose(y_local[d * 4:(d + 1) * 4], y_d, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mean_local[d], s_d.mean, rtol=1e-6, atol=1e-6)
  y_full, _ = jnn.batch_norm(x, scale, bias, s0, train=True)
  gap = _err(y_local, y_full)
  record_property("max_abs_gap_local_vs_global", gap)
  assert gap > 1.0    # a real difference: the shards' means are 1 apart


def test_gradients_through_the_synced_statistics(mesh, record_property):
  shape = (16, 3, 3, 4)
  x, scale, bias = _inputs(shape, -1, 4)
  cot = jax.random.normal(jax.random.key(9), shape)
  s0 = jnn.batch_norm_stats(4)

  def loss_sync(x, scale, bias):
    f = jax.shard_map(
        lambda x, s, b, c: jax.lax.psum(
            jnp.sum(jnn.batch_norm(x, s, b, s0, train=True, axis_name="data")[0] * c), "data"),
        mesh=mesh, in_specs=(P("data"), P(), P(), P("data")), out_specs=P())
    return f(x, scale, bias, _split(mesh, cot))

  def loss_one(x, scale, bias):
    return jnp.sum(jnn.batch_norm(x, scale, bias, s0, train=True)[0] * cot)

  g_sync = jax.jit(jax.grad(loss_sync, argnums=(0, 1, 2)))(_split(mesh, x), scale, bias)
  g_one = jax.grad(loss_one, argnums=(0, 1, 2))(x, scale, bias)
  errs = [_err(a, b) for a, b in zip(g_sync, g_one)]
  record_property("max_abs_err_grad_x_scale_bias", errs)
  # float32; scale/bias gradients are sums over 144 values: measured <= 1.9e-6
  assert max(errs) <= 1e-5, errs


def test_vmap_axis_name_and_sharded_jit_agree(mesh):
  """Other ways to split the batch: vmap with an axis_name, and plain jit of a
  sharded array (no axis_name: XLA inserts the reductions)."""
  x, scale, bias = _inputs((32, 3, 3, 4), -1, 2)
  s0 = jnn.batch_norm_stats(4)
  y_one, s_one = jnn.batch_norm(x, scale, bias, s0, train=True)
  vm = jax.vmap(lambda xs: jnn.batch_norm(xs, scale, bias, s0, train=True, axis_name="b"),
                axis_name="b")
  y_vm, s_vm = vm(x.reshape(NDEV, 4, 3, 3, 4))
  np.testing.assert_allclose(y_vm.reshape(x.shape), y_one, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(s_vm.var[0], s_one.var, rtol=1e-6, atol=1e-6)
  xsh = _split(mesh, x)
  y_sh, s_sh = jax.jit(functools.partial(jnn.batch_norm, train=True))(xsh, scale, bias, s0)
  np.testing.assert_allclose(y_sh, y_one, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(s_sh.var, s_one.var, rtol=1e-6, atol=1e-6)
  assert y_sh.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), y_sh.ndim)
