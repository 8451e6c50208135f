"""Step-by-step parity with optax in float64 for every shared name (rel. error <= 1e-7)."""

import jax
import optax
import pytest

from tests import problems
from tests.registry import all_entries

CASES = [(e, i, args) for e in all_entries() if e.optax_fn is not None
         for i, args in enumerate(e.parity)]
STEPS = 60


def trajectory_error(jopt_tx, optax_tx, steps=STEPS):
  """Max over ``steps`` jitted steps of the relative distance between the two runs."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def stepper(tx):
    def step(p, s):
      u, s = tx.update(jax.grad(problems.parity_loss)(p), s, p)
      return optax.apply_updates(p, u), s
    return jax.jit(step)

  p = q = problems.parity_init(jnp.float64)
  s, jopt_step = jopt_tx.init(p), stepper(jopt_tx)
  with jax.numpy_dtype_promotion("standard"):
    r, optax_step = optax_tx.init(q), stepper(optax_tx)
  worst = 0.0
  for _ in range(steps):
    p, s = jopt_step(p, s)
    with jax.numpy_dtype_promotion("standard"):  # optax relies on implicit promotion
      q, r = optax_step(q, r)
    worst = max(worst, problems.rel_err(p, q))
  return worst


@pytest.mark.parametrize("entry,i,args", CASES, ids=[f"{e.name}-{i}" for e, i, _ in CASES])
def test_matches_optax_float64(entry, i, args, x64, record_property):
  del i
  err = trajectory_error(entry.fn(**args), entry.optax_fn(**args))
  record_property("max_rel_err", err)
  assert err <= 1e-7, err
