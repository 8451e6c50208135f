"""jopt.prune masks against NumPy argsort transcriptions: criteria, granularities, scope, ERK.

One mask update is one ``update`` call at step 0; the masks in the returned
state must equal a NumPy transcription of each rule (stable argsort: ties go
to the lower index), in float64. Hypothesis checks exact counts and the N:M
pattern on random shapes and targets.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from jopt.prune import erk_densities, prune
from jopt.prune.allocation import erk_counts


def _masks(tx, params, grads=None):
  grads = jax.tree.map(jnp.ones_like, params) if grads is None else grads
  _, state = tx.update(grads, tx.init(params), params)
  return jax.tree.map(np.asarray, state.masks)


def _k(s, n):
  return int(math.floor(s * n + 0.5))


def _np_keep(scores, k):
  """Prune the k lowest of a 1-D array, ties to the lower index (stable argsort)."""
  keep = np.ones(scores.shape[0], bool)
  keep[np.argsort(scores, kind="stable")[:k]] = False
  return keep


def _params(seed=0, shapes=((8, 12), (12, 4)), dtype=np.float64):
  r = np.random.default_rng(seed)
  return {f"l{i}": jnp.asarray(r.normal(size=sh).astype(dtype)) for i, sh in enumerate(shapes)}


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.9])
def test_magnitude_layer_matches_numpy(x64, s):
  params = _params()
  params["b"] = jnp.ones(4, jnp.float64)  # 1-D: left out by the default filter
  masks = _masks(prune(optax.sgd(0.1), s), params)
  for name in ("l0", "l1"):
    w = np.asarray(params[name])
    ref = _np_keep(np.abs(w).ravel(), _k(s, w.size)).reshape(w.shape)
    np.testing.assert_array_equal(masks[name], ref)
    assert (~masks[name]).sum() == _k(s, w.size)
  assert masks["b"].all()


def test_saliency_global_matches_numpy(x64):
  params = _params(1)
  grads = _params(2)
  s = 0.6
  masks = _masks(prune(optax.sgd(0.1), s, criterion="saliency", scope="global"), params, grads)
  sc = np.concatenate([np.abs(np.asarray(params[k]) * np.asarray(grads[k])).ravel()
                       for k in ("l0", "l1")])
  keep = _np_keep(sc, _k(s, sc.size))
  got = np.concatenate([masks["l0"].ravel(), masks["l1"].ravel()])
  np.testing.assert_array_equal(got, keep)
  # one global threshold: every kept score is >= every pruned score
  assert sc[keep].min() >= sc[~keep].max()


def test_ties_go_to_the_lower_index(x64):
  params = {"w": jnp.ones((3, 4), jnp.float64)}
  masks = _masks(prune(optax.sgd(0.1), 0.5), params)
  np.testing.assert_array_equal(masks["w"].ravel(), np.arange(12) >= 6)


def test_random_is_exact_seeded_and_nested():
  params = {"w": jnp.ones((10, 10))}
  a = _masks(prune(optax.sgd(0.1), 0.3, criterion="random", seed=1), params)["w"]
  b = _masks(prune(optax.sgd(0.1), 0.6, criterion="random", seed=1), params)["w"]
  c = _masks(prune(optax.sgd(0.1), 0.3, criterion="random", seed=2), params)["w"]
  assert (~a).sum() == 30 and (~b).sum() == 60 and (~c).sum() == 30
  assert not (~a & b).any()        # nested: what 30% prunes, 60% prunes too
  assert (a != c).any()            # another seed, another mask
  # the pattern is not the position order (it is random, not index-based)
  assert not np.array_equal(a.ravel(), np.arange(100) >= 30)


@pytest.mark.parametrize("granularity", ["neuron", "channel"])
def test_output_units_match_numpy(x64, granularity):
  shape = (6, 10) if granularity == "neuron" else (3, 3, 4, 10)  # Dense (in, out), conv HWIO
  params = _params(3, (shape,))
  s = 0.3
  masks = _masks(prune(optax.sgd(0.1), s, granularity=granularity), params)
  w = np.asarray(params["l0"])
  col = np.abs(w).reshape(-1, shape[-1]).mean(axis=0)  # Li et al.: L1 norm / filter size
  keep = _np_keep(col, _k(s, shape[-1]))
  np.testing.assert_array_equal(masks["l0"], np.broadcast_to(keep, shape))


def test_global_neuron_ranks_columns_across_leaves(x64):
  params = _params(6, ((6, 10), (4, 5)))
  s = 0.4
  masks = _masks(prune(optax.sgd(0.1), s, granularity="neuron", scope="global"), params)
  cols = [np.abs(np.asarray(params[k])).mean(axis=0) for k in ("l0", "l1")]
  keep = _np_keep(np.concatenate(cols), _k(s, 15))
  np.testing.assert_array_equal(masks["l0"], np.broadcast_to(keep[:10], (6, 10)))
  np.testing.assert_array_equal(masks["l1"], np.broadcast_to(keep[10:], (4, 5)))


def test_a_bare_array_is_a_params_tree():
  w = jnp.asarray(np.random.default_rng(7).normal(size=(5, 4)), jnp.float32)
  tx = prune(optax.adam(0.1), 0.5)
  state = tx.init(w)
  with jax.numpy_dtype_promotion("standard"):
    u, state = tx.update(jnp.ones_like(w), state, w)
  m = np.asarray(state.masks)
  np.testing.assert_array_equal(m.ravel(), _np_keep(np.abs(np.asarray(w)).ravel(), 10))
  assert (np.asarray(optax.apply_updates(w, u))[~m] == 0).all()
  assert (np.asarray(state.inner_state[0].mu)[~m] == 0).all()
  assert (np.asarray(state.inner_state[0].nu)[~m] == 0).all()


def test_block_matches_numpy(x64):
  params = _params(4, ((2, 8, 12),))
  s = 0.5
  masks = _masks(prune(optax.sgd(0.1), s, granularity="block", block=(4, 4)), params)
  w = np.abs(np.asarray(params["l0"]))
  blocks = w.reshape(2, 2, 4, 3, 4)
  rms = np.sqrt((blocks ** 2).mean(axis=(2, 4))).ravel()   # block L2 norm / sqrt(16)
  keep = _np_keep(rms, _k(s, rms.size)).reshape(2, 2, 1, 3, 1)
  ref = np.broadcast_to(keep, (2, 2, 4, 3, 4)).reshape(2, 8, 12)
  np.testing.assert_array_equal(masks["l0"], ref)


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_n_m_matches_numpy(x64, nm):
  n, m = nm
  params = _params(5, ((16, 6), (3, 3, 8, 5)))
  masks = _masks(prune(optax.sgd(0.1), granularity="n_m", n_m=nm), params)
  for name in ("l0", "l1"):
    w = np.abs(np.asarray(params[name]))
    ref = np.ones(w.shape, bool)
    it = np.ndindex(*w.shape[:-2], w.shape[-2] // m, w.shape[-1])
    for idx in it:
      *lead, grp, out = idx
      col = w[(*lead, slice(grp * m, (grp + 1) * m), out)]
      drop = np.argsort(col, kind="stable")[:m - n]
      for d in drop:
        ref[(*lead, grp * m + d, out)] = False
    np.testing.assert_array_equal(masks[name], ref)


def test_layer_granularity_prunes_whole_leaves(x64):
  params = {"a": jnp.full((4, 4), 0.1, jnp.float64), "b": jnp.full((4, 4), 3.0, jnp.float64),
            "c": jnp.full((2, 2), 0.5, jnp.float64), "d": jnp.full((3, 3), 2.0, jnp.float64)}
  masks = _masks(prune(optax.sgd(0.1), 0.5, granularity="layer", scope="global"), params)
  # round(0.5 * 4) = 2 leaves, the two lowest mean |w|: a and c
  assert [bool(masks[k].any()) for k in "abcd"] == [False, True, False, True]
  assert all(masks[k].all() or not masks[k].any() for k in "abcd")


def _numpy_erk(s, shapes):
  """Evci et al.'s loop (RigL's sparse_utils), one densest layer made dense at a time."""
  n = np.array([np.prod(sh) for sh in shapes], float)
  raw = np.array([sum(sh) / np.prod(sh) for sh in shapes], float)
  dense = np.zeros(len(shapes), bool)
  while True:
    rhs = (1 - s) * n.sum() - n[dense].sum()
    eps = rhs / (raw[~dense] * n[~dense]).sum()
    if (eps * raw[~dense]).max() <= 1:
      break
    dense |= (raw == raw[~dense].max()) & ~dense
  return np.where(dense, 1.0, eps * raw)


SHAPES = [(3, 3, 3, 16), (3, 3, 16, 32), (512, 64), (64, 10), (5, 7)]


@pytest.mark.parametrize("s", [0.5, 0.8, 0.95])
def test_erk_densities_and_exact_global_count(x64, s):
  got = np.asarray(erk_densities(jnp.asarray(s, jnp.float64), SHAPES))
  ref = _numpy_erk(s, SHAPES)
  np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)  # measured 0.0 (max rel)
  n = np.array([np.prod(sh) for sh in SHAPES])
  assert abs((got * n).sum() - (1 - s) * n.sum()) < 1e-9
  counts = [int(c) for c in erk_counts(jnp.asarray(s, jnp.float64), SHAPES)]
  assert sum(counts) == _k(s, n.sum())
  assert all(0 <= c <= ni for c, ni in zip(counts, n))
  np.testing.assert_array_less(np.abs(np.array(counts) - (1 - ref) * n), 1.0 + 1e-9)
  # through the transform: the masks prune exactly those counts
  params = {f"l{i}": jnp.ones(sh, jnp.float64) for i, sh in enumerate(SHAPES)}
  masks = _masks(prune(optax.sgd(0.1), s, allocation="erk"), params)
  pruned = [int((~masks[f"l{i}"]).sum()) for i in range(len(SHAPES))]
  assert pruned == counts


def test_erk_makes_small_layers_dense(x64):
  # a tiny layer next to a huge one: its ERK density would exceed 1
  shapes = [(2, 2), (1000, 1000)]
  d = np.asarray(erk_densities(jnp.asarray(0.5, jnp.float64), shapes))
  assert d[0] == 1.0
  np.testing.assert_allclose(d, _numpy_erk(0.5, shapes), rtol=1e-13)


_shape = st.sampled_from([(4, 4), (3, 8), (2, 3, 4, 8), (8, 12), (16, 2)])


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(_shape, min_size=1, max_size=3), s=st.floats(0.0, 0.999),
       scope=st.sampled_from(["layer", "global"]), seed=st.integers(0, 10))
def test_exact_sparsity_property(shapes, s, scope, seed):
  params = _params(seed, shapes, np.float32)
  masks = _masks(prune(optax.sgd(0.1), s, scope=scope), params)
  s32 = float(np.float32(s))
  if scope == "layer":
    for k, w in params.items():
      assert int((~masks[k]).sum()) == _k(s32, w.size)
  else:
    total = sum(w.size for w in params.values())
    assert sum(int((~m).sum()) for m in masks.values()) == _k(s32, total)


@settings(max_examples=20, deadline=None)
@given(nm=st.sampled_from([(1, 2), (2, 4), (3, 4), (4, 8), (2, 8)]),
       lead=st.sampled_from([(), (2,), (3, 1)]), groups=st.integers(1, 3),
       out=st.integers(1, 5), seed=st.integers(0, 100))
def test_n_m_validity_property(nm, lead, groups, out, seed):
  n, m = nm
  shape = (*lead, groups * m, out)
  params = {"w": jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))}
  mask = _masks(prune(optax.sgd(0.1), granularity="n_m", n_m=nm), params)["w"]
  g = mask.reshape(*lead, groups, m, out)
  assert (g.sum(axis=-2) == n).all()  # exactly N kept (<= N) in every group of M


def test_global_scope_over_mixed_dtypes(x64):
  params = {"a": jnp.full((4, 4), 2.0, jnp.float32), "b": jnp.ones((4, 4), jnp.float64),
            "c": jnp.full((4, 4), 3.0, jnp.bfloat16)}
  masks = _masks(prune(optax.sgd(0.1), 0.5, scope="global"), params)
  # 24 of 48 by |w|: all of b (1.0), then the first 8 entries of a (2.0, ties by index)
  assert (~masks["b"]).all() and masks["c"].all()
  np.testing.assert_array_equal(masks["a"].ravel(), np.arange(16) >= 8)


def test_filter_prefix_and_callable(x64):
  params = {"enc": _params(8), "head": _params(9)}
  for flt in ({"enc": True, "head": False}, lambda p: {"enc": True, "head": False}):
    masks = _masks(prune(optax.sgd(0.1), 0.5, filter=flt), params)
    assert all((~m).sum() == m.size // 2 for m in masks["enc"].values())
    assert all(m.all() for m in masks["head"].values())
