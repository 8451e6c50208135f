"""sequence, random_choice and random_apply: the documented key splitting, per-example
choices, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt.augment as aug

N, H, W = 8, 6, 7
P = functools.partial


def _x(seed=0, n=N):
  return jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, H, W, 3)), jnp.float32)


def _sub_keys(key, n, m):
  """(m, n): one key per op and example, as both compositions split them."""
  keys = jax.random.split(key, n)
  return [jnp.stack([jax.random.split(k, m)[i] for k in keys]) for i in range(m)]


def test_sequence_applies_each_op_in_turn_with_its_own_keys():
  ops = [P(aug.random_crop, padding=2), aug.random_flip_left_right,
         P(aug.random_brightness, max_delta=0.3)]
  x, key = _x(1), jax.random.key(2)
  out = jax.jit(aug.sequence(*ops))(x, key=key)
  y = x
  for op, k in zip(ops, _sub_keys(key, N, 3)):
    y = op(y, key=k)
  # jit may contract a * b + c into one FMA: 6e-8 measured, float32
  np.testing.assert_allclose(out, y, rtol=0, atol=2e-7)
  # composes, accepts a key batch, and the empty sequence is the identity
  nested = aug.sequence(aug.sequence(*ops[:2]), ops[2])
  assert nested(x, key=jax.random.split(key, N)).shape == x.shape
  np.testing.assert_array_equal(aug.sequence()(x, key=key), x)


def test_random_choice_keeps_one_op_result_per_example():
  ops = [P(aug.random_brightness, max_delta=0.3), aug.random_flip_up_down,
         P(aug.cutout, size=3, fill=0.5)]
  n = 48
  x, key = _x(3, n), jax.random.key(4)
  out = np.asarray(jax.jit(aug.random_choice(ops, p=[0.2, 0.3, 0.5]))(x, key=key))
  subs = _sub_keys(key, n, 4)
  results = [np.asarray(op(x, key=k)) for op, k in zip(ops, subs)]
  logits = jnp.log(jnp.asarray([0.2, 0.3, 0.5], jnp.float32))
  choice = np.asarray(jax.vmap(lambda k: jax.random.categorical(k, logits))(subs[3]))
  for i in range(n):
    np.testing.assert_allclose(out[i], results[choice[i]][i], rtol=0, atol=2e-7)
  counts = np.bincount(choice, minlength=3)
  assert np.all(counts > 0), counts


def test_random_choice_with_zero_probability_never_picks_that_op():
  ops = [P(aug.random_brightness, max_delta=0.0), P(aug.cutout, size=3, fill=0.5)]
  x = _x(5)
  np.testing.assert_array_equal(aug.random_choice(ops, p=[1.0, 0.0])(x, key=jax.random.key(0)), x)


def test_random_apply_keeps_the_op_result_or_the_input_per_example():
  op = P(aug.random_brightness, max_delta=0.3)
  n = 64
  x, key = _x(6, n), jax.random.key(7)
  out = np.asarray(jax.jit(aug.random_apply(op, p=0.25))(x, key=key))
  subs = _sub_keys(key, n, 2)
  done = np.asarray(op(x, key=subs[0]))
  on = np.asarray(jax.vmap(lambda k: jax.random.bernoulli(k, 0.25))(subs[1]))
  for i in range(n):
    np.testing.assert_allclose(out[i], done[i] if on[i] else x[i], rtol=0, atol=2e-7)
  assert 6 <= on.sum() <= 26, on.sum()  # Binomial(64, 1/4)


def test_composition_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"random_apply: p=1.5 is outside the accepted range"):
    aug.random_apply(aug.random_flip_left_right, p=1.5)
  with pytest.raises(TypeError, match="op 1 is 3, not a function op"):
    aug.sequence(aug.random_flip_left_right, 3)
  with pytest.raises(ValueError, match="op 0 returned shape .*composed ops must keep both"):
    aug.sequence(P(aug.random_resized_crop, size=3))(_x(), key=jax.random.key(0))
  with pytest.raises(ValueError, match="ops is empty"):
    aug.random_choice([])
  with pytest.raises(TypeError, match="got one function; pass \\[op\\]"):
    aug.random_choice(aug.random_flip_left_right)
  with pytest.raises(ValueError, match="p has shape \\(3,\\), but there are 2 ops"):
    aug.random_choice([aug.random_flip_left_right] * 2, p=[0.2, 0.3, 0.5])
  with pytest.raises(ValueError, match="must be finite, >= 0 and sum to 1"):
    aug.random_choice([aug.random_flip_left_right] * 2, p=[0.2, 0.3])
  with pytest.raises(ValueError, match="must be finite, >= 0 and sum to 1"):
    aug.random_choice([aug.random_flip_left_right] * 2, p=[1.5, -0.5])
