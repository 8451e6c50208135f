"""Gradient accumulation: equal to optax.MultiSteps, inner optimizer run only on emit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.wrappers import accumulate
from tests import problems


@pytest.mark.parametrize("use_mean", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_matches_optax_multisteps_float64(k, use_mean, x64):
  p = q = problems.parity_init(jnp.float64)
  tx = accumulate(jopt.adamw(0.01, weight_decay=0.1), k, use_mean=use_mean)
  with jax.numpy_dtype_promotion("standard"):
    # accumulator_dtype given explicitly: with None, optax 0.2.8 casts the
    # accumulator to float32 even under x64 (astype(None) is the default float).
    ref = optax.MultiSteps(optax.adamw(0.01, weight_decay=0.1), k, use_grad_mean=use_mean,
                           accumulator_dtype=jnp.float64)
    r = ref.init(q)
  s = tx.init(p)
  rng = np.random.default_rng(0)
  for i in range(4 * k + 2):
    noise = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1, x.dtype), p)
    g = jax.tree.map(jnp.add, jax.grad(problems.parity_loss)(p), noise)
    h = jax.tree.map(jnp.add, jax.grad(problems.parity_loss)(q), noise)
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    with jax.numpy_dtype_promotion("standard"):
      v, r = ref.update(h, r, q)
      q = optax.apply_updates(q, v)
    assert problems.rel_err(p, q) <= 1e-12, i
  assert int(s.gradient_step) == int(r.gradient_step)


def test_inner_runs_only_on_emitting_steps():
  calls = []

  def counting_update(updates, state, params=None, **extra):
    jax.debug.callback(lambda: calls.append(1))
    return updates, state

  inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), counting_update)
  tx = accumulate(inner, 4)
  p = problems.quadratic_init()
  s = tx.init(p)
  step = jax.jit(tx.update)
  for _ in range(8):
    _, s = step(p, s)
  jax.effects_barrier()
  assert len(calls) == 2


def test_accumulator_dtype_and_zero_updates():
  p = problems.quadratic_init(jnp.bfloat16)
  tx = accumulate(jopt.adam(0.1), 2, acc_dtype=jnp.float32)
  s = tx.init(p)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(s.acc))
  g = jax.grad(problems.quadratic_loss)(p)
  u, s = tx.update(g, s, p)
  assert all(x.dtype == jnp.bfloat16 and not bool(jnp.any(x != 0)) for x in jax.tree.leaves(u))
  u, s = tx.update(g, s, p)
  assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(u))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(s.acc))


@pytest.mark.parametrize("k", [0, -1])
def test_every_k_must_be_a_positive_int(k):
  with pytest.raises(ValueError, match="every_k"):
    accumulate(jopt.adam(0.1), k)


@pytest.mark.parametrize("k", [2.5, 2.0, True, "2"])
def test_every_k_must_be_an_int(k):
  with pytest.raises(TypeError, match="every_k"):
    accumulate(jopt.adam(0.1), k)
