"""Sparsity schedules: NumPy transcriptions of the papers' formulas (float64), jit ==
eager, monotonicity (hypothesis) and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jopt.schedules import (constant_schedule, iterative_sparsity_schedule,
                            one_shot_sparsity_schedule, polynomial_sparsity_schedule)

# --------------------------------------------------------------------------- references


def zhu_gupta_np(t, s_f, t0, t1, s_i=0.0, freq=1, power=3):
  """Zhu & Gupta 2017, Eq. 1, step by step: the value changes at t0 + k*dt, s_f at t1."""
  if t < t0:
    return s_i
  if t >= t1:
    return s_f
  tau = t0 + freq * ((t - t0) // freq)   # the last mask update at or before t
  return s_f + (s_i - s_f) * (1.0 - (tau - t0) / (t1 - t0)) ** power


def iterative_np(t, targets, round_steps, begin):
  """Round k (1-based) starts at begin + (k - 1) * round_steps; the last is held."""
  if t < begin:
    return 0.0
  k = min((t - begin) // round_steps + 1, len(targets))
  return targets[k - 1]


POLY_CASES = [
    dict(final_sparsity=0.9, begin_step=0, end_step=100),
    dict(final_sparsity=0.95, begin_step=7, end_step=57, initial_sparsity=0.2),
    dict(final_sparsity=0.8, begin_step=10, end_step=110, frequency=10),
    dict(final_sparsity=0.8, begin_step=3, end_step=40, frequency=7, power=1.5),  # 37 % 7 != 0
    dict(final_sparsity=0.5, begin_step=0, end_step=1, power=1),
    dict(final_sparsity=0.0, begin_step=0, end_step=10),
]


def _np_kwargs(kw):
  return dict(s_f=kw["final_sparsity"], t0=kw["begin_step"], t1=kw["end_step"],
              s_i=kw.get("initial_sparsity", 0.0), freq=kw.get("frequency", 1),
              power=kw.get("power", 3))


@pytest.mark.parametrize("kw", POLY_CASES)
def test_polynomial_matches_numpy_transcription(kw, x64):
  sched = polynomial_sparsity_schedule(**kw)
  ref = [zhu_gupta_np(t, **_np_kwargs(kw)) for t in range(kw["end_step"] + 20)]
  got = [float(sched(t)) for t in range(kw["end_step"] + 20)]
  np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-15)
  assert float(sched(kw["end_step"])) == kw["final_sparsity"]      # exactly
  assert float(sched(0)) == kw.get("initial_sparsity", 0.0) or kw["begin_step"] == 0


def test_polynomial_holds_between_updates_and_hits_ends_exactly(x64):
  sched = polynomial_sparsity_schedule(0.9, 10, 110, initial_sparsity=0.1, frequency=25)
  v = np.asarray(sched(jnp.arange(0, 200)))
  assert np.all(v[:10] == 0.1) and np.all(v[110:] == 0.9)
  changes = np.nonzero(np.diff(v))[0] + 1       # steps where the value changes
  assert changes.tolist() == [35, 60, 85, 110]


@pytest.mark.parametrize("use_x64", [False, True])
def test_jit_equals_eager_and_dtype(use_x64):
  with jax.enable_x64(use_x64):
    steps = jnp.arange(0, 300, dtype=jnp.int32)
    for sched in [polynomial_sparsity_schedule(0.9, 20, 220, frequency=3),
                  one_shot_sparsity_schedule(0.7, 150),
                  iterative_sparsity_schedule(0.9, 4, 50, begin_step=10),
                  iterative_sparsity_schedule([0.3, 0.6, 0.61], round_steps=70)]:
      eager = sched(steps)
      jitted = jax.jit(sched)(steps)
      assert eager.dtype == (jnp.float64 if use_x64 else jnp.float32)
      assert eager.shape == steps.shape
      # XLA may rewrite x / c as x * (1 / c) under jit: a few ulps, no more (measured:
      # 3.8e-7 relative in float32, 0 in float64); the step decisions are exact
      eps = float(jnp.finfo(eager.dtype).eps)
      np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=4 * eps,
                                 atol=4 * eps)
      assert np.array_equal(np.diff(np.asarray(jitted)) != 0, np.diff(np.asarray(eager)) != 0)
      # a traced scalar step, one at a time, equals the vectorized call
      one = jax.jit(lambda t: sched(t))
      np.testing.assert_allclose([float(one(jnp.int32(t))) for t in (0, 149, 150, 299)],
                                 np.asarray(eager)[[0, 149, 150, 299]], rtol=4 * eps,
                                 atol=4 * eps)


def test_unsigned_and_wide_integer_steps(x64):
  steps = np.arange(0, 130)
  for sched in [polynomial_sparsity_schedule(0.9, 20, 100, frequency=3),
                iterative_sparsity_schedule(0.9, 4, 20, begin_step=10),
                one_shot_sparsity_schedule(0.7, 15)]:
    ref = np.asarray(sched(jnp.asarray(steps, jnp.int32)))
    for dtype in (jnp.uint8, jnp.uint32, jnp.int64):
      np.testing.assert_array_equal(np.asarray(sched(jnp.asarray(steps, dtype))), ref)


def test_one_shot(x64):
  sched = one_shot_sparsity_schedule(0.8, step=5)
  np.testing.assert_array_equal(np.asarray(sched(jnp.arange(10))),
                                [0.0] * 5 + [0.8] * 5)
  assert float(one_shot_sparsity_schedule(0.5, 0)(0)) == 0.5


def test_iterative_geometric_matches_numpy(x64):
  s_f, rounds, t, begin = 0.9, 4, 30, 12
  targets = [1.0 - (1.0 - s_f) ** (k / rounds) for k in range(1, rounds + 1)]
  sched = iterative_sparsity_schedule(s_f, rounds, t, begin_step=begin)
  got = [float(sched(i)) for i in range(200)]
  ref = [iterative_np(i, targets, t, begin) for i in range(200)]
  np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
  assert float(sched(10 ** 6)) == s_f                          # the last target, exactly
  # every round removes the same fraction of the weights still present
  keep = 1.0 - np.asarray([0.0] + targets)
  np.testing.assert_allclose(keep[1:] / keep[:-1], (1 - s_f) ** (1 / rounds), rtol=1e-13)


def test_iterative_user_targets(x64):
  targets = [0.5, 0.8, 0.8, 0.9]
  sched = iterative_sparsity_schedule(targets, round_steps=10, begin_step=3)
  got = [float(sched(i)) for i in range(80)]
  assert got == [iterative_np(i, targets, 10, 3) for i in range(80)]
  same = iterative_sparsity_schedule(np.asarray(targets), 4, 10, begin_step=3)
  assert [float(same(i)) for i in range(80)] == got


def test_constant_schedule_is_the_constant_sparsity():
  assert float(constant_schedule(0.5)(123)) == 0.5


# --------------------------------------------------------------------------- properties

SPARSITY = st.floats(0.0, 0.999, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(a=SPARSITY, b=SPARSITY, t0=st.integers(0, 50), span=st.integers(1, 80),
       freq=st.integers(1, 30), power=st.floats(0.25, 6.0))
def test_polynomial_is_monotone_and_bounded(a, b, t0, span, freq, power):
  s_i, s_f = min(a, b), max(a, b)
  sched = polynomial_sparsity_schedule(s_f, t0, t0 + span, initial_sparsity=s_i,
                                       frequency=freq, power=power)
  v = np.asarray(sched(jnp.arange(0, t0 + span + 10)))
  assert np.all(np.diff(v) >= 0)
  tol = 1e-6
  assert np.all(v >= np.float32(s_i) - tol) and np.all(v <= np.float32(s_f) + tol)


@settings(max_examples=25, deadline=None)
@given(s_f=SPARSITY, rounds=st.integers(1, 8), t=st.integers(1, 20),
       begin=st.integers(0, 20), extra=st.lists(SPARSITY, min_size=1, max_size=6))
def test_iterative_and_one_shot_are_monotone(s_f, rounds, t, begin, extra):
  steps = jnp.arange(0, begin + (rounds + 2) * t)
  for sched in [iterative_sparsity_schedule(s_f, rounds, t, begin_step=begin),
                iterative_sparsity_schedule(sorted(extra), round_steps=t, begin_step=begin),
                one_shot_sparsity_schedule(s_f, begin)]:
    v = np.asarray(sched(steps))
    assert np.all(np.diff(v) >= 0) and np.all(v >= 0) and np.all(v < 1)


# --------------------------------------------------------------------------- bad input

BAD = [
    (lambda: polynomial_sparsity_schedule(1.0, 0, 10), "final_sparsity=1.0"),
    (lambda: polynomial_sparsity_schedule(-0.1, 0, 10), "final_sparsity=-0.1"),
    (lambda: polynomial_sparsity_schedule(math.nan, 0, 10), "final_sparsity=nan"),
    (lambda: polynomial_sparsity_schedule(0.5, 0, 10, initial_sparsity=1.5),
     "initial_sparsity=1.5"),
    (lambda: polynomial_sparsity_schedule(0.5, 0, 10, initial_sparsity=0.6),
     "initial_sparsity=0.6 is above final_sparsity=0.5"),
    (lambda: polynomial_sparsity_schedule(0.5, 10, 10), "end_step=10 must be greater"),
    (lambda: polynomial_sparsity_schedule(0.5, 10, 5), "end_step=5 must be greater"),
    (lambda: polynomial_sparsity_schedule(0.5, -1, 5), "begin_step=-1"),
    (lambda: polynomial_sparsity_schedule(0.5, 0, 5, frequency=0), "frequency=0"),
    (lambda: polynomial_sparsity_schedule(0.5, 0, 5, frequency=2.5), "frequency=2.5"),
    (lambda: polynomial_sparsity_schedule(0.5, 0, 5, power=0), "power=0"),
    (lambda: one_shot_sparsity_schedule(1.2, 3), "sparsity=1.2"),
    (lambda: one_shot_sparsity_schedule(0.5, -3), "step=-3"),
    (lambda: iterative_sparsity_schedule(0.9, 0, 10), "rounds=0"),
    (lambda: iterative_sparsity_schedule(0.9, None, 10), "rounds is required"),
    (lambda: iterative_sparsity_schedule(0.9, 3), "round_steps is required"),
    (lambda: iterative_sparsity_schedule(0.9, 3, 0), "round_steps=0"),
    (lambda: iterative_sparsity_schedule(1.0, 3, 10), "final_sparsity=1.0"),
    (lambda: iterative_sparsity_schedule([0.5, 1.0], round_steps=10), "final_sparsity[1]=1.0"),
    (lambda: iterative_sparsity_schedule([0.5, 0.4], round_steps=10),
     "final_sparsity[1]=0.4 is below"),
    (lambda: iterative_sparsity_schedule([0.5, 0.6], 3, 10), "rounds=3 disagrees"),
    (lambda: iterative_sparsity_schedule([], round_steps=10), "holds no round"),
    (lambda: iterative_sparsity_schedule(0.5, 2, 10, begin_step=-2), "begin_step=-2"),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_input_names_the_argument(make, message):
  # a float where an integer goes is a wrong type: TypeError (docs/errors.md)
  expected = TypeError if message == "frequency=2.5" else ValueError
  with pytest.raises(expected) as e:
    make()
  assert type(e.value) is expected
  assert message in str(e.value)


def test_a_traced_sparsity_is_accepted_unchecked():
  # built inside jit (a traced value), the range check is skipped, as validate.py says
  out = jax.jit(lambda s: one_shot_sparsity_schedule(s, 2)(jnp.arange(4)))(jnp.float32(0.3))
  np.testing.assert_allclose(np.asarray(out), [0, 0, 0.3, 0.3], rtol=1e-7)


def test_a_boolean_step_is_refused():
  for sched in [polynomial_sparsity_schedule(0.5, 0, 10), one_shot_sparsity_schedule(0.5, 1),
                iterative_sparsity_schedule(0.5, 2, 3)]:
    with pytest.raises(TypeError, match="integer step"):
      sched(jnp.array(True))
