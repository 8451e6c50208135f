"""The regularizers in three training loops: plain JAX, Flax NNX, Flax Linen.

Each case is run from the same initial parameters (a) by hand in a jitted
plain-JAX step on a pure dict, (b) through ``nnx.Optimizer`` under
``nnx.jit`` (penalties on ``nnx.state(model, nnx.Param)`` in the loss;
``value=`` passed to ``optimizer.update``, which flax 0.12 forwards to
``tx.update``), and (c) with a Linen module and ``TrainState``, whose
``apply_gradients`` forwards no extra keywords: ``value=`` needs the explicit
``tx.update`` + ``optax.apply_updates`` + ``replace`` recipe. The three runs
must agree bit for bit.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import jopt
from jopt.regularizers import (early_stopping, early_stopping_state, elastic_net_penalty,
                               l1_penalty, l2_penalty, proximal_l1, stop_requested)

_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(16, 4)), jnp.float32)
Y = jnp.asarray(_rng.normal(size=(16, 3)), jnp.float32)
STEPS = 8
# a validation curve that improves for three checks, then stalls: patience=2 stops
# at check 4 and restores the params of check 2
VALUES = jnp.asarray([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9], jnp.float32)


def _penalties(p):
  return (l1_penalty(p, strength=1e-3) + l2_penalty(p, strength=1e-2)
          + elastic_net_penalty(p, True, l1=1e-4, l2=1e-4))


CASES = {
    # name: (transform, penalized loss?, early stopping?)
    "penalties": (lambda: jopt.sgd(0.1), True, False),
    "proximal_l1": (lambda: optax.chain(jopt.sgd(0.1), proximal_l1(0.5, learning_rate=0.1)),
                    False, False),
    "early_stopping": (lambda: optax.chain(
        jopt.adam(0.05), early_stopping(patience=2, restore_best=True)), False, True),
}


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 6, rngs=rngs)
    self.l2 = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(jnp.tanh(self.l1(x)))


class _LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="l2")(jnp.tanh(nn.Dense(6, name="l1")(x)))


def _pure_forward(p, x):
  h = jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"])
  return h @ p["l2"]["kernel"] + p["l2"]["bias"]


def _mse(out):
  return jnp.mean((out - Y) ** 2)


def _leaves_by_path(tree):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


def _max_diff(a, b):
  a, b = _leaves_by_path(a), _leaves_by_path(b)
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _same_bits(a, b):
  a, b = _leaves_by_path(a), _leaves_by_path(b)
  assert sorted(a) == sorted(b)
  return all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


def _init_params():
  return nnx.to_pure_dict(nnx.state(_Net(nnx.Rngs(0)), nnx.Param))


def _plain(name):
  make, penalized, _ = CASES[name]
  tx = make()
  loss = lambda p: _mse(_pure_forward(p, X)) + (_penalties(p) if penalized else 0.0)  # noqa: E731

  @jax.jit
  def step(p, s, value):
    u, s = tx.update(jax.grad(loss)(p), s, p, value=value)
    return optax.apply_updates(p, u), s

  p = _init_params()
  s = tx.init(p)
  history = []
  for t in range(STEPS):
    history.append(p)
    p, s = step(p, s, VALUES[t])
  return p, s, history


def _nnx(name):
  make, penalized, _ = CASES[name]
  model = _Net(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, make(), wrt=nnx.Param)

  def loss(m):
    out = _mse(m(X))
    return out + _penalties(nnx.state(m, nnx.Param)) if penalized else out

  @nnx.jit
  def step(model, optimizer, value):
    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads, value=value)  # extra keywords reach tx.update

  for t in range(STEPS):
    step(model, optimizer, VALUES[t])
  return nnx.to_pure_dict(nnx.state(model, nnx.Param)), optimizer


def _linen(name):
  make, penalized, _ = CASES[name]
  net = _LinenNet()
  params = net.init(jax.random.key(1), X)["params"]
  # start from the same numbers as the other two runs
  params = jax.tree.map(lambda _, v: v, params, _init_params())
  state = train_state.TrainState.create(apply_fn=net.apply, params=params, tx=make())

  def loss(p):
    out = _mse(state.apply_fn({"params": p}, X))
    return out + _penalties(p) if penalized else out

  @jax.jit
  def step(state, value):
    grads = jax.grad(loss)(state.params)
    # TrainState.apply_gradients would call tx.update without value=: do it by hand
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=value)
    return state.replace(step=state.step + 1, opt_state=opt_state,
                         params=optax.apply_updates(state.params, updates))

  for t in range(STEPS):
    state = step(state, VALUES[t])
  return state


@pytest.mark.parametrize("name", sorted(CASES))
def test_three_frameworks_agree(name):
  p_plain, s_plain, history = _plain(name)
  p_nnx, optimizer = _nnx(name)
  linen = _linen(name)
  d_nnx = _max_diff(p_nnx, p_plain)
  d_linen = _max_diff(linen.params, p_plain)
  assert d_nnx == 0.0 and d_linen == 0.0, (d_nnx, d_linen)  # measured: bit for bit
  assert _same_bits(nnx.as_pure(optimizer.opt_state), s_plain)
  assert _same_bits(linen.opt_state, s_plain)
  assert _max_diff(p_plain, history[0]) > 1e-3  # training moved the params
  if name == "proximal_l1":
    kernels = [p_plain["l1"]["kernel"], p_plain["l2"]["kernel"]]
    assert sum(int(jnp.sum(k == 0.0)) for k in kernels) > 0  # exact zeros...
    assert int(jnp.sum(p_plain["l1"]["bias"] == 0.0)) == 0  # ...in kernels only
  if name == "early_stopping":
    for opt_state in (s_plain, optimizer.opt_state, linen.opt_state):
      assert bool(stop_requested(opt_state))
      es = early_stopping_state(opt_state)
      assert (int(es.best_step), int(es.stopped_step)) == (2, 4)
    assert _max_diff(p_plain, history[2]) == 0.0  # restored exactly, and stayed there


def test_linen_apply_gradients_cannot_pass_value():
  net = _LinenNet()
  params = net.init(jax.random.key(1), X)["params"]
  state = train_state.TrainState.create(apply_fn=net.apply, params=params,
                                        tx=CASES["early_stopping"][0]())
  grads = jax.tree.map(jnp.zeros_like, params)
  with pytest.raises(TypeError, match="needs the monitored metric"):
    state.apply_gradients(grads=grads)


def test_nnx_stop_flag_and_set_hyperparams_without_retrace():
  model = _Net(nnx.Rngs(0))
  tx = optax.chain(jopt.sgd(0.1), proximal_l1(0.0, learning_rate=0.1),
                   early_stopping(patience=0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  traces = []

  @nnx.jit
  def step(model, optimizer, value, check):
    traces.append(None)
    optimizer.update(model, nnx.grad(lambda m: _mse(m(X)))(model), value=value, check=check)

  step(model, optimizer, jnp.asarray(1.0, jnp.float32), jnp.asarray(True))
  flag = stop_requested(optimizer.opt_state)
  assert isinstance(flag, jax.Array) and not bool(flag)
  pure = jopt.set_hyperparams(nnx.as_pure(optimizer.opt_state), l1_strength=1.0)
  nnx.update(optimizer.opt_state, nnx.state(pure))
  step(model, optimizer, jnp.asarray(2.0, jnp.float32), jnp.asarray(False))  # no check
  kernel = model.l1.kernel.get_value()
  assert int(jnp.sum(kernel == 0.0)) > 0  # the new threshold took effect
  assert not bool(stop_requested(optimizer.opt_state))
  step(model, optimizer, jnp.asarray(2.0, jnp.float32), jnp.asarray(True))
  assert bool(stop_requested(optimizer.opt_state))
  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  step(model, optimizer, jnp.asarray(0.0, jnp.float32), jnp.asarray(True))
  assert _max_diff(nnx.to_pure_dict(nnx.state(model, nnx.Param)), before) == 0.0
  assert len(traces) == 1
