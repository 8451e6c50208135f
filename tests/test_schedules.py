"""Schedules: exact parity with optax (float64), jit == eager, properties, and bad input.

Parity: every shared name is evaluated at each step 0..N (past the end of the
schedule) as a Python int, in float64, against optax with the same arguments:
``rtol=1e-12`` with an absolute floor of ``1e-15 * max|value|`` for values
that are zero up to rounding (optax computes e.g. ``(1 - alpha) * c + alpha``,
which leaves ~1e-17 where the exact value is 0).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import jopt

# --------------------------------------------------------------------------- parity


def _sgdr_kwargs():
  return [dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=30, end_value=0.1),
          dict(init_value=0.5, peak_value=0.5, warmup_steps=0, decay_steps=20),
          dict(init_value=0.1, peak_value=0.3, warmup_steps=3, decay_steps=11,
               end_value=0.01, exponent=2.0)]


# (name, kwargs, horizon): both libraries' name with the same kwargs.
OPTAX_CASES = [
    ("constant_schedule", dict(value=0.3), 10),
    ("constant_schedule", dict(value=-2.5), 10),
    ("linear_schedule", dict(init_value=1.0, end_value=0.01, transition_steps=100), 120),
    ("linear_schedule", dict(init_value=0.0, end_value=1e-3, transition_steps=37,
                             transition_begin=5), 60),
    ("linear_schedule", dict(init_value=2.0, end_value=3.0, transition_steps=1), 5),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.01, power=2,
                                 transition_steps=100), 120),
    ("polynomial_schedule", dict(init_value=0.1, end_value=0.0, power=0.5,
                                 transition_steps=40, transition_begin=7), 60),
    ("polynomial_schedule", dict(init_value=-1.0, end_value=2.0, power=1.7,
                                 transition_steps=33, transition_begin=2), 50),
    ("polynomial_schedule", dict(init_value=3.0, end_value=1.0, power=3,
                                 transition_steps=25), 40),
    ("exponential_decay", dict(init_value=0.1, transition_steps=1, decay_rate=0.95), 150),
    ("exponential_decay", dict(init_value=0.1, transition_steps=30, decay_rate=0.1,
                               staircase=True), 150),
    ("exponential_decay", dict(init_value=1.0, transition_steps=7, decay_rate=0.5,
                               transition_begin=10), 80),
    ("exponential_decay", dict(init_value=1.0, transition_steps=5, decay_rate=0.5,
                               transition_begin=3, staircase=True, end_value=0.1), 60),
    ("exponential_decay", dict(init_value=1.0, transition_steps=4, decay_rate=1.3,
                               end_value=5.0), 60),
    ("exponential_decay", dict(init_value=0.2, transition_steps=4, decay_rate=1.0), 20),
    ("exponential_decay", dict(init_value=0.2, transition_steps=3, decay_rate=0.5,
                               end_value=0.5), 20),
    ("piecewise_constant_schedule", dict(init_value=1.0), 20),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={}), 20),
    ("piecewise_constant_schedule", dict(init_value=0.1,
                                         boundaries_and_scales={10: 0.5, 30: 0.1}), 50),
    ("piecewise_constant_schedule", dict(init_value=2.0,
                                         boundaries_and_scales={50: 0.1, 20: 0.5, 0: 3.0}), 70),
    ("piecewise_constant_schedule", dict(init_value=1.0,
                                         boundaries_and_scales={5: 0.0, 9: 3.0}), 15),
    ("cosine_decay_schedule", dict(init_value=0.1, decay_steps=100), 130),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=50, alpha=0.1), 70),
    ("cosine_decay_schedule", dict(init_value=2.0, decay_steps=33, alpha=0.25,
                                   exponent=2.0), 50),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=17, alpha=-0.5,
                                   exponent=0.5), 30),
    ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=1), 4),
    ("warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=10,
                                          decay_steps=100), 120),
    ("warmup_cosine_decay_schedule", dict(init_value=0.01, peak_value=0.5, warmup_steps=0,
                                          decay_steps=40, end_value=0.05), 50),
    ("warmup_cosine_decay_schedule", dict(init_value=0.1, peak_value=0.3, warmup_steps=7,
                                          decay_steps=29, end_value=0.01, exponent=1.5), 40),
    ("warmup_cosine_decay_schedule", dict(init_value=0.1, peak_value=0.0, warmup_steps=4,
                                          decay_steps=10, end_value=0.2), 15),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0,
                                               warmup_steps=10, transition_steps=5,
                                               decay_rate=0.8), 80),
    ("warmup_exponential_decay_schedule", dict(init_value=0.1, peak_value=1.0,
                                               warmup_steps=4, transition_steps=6,
                                               decay_rate=0.5, transition_begin=5,
                                               staircase=True, end_value=0.05), 80),
    ("warmup_exponential_decay_schedule", dict(init_value=0.3, peak_value=0.3,
                                               warmup_steps=0, transition_steps=2,
                                               decay_rate=0.9), 30),
    ("sgdr_schedule", dict(cosine_kwargs=_sgdr_kwargs()), 80),
    ("cosine_onecycle_schedule", dict(transition_steps=100, peak_value=0.1), 120),
    ("cosine_onecycle_schedule", dict(transition_steps=7, peak_value=1.0, pct_start=0.25,
                                      div_factor=10.0, final_div_factor=100.0), 12),
    ("cosine_onecycle_schedule", dict(transition_steps=3, peak_value=1.0, pct_start=0.2), 6),
    ("linear_onecycle_schedule", dict(transition_steps=100, peak_value=0.1), 120),
    ("linear_onecycle_schedule", dict(transition_steps=57, peak_value=2.0, pct_start=0.2,
                                      pct_final=0.6, div_factor=4.0,
                                      final_div_factor=50.0), 70),
]


def _optax_values(name, kwargs, steps):
  fn = getattr(optax, name)
  with jax.numpy_dtype_promotion("standard"):
    sched = fn(**kwargs)
    return np.array([float(sched(s)) for s in steps])


def _jopt_values(name, kwargs, steps):
  sched = getattr(jopt, name)(**kwargs)
  return np.array([float(sched(s)) for s in steps])


def _assert_parity(ours, theirs):
  floor = 1e-15 * max(1.0, float(np.max(np.abs(theirs))))
  np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=floor)


@pytest.mark.parametrize("name,kwargs,horizon", OPTAX_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(OPTAX_CASES)])
def test_matches_optax_float64(name, kwargs, horizon, x64):
  steps = range(horizon + 1)
  _assert_parity(_jopt_values(name, kwargs, steps), _optax_values(name, kwargs, steps))


def test_join_schedules_matches_optax_float64(x64):
  steps = range(90)
  parts = [("linear_schedule", dict(init_value=0.0, end_value=1.0, transition_steps=10)),
           ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=30, alpha=0.1)),
           ("constant_schedule", dict(value=0.05)),
           ("exponential_decay", dict(init_value=0.05, transition_steps=3, decay_rate=0.7))]
  ours = jopt.join_schedules([getattr(jopt, n)(**k) for n, k in parts], [10, 40, 60])
  with jax.numpy_dtype_promotion("standard"):
    theirs = optax.join_schedules([getattr(optax, n)(**k) for n, k in parts], [10, 40, 60])
    want = np.array([float(theirs(s)) for s in steps])
  _assert_parity(np.array([float(ours(s)) for s in steps]), want)


def test_join_schedules_accepts_optax_schedules():
  with jax.numpy_dtype_promotion("standard"):
    inner = optax.constant_schedule(5)   # returns a Python int
  sched = jopt.join_schedules([jopt.constant_schedule(1.0), inner], [3])
  np.testing.assert_array_equal(sched(jnp.arange(6)), [1, 1, 1, 5, 5, 5])
  assert sched(0).dtype == jnp.float32


# ------------------------------------------------------------ jit, dtypes, shapes

ALL_SCHEDULES = [(n, k, h) for n, k, h in OPTAX_CASES] + [
    ("cosine_warm_restarts_schedule", dict(init_value=1.0, first_period=7), 50),
    ("cosine_warm_restarts_schedule", dict(init_value=1.0, first_period=3, period_mult=2,
                                           min_value=0.1), 100),
    ("cyclic_schedule", dict(base_value=0.1, max_value=1.0, step_size_up=4), 40),
    ("cyclic_schedule", dict(base_value=0.1, max_value=1.0, step_size_up=4,
                             step_size_down=7, mode="triangular2"), 60),
    ("cyclic_schedule", dict(base_value=0.1, max_value=1.0, step_size_up=3,
                             mode="exp_range", gamma=0.97), 60),
    ("warmup_stable_decay_schedule", dict(peak_value=1.0, warmup_steps=5, stable_steps=10,
                                          decay_steps=8), 30),
    ("warmup_stable_decay_schedule", dict(peak_value=1.0, warmup_steps=0, stable_steps=3,
                                          decay_steps=9, init_value=0.2, end_value=0.1,
                                          decay_type="cosine"), 20),
    ("warmup_stable_decay_schedule", dict(peak_value=2.0, warmup_steps=4, stable_steps=0,
                                          decay_steps=10, decay_type="1-sqrt"), 20),
    ("warmup_stable_decay_schedule", dict(peak_value=2.0, warmup_steps=4, stable_steps=2,
                                          decay_steps=10, end_value=0.5,
                                          decay_type="inverse_sqrt"), 20),
]
ALL_IDS = [f"{c[0]}-{i}" for i, c in enumerate(ALL_SCHEDULES)]


@pytest.mark.parametrize("use_x64", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kwargs,horizon", ALL_SCHEDULES, ids=ALL_IDS)
def test_jit_equals_eager_and_dtype(name, kwargs, horizon, use_x64):
  with jax.enable_x64(use_x64):
    want_dtype = jnp.float64 if use_x64 else jnp.float32
    sched = getattr(jopt, name)(**kwargs)
    jitted = jax.jit(sched)
    steps = np.unique(np.r_[0:min(horizon, 24) + 1, np.linspace(0, horizon, 16).astype(int)])
    eager = np.array([sched(int(s)) for s in steps])
    traced = np.array([jitted(jnp.int32(s)) for s in steps])
    # XLA may rewrite x / c as x * (1 / c) under jit: allow a few ulps, no more.
    eps = float(jnp.finfo(want_dtype).eps)
    scale = max(1.0, float(np.max(np.abs(eager))))
    np.testing.assert_allclose(traced, eager, rtol=4 * eps, atol=4 * eps * scale)
    batch = sched(jnp.asarray(steps, jnp.int32))          # a vector of steps
    assert batch.shape == steps.shape and batch.dtype == want_dtype
    assert jnp.asarray(sched(jnp.zeros((2, 3), jnp.int32))).shape == (2, 3)
    np.testing.assert_allclose(batch, eager, rtol=4 * eps, atol=4 * eps * scale)
    assert sched(3).dtype == want_dtype and sched(3).shape == ()
    assert jitted(jnp.int32(3)).dtype == want_dtype
    assert np.all(np.isfinite(eager))


@pytest.mark.parametrize("name,kwargs,horizon", ALL_SCHEDULES, ids=ALL_IDS)
def test_finite_at_huge_steps(name, kwargs, horizon):
  del horizon
  sched = getattr(jopt, name)(**kwargs)
  big = jnp.asarray([2 ** 24 + 1, 10 ** 9, 2 ** 31 - 1], jnp.int32)
  assert np.all(np.isfinite(np.asarray(sched(big))))
  assert np.all(np.isfinite(np.asarray(jax.jit(sched)(big))))


def test_schedule_drives_an_optimizer_hyperparameter():
  tx = jopt.sgd(jopt.cosine_warm_restarts_schedule(0.5, first_period=4))
  params = {"w": jnp.ones(2)}
  state = tx.init(params)
  step = jax.jit(tx.update)
  seen = []
  for _ in range(6):
    _, state = step({"w": jnp.ones(2)}, state, params)
    seen.append(float(jopt.hyperparams(state)["learning_rate"]))
  want = [float(jopt.cosine_warm_restarts_schedule(0.5, 4)(t)) for t in range(6)]
  np.testing.assert_allclose(seen, want, rtol=1e-6)


# --------------------------------------------------------------- jopt-only values


def test_cosine_warm_restarts_restart_steps_exact(x64):
  sched = jopt.cosine_warm_restarts_schedule(1.0, first_period=3, period_mult=3, min_value=0.2)
  starts = [0, 3, 12, 39, 120, 363]
  for s in starts:
    assert float(sched(s)) == 1.0
  # the step before a restart: tau = T_k - 1
  for s, period in zip(starts[1:], [3, 9, 27, 81, 243]):
    want = 0.2 + 0.8 * (1 + math.cos(math.pi * (period - 1) / period)) / 2
    assert float(sched(s - 1)) == pytest.approx(want, rel=1e-14)
  # int32 steps near the top of the range still land in the right cycle
  t0, mult = 5, 2
  sched = jopt.cosine_warm_restarts_schedule(1.0, t0, mult)
  k = 28
  start = t0 * (mult ** k - 1)
  assert start < 2 ** 31 - 1
  assert float(jax.jit(sched)(jnp.int32(start))) == 1.0


def test_cyclic_known_values():
  sched = jopt.cyclic_schedule(1.0, 3.0, step_size_up=2, step_size_down=4)
  np.testing.assert_allclose(sched(jnp.arange(8)), [1, 2, 3, 2.5, 2, 1.5, 1, 2])
  tri2 = jopt.cyclic_schedule(0.0, 8.0, step_size_up=1, mode="triangular2")
  np.testing.assert_allclose(tri2(jnp.arange(7)), [0, 8, 0, 4, 0, 2, 0])


@pytest.mark.parametrize("use_x64", [False, True], ids=["f32", "f64"])
def test_cyclic_exact_late_in_training(use_x64):
  """The cycle position is an exact integer: no drift at large step counts."""
  from fractions import Fraction  # pylint: disable=import-outside-toplevel
  steps = [0, 1_999, 2_000, 2_001, 10 ** 6 + 1, 2 ** 30 + 7, 2 ** 31 - 1]
  with jax.enable_x64(use_x64):
    got = np.asarray(jopt.cyclic_schedule(1e-3, 0.1, 2000, 1500)(jnp.asarray(steps, jnp.int32)))
  b, m = Fraction(1e-3), Fraction(0.1)
  want = []
  for t in steps:
    tau = t % 3500
    h = Fraction(tau, 2000) if tau <= 2000 else Fraction(3500 - tau, 1500)
    want.append(float(b + (m - b) * h))
  np.testing.assert_allclose(got, want, rtol=4e-16 if use_x64 else 3e-7)


@pytest.mark.parametrize("decay_type", ["linear", "cosine", "1-sqrt", "inverse_sqrt"])
def test_wsd_known_values(decay_type, x64):
  sched = jopt.warmup_stable_decay_schedule(1.0, warmup_steps=4, stable_steps=3,
                                            decay_steps=4, init_value=0.2, end_value=0.1,
                                            decay_type=decay_type)
  v = np.array(sched(jnp.arange(14)))
  np.testing.assert_allclose(v[:4], [0.2, 0.4, 0.6, 0.8], rtol=1e-15)
  assert np.all(v[4:8] == 1.0) and np.all(v[11:] == 0.1)
  s = np.arange(1, 4) / 4
  g = {"linear": 1 - s, "cosine": (1 + np.cos(np.pi * s)) / 2, "1-sqrt": 1 - np.sqrt(s),
       "inverse_sqrt": 2 / np.sqrt(1 + 3 * s) - 1}[decay_type]
  np.testing.assert_allclose(v[8:11], 0.1 + 0.9 * g, rtol=1e-14)


# ------------------------------------------------------------------- properties

# XLA on CPU flushes subnormals to zero, so they are left out of the value strategies.
_finite = st.floats(-10.0, 10.0, allow_subnormal=False)
_steps = st.lists(st.integers(0, 2 ** 31 - 1), min_size=20, max_size=20)


@settings(max_examples=60, deadline=None)
@given(base=_finite, amp=st.floats(0.0, 10.0), up=st.integers(1, 10_000),
       down=st.none() | st.integers(1, 10_000),
       mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
       gamma=st.floats(1e-3, 1.0), steps=_steps)
def test_cyclic_stays_within_base_and_max(base, amp, up, down, mode, gamma, steps):
  sched = jopt.cyclic_schedule(base, base + amp, up, down, mode=mode, gamma=gamma)
  v = np.asarray(sched(jnp.asarray(steps, jnp.int32)), np.float64)
  lo, hi = np.float32(base), np.float32(base + amp)
  slack = 1e-6 * max(1.0, abs(base) + amp)
  assert np.all(v >= lo - slack) and np.all(v <= hi + slack)
  if mode == "triangular":   # periodic
    period = up + (up if down is None else down)
    shifted = [min(s, 2 ** 31 - 1 - period) for s in steps]
    a = sched(jnp.asarray(shifted, jnp.int32))
    b = sched(jnp.asarray(shifted, jnp.int32) + period)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=slack)


@settings(max_examples=60, deadline=None)
@given(peak=st.just(0.0) | st.floats(1e-6, 10.0),
       init_frac=st.just(0.0) | st.floats(1e-6, 1.0),
       end_frac=st.just(0.0) | st.floats(1e-6, 1.0), warmup=st.integers(0, 50),
       stable=st.integers(0, 50),
       decay=st.integers(1, 50), decay_type=st.sampled_from(["linear", "cosine", "1-sqrt",
                                                              "inverse_sqrt"]))
def test_wsd_monotone_per_phase_and_hits_values(peak, init_frac, end_frac, warmup, stable,
                                                decay, decay_type):
  with jax.enable_x64(True):
    init, end = peak * init_frac, peak * end_frac
    sched = jopt.warmup_stable_decay_schedule(peak, warmup, stable, decay, init_value=init,
                                              end_value=end, decay_type=decay_type)
    total = warmup + stable + decay
    v = np.asarray(sched(jnp.arange(200)))       # one shape: eager ops compile once
  slack = 1e-14 * max(1.0, peak)
  assert v[0] == (init if warmup else peak)
  assert np.all(np.diff(v[:warmup + 1]) >= -slack)               # warmup rises
  assert np.all(v[warmup:warmup + stable + 1] == peak)             # plateau exact
  assert np.all(np.diff(v[warmup + stable:total + 1]) <= slack)    # cool-down falls
  assert np.all(v[total:] == end)                                  # then holds
  assert np.all(v >= min(init, end) - slack) and np.all(v <= peak + slack)


@settings(max_examples=60, deadline=None)
@given(init=st.floats(-5.0, 5.0), gap=st.floats(0.0, 5.0), t0=st.integers(1, 1000),
       mult=st.integers(1, 4), steps=_steps)
def test_cosine_restarts_within_min_and_init(init, gap, t0, mult, steps):
  with jax.enable_x64(True):
    lo = init - gap
    sched = jopt.cosine_warm_restarts_schedule(init, t0, mult, min_value=lo)
    v = np.asarray(sched(jnp.asarray(steps, jnp.int32)))
  slack = 1e-12 * max(1.0, abs(init), abs(lo))
  assert np.all(v >= lo - slack) and np.all(v <= init + slack)


@settings(max_examples=60, deadline=None)
@given(init=st.floats(0.01, 10.0),
       table=st.dictionaries(st.integers(0, 300), st.floats(0.0, 3.0), max_size=6))
def test_piecewise_constant_between_boundaries(init, table):
  with jax.enable_x64(True):
    sched = jopt.piecewise_constant_schedule(init, table)
    v = np.asarray(sched(jnp.arange(320)))
  changes = set(np.flatnonzero(np.diff(v)) + 1)
  assert changes <= set(table)                   # only changes at a boundary
  for b in sorted(table):                        # and holds the running product
    want = init * math.prod(s for k, s in table.items() if k <= b)
    assert v[b] == pytest.approx(want, rel=1e-12, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(init=_finite, end=_finite, power=st.floats(0.1, 5.0), steps=st.integers(1, 1000),
       begin=st.integers(0, 100))
def test_polynomial_between_init_and_end(init, end, power, steps, begin):
  with jax.enable_x64(True):
    v = np.asarray(jopt.polynomial_schedule(init, end, power, steps, begin)(
        jnp.arange(1200)))
  slack = 1e-12 * max(1.0, abs(init), abs(end))
  assert np.all(v >= min(init, end) - slack) and np.all(v <= max(init, end) + slack)
  assert v[0] == init and np.all(v[begin + steps:] == end)


# ------------------------------------------------------------------- bad input

BAD = [
    (jopt.constant_schedule, dict(value=float("nan")), "value"),
    (jopt.linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=0),
     "transition_steps"),
    (jopt.linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=-3),
     "transition_steps"),
    (jopt.linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=2.5),
     "transition_steps"),
    (jopt.linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=10,
                                transition_begin=-1), "transition_begin"),
    (jopt.linear_schedule, dict(init_value=float("inf"), end_value=0.0, transition_steps=10),
     "init_value"),
    (jopt.polynomial_schedule, dict(init_value=1.0, end_value=0.0, power=0.0,
                                    transition_steps=10), "power"),
    (jopt.polynomial_schedule, dict(init_value=1.0, end_value=float("nan"), power=1,
                                    transition_steps=10), "end_value"),
    (jopt.exponential_decay, dict(init_value=1.0, transition_steps=0, decay_rate=0.5),
     "transition_steps"),
    (jopt.exponential_decay, dict(init_value=1.0, transition_steps=5, decay_rate=0.0),
     "decay_rate"),
    (jopt.exponential_decay, dict(init_value=1.0, transition_steps=5, decay_rate=-0.5),
     "decay_rate"),
    (jopt.exponential_decay, dict(init_value=1.0, transition_steps=5, decay_rate=0.5,
                                  staircase="yes"), "staircase"),
    (jopt.exponential_decay, dict(init_value=1.0, transition_steps=5, decay_rate=0.5,
                                  end_value=float("-inf")), "end_value"),
    (jopt.piecewise_constant_schedule, dict(init_value=1.0,
                                            boundaries_and_scales={10: -0.1}),
     "boundaries_and_scales"),
    (jopt.piecewise_constant_schedule, dict(init_value=1.0,
                                            boundaries_and_scales={-5: 0.1}),
     "boundaries_and_scales"),
    (jopt.piecewise_constant_schedule, dict(init_value=1.0,
                                            boundaries_and_scales={2.5: 0.1}),
     "boundaries_and_scales"),
    (jopt.piecewise_constant_schedule, dict(init_value=1.0,
                                            boundaries_and_scales={5: float("nan")}),
     "boundaries_and_scales"),
    (jopt.piecewise_constant_schedule, dict(init_value=1.0, boundaries_and_scales=[(1, 2)]),
     "boundaries_and_scales"),
    (jopt.join_schedules, dict(schedules=[], boundaries=[]), "schedules"),
    (jopt.join_schedules, dict(schedules=[jopt.constant_schedule(1.0)] * 3,
                               boundaries=[5]), "boundaries"),
    (jopt.join_schedules, dict(schedules=[jopt.constant_schedule(1.0)] * 3,
                               boundaries=[9, 5]), "boundaries"),
    (jopt.join_schedules, dict(schedules=[jopt.constant_schedule(1.0)] * 2,
                               boundaries=[-1]), "boundaries"),
    (jopt.join_schedules, dict(schedules=[jopt.constant_schedule(1.0), 0.5],
                               boundaries=[3]), "schedules"),
    (jopt.cosine_decay_schedule, dict(init_value=1.0, decay_steps=0), "decay_steps"),
    (jopt.cosine_decay_schedule, dict(init_value=1.0, decay_steps=10, alpha=float("nan")),
     "alpha"),
    (jopt.cosine_decay_schedule, dict(init_value=1.0, decay_steps=10, exponent=0.0),
     "exponent"),
    (jopt.warmup_cosine_decay_schedule, dict(init_value=0.0, peak_value=1.0,
                                             warmup_steps=10, decay_steps=10),
     "decay_steps"),
    (jopt.warmup_cosine_decay_schedule, dict(init_value=0.0, peak_value=1.0,
                                             warmup_steps=-1, decay_steps=10),
     "warmup_steps"),
    (jopt.warmup_cosine_decay_schedule, dict(init_value=0.0, peak_value=float("nan"),
                                             warmup_steps=1, decay_steps=10),
     "peak_value"),
    (jopt.warmup_exponential_decay_schedule, dict(init_value=0.0, peak_value=1.0,
                                                  warmup_steps=5, transition_steps=0,
                                                  decay_rate=0.5), "transition_steps"),
    (jopt.warmup_exponential_decay_schedule, dict(init_value=0.0, peak_value=1.0,
                                                  warmup_steps=5, transition_steps=3,
                                                  decay_rate=0.0), "decay_rate"),
    (jopt.sgdr_schedule, dict(cosine_kwargs=[]), "cosine_kwargs"),
    (jopt.sgdr_schedule, dict(cosine_kwargs=[dict(init_value=1.0, peak_value=1.0,
                                                  warmup_steps=0, decay_steps=0)]),
     r"cosine_kwargs\[0\].*decay_steps"),
    (jopt.sgdr_schedule, dict(cosine_kwargs=[dict(init_value=1.0, peak_value=1.0,
                                                  decay_steps=5)]), "warmup_steps"),
    (jopt.cosine_warm_restarts_schedule, dict(init_value=1.0, first_period=0),
     "first_period"),
    (jopt.cosine_warm_restarts_schedule, dict(init_value=1.0, first_period=5, period_mult=0),
     "period_mult"),
    (jopt.cosine_warm_restarts_schedule, dict(init_value=1.0, first_period=5,
                                              period_mult=1.5), "period_mult"),
    (jopt.cosine_warm_restarts_schedule, dict(init_value=1.0, first_period=5,
                                              min_value=float("inf")), "min_value"),
    (jopt.cosine_onecycle_schedule, dict(transition_steps=0, peak_value=1.0),
     "transition_steps"),
    (jopt.cosine_onecycle_schedule, dict(transition_steps=10, peak_value=1.0, pct_start=1.0),
     "pct_start"),
    (jopt.cosine_onecycle_schedule, dict(transition_steps=10, peak_value=1.0,
                                         div_factor=0.0), "div_factor"),
    (jopt.linear_onecycle_schedule, dict(transition_steps=10, peak_value=1.0,
                                         pct_start=0.5, pct_final=0.4), "pct_final"),
    (jopt.linear_onecycle_schedule, dict(transition_steps=1, peak_value=1.0),
     "transition_steps"),
    (jopt.linear_onecycle_schedule, dict(transition_steps=100, peak_value=1.0,
                                         final_div_factor=-1.0), "final_div_factor"),
    (jopt.cyclic_schedule, dict(base_value=0.1, max_value=1.0, step_size_up=0),
     "step_size_up"),
    (jopt.cyclic_schedule, dict(base_value=0.1, max_value=1.0, step_size_up=5,
                                step_size_down=0), "step_size_down"),
    (jopt.cyclic_schedule, dict(base_value=0.1, max_value=1.0, step_size_up=5,
                                mode="triangle"), "mode"),
    (jopt.cyclic_schedule, dict(base_value=0.1, max_value=1.0, step_size_up=5,
                                mode="exp_range", gamma=1.5), "gamma"),
    (jopt.cyclic_schedule, dict(base_value=float("nan"), max_value=1.0, step_size_up=5),
     "base_value"),
    (jopt.warmup_stable_decay_schedule, dict(peak_value=1.0, warmup_steps=5, stable_steps=5,
                                             decay_steps=0), "decay_steps"),
    (jopt.warmup_stable_decay_schedule, dict(peak_value=1.0, warmup_steps=5, stable_steps=-5,
                                             decay_steps=5), "stable_steps"),
    (jopt.warmup_stable_decay_schedule, dict(peak_value=1.0, warmup_steps=-1,
                                             stable_steps=5, decay_steps=5), "warmup_steps"),
    (jopt.warmup_stable_decay_schedule, dict(peak_value=1.0, warmup_steps=1, stable_steps=5,
                                             decay_steps=5, decay_type="exp"), "decay_type"),
    (jopt.warmup_stable_decay_schedule, dict(peak_value=float("inf"), warmup_steps=1,
                                             stable_steps=5, decay_steps=5), "peak_value"),
    (jopt.reduce_on_plateau, dict(factor=1.0), "factor"),
    (jopt.reduce_on_plateau, dict(factor=0.0), "factor"),
    (jopt.reduce_on_plateau, dict(patience=-1), "patience"),
    (jopt.reduce_on_plateau, dict(patience=2.5), "patience"),
    (jopt.reduce_on_plateau, dict(threshold=-1e-4), "threshold"),
    (jopt.reduce_on_plateau, dict(threshold=1.0), "threshold"),
    (jopt.reduce_on_plateau, dict(threshold_mode="relative"), "threshold_mode"),
    (jopt.reduce_on_plateau, dict(mode="minimum"), "mode"),
    (jopt.reduce_on_plateau, dict(cooldown=-2), "cooldown"),
    (jopt.reduce_on_plateau, dict(min_scale=1.5), "min_scale"),
    (jopt.reduce_on_plateau, dict(eps=float("nan")), "eps"),
]


_WRONG_TYPE_ROWS = {3, 11, 15, 17, 22, 36, 57}


@pytest.mark.parametrize("fn,kwargs,match", BAD,
                         ids=[f"{f.__name__}-{m}-{i}" for i, (f, _, m) in enumerate(BAD)])
def test_bad_arguments_raise_naming_the_argument(fn, kwargs, match):
  # the rows that pass a wrong type (a float where an integer goes, a non-bool flag,
  # a list for a mapping, a number for a schedule) raise TypeError (docs/errors.md)
  index = next(i for i, row in enumerate(BAD) if row[1] is kwargs)
  expected = TypeError if index in _WRONG_TYPE_ROWS else ValueError
  with pytest.raises(expected, match=match) as info:
    fn(**kwargs)
  assert type(info.value) is expected
  assert fn.__name__ in str(info.value)


def test_range_is_in_the_message():
  with pytest.raises(ValueError, match=r"transition_steps=0 must be an integer >= 1"):
    jopt.linear_schedule(1.0, 0.0, 0)
  with pytest.raises(ValueError, match=r"factor=1.5 is outside the accepted range \(0.0, 1.0\)"):
    jopt.reduce_on_plateau(factor=1.5)
  with pytest.raises(ValueError, match=r"mode='x' is not one of"):
    jopt.cyclic_schedule(0.1, 1.0, 4, mode="x")


def test_non_numeric_value_is_a_type_error():
  with pytest.raises(TypeError, match="init_value"):
    jopt.cosine_decay_schedule("0.1", 10)


# --------------------------------------------------------- reduce_on_plateau basics


def test_plateau_requires_value_keyword():
  tx = jopt.reduce_on_plateau()
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  with pytest.raises(TypeError, match="value="):
    tx.update(params, state)
  with pytest.raises(ValueError, match="scalar"):
    tx.update(params, state, value=jnp.ones(2))


def test_plateau_state_and_dtypes():
  tx = jopt.reduce_on_plateau(patience=0)
  params = {"w": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
  state = tx.init(params)
  assert isinstance(state, jopt.ReduceOnPlateauState)
  assert state.count.dtype == state.num_bad_epochs.dtype == state.cooldown_counter.dtype \
      == jnp.int32
  assert state.scale.dtype == state.best.dtype == jnp.float32
  assert float(state.best) == math.inf
  u, state = tx.update(params, state, value=1.0)
  u, state = tx.update(params, state, value=2.0)     # patience 0: reduce now
  assert u["w"].dtype == jnp.bfloat16 and u["b"].dtype == jnp.float32
  np.testing.assert_allclose(u["b"], 0.1, rtol=1e-6)
  assert float(state.scale) == pytest.approx(0.1) and int(state.count) == 2
  assert jopt.reduce_on_plateau(dtype=jnp.float16).init(params).scale.dtype == jnp.float16


def test_plateau_nan_counts_as_bad_and_state_stays_finite():
  tx = jopt.reduce_on_plateau(patience=1, factor=0.5)
  params = {"w": jnp.ones(1)}
  state = tx.init(params)
  scales = []
  for v in [1.0, float("nan"), float("nan"), float("nan"), float("nan"), 0.5]:
    _, state = tx.update(params, state, value=v)
    scales.append(float(state.scale))
    assert np.isfinite(float(state.best)) and np.isfinite(float(state.scale))
  assert scales == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
  assert float(state.best) == 0.5


def test_plateau_in_chain_under_jit_and_cond():
  tx = optax.chain(jopt.sgd(0.1), jopt.reduce_on_plateau(patience=0, factor=0.5))
  params = {"w": jnp.ones(2)}
  state = tx.init(params)

  @jax.jit
  def step(state, value, skip):
    grads = {"w": jnp.ones(2)}
    def run(s):
      return tx.update(grads, s, params, value=value)[1]
    return jax.lax.cond(skip, lambda s: s, run, state)

  for v, skip in [(1.0, False), (2.0, True), (2.0, False), (3.0, False)]:
    state = step(state, jnp.float32(v), skip)
  assert float(state[1].scale) == 0.25 and int(state[1].count) == 3
