"""Property-based fuzzing of every public jopt transform (issue 12, part 4a).

For every optimizer in tests/registry.py, the regularizers, the wrappers, pruning,
loss scaling and reduce-on-plateau: ``init`` plus three ``update`` calls on finite
gradients (|g| <= 10) over the shape palette of tests/fuzz.py (0-d, empty, small, one
2**16-element leaf), float32 / bfloat16 / float16, four tree kinds (bare leaf, dict,
nested dict/list/tuple with None leaves, Flax NNX state) and hyperparameters drawn over
their documented ranges, edges included. Properties:

* updates have the gradients' tree (None leaves pass through), shapes and dtypes;
* the state's tree, shapes and dtypes do not depend on the values and do not change
  across steps;
* updates and state are finite;
* a hyperparameter just outside its range is a ``ValueError`` naming it;
* every schedule (the hyperparameters' ``step -> value``), built from drawn arguments,
  gives a finite, non-negative 0-d value at steps up to 2**31 - 1, for Python ints and
  int32 arrays.

Run eagerly (no ``jit``): the shape palette keeps JAX's per-op compile cache warm.
Deeper run: ``JOPT_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz_transforms.py``.

Documented limitations encoded in the strategies (see the lead's note):

* ``eps = 0`` (or ``adam_eps = 0``) with an all-zero gradient history is 0/0 = NaN
  in every adaptive method, exactly as in optax and torch, so ``eps = 0`` is drawn
  only with gradients bounded away from zero (|g| >= 0.1).
* centered RMSprop with ``decay = 0`` estimates the variance from one sample (0), so
  ``eps = 0`` there divides by zero for every gradient; that pair is not drawn.
* float16 has a largest finite value of 65504 and a smallest normal of 6e-5: float16
  cases draw ``eps`` (and ``eps_root``, when nonzero) in [1e-3, 0.1], so that
  ``g / sqrt(eps) <= 316`` and ``g / eps <= 1e4``; ``learning_rate <= 1`` and
  ``|g| <= 10`` keep every update below 1e4 in three steps.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jopt
from jopt._core import validate
from tests import fuzz
from tests.registry import all_entries

ENTRIES = all_entries()
IDS = [e.name for e in ENTRIES]

_UNIT = ("b1", "b2", "b3", "beta", "momentum", "decay", "rho", "adam_b1", "adam_b2")
_EPS = ("eps", "eps_root", "adam_eps", "adam_eps_root")
_RATE = ("learning_rate", "adam_learning_rate", "weight_decay", "adam_weight_decay",
         "initial_accumulator_value", "initial_scale", "trust_coefficient", "lr_decay",
         "decay_rate", "weight_decay_rate")
# Open lower ends that a method declares in its own docstring, beyond the shared table.
_OPEN_LOW = {("schedule_free_adamw", "b1")}


@pytest.fixture(scope="module", autouse=True)
def _tally():
  yield
  fuzz.dump_tally()


def _spec(tree):
  """Tree structure (None leaves kept as structure) plus (shape, dtype) per leaf."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, [(tuple(jnp.shape(x)), jnp.asarray(x).dtype) for x in leaves]


def _ranged_args(entry):
  """Names of the entry's numeric hyperparameters that the shared range table covers."""
  out = []
  for name, par in inspect.signature(entry.fn).parameters.items():
    default = entry.args.get(name, par.default)
    if name in validate._RANGES and isinstance(default, (int, float)) and not isinstance(  # pylint: disable=protected-access
        default, bool) and name != "decay_offset":
      out.append(name)
  return out


def _draw_value(draw, entry, name, dtype):
  low = 1e-3 if (entry.name, name) in _OPEN_LOW else 0.0
  if name in _UNIT:
    return draw(st.sampled_from([low, 0.5, 0.9, 0.999]) | st.floats(low, 0.999))
  if name in _EPS:
    if dtype == jnp.float16:
      small = st.floats(1e-3, 0.1)
      return draw(st.just(0.0) | small) if name.endswith("root") else draw(small)
    return draw(st.sampled_from([0.0, 1e-8, 1e-3]) | st.floats(1e-10, 0.1))
  if name == "clipping_threshold":
    return draw(st.floats(0.01, 10.0))
  if name == "weight_lr_power":
    return draw(st.floats(0.0, 4.0))
  if name in _RATE:
    return draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
  raise AssertionError(name)


@st.composite
def _optimizer_case(draw, entry):
  dtype = draw(fuzz.dtypes())
  shape = draw(fuzz.shapes())
  kind = draw(fuzz.tree_kinds())
  args = dict(entry.args)
  for name in _ranged_args(entry):
    if draw(st.booleans()):
      args[name] = _draw_value(draw, entry, name, dtype)
  if dtype == jnp.float16:  # the default eps (1e-8 and smaller) is tested in 32/bf16 bits
    for name in ("eps", "adam_eps"):
      if name in _ranged_args(entry) and not 1e-3 <= args.get(name, 1.0) <= 0.1:
        args[name] = draw(st.floats(1e-3, 0.1))
  if args.get("centered") and args.get("decay") == 0.0 and args.get("eps") == 0.0:
    args["eps"] = 1e-8  # centered with decay = 0: the variance of one sample is 0, g / 0
  eps_zero = any(args.get(n) == 0.0 for n in ("eps", "adam_eps"))
  min_abs = 0.1 if eps_zero else 0.0
  params = fuzz.build_tree(kind, shape, dtype, draw(fuzz.values(bound=draw(st.sampled_from([1.0, 10.0])))))
  grads = [fuzz.build_tree(kind, shape, dtype, draw(fuzz.values(10.0, min_abs))) for _ in range(3)]
  return dtype, shape, kind, args, params, grads


def _check_run(tx, params, grads, tag):
  """init (on params as given, NNX Variables included) + updates on plain arrays, as
  ``nnx.Optimizer`` calls them; assert the properties of the module docstring."""
  state = tx.init(params)
  spec0 = _spec(state)
  zeros = jax.tree.map(jnp.zeros_like, params)
  assert _spec(tx.init(zeros)) == spec0, f"{tag}: state tree depends on the values"
  params, grads = fuzz.pure(params), [fuzz.pure(g) for g in grads]
  for i, g in enumerate(grads):
    updates, state = tx.update(g, state, params)
    assert _spec(updates) == _spec(g), f"{tag}: step {i}: updates' tree/dtype differs from grads"
    assert _spec(state) == spec0, f"{tag}: step {i}: state tree changed"
    assert fuzz.finite(updates), f"{tag}: step {i}: non-finite updates {updates}"
    assert fuzz.finite(state), f"{tag}: step {i}: non-finite state {state}"
    params = optax.apply_updates(params, updates)
  for leaf in jax.tree.leaves(state):
    dt = jnp.asarray(leaf).dtype
    assert dt not in (jnp.int64, jnp.float64), (tag, dt)
  return state


def _family(entry):
  return entry.fn.__module__.rsplit(".", 1)[-1]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@fuzz.fuzz_settings(8)
@given(data=st.data())
def test_optimizer_fuzz(entry, data):
  dtype, shape, kind, args, params, grads = data.draw(_optimizer_case(entry))
  fuzz.count(f"family:{_family(entry)}", f"dtype:{fuzz.dtype_name(dtype)}", f"tree:{kind}",
             f"shape:{shape}", "transforms")
  _check_run(entry.fn(**args), params, grads, f"{entry.name}{args}")


def _outside(draw, entry, name):
  low, high, low_open, high_open = validate._RANGES[name]  # pylint: disable=protected-access
  if (entry.name, name) in _OPEN_LOW:
    low_open = True
  bad = [math.nan, math.inf, -math.inf]
  if low is not None:
    bad += [low] if low_open else [low - 1e-6, low - 1.0]
  if high is not None:
    bad += [high] if high_open else [high + 1e-6]
    if high_open:
      bad.append(high + 0.5)
  return draw(st.sampled_from(bad))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@fuzz.fuzz_settings(6)
@given(data=st.data())
def test_optimizer_rejects_out_of_range(entry, data):
  names = _ranged_args(entry)
  name = data.draw(st.sampled_from(names))
  value = _outside(data.draw, entry, name)
  fuzz.count(f"family:{_family(entry)}", "out_of_range")
  with pytest.raises(ValueError) as e:
    entry.fn(**{**entry.args, name: value})
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# regularizers, wrappers, prune, loss scale, plateau
# ---------------------------------------------------------------------------


@st.composite
def _tree_case(draw, *, min_abs=0.0, large=True, nnx=True, steps=3):
  dtype = draw(fuzz.dtypes())
  shape = draw(fuzz.shapes(large=large))
  kind = draw(fuzz.tree_kinds(nnx))
  params = fuzz.build_tree(kind, shape, dtype, draw(fuzz.values(1.0)))
  grads = [fuzz.build_tree(kind, shape, dtype, draw(fuzz.values(10.0, min_abs)))
           for _ in range(steps)]
  fuzz.count(f"dtype:{fuzz.dtype_name(dtype)}", f"tree:{kind}", f"shape:{shape}", "transforms")
  return dtype, shape, kind, params, grads


_unit_closed = st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)


@fuzz.fuzz_settings(40)
@given(case=_tree_case(), wd=_unit_closed, masked=st.booleans())
def test_add_decayed_weights_fuzz(case, wd, masked):
  _, _, _, params, grads = case
  fuzz.count("family:weight_decay")
  mask = jopt.weights_mask if masked else None
  _check_run(jopt.add_decayed_weights(wd, mask), params, grads, f"add_decayed_weights({wd})")


@fuzz.fuzz_settings(40)
@given(case=_tree_case(), strength=_unit_closed, lr=_unit_closed)
def test_proximal_l1_fuzz(case, strength, lr):
  _, _, _, params, grads = case
  fuzz.count("family:proximal_l1")
  _check_run(jopt.proximal_l1(strength, lr), params, grads, f"proximal_l1({strength}, {lr})")


def _run_monitored(tx, params, grads, losses):
  """Steps of a transform that reads ``value=`` (early stopping, plateau): updates keep
  the gradients' tree and dtypes, the state its tree, and both stay finite."""
  state = tx.init(params)
  spec0 = _spec(state)
  params, grads = fuzz.pure(params), [fuzz.pure(g) for g in grads]
  for g, loss in zip(grads, losses):
    updates, state = tx.update(g, state, params, value=jnp.asarray(loss, jnp.float32))
    assert _spec(updates) == _spec(g)
    assert _spec(state) == spec0
    assert fuzz.finite((updates, state))
    params = optax.apply_updates(params, updates)
  return state


@fuzz.fuzz_settings(30)
@given(case=_tree_case(), patience=st.integers(0, 3), min_delta=st.floats(0.0, 1.0),
       mode=st.sampled_from(["min", "max"]), min_delta_mode=st.sampled_from(["abs", "rel"]),
       restore_best=st.booleans(), losses=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3))
def test_early_stopping_fuzz(case, patience, min_delta, mode, min_delta_mode, restore_best,
                             losses):
  _, _, _, params, grads = case
  fuzz.count("family:early_stopping")
  tx = jopt.early_stopping(patience, min_delta, mode=mode, min_delta_mode=min_delta_mode,
                           restore_best=restore_best)
  state = _run_monitored(tx, params, grads, losses)
  assert jopt.stop_requested(state).dtype == jnp.bool_


@fuzz.fuzz_settings(10)
@given(case=_tree_case(), every_k=st.integers(1, 3), use_mean=st.booleans())
def test_accumulate_fuzz(case, every_k, use_mean):
  _, _, _, params, grads = case
  fuzz.count("family:accumulate")
  _check_run(jopt.accumulate(jopt.sgd(0.1, momentum=0.9), every_k, use_mean=use_mean),
             params, grads, f"accumulate(k={every_k})")


@fuzz.fuzz_settings(30)
@given(case=_tree_case(), check_outputs=st.booleans())
def test_skip_nonfinite_fuzz(case, check_outputs):
  _, _, _, params, grads = case
  fuzz.count("family:skip_nonfinite")
  tx = jopt.skip_nonfinite(jopt.adam(0.1), check_outputs=check_outputs)
  inner = jopt.adam(0.1)
  state, ref_state = tx.init(params), inner.init(params)
  _check_run(tx, params, grads, "skip_nonfinite")
  # finite gradients: nothing is skipped, the updates are the inner optimizer's
  u, _ = tx.update(grads[0], state, params)
  ref, _ = inner.update(grads[0], ref_state, params)
  for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@fuzz.fuzz_settings(30)
@given(case=_tree_case(), initial_scale=st.sampled_from([1.0, 2.0**15]) | st.floats(1.0, 2.0**16),
       dynamic=st.booleans(), growth_interval=st.integers(1, 3))
def test_loss_scale_fuzz(case, initial_scale, dynamic, growth_interval):
  _, _, _, params, grads = case
  fuzz.count("family:loss_scale")
  tx = jopt.precision.loss_scale(jopt.sgd(0.1), initial_scale, dynamic=dynamic,
                                 growth_interval=growth_interval)
  _check_run(tx, params, grads, f"loss_scale({initial_scale})")


@fuzz.fuzz_settings(30)
@given(case=_tree_case(), factor=st.floats(1e-3, 0.999) | st.just(0.999), patience=st.integers(0, 2),
       cooldown=st.integers(0, 2), mode=st.sampled_from(["min", "max"]),
       threshold_mode=st.sampled_from(["rel", "abs"]),
       losses=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3))
def test_reduce_on_plateau_fuzz(case, factor, patience, cooldown, mode, threshold_mode, losses):
  _, _, _, params, grads = case
  fuzz.count("family:plateau")
  tx = jopt.reduce_on_plateau(factor, patience, mode=mode, threshold_mode=threshold_mode,
                              cooldown=cooldown)
  _run_monitored(tx, params, grads, losses)


@fuzz.fuzz_settings(10)
@given(case=_tree_case(), sparsity=st.sampled_from([0.0, 0.999]) | st.floats(0.0, 0.999),
       criterion=st.sampled_from(["magnitude", "saliency", "random"]),
       scope=st.sampled_from(["layer", "global"]), update_every=st.integers(1, 2),
       filter_all=st.booleans())
def test_prune_fuzz(case, sparsity, criterion, scope, update_every, filter_all):
  _, _, _, params, grads = case
  fuzz.count("family:prune")
  filt = True if filter_all else None
  tx = jopt.prune.prune(jopt.sgd(0.1), sparsity, criterion=criterion, scope=scope,
                        update_every=update_every, filter=filt)
  leaves = jax.tree.leaves(fuzz.pure(params))
  if (not any(jnp.ndim(x) >= 2 for x in leaves) if filt is None
      else any(jnp.ndim(x) == 0 for x in leaves)):
    # documented: a filter selecting nothing, or selecting a 0-d leaf, raises
    with pytest.raises(ValueError) as e:
      tx.init(params)
    fuzz.raises_naming(e, "filter")
    return
  _check_run(tx, params, grads, f"prune({sparsity}, {criterion}, {scope}, filter={filt})")


@fuzz.fuzz_settings(40)
@given(case=_tree_case(large=False, nnx=False, steps=1),
       strength=st.sampled_from([0.0, 1.0]) | st.floats(0.0, 10.0),
       which=st.sampled_from(["l1", "l2", "elastic"]))
def test_penalties_fuzz(case, strength, which):
  dtype, _, _, params, _ = case
  fuzz.count("family:penalties")
  if which == "l1":
    out = jopt.l1_penalty(params, strength=strength)
  elif which == "l2":
    out = jopt.l2_penalty(params, strength=strength)
  else:
    out = jopt.elastic_net_penalty(params, l1=strength, l2=strength)
  assert out.shape == ()
  assert bool(jnp.isfinite(out)), out
  assert float(out) >= 0


@pytest.mark.parametrize("factory,name,value", [
    (lambda v: jopt.add_decayed_weights(v), "weight_decay", -1e-6),
    (lambda v: jopt.proximal_l1(v), "strength", -1e-6),
    (lambda v: jopt.proximal_l1(0.1, v), "learning_rate", -1.0),
    (lambda v: jopt.early_stopping(v), "patience", -1),
    (lambda v: jopt.early_stopping(0, v), "min_delta", math.nan),
    (lambda v: jopt.accumulate(jopt.sgd(0.1), v), "every_k", 0),
    (lambda v: jopt.precision.loss_scale(jopt.sgd(0.1), v), "initial_scale", 0.0),
    (lambda v: jopt.reduce_on_plateau(v), "factor", 1.5),
    (lambda v: jopt.prune.prune(jopt.sgd(0.1), v), "sparsity", 1.5),
])
def test_transforms_reject_out_of_range(factory, name, value):
  fuzz.count("out_of_range")
  with pytest.raises(ValueError) as e:
    factory(value)
  fuzz.raises_naming(e, name)


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------

_STEPS = st.sampled_from([0, 1, 7, 10**6, 2**31 - 1]) | st.integers(0, 2**31 - 1)
_n = st.integers(1, 10**6)
_v = st.floats(0.0, 10.0)


def _sched_strategies():
  S = jopt
  return {
      "constant_schedule": st.builds(S.constant_schedule, _v),
      "linear_schedule": st.builds(S.linear_schedule, _v, _v, _n, st.integers(0, 100)),
      "polynomial_schedule": st.builds(S.polynomial_schedule, _v, _v, st.floats(0.1, 4.0), _n,
                                       st.integers(0, 100)),
      "exponential_decay": st.builds(S.exponential_decay, _v, _n, st.floats(0.01, 1.0),
                                     st.integers(0, 100), st.booleans()),
      "piecewise_constant_schedule": st.builds(S.piecewise_constant_schedule, _v,
                                               st.just({10: 0.5, 1000: 0.1})),
      "cosine_decay_schedule": st.builds(S.cosine_decay_schedule, _v, _n, st.floats(0.0, 1.0),
                                         st.floats(0.5, 3.0)),
      "warmup_cosine_decay_schedule": st.builds(
          lambda a, b, w, d, e: S.warmup_cosine_decay_schedule(a, b, w, w + d, e),
          _v, _v, st.integers(0, 1000), _n, _v),
      "warmup_exponential_decay_schedule": st.builds(S.warmup_exponential_decay_schedule, _v, _v,
                                                     st.integers(0, 100), _n, st.floats(0.01, 1.0)),
      "sgdr_schedule": st.builds(lambda a, n: S.sgdr_schedule(
          [dict(init_value=a, peak_value=a, warmup_steps=1, decay_steps=n)] * 2), _v,
          st.integers(2, 1000)),
      "cosine_warm_restarts_schedule": st.builds(S.cosine_warm_restarts_schedule, _v, _n,
                                                 st.integers(1, 3), st.floats(0.0, 0.0)),
      "cosine_onecycle_schedule": st.builds(S.cosine_onecycle_schedule, st.integers(2, 10**6), _v,
                                            st.floats(0.05, 0.95), st.floats(1.0, 100.0),
                                            st.floats(1.0, 1e4)),
      "linear_onecycle_schedule": st.builds(S.linear_onecycle_schedule, st.integers(10, 10**6), _v),
      "cyclic_schedule": st.builds(S.cyclic_schedule, st.floats(0.0, 1.0), st.floats(1.0, 2.0), _n,
                                   st.none() | _n, st.sampled_from(
                                       ["triangular", "triangular2", "exp_range"]),
                                   st.floats(0.5, 1.0)),
      "warmup_stable_decay_schedule": st.builds(
          S.warmup_stable_decay_schedule, _v, st.integers(0, 1000), st.integers(0, 1000), _n,
          decay_type=st.sampled_from(["linear", "cosine", "1-sqrt", "inverse_sqrt"])),
      "join_schedules": st.builds(lambda a, b, n: S.join_schedules(
          [S.constant_schedule(a), S.linear_schedule(a, b, n)], [n]), _v, _v, _n),
      "polynomial_sparsity_schedule": st.builds(
          lambda f, b, n, fr: S.polynomial_sparsity_schedule(f, b, b + n, frequency=fr),
          st.floats(0.0, 0.99), st.integers(0, 100), _n, st.integers(1, 10)),
      "one_shot_sparsity_schedule": st.builds(S.one_shot_sparsity_schedule, st.floats(0.0, 0.99),
                                              st.integers(0, 10**6)),
      "iterative_sparsity_schedule": st.builds(
          lambda f, r, n: S.iterative_sparsity_schedule(f, r, n), st.floats(0.0, 0.99),
          st.integers(1, 5), st.integers(1, 1000)),
  }


_SCHEDULES = _sched_strategies()


@pytest.mark.parametrize("name", sorted(_SCHEDULES))
@fuzz.fuzz_settings(6)
@given(data=st.data())
def test_schedule_fuzz(name, data):
  sched = data.draw(_SCHEDULES[name])
  steps = data.draw(st.lists(_STEPS, min_size=1, max_size=4))
  fuzz.count(f"schedules:{name}")
  for step in steps:
    for s in (step, jnp.asarray(step, jnp.int32)):
      v = sched(s)
      assert jnp.shape(v) == (), (name, step, v)
      assert fuzz.finite(jnp.asarray(v)), (name, step, v)
      assert float(v) >= 0.0, (name, step, v)
