"""Mixed-precision training end to end, with mixed_precision_step.

* float16 underflow: a regression MLP whose loss carries a factor 1e-7, so every
  float16 cotangent is below float16's smallest subnormal (6e-8). Without
  scaling all its gradients are exactly zero and it does not train; with the
  default dynamic loss scale it reaches float32's final loss (measured relative
  gap 0.33% with the defaults, 0.3% with growth every 50 steps).
* bfloat16 compute with float32 master weights tracks float32 training of the
  64-128-10 digits MLP: measured test accuracy 95.82% for both (500 Adam steps).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt.precision import get_policy, loss_scale, mixed_precision_step
from jopt.training import accuracy, init_mlp, load_digits
from jopt.training import loss_fn as digits_loss

TINY = np.float32(1e-7)


def _regression():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  y = (np.sin(1.5 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]
       + 0.1 * rng.normal(size=(256, 1))).astype(np.float32)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = {"l1": {"w": jax.random.normal(k1, (8, 32)) * np.float32(0.35), "b": jnp.zeros(32)},
            "l2": {"w": jax.random.normal(k2, (32, 1)) * np.float32(0.18), "b": jnp.zeros(1)}}
  return params, (jnp.asarray(x), jnp.asarray(y))


def _tiny_loss(p, batch):
  x, y = batch
  h = jnp.tanh(x.astype(p["l1"]["w"].dtype) @ p["l1"]["w"] + p["l1"]["b"])
  out = (h @ p["l2"]["w"] + p["l2"]["b"]).astype(jnp.float32)   # float32 output
  return jnp.mean((out - y) ** 2) * TINY


def _train(policy, tx, params, batch, steps):
  step = mixed_precision_step(_tiny_loss, tx, policy)
  state = tx.init(params)
  for _ in range(steps):
    params, state, metrics = step(params, state, batch)
  return float(_tiny_loss(params, batch) / TINY), state, metrics


def test_fp16_gradients_underflow_without_scaling_and_train_with_dynamic_scaling(record_property):
  params, batch = _regression()
  policy = get_policy("mixed_float16")
  g16 = jax.grad(lambda p: _tiny_loss(policy.cast_to_compute(p), batch))(params)
  g32 = jax.grad(_tiny_loss)(params, batch)
  flat16 = np.concatenate([np.ravel(g) for g in jax.tree.leaves(g16)])
  flat32 = np.concatenate([np.ravel(g) for g in jax.tree.leaves(g32)])
  assert flat16.dtype == np.float32            # gradients of the float32 masters
  assert np.all(flat16 == 0.0)                 # every float16 cotangent flushed to zero
  assert np.count_nonzero(flat32) == flat32.size and np.abs(flat32).max() > 1e-7

  opt = jopt.adam(1e-2, eps=1e-12)
  steps = 400
  f32, _, _ = _train("float32", loss_scale(opt, 1.0, dynamic=False), params, batch, steps)
  unscaled, s_u, _ = _train("mixed_float16", loss_scale(opt, 1.0, dynamic=False), params,
                            batch, steps)
  scaled, s_d, m = _train("mixed_float16", loss_scale(opt), params, batch, steps)
  grown, s_g, _ = _train("mixed_float16", loss_scale(opt, growth_interval=50), params,
                         batch, steps)
  initial = float(_tiny_loss(params, batch) / TINY)
  gap = abs(scaled - f32) / f32
  gap_grown = abs(grown - f32) / f32
  record_property("fp16_dynamic_rel_gap", gap)
  record_property("fp16_growing_rel_gap", gap_grown)
  assert f32 < 0.05 * initial                  # float32 trains
  assert unscaled == initial                   # zero gradients: Adam never moves
  assert gap <= 0.01 and gap_grown <= 0.01, (f32, scaled, grown)
  assert float(s_d.scale) == 2.0 ** 16 and int(s_d.skipped) == 0
  assert float(s_g.scale) > 2.0 ** 16          # the scale grew (steps / 50 times at most)
  assert m["scale"].dtype == jnp.float32 and bool(m["finite"])


def _digits_run(policy, steps=500, seed=0):
  data = load_digits()
  tx = loss_scale(jopt.adam(1e-3), 1.0, dynamic=False)
  step = mixed_precision_step(digits_loss, tx, policy)
  params = init_mlp(jax.random.key(seed), (64, 128, 10))
  state = tx.init(params)
  batches = data.train.batches(128, seed=seed)
  for _ in range(steps):
    params, state, metrics = step(params, state, next(batches))
  x, y = data.test.arrays()
  compute = get_policy(policy).cast_to_compute(params)
  return (100 * float(accuracy(params, x, y)), 100 * float(accuracy(compute, x, y)),
          float(metrics["loss"]), params)


def test_bf16_compute_with_float32_masters_tracks_float32_on_digits(record_property):
  acc32, _, loss32, p32 = _digits_run("float32")
  acc16, acc16_bf16_eval, loss16, p16 = _digits_run("mixed_bfloat16")
  record_property("digits_acc_float32", acc32)
  record_property("digits_acc_bf16_compute", acc16)
  record_property("digits_acc_bf16_compute_bf16_eval", acc16_bf16_eval)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p16))   # masters stay float32
  assert acc32 > 93.0
  assert abs(acc16 - acc32) <= 0.5 and abs(acc16_bf16_eval - acc32) <= 0.5, (acc32, acc16)
  assert abs(loss16 - loss32) <= 0.1 * loss32
  # bfloat16 really ran: the trajectories differ
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p16)))


def test_step_casts_params_keeps_norms_in_float32_and_skips_overflow():
  seen = {}

  def loss(p, batch):
    seen.update(jax.tree.map(lambda x: x.dtype, p))
    h = batch.astype(p["w"].dtype) @ p["w"]
    mean = jnp.mean(h.astype(jnp.float32), axis=-1, keepdims=True)
    return jnp.mean(((h.astype(jnp.float32) - mean) * p["ln"]["scale"]) ** 2)

  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "ln": {"scale": jnp.ones(4, jnp.float32)}}
  tx = loss_scale(jopt.sgd(0.1), 2.0 ** 4)
  step = mixed_precision_step(loss, tx, "mixed_float16")
  state = tx.init(params)
  x = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  new, state, m = step(params, state, x)
  assert seen == {"w": jnp.float16, "ln": {"scale": jnp.float32}}
  assert bool(m["finite"]) and float(m["scale"]) == 16.0 and m["loss"].dtype == jnp.float32
  assert not np.array_equal(new["w"], params["w"])
  # an input that overflows float16 makes the step skip: params unchanged, scale halved
  again, state2, m2 = step(new, state, x * 1e5)
  assert not bool(m2["finite"]) and int(m2["skipped"]) == 1
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(new)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(state2.scale) == 8.0


def test_step_aux_and_bad_input():
  def loss(p, batch):
    return jnp.sum(p["w"].astype(jnp.float32) * batch), {"n": batch.shape[0]}

  params = {"w": jnp.ones(3)}
  tx = loss_scale(jopt.sgd(0.1))
  step = mixed_precision_step(loss, tx, get_policy("mixed_bfloat16"), has_aux=True, jit=False)
  _, _, m = step(params, tx.init(params), jnp.ones(3))
  assert m["aux"] == {"n": 3}
  with pytest.raises(TypeError, match="state is a SgdState, not a LossScaleState"):
    step(params, jopt.sgd(0.1).init(params), jnp.ones(3))
  with pytest.raises(TypeError, match=r"params/w is bfloat16, but the policy keeps"
                                      r" parameters in float32"):
    step({"w": jnp.ones(3, jnp.bfloat16)}, tx.init(params), jnp.ones(3))
  vec = mixed_precision_step(lambda p, b: p["w"] * b, tx, "float32")
  with pytest.raises(ValueError, match="loss_fn must return a scalar loss, got shape"):
    vec(params, tx.init(params), jnp.ones(3))
  with pytest.raises(ValueError, match="get_policy: unknown dtype 'bf17'"):
    mixed_precision_step(loss, tx, "c=bf17")
  with pytest.raises(TypeError, match="keep_float32 must be a regex string"):
    mixed_precision_step(loss, tx, "mixed_bfloat16", keep_float32=1)
  with pytest.raises(TypeError, match="tx must be an optax transform"):
    mixed_precision_step(loss, "adam", "mixed_bfloat16")
