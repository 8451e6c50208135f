"""Flax, first-class: every registry optimizer inside ``nnx.Optimizer`` and a Linen ``TrainState``.

Each optimizer is driven twice from the same initial parameters: once through
Flax (``nnx.Optimizer.update`` under ``nnx.jit``, or ``TrainState.apply_gradients``
under ``jax.jit``) and once by hand in plain JAX on a pure dict of the same
parameters. The two runs must agree bit for bit, parameters and optimizer state:
Flax's wrappers change nothing. jopt keeps its hyperparameters in the state, so
``nnx.Optimizer`` wraps them in ``OptArray`` variables like every other state
leaf; ``jopt.set_hyperparams`` reaches them through ``nnx.as_pure`` and
``nnx.update`` without retracing the jitted step.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import jopt
from tests.registry import all_entries

ENTRIES = all_entries()
BY_NAME = {e.name: e for e in ENTRIES}
STEPS = 6

# The registry's args are tuned for the quadratic problem; at learning_rate=1.0
# LARS overshoots on the zero-initialised biases of this small net and its loss
# rises. Nothing else is overridden.
_OVERRIDES = {"lars": dict(learning_rate=0.1)}

_rng = np.random.default_rng(0)
X = jnp.asarray(_rng.normal(size=(16, 4)), jnp.float32)
Y = jnp.asarray(_rng.normal(size=(16, 3)), jnp.float32)


@functools.lru_cache(maxsize=None)
def _tx(name):
  """One optimizer per entry, shared by the tests so that each jitted step compiles once."""
  return BY_NAME[name].make(**_OVERRIDES.get(name, {}))


def _base_lr(entry):
  return {**entry.args, **_OVERRIDES.get(entry.name, {})}["learning_rate"]


class _Net(nnx.Module):
  """Two dense layers (2-D kernels for the matrix optimizers) and a 1-D scale."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 6, rngs=rngs)
    self.l2 = nnx.Linear(6, 3, rngs=rngs)
    self.scale = nnx.Param(jnp.full((3,), 1.5, jnp.float32))

  def __call__(self, x):
    return self.l2(jnp.tanh(self.l1(x))) * self.scale


def _nnx_loss(model):
  return jnp.mean((model(X) - Y) ** 2)


def _pure_loss(p):
  """The same network written out on a pure dict of parameters."""
  h = jnp.tanh(X @ p["l1"]["kernel"] + p["l1"]["bias"])
  out = (h @ p["l2"]["kernel"] + p["l2"]["bias"]) * p["scale"]
  return jnp.mean((out - Y) ** 2)


def _leaves_by_path(tree):
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(k): v for k, v in flat}


def _assert_bit_equal(got, want):
  """Same leaf paths (whatever the containers: nnx.State or dict), dtypes, shapes, bits."""
  g, w = _leaves_by_path(got), _leaves_by_path(want)
  assert sorted(g) == sorted(w)
  for k in w:
    a, b = np.asarray(g[k]), np.asarray(w[k])
    assert (a.dtype, a.shape) == (b.dtype, b.shape), k
    assert a.tobytes() == b.tobytes(), (k, a, b)


def _variables_in(tree):
  is_var = lambda x: isinstance(x, nnx.Variable)
  return [x for x in jax.tree.leaves(tree, is_leaf=is_var) if is_var(x)]


_NNX_TRACES = []  # one entry per trace of _nnx_step


@nnx.jit
def _nnx_step(model, optimizer):
  _NNX_TRACES.append(None)  # runs only while tracing
  loss, grads = nnx.value_and_grad(_nnx_loss)(model)
  optimizer.update(model, grads)
  return loss


def _plain_step_for(tx, loss):
  @jax.jit
  def step(p, s):
    grads = jax.grad(loss)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s
  return step


@functools.lru_cache(maxsize=None)
def _plain_step(name):
  """The same optimizer driven by hand: grads of the pure loss, update, apply."""
  return _plain_step_for(_tx(name), _pure_loss)


def _set_lr(optimizer, value):
  """The README's recipe: set a hyperparameter held in an nnx.Optimizer's state."""
  state = jopt.set_hyperparams(nnx.as_pure(optimizer.opt_state), learning_rate=value)
  nnx.update(optimizer.opt_state, nnx.state(state))


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_nnx_optimizer_matches_plain_jax(entry):
  model = _Net(nnx.Rngs(0))
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, _tx(entry.name), wrt=nnx.Param)
  first = float(_nnx_step(model, optimizer))
  for _ in range(STEPS - 1):
    _nnx_step(model, optimizer)
  assert float(_nnx_loss(model)) < first
  assert int(optimizer.step[...]) == STEPS

  s, plain_step = _tx(entry.name).init(p), _plain_step(entry.name)
  assert float(_pure_loss(p)) == first  # the same function of the same parameters
  for _ in range(STEPS):
    p, s = plain_step(p, s)
  _assert_bit_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), p)
  _assert_bit_equal(nnx.as_pure(optimizer.opt_state), s)


@pytest.mark.parametrize("name", ["adamw", "lars", "muon"])
def test_nnx_optimizer_hands_update_the_current_params(name):
  """Decoupled weight decay, trust ratios and Muon's shapes need ``params``."""
  tx, seen = _tx(name), []

  def update(grads, state, params=None, **extra):
    seen.append(params)
    return tx.update(grads, state, params, **extra)

  model = _Net(nnx.Rngs(0))
  before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, optax.GradientTransformationExtraArgs(tx.init, update),
                            wrt=nnx.Param)
  optimizer.update(model, nnx.grad(_nnx_loss)(model))  # eagerly: seen holds arrays
  assert len(seen) == 1 and seen[0] is not None
  assert not _variables_in(seen[0])
  _assert_bit_equal(seen[0], before)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_nnx_set_hyperparams_takes_effect_without_retracing(entry):
  lr0 = _base_lr(entry)
  lr1 = lr0 * 0.25
  model = _Net(nnx.Rngs(0))
  p0 = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, _tx(entry.name), wrt=nnx.Param)
  _nnx_step(model, optimizer)  # traces, unless an earlier test already did
  traces = len(_NNX_TRACES)
  for _ in range(2):
    _nnx_step(model, optimizer)
  _set_lr(optimizer, lr1)
  got = jopt.hyperparams(nnx.as_pure(optimizer.opt_state))["learning_rate"]
  assert float(got) == float(jnp.asarray(lr1, got.dtype))
  assert isinstance(optimizer.opt_state.hyperparams["learning_rate"], nnx.OptState)
  for _ in range(3):
    _nnx_step(model, optimizer)
  assert len(_NNX_TRACES) == traces, "changing a hyperparameter retraced the nnx.jit step"

  # By hand: the same change in plain JAX, and a run without it.
  tx, plain_step = _tx(entry.name), _plain_step(entry.name)
  runs = {}
  for change in (True, False):
    p, s = p0, tx.init(p0)
    for i in range(6):
      if change and i == 3:
        s = jopt.set_hyperparams(s, learning_rate=lr1)
      p, s = plain_step(p, s)
    runs[change] = (p, s)
  _assert_bit_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), runs[True][0])
  _assert_bit_equal(nnx.as_pure(optimizer.opt_state), runs[True][1])
  unchanged = _leaves_by_path(runs[False][0])
  assert any(not np.array_equal(v, unchanged[k])
             for k, v in _leaves_by_path(runs[True][0]).items()), "the change had no effect"


def test_nnx_schedule_driven_hyperparameter_is_updated_in_place():
  schedule = jopt.linear_schedule(0.1, 0.01, 10)
  model = _Net(nnx.Rngs(0))
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, jopt.adamw(schedule, weight_decay=1e-2), wrt=nnx.Param)
  for _ in range(4):
    _nnx_step(model, optimizer)
  lr = jopt.hyperparams(nnx.as_pure(optimizer.opt_state))["learning_rate"]
  assert float(lr) == float(jnp.asarray(schedule(3), lr.dtype))  # the value the 4th step used
  # hyperparams also reads the wrapped opt_state directly, giving plain arrays
  direct = jopt.hyperparams(optimizer.opt_state)["learning_rate"]
  assert isinstance(direct, jax.Array) and float(direct) == float(lr)

  tx = jopt.adamw(schedule, weight_decay=1e-2)
  s, plain_step = tx.init(p), _plain_step_for(tx, _pure_loss)
  for _ in range(4):
    p, s = plain_step(p, s)
  _assert_bit_equal(nnx.to_pure_dict(nnx.state(model, nnx.Param)), p)
  _assert_bit_equal(nnx.as_pure(optimizer.opt_state), s)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_init_unwraps_nnx_variables(entry):
  model = _Net(nnx.Rngs(0))
  wrapped = nnx.state(model, nnx.Param)
  assert _variables_in(wrapped)  # the leaves really are nnx.Param variables
  pure = nnx.as_pure(wrapped)
  tx = _tx(entry.name)
  state = tx.init(wrapped)
  assert not _variables_in(state), "tx.init kept nnx.Variable wrappers in its state"
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))
  # the state is the one init builds from the plain arrays, slot for slot
  _assert_bit_equal(state, tx.init(pure))
  param_paths = sorted(_leaves_by_path(pure))
  for field in state._fields[2:]:  # after count and hyperparams: the slots
    slot = getattr(state, field)
    if not isinstance(slot, jax.Array):  # a per-parameter tree, not a scalar like weight_sum
      assert sorted(_leaves_by_path(slot)) == param_paths, field


class _LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.tanh(nn.Dense(6)(x))
    scale = self.param("scale", lambda _, shape: jnp.full(shape, 1.5, jnp.float32), (3,))
    return nn.Dense(3)(h) * scale


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_linen_train_state_matches_plain_jax(entry):
  net = _LinenNet()
  params = net.init(jax.random.key(0), X)["params"]
  loss = lambda p: jnp.mean((net.apply({"params": p}, X) - Y) ** 2)
  state = train_state.TrainState.create(apply_fn=net.apply, params=params, tx=_tx(entry.name))

  traces = []

  @jax.jit
  def step(state):
    traces.append(None)  # runs only while tracing
    grads = jax.grad(loss)(state.params)
    return state.apply_gradients(grads=grads)

  first = float(loss(state.params))
  lr1 = _base_lr(entry) * 0.5
  for i in range(STEPS):
    if i == STEPS // 2:  # a hyperparameter change on a TrainState: replace its opt_state
      state = state.replace(opt_state=jopt.set_hyperparams(state.opt_state, learning_rate=lr1))
    state = step(state)
  assert len(traces) == 1, "changing a hyperparameter retraced the jitted step"
  assert float(loss(state.params)) < first
  assert int(state.step) == STEPS

  tx = _tx(entry.name)
  p, s, plain_step = params, tx.init(params), _plain_step_for(tx, loss)
  for i in range(STEPS):
    if i == STEPS // 2:
      s = jopt.set_hyperparams(s, learning_rate=lr1)
    p, s = plain_step(p, s)
  _assert_bit_equal(state.params, p)
  _assert_bit_equal(state.opt_state, s)
