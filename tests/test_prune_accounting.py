"""jopt.prune accounting: exact sparsity counts, the bitmask export's bytes and its round trip."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import jopt
from jopt.prune import (BitmaskArray, from_bitmask, nbytes, prune, sparsity_report,
                        to_bitmask)


def _pruned_params():
  r = np.random.default_rng(0)
  params = {"dense": {"kernel": jnp.asarray(r.normal(size=(20, 10)), jnp.float32),
                      "bias": jnp.asarray(r.normal(size=(10,)), jnp.float32)},
            "conv": jnp.asarray(r.normal(size=(3, 3, 4, 8)), jnp.float32)}
  tx = prune(jopt.sgd(0.1), 0.9)
  u, state = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  return optax.apply_updates(params, u), state


def test_report_counts_params_masks_and_state():
  params, state = _pruned_params()
  rep = sparsity_report(params)
  assert rep.leaves["params['dense']['kernel']"].zeros == 180
  assert rep.leaves["params['conv']"].zeros == round(0.9 * 288)  # 259.2 -> 259
  assert rep.leaves["params['dense']['bias']"].zeros == 0
  assert rep.zeros == 180 + 259 and rep.size == 200 + 288 + 10
  assert rep.sparsity == (180 + 259) / 498
  # the masks and the state report the same pruned counts (False entries)
  for tree in (state.masks, state):
    r2 = sparsity_report(tree)
    assert {k: v.zeros for k, v in r2.leaves.items()} == {k: v.zeros for k, v in rep.leaves.items()}
  # a filter restricts the leaves counted; the table names every leaf and the total
  weights = sparsity_report(params, filter=None)
  assert set(weights.leaves) == {"params['dense']['kernel']", "params['conv']"}
  assert weights.sparsity == (180 + 259) / 488
  text = str(weights)
  assert "params['conv']" in text and "global" in text and "0.8996" in text


def test_bitmask_round_trip_and_byte_formula():
  params, _ = _pruned_params()
  packed = to_bitmask(params)
  k = packed["dense"]["kernel"]
  assert isinstance(k, BitmaskArray) and isinstance(packed["conv"], BitmaskArray)
  assert isinstance(packed["dense"]["bias"], jax.Array)  # 1-D: left dense by default
  assert k.nnz == 20 and k.nbytes == math.ceil(200 / 8) + 20 * 4
  c = packed["conv"]
  assert c.nbytes == math.ceil(288 / 8) + 29 * 4
  assert nbytes(packed) == k.nbytes + c.nbytes + 10 * 4
  assert nbytes(params) == (200 + 288 + 10) * 4
  back = from_bitmask(packed)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the bitmask is numpy's packbits of the non-zero pattern
  nz = np.asarray(params["conv"]).ravel() != 0
  np.testing.assert_array_equal(c.bits, np.packbits(nz))
  np.testing.assert_array_equal(np.unpackbits(c.bits, count=288).astype(bool), nz)


@settings(max_examples=40, deadline=None)
@given(a=hnp.arrays(st.sampled_from([np.float32, np.float16, np.int8]),
                    hnp.array_shapes(min_dims=2, max_dims=3, max_side=7),
                    elements=st.sampled_from([0, 0, 0, 1, -2, 3])))
def test_bitmask_round_trip_property(a):
  packed = to_bitmask({"w": jnp.asarray(a)}, filter=True)["w"]
  nnz = int(np.count_nonzero(a))
  assert packed.nbytes == math.ceil(a.size / 8) + nnz * a.dtype.itemsize
  back = np.asarray(packed.todense())
  assert back.dtype == a.dtype
  np.testing.assert_array_equal(back, a)
  assert sparsity_report({"w": a}).leaves["params['w']"].zeros == a.size - nnz
