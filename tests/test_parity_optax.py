"""Step-by-step parity with optax in float64 for every shared name (rel. error <= 1e-7)."""

import jax.numpy as jnp
import pytest

from tests import problems
from tests.registry import all_entries

CASES = [(e, i, args) for e in all_entries() if e.optax_fn is not None
         for i, args in enumerate(e.parity)]
STEPS = 60


@pytest.mark.parametrize("entry,i,args", CASES, ids=[f"{e.name}-{i}" for e, i, _ in CASES])
def test_matches_optax_float64(entry, i, args, x64, record_property):
  del i
  err, _, _ = problems.run_side_by_side(entry.fn(**args), entry.optax_fn(**args),
                                         problems.parity_init(jnp.float64), steps=STEPS)
  record_property("max_rel_err", err)
  assert err <= 1e-7, err
