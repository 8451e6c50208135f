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
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  p = q = problems.parity_init(jnp.float64)
  s = jopt_tx.init(p)
  with jax.numpy_dtype_promotion("standard"):
    r = optax_tx.init(q)
  worst = 0.0
  for _ in range(steps):
    u, s = jopt_tx.update(jax.grad(problems.parity_loss)(p), s, p)
    p = optax.apply_updates(p, u)
    with jax.numpy_dtype_promotion("standard"):
      v, r = optax_tx.update(jax.grad(problems.parity_loss)(q), r, q)
      q = optax.apply_updates(q, v)
    worst = max(worst, problems.rel_err(p, q))
  return worst


@pytest.mark.parametrize("entry,i,args", CASES, ids=[f"{e.name}-{i}" for e, i, _ in CASES])
def test_matches_optax_float64(entry, i, args, x64):
  del i
  err = trajectory_error(entry.fn(**args), entry.optax_fn(**args))
  assert err <= 1e-7, err
