"""jopt.prune as a transform: exact zeros, zeroed moments, mask-update steps, every optimizer.

References: with sparsity 0 the wrapper is the inner optimizer bit for bit;
with a fixed mask it equals optax.adam on masked gradients followed by
masking the parameters (the "masked network" definition). Every registry
optimizer is wrapped for 3 steps on tiny params.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jopt
from jopt.prune import PruneState, prune
from tests.registry import all_entries

W_SHAPE = (4, 6)


def _params(seed=0, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  return {"w": jnp.asarray(r.normal(size=W_SHAPE), dtype),
          "b": jnp.asarray(r.normal(size=(6,)), dtype)}


def _grad(p, i):
  # a gradient that differs per step and is non-zero everywhere
  return jax.tree.map(lambda x: jnp.cos(x * (i + 1)) + 1.5, p)


def _w_slots(state):
  """Every floating leaf of a state shaped like w (moments, momentum, z, ...)."""
  return [x for x in jax.tree.leaves(state)
          if isinstance(x, jax.Array) and x.shape == W_SHAPE
          and jnp.issubdtype(x.dtype, jnp.inexact)]


def _run(tx, steps, params=None, jit=True):
  params = _params() if params is None else params
  state = tx.init(params)
  upd = jax.jit(tx.update) if jit else tx.update
  history = []
  for i in range(steps):
    u, state = upd(_grad(params, i), state, params)
    params = optax.apply_updates(params, u)
    history.append((params, state))
  return history


@pytest.mark.parametrize("inner", ["adam", "sgd_momentum"])
def test_exact_zeros_and_zero_moments_gradual(inner):
  opt = jopt.adam(0.1) if inner == "adam" else jopt.sgd(0.05, momentum=0.9)
  sched = lambda t: jnp.minimum(0.1 * jnp.asarray(t, jnp.float32), 0.8)  # noqa: E731
  tx = prune(opt, sched, update_every=2, begin_step=1, end_step=5)
  hist = _run(tx, 9)
  prev = None
  for t, (p, s) in enumerate(hist):
    m = np.asarray(s.masks["w"])
    if t < 1:
      assert m.all()                                # before begin_step
    elif t in (1, 3, 5):
      assert (~m).sum() == int(np.floor(float(np.float32(sched(t))) * 24 + 0.5))
    else:
      np.testing.assert_array_equal(m, prev)        # fixed between and after updates
    assert np.asarray(s.masks["b"]).all()           # biases are not pruned
    assert (np.asarray(p["w"])[~m] == 0.0).all()    # exactly 0.0 after apply_updates
    assert (np.asarray(p["w"])[m] != 0.0).all()
    slots = _w_slots(s.inner_state)
    assert len(slots) == (2 if inner == "adam" else 1)
    for x in slots:
      assert (np.asarray(x)[~m] == 0.0).all()
    prev = m
  assert (~prev).sum() == int(np.floor(float(np.float32(0.5)) * 24 + 0.5))  # s(5) = 0.5


def test_adam_8bit_moment_codes_decode_to_zero_at_pruned_entries():
  """adam_8bit's uint8 codes: pruned entries hold the code of 0.0 after every step.

  Reference: the code book itself (jopt._core.blockwise.dynamic_codebook), and
  the unwrapped adam_8bit, whose pruned-entry codes do not decode to zero
  (so the test can fail).
  """
  from jopt._core.blockwise import dequantize  # pylint: disable=import-outside-toplevel
  params = _params()
  opt = jopt.adam_8bit(0.1, block_size=8, min_8bit_size=1)
  tx = prune(opt, 0.5, update_every=100, begin_step=3)   # moments build up for 3 steps first
  hist = _run(tx, 6)
  for t, (_, s) in enumerate(hist):
    m = np.asarray(s.masks["w"])
    inner = s.inner_state
    mu = np.asarray(dequantize(inner.mu["w"], inner.mu_scale["w"], 8, True))
    nu = np.asarray(dequantize(inner.nu["w"], inner.nu_scale["w"], 8, False))
    if t < 3:
      assert m.all() and (mu != 0).all() and (nu != 0).all()
    else:
      assert (~m).sum() == 12
      assert (mu[~m] == 0.0).all() and (nu[~m] == 0.0).all()
      assert (mu[m] != 0.0).all() and (nu[m] != 0.0).all()
  # without the wrapper's zeroing the same entries keep non-zero moments
  tx_keep = prune(opt, 0.5, update_every=100, begin_step=3, zero_inner_state=False)
  _, s = _run(tx_keep, 6)[-1]
  m = np.asarray(s.masks["w"])
  nu = np.asarray(dequantize(s.inner_state.nu["w"], s.inner_state.nu_scale["w"], 8, False))
  assert (nu[~m] != 0.0).all()


def test_sparsity_zero_is_the_inner_optimizer(x64):
  params = _params(0, jnp.float64)
  a = _run(prune(jopt.adam(0.1), 0.0), 4, params)
  b = _run(jopt.adam(0.1), 4, params)
  err = 0.0
  for (pa, sa), (pb, sb) in zip(a, b):
    assert np.asarray(sa.masks["w"]).all()
    for k in pa:
      err = max(err, float(np.max(np.abs(np.asarray(pa[k]) - np.asarray(pb[k])))))
  # the same arithmetic; XLA fuses the two programs differently (1 ulp)
  assert err <= 1e-15, err


def test_fixed_mask_equals_masked_adam_reference(x64):
  params = _params(3, jnp.float64)
  tx = prune(jopt.adam(0.05), 0.5, end_step=0)       # one mask, from the initial weights
  hist = _run(tx, 5, params)
  mask = np.asarray(hist[0][1].masks["w"])
  ref_tx = optax.adam(0.05)
  p = params
  st = ref_tx.init(p)
  err = 0.0
  for i, (got, _) in enumerate(hist):
    g = _grad(p, i)
    g = {"w": jnp.where(mask, g["w"], 0.0), "b": g["b"]}
    with jax.numpy_dtype_promotion("standard"):
      u, st = ref_tx.update(g, st, p)
      p = optax.apply_updates(p, u)
    p = {"w": jnp.where(mask, p["w"], 0.0), "b": p["b"]}
    for k in p:
      err = max(err, float(np.max(np.abs(np.asarray(got[k]) - np.asarray(p[k])))))
  assert err <= 1e-15, err   # measured 0.0


@pytest.mark.parametrize("entry", all_entries(), ids=lambda e: e.name)
def test_every_registry_optimizer(entry):
  tx = prune(entry.make(), 0.5)
  for p, s in _run(tx, 3):
    m = np.asarray(s.masks["w"])
    assert (~m).sum() == 12
    assert (np.asarray(p["w"])[~m] == 0.0).all()
    assert np.isfinite(np.asarray(p["w"])).all() and np.isfinite(np.asarray(p["b"])).all()
    # every floating slot shaped like w is zero at pruned entries; slots of other
    # shapes (Adafactor's factored rows/columns, 8-bit codes (uint8) and block
    # scales, one-element placeholders) are not params-shaped and are left alone
    for x in _w_slots(s.inner_state):
      assert (np.asarray(x)[~m] == 0.0).all(), entry.name


def test_inside_optax_chain_both_ways():
  inner = prune(optax.chain(optax.clip_by_global_norm(1.0), jopt.adam(0.1)), 0.5)
  outer = optax.chain(optax.clip_by_global_norm(1.0), prune(jopt.adam(0.1), 0.5))
  for tx, get in ((inner, lambda s: s), (outer, lambda s: s[1])):
    for p, s in _run(tx, 3):
      ps = get(s)
      assert isinstance(ps, PruneState)
      m = np.asarray(ps.masks["w"])
      assert (np.asarray(p["w"])[~m] == 0.0).all() and (~m).sum() == 12


def test_inside_nnx_optimizer():
  from flax import nnx

  class Model(nnx.Module):
    def __init__(self, rngs):
      self.l1 = nnx.Linear(4, 8, rngs=rngs)
      self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
      return self.l2(jax.nn.relu(self.l1(x)))

  model = Model(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, prune(jopt.adam(0.01), 0.75), wrt=nnx.Param)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 4)), jnp.float32)

  @nnx.jit
  def step(model, optimizer):
    grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads)

  for _ in range(3):
    step(model, optimizer)
  k1 = np.asarray(model.l1.kernel[...])
  k2 = np.asarray(model.l2.kernel[...])
  assert (k1 == 0).sum() == 24 and (k2 == 0).sum() == 12   # 0.75 of 32 and of 16
  assert (np.asarray(model.l1.bias[...]) != 0).any()


def test_changing_the_target_in_state_does_not_retrace():
  params = _params()
  tx = prune(jopt.sgd(0.1), 0.25)
  traces = []

  def upd(g, s, p):
    traces.append(None)
    return tx.update(g, s, p)

  upd = jax.jit(upd)
  state = tx.init(params)
  _, state = upd(_grad(params, 0), state, params)
  assert (~np.asarray(state.masks["w"])).sum() == 6
  state = state._replace(sparsity=jnp.asarray(0.75, state.sparsity.dtype))
  _, state = upd(_grad(params, 1), state, params)
  assert (~np.asarray(state.masks["w"])).sum() == 18
  assert len(traces) == 1


@pytest.mark.parametrize("axis_type", ["auto", "explicit"])
def test_masks_keep_the_params_sharding(axis_type):
  kind = jax.sharding.AxisType.Auto if axis_type == "auto" else jax.sharding.AxisType.Explicit
  mesh = jax.make_mesh((4,), ("x",), axis_types=(kind,))
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", None))
  params = {"w": jax.device_put(jnp.asarray(np.random.default_rng(0).normal(size=(8, 6)),
                                            jnp.float32), sh)}
  tx = prune(jopt.adam(0.1), 0.5)
  with jax.set_mesh(mesh):
    for state in (tx.init(params), jax.jit(tx.init)(params)):
      assert state.masks["w"].sharding.is_equivalent_to(sh, 2)
    state = tx.init(params)
    u, state = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
  assert state.masks["w"].sharding.is_equivalent_to(sh, 2)
  assert state.inner_state.mu["w"].sharding.is_equivalent_to(sh, 2)
  assert (~np.asarray(state.masks["w"])).sum() == 24
  p = optax.apply_updates(params, u)
  assert (np.asarray(p["w"])[~np.asarray(state.masks["w"])] == 0).all()
  assert state.masks["w"].dtype == jnp.bool_ and state.count.dtype == jnp.int32
  # the structure is that of the params, whatever the devices
  assert jax.tree.structure(state.masks) == jax.tree.structure(params)


def test_updates_keep_the_gradient_dtype():
  params = _params(0, jnp.bfloat16)
  tx = prune(jopt.adam(0.1), 0.5)
  u, _ = tx.update(_grad(params, 0), tx.init(params), params)
  assert u["w"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.bfloat16
  p = optax.apply_updates(params, u)
  assert (np.asarray(p["w"].astype(jnp.float32)) == 0).sum() == 12


@settings(max_examples=12, deadline=None)
@given(every=st.integers(1, 3), begin=st.integers(0, 2), steps=st.integers(2, 6),
       s=st.floats(0.05, 0.95), crit=st.sampled_from(["magnitude", "saliency", "random"]))
def test_invariants_property(every, begin, steps, s, crit):
  tx = prune(jopt.adam(0.1), s, criterion=crit, update_every=every, begin_step=begin)
  hist = _run(tx, steps)
  prev = None
  for t, (p, st_) in enumerate(hist):
    m = np.asarray(st_.masks["w"])
    if t >= begin and (t - begin) % every == 0:
      assert (~m).sum() == int(np.floor(float(np.float32(s)) * 24 + 0.5))
    elif prev is not None:
      np.testing.assert_array_equal(m, prev)   # unchanged by the optimizer's steps
    else:
      assert m.all()
    assert (np.asarray(p["w"])[~m] == 0.0).all()
    for x in _w_slots(st_.inner_state):
      assert (np.asarray(x)[~m] == 0.0).all()
    prev = m


def test_zhu_gupta_polynomial_schedule():
  # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, t0 = 2, n dt = 8, dt = 2
  sched = optax.polynomial_schedule(0.0, 0.875, power=3, transition_steps=8, transition_begin=2)
  tx = prune(jopt.sgd(0.1), sched, update_every=2, begin_step=2, end_step=10)
  hist = _run(tx, 13)
  pruned = [int((~np.asarray(s.masks["w"])).sum()) for _, s in hist]
  for t, k in enumerate(pruned):
    if t < 2:
      assert k == 0
    elif t <= 10 and t % 2 == 0:
      ref = 0.875 + (0.0 - 0.875) * (1 - (t - 2) / 8) ** 3
      assert k == int(np.floor(np.float32(ref) * 24 + 0.5)), (t, k)
    else:
      assert k == pruned[t - 1]
  assert pruned == sorted(pruned) and pruned[-1] == 21
  assert np.isclose(float(hist[-1][1].sparsity), float(sched(12)))


def test_extra_args_and_hyperparams_reach_the_inner_optimizer():
  params = _params()
  tx = prune(optax.sgd(0.1), 0.5)       # a plain optax GradientTransformation inside
  state = tx.init(params)
  u, state = tx.update(_grad(params, 0), state, params, value=jnp.float32(1.0))
  tx = prune(jopt.adam(0.1), 0.5)
  state = jopt.set_hyperparams(tx.init(params), learning_rate=0.01)
  assert float(jopt.hyperparams(state)["learning_rate"]) == np.float32(0.01)


def test_state_round_trips_through_flax_serialization():
  from flax import serialization
  tx = prune(jopt.adam(0.1), 0.5)
  _, state = _run(tx, 2)[-1]
  blob = serialization.to_bytes(state)
  fresh = tx.init(_params())
  back = serialization.from_bytes(fresh, blob)
  assert jax.tree.structure(back) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_package_is_callable():
  import jopt.prune as namespace
  tx = namespace(jopt.sgd(0.1), 0.5)
  state = tx.init(_params())
  assert isinstance(state, PruneState) and namespace.sparsity_report(state).size == 24 + 6
