"""Schedule-Free AdamW: input checks, the warmup convention (optax 0.2.8's), eval params.

jopt.schedule_free_adamw follows optax.contrib.schedule_free_adamw's convention
(see its docstring): update t (1-based) steps z with the rate of count t - 1
and weights the average with the rate of count t. These tests hold it to
optax in float64, step by step, on params, z, nu, max_lr and weight_sum.
optax evaluates its own ``warmup_steps`` schedule in float32 (int32 counts),
even under x64, so the exact comparisons hand optax the same warmup as a
float64 schedule, or hand jopt optax's float32 schedule.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import jopt
from tests import problems

STEPS = 80


def _f64_warmup(lr, warmup_steps):
  """jopt's warmup as an optax schedule: lr * min(count / T, 1), in float64."""
  return lambda count: lr * (jnp.clip(jnp.asarray(count, jnp.float64), 0, warmup_steps)
                             / warmup_steps)


def _side_by_side(jtx, otx, steps=STEPS):
  """Worst relative error per quantity over ``steps`` jitted steps on the parity model."""
  def stepper(t):
    def step(p, s):
      u, s = t.update(jax.grad(problems.parity_loss)(p), s, p)
      return optax.apply_updates(p, u), s
    return jax.jit(step)

  p = q = problems.parity_init(jnp.float64)
  s, jstep = jtx.init(p), stepper(jtx)
  with jax.numpy_dtype_promotion("standard"):
    r, ostep = otx.init(q), stepper(otx)
  worst = dict(params=0.0, z=0.0, nu=0.0, max_lr=0.0, weight_sum=0.0)

  def rel(a, b):
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)

  for _ in range(steps):
    p, s = jstep(p, s)
    with jax.numpy_dtype_promotion("standard"):
      q, r = ostep(q, r)
    worst["params"] = max(worst["params"], problems.rel_err(p, q))
    worst["z"] = max(worst["z"], problems.rel_err(s.z, r.z))
    nu_ref = r.base_optimizer_state[0].nu
    worst["nu"] = max(worst["nu"], problems.rel_err(s.nu, nu_ref))
    worst["max_lr"] = max(worst["max_lr"], rel(s.max_lr, r.max_lr))
    worst["weight_sum"] = max(worst["weight_sum"], rel(s.weight_sum, r.weight_sum))
  return worst, (p, s), (q, r)


# --------------------------------------------------------------------------- bad inputs

BAD_INPUTS = [
    (dict(b1=0.0), ValueError, "b1"),
    (dict(b2=1.0), ValueError, "b2"),
    (dict(warmup_steps=0), ValueError, "warmup_steps"),
    (dict(weight_lr_power=-2.0), ValueError, "weight_lr_power"),
    (dict(learning_rate=lambda step: -1.0), ValueError, "learning_rate"),
    (dict(state_dtype=jnp.int32), TypeError, "dtype"),
]


@pytest.mark.parametrize("kwargs,exc,text", BAD_INPUTS,
                         ids=[f"{t}-{i}" for i, (_, _, t) in enumerate(BAD_INPUTS)])
def test_bad_inputs_fail_at_construction_naming_the_argument(kwargs, exc, text):
  with pytest.raises(exc, match=text):
    jopt.schedule_free_adamw(**kwargs)


# ----------------------------------------------------------------- the warmup convention

WARMUP_CASES = [
    # the registry's parity case; the defaults (b1=0.9, power 2); power 0 (plain average)
    dict(learning_rate=0.02, warmup_steps=10, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.05,
         weight_lr_power=1.0),
    dict(learning_rate=0.01, warmup_steps=30),
    dict(learning_rate=0.05, warmup_steps=20, weight_decay=0.01, weight_lr_power=0.0),
]


@pytest.mark.parametrize("kwargs", WARMUP_CASES, ids=["registry", "defaults", "power0"])
def test_warmup_matches_optax_given_the_same_warmup_in_float64(kwargs, x64):
  """optax with jopt's warmup as a float64 schedule: equal to rounding for 80 steps."""
  del x64
  lr, warmup = kwargs["learning_rate"], kwargs["warmup_steps"]
  otx = optax.contrib.schedule_free_adamw(
      **dict(kwargs, learning_rate=_f64_warmup(lr, warmup), warmup_steps=None))
  worst, (p, s), (q, r) = _side_by_side(jopt.schedule_free_adamw(**kwargs), otx)
  # measured: params <= 7e-15, z <= 2e-14, nu <= 1e-15, max_lr and weight_sum <= 3e-16
  assert worst["params"] <= 5e-14 and worst["z"] <= 5e-14 and worst["nu"] <= 1e-14, worst
  assert worst["max_lr"] <= 2e-15 and worst["weight_sum"] <= 2e-15, worst
  with jax.numpy_dtype_promotion("standard"):
    ref = optax.contrib.schedule_free_eval_params(r, q)
  assert problems.rel_err(jopt.schedule_free_eval_params(s, p), ref) <= 5e-14


def test_optax_warmup_schedule_reproduced_exactly_when_given_to_jopt(x64):
  """optax's own warmup (float32 values) as jopt's learning_rate: optax's numbers.

  That is the only difference between jopt's ``warmup_steps`` and optax's: optax
  computes its warmup_constant_schedule from int32 counts, in float32 even under
  x64 (0.02 becomes 0.019999999552965164), jopt in the hyperparameter dtype.
  """
  del x64
  kwargs = WARMUP_CASES[0]
  lr, warmup = kwargs["learning_rate"], kwargs["warmup_steps"]
  optax_warmup = optax.warmup_constant_schedule(0.0, lr, warmup)
  assert optax_warmup(jnp.ones([], jnp.int32)).dtype == jnp.float32
  otx = optax.contrib.schedule_free_adamw(**kwargs)
  jtx = jopt.schedule_free_adamw(**dict(kwargs, learning_rate=optax_warmup, warmup_steps=None))
  worst, _, (_, r) = _side_by_side(jtx, otx)
  assert float(r.max_lr) == float(np.float32(lr))
  # measured: params <= 5e-15, z <= 8e-15, max_lr and weight_sum exactly equal
  assert worst["params"] <= 5e-14 and worst["z"] <= 5e-14 and worst["nu"] <= 1e-14, worst
  assert worst["max_lr"] <= 2e-15 and worst["weight_sum"] <= 2e-15, worst
  # jopt's own float64 warmup against optax's: apart by the float32 rounding only
  worst, _, _ = _side_by_side(jopt.schedule_free_adamw(**kwargs), otx)
  assert 1e-10 < worst["params"] <= 1e-7, worst  # measured 2e-8
  assert 1e-9 < worst["max_lr"] <= 3e-7, worst   # float32 roundings: measured 1.6e-7


def test_learning_rate_schedule_matches_optax(x64):
  """A rising and falling schedule, no warmup: z at count t-1, the average at count t."""
  del x64
  sched = lambda c: 0.02 * (1 + 0.5 * jnp.cos(jnp.asarray(c, jnp.float64) / 3.0))  # noqa: E731
  kwargs = dict(learning_rate=sched, b1=0.8, b2=0.99, weight_decay=0.05, weight_lr_power=1.0)
  worst, _, _ = _side_by_side(jopt.schedule_free_adamw(**kwargs),
                              optax.contrib.schedule_free_adamw(**kwargs))
  # measured: params <= 5e-15, the max_lr bookkeeping exact
  assert worst["params"] <= 5e-14 and worst["z"] <= 5e-14 and worst["nu"] <= 1e-14, worst
  assert worst["max_lr"] <= 2e-15 and worst["weight_sum"] <= 2e-15, worst


def test_warmup_rates_by_hand(x64):
  """Update t steps z with lr*min((t-1)/T, 1) and weights with lr*min(t/T, 1)."""
  del x64
  lr, warmup, power, b1, b2, eps = 0.3, 4, 2.0, 0.9, 0.999, 1e-8
  tx = jopt.schedule_free_adamw(lr, warmup_steps=warmup, b1=b1, b2=b2, eps=eps,
                                weight_lr_power=power)
  p = problems.parity_init(jnp.float64)
  s = tx.init(p)
  y, z = ({k: np.asarray(v) for k, v in p.items()} for _ in range(2))
  x = dict(y)
  nu = {k: np.zeros_like(v) for k, v in y.items()}
  weight_sum = 0.0
  for t in range(1, 9):
    g = {k: np.asarray(v) for k, v in jax.grad(problems.parity_loss)(p).items()}
    lr_z = lr * min((t - 1) / warmup, 1.0)      # this step's z rate: count t - 1
    lr_w = lr * min(t / warmup, 1.0)            # the average's: count t (next z rate)
    weight_sum += lr_w**power                   # max_lr = lr_w: warmup rises
    c = lr_w**power / weight_sum
    for k in y:
      nu[k] = b2 * nu[k] + (1 - b2) * g[k] ** 2
      z[k] = z[k] - lr_z * g[k] / (np.sqrt(nu[k] / (1 - b2**t)) + eps)
      x[k] = (1 - c) * x[k] + c * z[k]
      y[k] = b1 * x[k] + (1 - b1) * z[k]
    u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
    p = optax.apply_updates(p, u)
    np.testing.assert_allclose(float(s.max_lr), lr_w, rtol=1e-15)
    np.testing.assert_allclose(float(s.weight_sum), weight_sum, rtol=1e-14)
    if t == 1:  # warmup from 0: the first update leaves z (and so y) where it was
      jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                   s.z, problems.parity_init(jnp.float64))
    assert problems.rel_err(s.z, z) <= 1e-13 and problems.rel_err(p, y) <= 1e-13, t
    assert problems.rel_err(jopt.schedule_free_eval_params(s, p), x) <= 1e-13, t


def test_complex_parameters_match_optax(x64):
  """The second moment of a complex gradient is |g|^2 (as optax), not g^2."""
  del x64
  rng = np.random.default_rng(0)
  p = {"w": jnp.asarray(rng.normal(size=(4, 3)) + 1j * rng.normal(size=(4, 3))),
       "r": jnp.asarray(rng.normal(size=(3,)))}

  def loss(q):
    return (jnp.sum(jnp.abs(q["w"] - 0.3j) ** 2) + 0.1 * jnp.sum(jnp.abs(q["w"]) ** 4)
            + jnp.sum(q["r"] ** 2))

  kwargs = dict(learning_rate=0.05, warmup_steps=5, b1=0.8, weight_decay=0.01)
  jtx = jopt.schedule_free_adamw(**kwargs)
  otx = optax.contrib.schedule_free_adamw(
      **dict(kwargs, learning_rate=_f64_warmup(0.05, 5), warmup_steps=None))
  a = b = p
  sa = jtx.init(a)
  with jax.numpy_dtype_promotion("standard"):
    sb = otx.init(b)
  for _ in range(30):
    u, sa = jtx.update(jax.tree.map(jnp.conj, jax.grad(loss)(a)), sa, a)
    a = optax.apply_updates(a, u)
    with jax.numpy_dtype_promotion("standard"):
      v, sb = otx.update(jax.tree.map(jnp.conj, jax.grad(loss)(b)), sb, b)
      b = optax.apply_updates(b, v)
    for k in p:  # measured 2e-16
      assert float(jnp.max(jnp.abs(a[k] - b[k])) / jnp.max(jnp.abs(b[k]))) <= 1e-14, k
  assert sa.nu["w"].dtype == jnp.complex128 and float(loss(a)) < 0.5 * float(loss(p))


# --------------------------------------------------------------------------- eval params

@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01),
    dict(learning_rate=0.02, warmup_steps=5, b1=0.8, weight_decay=0.01),
], ids=["default", "warmup"])
def test_schedule_free_eval_params_match_optax_float64(kwargs, x64):
  del x64
  jtx = jopt.schedule_free_adamw(**kwargs)
  otx = optax.contrib.schedule_free_adamw(**kwargs)
  _, (p, s), (q, r) = problems.run_side_by_side(jtx, otx, problems.parity_init(jnp.float64),
                                                steps=15)
  mine = jopt.schedule_free_eval_params(s, p)
  with jax.numpy_dtype_promotion("standard"):
    ref = optax.contrib.schedule_free_eval_params(r, q)
  assert problems.rel_err(mine, ref) <= 1e-7  # optax's float32 warmup: see above
  assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(p)))
  # The eval point differs from the training point once z and x separate.
  assert problems.rel_err(mine, p) > 1e-6
  # A chain state holding the schedule-free state works too, and so does optax's state.
  chained = (optax.EmptyState(), s)
  assert problems.rel_err(jopt.schedule_free_eval_params(chained, p), mine) == 0.0
  with jax.numpy_dtype_promotion("standard"):
    assert problems.rel_err(jopt.schedule_free_eval_params(r, q), ref) <= 1e-12


def test_schedule_free_eval_params_needs_its_state():
  p = problems.quadratic_init()
  with pytest.raises(ValueError, match="schedule_free"):
    jopt.schedule_free_eval_params(jopt.adam(0.1).init(p), p)


# ------------------------------------------------------------------------ state, dtypes

def test_schedule_free_base_iterate_stands_still_at_zero_learning_rate():
  tx = jopt.schedule_free_adamw(0.1)
  p = problems.quadratic_init()
  s = tx.init(p)
  for _ in range(5):
    u, s = tx.update(jax.grad(problems.quadratic_loss)(p), s, p)
    p = optax.apply_updates(p, u)
  _, s2 = tx.update(jax.grad(problems.quadratic_loss)(p), jopt.set_hyperparams(s, learning_rate=0.0), p)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), s2.z, s.z)


def test_schedule_free_state_dtype_sets_z_dtype():
  p = problems.quadratic_init(jnp.bfloat16)
  tx = jopt.schedule_free_adamw(0.01, state_dtype=jnp.float32, nu_dtype=jnp.float32)
  s = tx.init(p)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((s.z, s.nu)))
  u, s = tx.update(jax.grad(problems.quadratic_loss)(p), s, p)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((s.z, s.nu)))
