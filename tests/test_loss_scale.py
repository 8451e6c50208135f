"""Loss scaling: torch GradScaler's trajectory, skipped steps bit for bit, float32 scales,
the floor under jit, agreement across devices inside shard_map, and bad input.

The scale trajectory, the growth tracker, the skipped steps and the unscaled
gradients are compared with ``torch.amp.GradScaler("cpu")`` driving
``torch.optim.SGD`` on the same scaled gradients: all exactly equal, and so are
the SGD parameters with a power-of-two learning rate (with lr=0.1 torch's fused
``add_(g, alpha=-lr)`` rounds once and optax's ``p + (-lr g)`` twice: 1 ulp a
step). At every skipped step both sides' parameters are exactly unchanged.
Where torch has no counterpart (the floor ``min_scale``) a NumPy transcription
of torch's ``_amp_update_scale_`` plus the floor is the reference, again exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.sharding import PartitionSpec as P

import jopt
from jopt.precision import LossScaleState, all_finite, loss_scale, scale_loss

NDEV = 8


def _flags(n, p_bad, seed):
  return list(np.random.default_rng(seed).random(n) < p_bad)


# ---------------------------------------------------------------- torch parity

def _torch_run(flags, g, init_scale, growth_factor, backoff_factor, growth_interval, lr):
  w = torch.nn.Parameter(torch.ones(g.size, dtype=torch.float32))
  gt = torch.tensor(g)
  opt = torch.optim.SGD([w], lr=lr)
  scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_factor=growth_factor,
                                backoff_factor=backoff_factor, growth_interval=growth_interval)
  out = []
  for bad in flags:
    opt.zero_grad()
    coef = gt.clone()
    if bad:
      coef[1] = float("inf")
    scaler.scale((w * coef).sum()).backward()
    scaler.unscale_(opt)
    unscaled = w.grad.detach().clone().numpy()
    scaler.step(opt)
    scaler.update()
    out.append((np.float32(scaler.get_scale()), int(scaler._growth_tracker), unscaled,
                w.detach().clone().numpy()))
  return out


def _jopt_run(flags, g, init_scale, growth_factor, backoff_factor, growth_interval, lr,
              min_scale=2.0 ** -120):
  tx = loss_scale(optax.sgd(lr), init_scale, growth_factor=growth_factor,
                  backoff_factor=backoff_factor, growth_interval=growth_interval,
                  min_scale=min_scale)
  w = jnp.ones(g.size, jnp.float32)
  state = tx.init(w)

  @jax.jit
  def step(w, state, coef):
    grads = jax.grad(lambda w: scale_loss(jnp.sum(w * coef), state))(w)
    updates, state = tx.update(grads, state, w)
    return optax.apply_updates(w, updates), state

  out = []
  for bad in flags:
    coef = g.copy()
    if bad:
      coef[1] = np.inf
    w, state = step(w, state, jnp.asarray(coef))
    out.append((state, np.asarray(w)))
  return out


@pytest.mark.parametrize("init_scale,growth_factor,backoff_factor,growth_interval,p_bad", [
    (2.0 ** 16, 2.0, 0.5, 3, 0.3),
    (1000.0, 2.0, 0.5, 2, 0.25),          # not a power of two: 1/S is rounded the same
    (2.0 ** 10, 4.0, 0.25, 1, 0.5),
    (2.0 ** 5, 2.0, 0.5, 2000, 0.2),      # torch's defaults for the rule
])
def test_scale_trajectory_and_steps_match_torch_grad_scaler(init_scale, growth_factor,
                                                            backoff_factor, growth_interval,
                                                            p_bad, record_property):
  flags = _flags(60, p_bad, seed=int(init_scale) % 97)
  g = np.random.default_rng(1).normal(size=5).astype(np.float32)
  lr = 0.125   # a power of two: -lr*g is exact, so torch's fused add and optax agree bitwise
  ref = _torch_run(flags, g, init_scale, growth_factor, backoff_factor, growth_interval, lr)
  got = _jopt_run(flags, g, init_scale, growth_factor, backoff_factor, growth_interval, lr)
  skipped = 0
  worst = 0.0
  prev_w = prev_tw = np.ones(5, np.float32)
  for i, ((t_scale, t_tracker, _, t_w), (state, w)) in enumerate(zip(ref, got)):
    skipped += int(flags[i])
    assert state.scale.dtype == jnp.float32
    assert np.float32(state.scale) == t_scale, (i, float(state.scale), t_scale)
    assert int(state.good_steps) == t_tracker, i
    assert int(state.skipped) == skipped, i
    if flags[i]:   # a skipped step leaves both sides' parameters exactly as they were
      np.testing.assert_array_equal(w, prev_w)
      np.testing.assert_array_equal(t_w, prev_tw)
    worst = max(worst, float(np.max(np.abs(w - t_w))))
    np.testing.assert_array_equal(w, t_w, err_msg=f"step {i}")
    prev_w, prev_tw = w, t_w
  assert len({float(s.scale) for s, _ in got}) > 1 or growth_interval == 2000
  record_property("max_abs_param_err_vs_torch", worst)


@pytest.mark.parametrize("init_scale", [2.0 ** 16, 1000.0, 3.0])
def test_unscaled_gradients_equal_torch_unscale(init_scale):
  g = np.random.default_rng(2).normal(size=(7,)).astype(np.float32) * 1e-3
  ref = _torch_run([False, False], g, init_scale, 2.0, 0.5, 1, 0.1)
  tx = loss_scale(optax.identity(), init_scale, growth_interval=1)  # updates = unscaled grads
  w = jnp.ones(7, jnp.float32)
  state = tx.init(w)
  for _, _, t_unscaled, _ in ref:
    grads = jax.grad(lambda w: scale_loss(jnp.sum(w * jnp.asarray(g)), state))(w)
    unscaled, state = tx.update(grads, state, w)
    np.testing.assert_array_equal(np.asarray(unscaled), t_unscaled)


def test_growth_that_would_overflow_keeps_the_scale_as_torch_does():
  flags = [False] * 3
  g = np.ones(3, np.float32)
  ref = _torch_run(flags, g, 2.0 ** 127, 2.0, 0.5, 1, 0.1)
  got = _jopt_run(flags, g, 2.0 ** 127, 2.0, 0.5, 1, 0.1)
  for (t_scale, t_tracker, _, _), (state, _) in zip(ref, got):
    assert np.float32(state.scale) == t_scale == np.float32(2.0 ** 127)
    assert int(state.good_steps) == t_tracker == 0


# ---------------------------------------------------------------- NumPy reference with floor

def _numpy_reference(flags, init, growth, backoff, interval, floor, dynamic=True):
  """torch's _amp_update_scale_ transcribed, plus jopt's floor; all in float32."""
  scale, tracker, skipped = np.float32(init), 0, 0
  out = []
  for bad in flags:
    if bad:
      skipped += 1
      if dynamic:
        scale = max(np.float32(scale * np.float32(backoff)), np.float32(floor))
      tracker = 0
    else:
      tracker += 1
      if dynamic and tracker == interval:
        grown = np.float32(scale * np.float32(growth))
        scale = grown if np.isfinite(grown) else scale
        tracker = 0
    out.append((np.float32(scale), tracker, skipped))
  return out


@pytest.mark.parametrize("dynamic", [True, False])
def test_floor_growth_backoff_and_counters_match_the_numpy_transcription(dynamic):
  # 12 overflows in a row from 2**6 hit the floor 2**-1, then growth every 4 steps
  flags = [True] * 12 + [False] * 9 + [True] + [False] * 5 + _flags(40, 0.3, 3)
  ref = _numpy_reference(flags, 2.0 ** 6, 2.0, 0.5, 4, 0.5, dynamic)
  tx = loss_scale(optax.sgd(0.1), 2.0 ** 6, dynamic=dynamic, growth_interval=4,
                  min_scale=0.5)
  w = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones((2, 2), jnp.float32)}
  state = tx.init(w)
  update = jax.jit(tx.update)
  for i, bad in enumerate(flags):
    grads = jax.tree.map(lambda x: x * state.scale, w)
    if bad:
      grads["b"] = grads["b"].at[1, 0].set(jnp.nan if i % 2 else jnp.inf)
    _, state = update(grads, state, w)
    r_scale, r_tracker, r_skipped = ref[i]
    assert np.float32(state.scale) == r_scale, (i, float(state.scale), r_scale)
    assert int(state.good_steps) == r_tracker and int(state.skipped) == r_skipped, i
    assert state.scale.dtype == jnp.float32
  if dynamic:
    assert min(r[0] for r in ref) == np.float32(0.5)   # the floor was reached and held
  else:
    assert {r[0] for r in ref} == {np.float32(64.0)}


# ---------------------------------------------------------------- skipped steps

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_overflow_skips_with_params_and_inner_state_bit_identical(dtype, bad):
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(4, 3)), dtype),
            "b": jnp.asarray(rng.normal(size=(3,)), dtype),
            "norm": {"scale": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}}
  tx = loss_scale(jopt.adam(1e-2), 2.0 ** 10, growth_interval=3)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, updates

  def scaled_grads(state, poison=False):
    g = jax.tree.map(lambda p: (p.astype(jnp.float32) * 1e-3 * state.scale).astype(p.dtype),
                     params)
    if poison:
      g["b"] = g["b"].at[2].set(bad)
    return g

  state = tx.init(params)
  for _ in range(2):
    params, state, _ = step(params, state, scaled_grads(state))
  assert int(state.inner_state.count) == 2 and int(state.good_steps) == 2
  before_params, before_state = params, state
  params, state, updates = step(params, state, scaled_grads(state, poison=True))

  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before_params)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
  for a, b in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(before_state.inner_state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(state.inner_state.count) == 2
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert u.dtype == p.dtype and not np.any(np.asarray(u, np.float32))
  assert state.scale.dtype == jnp.float32 and float(state.scale) == 2.0 ** 9
  assert int(state.skipped) == 1 and int(state.good_steps) == 0
  # the next finite step runs the inner optimizer again, from the kept state
  params, state, _ = step(params, state, scaled_grads(state))
  assert int(state.inner_state.count) == 3 and int(state.skipped) == 1


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_gradients_unscale_in_float32_and_keep_their_dtype(dtype):
  rng = np.random.default_rng(4)
  g = jnp.asarray(rng.normal(size=(64,)) * 300.0, dtype)
  tx = loss_scale(optax.identity(), 24.0)  # not a power of two: the rounding is visible
  state = tx.init(g)
  unscaled, state = tx.update(g, state, g)
  ref = (np.asarray(g).astype(np.float32) * (np.float32(1) / np.float32(24.0))).astype(dtype)
  assert unscaled.dtype == dtype and state.scale.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(unscaled), ref)


def test_static_scaling_keeps_the_scale_and_still_skips():
  tx = loss_scale(optax.sgd(0.5), 128.0, dynamic=False, growth_interval=1)
  w = jnp.ones(3, jnp.float32)
  state = tx.init(w)
  seq = [False, False, True, False, True, True, False]
  for bad in seq:
    g = jnp.full(3, np.inf if bad else 128.0, jnp.float32)
    u, state = tx.update(g, state, w)
    assert float(state.scale) == 128.0
    np.testing.assert_array_equal(np.asarray(u), np.zeros(3) if bad else np.full(3, -0.5))
  assert int(state.skipped) == 3 and int(state.good_steps) == 1


def test_scale_loss_in_float32_for_half_losses_and_float64_under_x64(x64):
  state = loss_scale(optax.sgd(0.1)).init(jnp.ones(2))
  out = scale_loss(jnp.asarray(2.0, jnp.float16), state)
  assert out.dtype == jnp.float32 and float(out) == 2.0 * 2 ** 16   # fp16 would be inf
  out = scale_loss(jnp.asarray(0.1, jnp.float64), state)
  assert out.dtype == jnp.float64 and float(out) == 0.1 * 2 ** 16
  assert float(scale_loss(jnp.asarray(3.0, jnp.float32), 4.0)) == 12.0
  with pytest.raises(TypeError, match="scale_loss: loss must be a floating scalar"):
    scale_loss(jnp.asarray(3), state)


def test_floor_is_kept_under_jit_and_state_is_arrays_only():
  tx = loss_scale(optax.sgd(0.1), 4.0, min_scale=2.0)
  w = jnp.ones(2)
  state = jax.jit(tx.init)(w)
  assert type(state).__module__ == "jopt"
  for leaf in jax.tree.leaves(state):
    assert isinstance(leaf, jax.Array)
  assert (state.scale.dtype, state.good_steps.dtype, state.skipped.dtype) == (
      jnp.float32, jnp.int32, jnp.int32)
  update = jax.jit(tx.update)
  for _ in range(5):
    _, state = update(jnp.full(2, jnp.inf), state, w)
  assert float(state.scale) == 2.0 and int(state.skipped) == 5


def test_no_retrace_and_stable_structure_under_chain_and_extra_args():
  traces = []
  tx = loss_scale(optax.chain(optax.clip_by_global_norm(1.0), jopt.sgd(0.1)), 8.0,
                  growth_interval=1)

  @jax.jit
  def update(g, s, p):
    traces.append(1)
    return tx.update(g, s, p, unused_extra=1.0)

  p = {"a": jnp.ones(2), "b": jnp.zeros(3)}
  s = tx.init(p)
  struct = jax.tree.structure(s)
  for bad in (False, True, False):
    g = jax.tree.map(lambda x: jnp.full(x.shape, np.inf if bad else 8.0), p)
    _, s = update(g, s, p)
    assert jax.tree.structure(s) == struct
  assert len(traces) == 1


def test_all_finite():
  assert bool(all_finite({}))
  assert bool(all_finite({"a": jnp.ones(2), "b": [jnp.zeros(3, jnp.bfloat16)]}))
  assert not bool(all_finite({"a": jnp.ones(2), "b": [jnp.asarray([1.0, np.nan])]}))


# ---------------------------------------------------------------- shard_map agreement

@pytest.mark.parametrize("agree", [True, False])
def test_overflow_on_one_device_skips_every_device(agree):
  assert len(jax.devices()) == NDEV
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  tx = loss_scale(jopt.adam(0.1), 2.0 ** 8, growth_interval=5,
                  axis_name="data" if agree else None)
  w = jnp.ones(4, jnp.float32)

  def local(w, grads):
    state = tx.init(w)
    _, state = tx.update(grads[0] * state.scale, state, w)   # a finite first step
    poisoned = jnp.where(jax.lax.axis_index("data") == 3, jnp.inf, 1.0) * grads[0]
    _, state = tx.update(poisoned * state.scale, state, w)
    return jax.tree.map(lambda x: x[None], state)

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                            out_specs=P("data")))
  grads = jnp.arange(1.0, 1.0 + 4 * NDEV, dtype=jnp.float32).reshape(NDEV, 4) * 1e-2
  state = f(w, grads)
  skipped = np.asarray(state.skipped)
  count = np.asarray(state.inner_state.count)
  scale = np.asarray(state.scale)
  if agree:
    np.testing.assert_array_equal(skipped, np.ones(NDEV))
    np.testing.assert_array_equal(count, np.ones(NDEV))
    np.testing.assert_array_equal(scale, np.full(NDEV, 2.0 ** 7, np.float32))
  else:   # each device decides alone: only device 3 skips
    np.testing.assert_array_equal(skipped, np.eye(NDEV)[3])
    np.testing.assert_array_equal(count, 2 - np.eye(NDEV)[3])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_a_half_precision_scale_is_refused(dtype):
  with pytest.raises(TypeError, match=f"loss_scale: initial_scale has dtype {jnp.dtype(dtype)},"
                                      " but the loss scale must be float32"):
    loss_scale(optax.sgd(0.1), jnp.asarray(1024.0, dtype))
  with pytest.raises(TypeError, match="must be float32"):
    loss_scale(optax.sgd(0.1), np.float16(1024.0))
  # 32- and 64-bit scalars are fine and stored as float32
  for value in (np.float64(8.0), jnp.asarray(8.0, jnp.float32), 8, np.int32(8)):
    assert loss_scale(optax.sgd(0.1), value).init(jnp.ones(1)).scale.dtype == jnp.float32


@pytest.mark.parametrize("kwargs,exc,message", [
    ({"initial_scale": 0.0}, ValueError, "initial_scale=0.0 is outside"),
    ({"initial_scale": -4.0}, ValueError, "initial_scale=-4.0 is outside"),
    ({"initial_scale": float("inf")}, ValueError, "initial_scale=inf is outside"),
    ({"initial_scale": float("nan")}, ValueError, "initial_scale=nan is outside"),
    ({"initial_scale": 1e39}, ValueError, "initial_scale=1e+39 is outside"),
    ({"initial_scale": "big"}, TypeError, "initial_scale must be a real number"),
    ({"growth_factor": 1.0}, ValueError, "growth_factor=1.0 is outside the accepted range (1.0"),
    ({"growth_factor": 0.5}, ValueError, "growth_factor=0.5 is outside"),
    ({"backoff_factor": 0.0}, ValueError,
     "backoff_factor=0.0 is outside the accepted range (0.0, 1.0)"),
    ({"backoff_factor": 1.0}, ValueError, "backoff_factor=1.0 is outside"),
    ({"backoff_factor": 2.0}, ValueError, "backoff_factor=2.0 is outside"),
    ({"growth_interval": 0}, ValueError, "growth_interval=0 must be an integer >= 1"),
    ({"growth_interval": 2.5}, TypeError, "growth_interval=2.5 must be an integer >= 1"),
    ({"growth_interval": 2 ** 31}, ValueError,
     "growth_interval=2147483648 must be <= 2**31 - 1"),
    ({"min_scale": 0.0}, ValueError, "min_scale=0.0 is outside"),
    ({"initial_scale": 0.5}, ValueError, "initial_scale=0.5 is below min_scale=1.0"),
    ({"dynamic": "yes"}, TypeError, "dynamic must be True or False"),
    ({"axis_name": 3}, TypeError, "axis_name must be a mesh axis name"),
])
def test_bad_arguments_name_themselves(kwargs, exc, message):
  with pytest.raises(exc) as err:
    loss_scale(optax.sgd(0.1), **kwargs)
  assert str(err.value).startswith("loss_scale: ")
  assert message in str(err.value), str(err.value)


def test_static_scaling_may_sit_below_the_floor_and_wrong_state_is_refused():
  assert float(loss_scale(optax.sgd(0.1), 0.5, dynamic=False).init(jnp.ones(1)).scale) == 0.5
  tx = loss_scale(optax.sgd(0.1))
  with pytest.raises(TypeError, match="state must be the LossScaleState"):
    tx.update(jnp.ones(1), optax.sgd(0.1).init(jnp.ones(1)), jnp.ones(1))
  with pytest.raises(TypeError, match="initial_scale is a traced value"):
    jax.jit(lambda s: loss_scale(optax.sgd(0.1), s).init(jnp.ones(1)).scale)(4.0)
  assert isinstance(tx.init(jnp.ones(1)), LossScaleState)
