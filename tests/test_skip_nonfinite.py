"""skip_nonfinite: NaN and Inf injected into the gradients of every transform never reach params.

The reliability test of issue 12: every optimizer of the registry, pruning, QAT,
early stopping, gradient accumulation and loss scaling (alone, and with
skip_nonfinite inside it) runs 8 steps with NaN, +Inf and -Inf injected into a
random leaf at random steps (the first step, two steps in a row, one more). After
every step params and state are finite; after a bad step the params and the inner
state are bit-identical to the last good step's; after a good step they are bit
for bit those of the unwrapped transform fed only the good steps. The wrapper
is also compared with ``optax.apply_if_finite``, the independent reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import jopt
from jopt.precision import loss_scale
from jopt.wrappers.skip_nonfinite import SkipNonfiniteState, skip_nonfinite
from tests.registry import all_entries

STEPS = 8
KINDS = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}
SHAPES = {"w": (3, 4), "b": (4,), "s": ()}


def _params():
  rng = np.random.default_rng(0)
  return {k: jnp.asarray(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}


def _plan(seed: int) -> dict[int, tuple[str, str, np.ndarray]]:
  """Bad steps -> (kind, leaf, boolean mask of poisoned entries): step 0, a pair, one more."""
  rng = np.random.default_rng(seed)
  k = int(rng.integers(2, STEPS - 2))
  steps = {0, k, k + 1}
  steps.add(int(rng.choice([s for s in range(1, STEPS) if s not in steps and s != k - 1])))
  kinds = list(rng.permutation(list(KINDS)))
  kinds.append(str(rng.choice(list(KINDS))))
  plan = {}
  for step, kind in zip(sorted(steps), kinds):
    leaf = str(rng.choice(list(SHAPES)))
    mask = rng.random(SHAPES[leaf]) < 0.5
    if not mask.any():
      mask = np.ones(SHAPES[leaf], bool)
    plan[step] = (kind, leaf, np.asarray(mask))
  return plan


def _poison(grads, bad):
  kind, leaf, mask = bad
  out = dict(grads)
  out[leaf] = jnp.where(jnp.asarray(mask), jnp.asarray(KINDS[kind], jnp.float32), grads[leaf])
  return out


_RNG = np.random.default_rng(1)
GRADS = [{k: jnp.asarray(_RNG.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}
         for _ in range(STEPS)]
VALUES = [jnp.asarray(v, jnp.float32) for v in _RNG.uniform(0.5, 1.5, STEPS)]
TARGETS = [{k: jnp.asarray(_RNG.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}
           for _ in range(STEPS)]


@jax.jit
def _qat_grads(params, target):
  def loss(p):
    q = jopt.quant.fake_quant_params(p)   # the (3, 4) kernel is fake-quantized to 8 bits
    return sum(jnp.sum((q[k] - target[k]) ** 2) for k in q)
  return jax.grad(loss)(params)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  cls: str                                     # the class of transform, for the counts
  make: Callable[[], Any]                      # the unwrapped transform
  wrap: Callable[[Any], Any] = skip_nonfinite  # how skip_nonfinite goes on
  grads: Callable[[Any, int], Any] = lambda p, t: GRADS[t]
  scaled: bool = False                         # feed grads * state.scale (loss scaling)
  extra: Callable[[int], dict] = lambda t: {}
  inner: Callable[[Any], Any] = lambda s: s.inner_state   # the state the reference matches
  skipped: Callable[[Any], Any] = lambda s: s.skipped


CASES = [Case(e.name, "optimizer", e.make) for e in all_entries()] + [
    Case("prune(adam)", "prune", lambda: jopt.prune(jopt.adam(0.1), 0.5)),
    Case("qat(adam)", "qat", lambda: jopt.adam(0.1),
         grads=lambda p, t: _qat_grads(p, TARGETS[t])),
    Case("chain(adam, early_stopping)", "early_stopping",
         lambda: optax.chain(jopt.adam(0.1), jopt.early_stopping(patience=1)),
         extra=lambda t: {"value": VALUES[t]}),
    Case("accumulate(adam, 2)", "accumulate", lambda: jopt.accumulate(jopt.adam(0.1), 2)),
    # loss scaling skips by itself: the unwrapped reference is its inner adam
    Case("loss_scale(adam)", "loss_scale", lambda: jopt.adam(0.1),
         wrap=lambda tx: loss_scale(tx, 2.0 ** 4, growth_interval=2), scaled=True),
    Case("loss_scale(skip_nonfinite(adam))", "loss_scale", lambda: jopt.adam(0.1),
         wrap=lambda tx: loss_scale(skip_nonfinite(tx), 2.0 ** 4, growth_interval=2),
         scaled=True, inner=lambda s: s.inner_state.inner_state),
]


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_bitwise(a, b, what):
  la, lb = _leaves(a), _leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape, what
    assert np.array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8)), f"{what}: {x} != {y}"


ERRORS: dict[str, tuple[float, float]] = {}   # case -> (max abs, max rel) vs the unwrapped run
ATOL, RTOL = 1e-9, 1e-5   # measured: 1.2e-7 abs, 3.6e-6 rel at most (1 to a few ulp)


def _assert_close(a, b, what, case):
  """Integer leaves equal, floating leaves within ATOL + RTOL |b| (separately compiled programs
  may round differently in the last place); the largest errors are kept in ERRORS."""
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  worst = ERRORS.get(case, (0.0, 0.0))
  for x, y in zip(_leaves(a), _leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape, what
    if not np.issubdtype(x.dtype, np.inexact):
      assert np.array_equal(x, y), f"{what}: {x} != {y}"
      continue
    err = np.abs(x.astype(np.float64) - y.astype(np.float64))
    rel = err / np.maximum(np.abs(y.astype(np.float64)), 1e-30)
    worst = (max(worst[0], float(err.max(initial=0))), max(worst[1], float(rel.max(initial=0))))
    assert (err <= ATOL + RTOL * np.abs(y)).all(), f"{what}: {x} != {y}"
  ERRORS[case] = worst


def _assert_finite(state, init_state, what):
  """Every floating entry finite, or the non-finite value it had at init (early stopping's +inf)."""
  for x, x0 in zip(_leaves(state), _leaves(init_state)):
    if np.issubdtype(x.dtype, np.inexact):
      assert (np.isfinite(x) | (~np.isfinite(x0) & (x == x0))).all(), f"{what}: {x}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_nonfinite_gradients_never_reach_params_or_state(case):
  plan = _plan(CASES.index(case))
  tx, ref_tx = case.wrap(case.make()), case.make()

  @jax.jit   # one program, two independent computations: one compile per case
  def step(fed, state, params, extra, ref_grads, ref_state, ref_params):
    updates, state = tx.update(fed, state, params, **extra)
    ref_updates, ref_state = ref_tx.update(ref_grads, ref_state, ref_params, **extra)
    return (updates, state, optax.apply_updates(params, updates), ref_state,
            optax.apply_updates(ref_params, ref_updates))

  params = ref_params = _params()
  state, ref_state = tx.init(params), ref_tx.init(params)
  init_state = state
  for t in range(STEPS):
    grads = case.grads(params, t)
    fed = jax.tree.map(lambda g: g * state.scale, grads) if case.scaled else grads
    if t in plan:
      fed = _poison(fed, plan[t])
    # the reference's outputs are kept on good steps only: it never sees a bad step
    updates, new_state, new_params, next_ref_state, next_ref_params = step(
        fed, state, params, case.extra(t), case.grads(ref_params, t), ref_state, ref_params)
    assert all(np.isfinite(x).all() for x in _leaves(new_params)), (t, new_params)
    _assert_finite(new_state, init_state, f"step {t} state")
    if t in plan:
      _assert_bitwise(new_params, params, f"step {t} params")
      _assert_bitwise(case.inner(new_state), case.inner(state), f"step {t} inner state")
      assert int(case.skipped(new_state)) == int(case.skipped(state)) + 1
      for u in jax.tree.leaves(updates):
        assert not np.asarray(u).any()
    else:
      assert int(case.skipped(new_state)) == int(case.skipped(state))
      ref_state, ref_params = next_ref_state, next_ref_params
      _assert_close(new_params, ref_params, f"step {t} params vs the unwrapped run", case.name)
      _assert_close(case.inner(new_state), ref_state, f"step {t} state vs the unwrapped run",
                    case.name)
    params, state = new_params, new_state
  assert int(case.skipped(state)) == len(plan)
  print(case.cls, case.name, {t: plan[t][:2] for t in sorted(plan)}, "max abs/rel error",
        ERRORS.get(case.name))
  if isinstance(state, SkipNonfiniteState):
    run = next(n for n in range(STEPS + 1) if STEPS - 1 - n not in plan)
    assert int(state.consecutive) == run


@pytest.mark.parametrize("name", ["lion", "schedule_free_adamw"])
def test_unjitted_the_good_steps_are_the_unwrapped_run_bit_for_bit(name):
  # The last-place differences above come from compiling two programs, not from the
  # wrapper: run op by op (no jit), the wrapped run is the unwrapped one bit for bit.
  entry = {e.name: e for e in all_entries()}[name]
  tx, ref_tx = skip_nonfinite(entry.make()), entry.make()
  plan = _plan(5)
  params = ref_params = _params()
  state, ref_state = tx.init(params), ref_tx.init(params)
  for t in range(STEPS):
    grads = _poison(GRADS[t], plan[t]) if t in plan else GRADS[t]
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if t not in plan:
      ref_updates, ref_state = ref_tx.update(grads, ref_state, ref_params)
      ref_params = optax.apply_updates(ref_params, ref_updates)
    _assert_bitwise(params, ref_params, f"step {t} params")
    _assert_bitwise(state.inner_state, ref_state, f"step {t} state")


@pytest.mark.parametrize("name", ["adam", "lion", "sgd_momentum", "adafactor"])
def test_without_the_wrapper_the_same_gradients_ruin_the_params(name):
  entry = {e.name: e for e in all_entries()}[name]
  tx = entry.make()
  update = jax.jit(tx.update)
  params, state = _params(), tx.init(_params())
  plan = _plan(0)
  for t in range(STEPS):
    grads = _poison(GRADS[t], plan[t]) if t in plan else GRADS[t]
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert not all(np.isfinite(x).all() for x in _leaves(params))


# ---------------------------------------------------------------- against optax.apply_if_finite

def test_same_params_and_counters_as_optax_apply_if_finite():
  plan = _plan(3)
  ours = skip_nonfinite(jopt.adam(0.1))
  theirs = optax.apply_if_finite(jopt.adam(0.1), max_consecutive_errors=STEPS)

  @jax.jit
  def step(grads, s_ours, p_ours, s_theirs, p_theirs):
    u_ours, s_ours = ours.update(grads, s_ours, p_ours)
    u_theirs, s_theirs = theirs.update(grads, s_theirs, p_theirs)
    return (s_ours, optax.apply_updates(p_ours, u_ours), s_theirs,
            optax.apply_updates(p_theirs, u_theirs))

  p_ours = p_theirs = _params()
  s_ours, s_theirs = ours.init(p_ours), theirs.init(p_theirs)
  for t in range(STEPS):
    grads = _poison(GRADS[t], plan[t]) if t in plan else GRADS[t]
    s_ours, p_ours, s_theirs, p_theirs = step(grads, s_ours, p_ours, s_theirs, p_theirs)
    _assert_close(p_ours, p_theirs, f"step {t} params", "apply_if_finite")
    _assert_close(s_ours.inner_state, s_theirs.inner_state, f"step {t} state", "apply_if_finite")
    assert int(s_ours.skipped) == int(s_theirs.total_notfinite)
    assert int(s_ours.consecutive) == int(s_theirs.notfinite_count)
  assert int(s_ours.skipped) == len(plan)


def test_optax_gives_up_after_max_consecutive_errors_jopt_never_does():
  grads = {"w": jnp.asarray([1.0, np.nan])}
  params = {"w": jnp.ones(2)}
  theirs = optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=1)
  ours = skip_nonfinite(optax.sgd(0.1))
  s_theirs, s_ours = theirs.init(params), ours.init(params)
  for _ in range(3):
    u_theirs, s_theirs = theirs.update(grads, s_theirs, params)
    u_ours, s_ours = ours.update(grads, s_ours, params)
  assert np.isnan(np.asarray(u_theirs["w"])).any()      # optax applied the NaN step
  assert not np.asarray(u_ours["w"]).any() and int(s_ours.consecutive) == 3


# ---------------------------------------------------------------- the output checks

def _one_step(tx, grads, params):
  state = tx.init(params)
  updates, new_state = tx.update(grads, state, params)
  return updates, state, new_state


@pytest.mark.parametrize("check_outputs", [True, False])
def test_finite_gradients_that_overflow_adams_second_moment(check_outputs):
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.asarray([1.0, 2e19, 1.0], jnp.float32)}   # g**2 = 4e38 > float32 max
  updates, state, new = _one_step(skip_nonfinite(jopt.adam(0.1), check_outputs=check_outputs),
                                  grads, params)
  nu = np.asarray(new.inner_state.nu["w"])
  if check_outputs:
    assert int(new.skipped) == 1 and not np.asarray(updates["w"]).any()
    _assert_bitwise(new.inner_state, state.inner_state, "inner state")
  else:   # gradients only: the step is taken and an Inf enters the state
    assert int(new.skipped) == 0 and np.isinf(nu).any()


@pytest.mark.parametrize("check_outputs", [True, False])
def test_an_update_that_overflows_a_parameter(check_outputs):
  params = {"w": jnp.asarray([3e38, 1.0], jnp.float32)}
  grads = {"w": jnp.asarray([-1e38, 1.0], jnp.float32)}     # sgd(10): u = 1e39 -> inf update
  tx = skip_nonfinite(optax.sgd(1.0), check_outputs=check_outputs)
  updates, _, new = _one_step(tx, grads, params)            # u = 1e38: p + u = 4e38 = inf
  moved = optax.apply_updates(params, updates)
  assert np.isfinite(np.asarray(updates["w"])).all()
  if check_outputs:
    assert int(new.skipped) == 1
    _assert_bitwise(moved, params, "params")
  else:
    assert int(new.skipped) == 0 and np.isinf(np.asarray(moved["w"])).any()


def test_nonfinite_values_already_there_do_not_block_steps():
  # early stopping's best is +inf before its first check; a NaN parameter stays NaN
  tx = skip_nonfinite(optax.chain(optax.sgd(0.1), jopt.early_stopping(patience=3)))
  params = {"w": jnp.asarray([1.0, np.nan])}
  state = tx.init(params)
  assert np.isinf(np.asarray(state.inner_state[1].best))
  updates, state = tx.update({"w": jnp.ones(2)}, state, params, value=jnp.asarray(np.nan))
  assert int(state.skipped) == 0 and np.array_equal(updates["w"], np.full(2, -0.1, np.float32))
  assert np.isinf(np.asarray(state.inner_state[1].best))   # a NaN metric is no improvement


def test_a_finite_step_is_the_inner_transform_with_extra_args_and_no_retrace():
  traces = []
  tx = skip_nonfinite(optax.chain(jopt.adam(0.1), jopt.early_stopping(patience=0)))

  def step(g, s, p, v):
    traces.append(1)
    return tx.update(g, s, p, value=v)

  step = jax.jit(step)
  params, state = _params(), tx.init(_params())
  for t in range(3):
    updates, state = step(GRADS[t], state, params, VALUES[t])
  assert len(traces) == 1 and int(state.skipped) == 0
  with pytest.raises(TypeError, match="update needs the monitored metric"):
    tx.update(GRADS[0], state, params)    # early stopping's keyword is still mandatory


# ---------------------------------------------------------------- shard_map agreement

@pytest.mark.parametrize("agree", [True, False])
def test_a_nan_on_one_device_skips_every_device(agree):
  ndev = len(jax.devices())
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  tx = skip_nonfinite(jopt.adam(0.1), axis_name="data" if agree else None)
  w = jnp.ones(4, jnp.float32)

  def local(w, grads):
    state = tx.init(w)
    _, state = tx.update(grads[0], state, w)
    poisoned = jnp.where(jax.lax.axis_index("data") == 2, jnp.nan, 1.0) * grads[0]
    _, state = tx.update(poisoned, state, w)
    return jax.tree.map(lambda x: x[None], state)

  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))
  grads = jnp.arange(1.0, 1.0 + 4 * ndev, dtype=jnp.float32).reshape(ndev, 4) * 1e-2
  state = f(w, grads)
  expected = np.ones(ndev) if agree else np.eye(ndev)[2]
  np.testing.assert_array_equal(np.asarray(state.skipped), expected)
  np.testing.assert_array_equal(np.asarray(state.inner_state.count), 2 - expected)


# ---------------------------------------------------------------- state and bad input

def test_state_is_arrays_only_and_named_for_jopt():
  state = skip_nonfinite(jopt.adam(0.1)).init(_params())
  assert type(state).__module__ == "jopt"
  assert state.skipped.dtype == jnp.int32 and state.consecutive.dtype == jnp.int32
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(state))


def test_loss_scale_inside_is_refused():
  with pytest.raises(ValueError, match=r"skip_nonfinite: tx contains a jopt.precision.loss_scale"
                                       r".*loss_scale\(skip_nonfinite\(tx\)"):
    skip_nonfinite(optax.chain(optax.clip(1.0), loss_scale(optax.sgd(0.1)))).init(_params())


@pytest.mark.parametrize("kwargs,exc,message", [
    ({"tx": "adam"}, TypeError, "tx='adam' must be an optax transformation"),
    ({"check_outputs": 1}, TypeError, "check_outputs must be True or False, got 1"),
    ({"axis_name": 3}, TypeError, "axis_name must be a mesh axis name"),
])
def test_bad_arguments_name_themselves(kwargs, exc, message):
  kwargs = {"tx": optax.sgd(0.1), **kwargs}
  with pytest.raises(exc) as err:
    skip_nonfinite(kwargs.pop("tx"), **kwargs)
  assert str(err.value).startswith("skip_nonfinite: ") and message in str(err.value)


def test_wrong_state_and_mismatched_params_are_errors():
  tx = skip_nonfinite(optax.sgd(0.1))
  params = _params()
  with pytest.raises(TypeError, match="state must be the SkipNonfiniteState"):
    tx.update(GRADS[0], optax.sgd(0.1).init(params), params)
  with pytest.raises(ValueError, match="skip_nonfinite: params: the tree structure"):
    tx.update(GRADS[0], tx.init(params), {"w": params["w"]})
