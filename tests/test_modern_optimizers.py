"""LAMB, LARS, Lion, Adafactor, Muon, Schedule-Free: input checks and algorithm-specific behaviour.

Generic properties and eager optax parity live in test_optimizer_properties.py and
test_parity_optax.py (entries in registry_modern.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from optax.contrib import _muon as optax_muon
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jopt
from jopt.optimizers.adafactor import factored_dims
from jopt.optimizers.muon import NS_COEFFS_PRESETS, newton_schulz
from tests import problems


# --------------------------------------------------------------------------- bad inputs

BAD_INPUTS = [
    # (constructor, kwargs, exception, the text the message must contain)
    (jopt.lamb, dict(learning_rate=-0.1), ValueError, "learning_rate"),
    (jopt.lamb, dict(learning_rate=0.1, b1=1.0), ValueError, "b1"),
    (jopt.lamb, dict(learning_rate=0.1, b2=-0.5), ValueError, "b2"),
    (jopt.lamb, dict(learning_rate=0.1, eps=-1e-6), ValueError, "eps"),
    (jopt.lamb, dict(learning_rate=0.1, eps_root=float("nan")), ValueError, "eps_root"),
    (jopt.lamb, dict(learning_rate=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
    (jopt.lamb, dict(learning_rate=0.1, mu_dtype=jnp.int32), TypeError, "dtype"),
    (jopt.lars, dict(learning_rate=1.0, momentum=1.0), ValueError, "momentum"),
    (jopt.lars, dict(learning_rate=1.0, trust_coefficient=-1.0), ValueError,
     "trust_coefficient"),
    (jopt.lars, dict(learning_rate=1.0, eps=-1.0), ValueError, "eps"),
    (jopt.lars, dict(learning_rate="fast"), TypeError, "learning_rate"),
    (jopt.lion, dict(learning_rate=0.01, b1=1.5), ValueError, "b1"),
    (jopt.lion, dict(learning_rate=0.01, b2=1.0), ValueError, "b2"),
    (jopt.lion, dict(learning_rate=0.01, weight_decay=-1e-3), ValueError, "weight_decay"),
    (jopt.adafactor, dict(min_dim_size_to_factor=0), ValueError, "min_dim_size_to_factor"),
    (jopt.adafactor, dict(decay_rate=-0.8), ValueError, "decay_rate"),
    (jopt.adafactor, dict(decay_offset=-1), ValueError, "decay_offset"),
    (jopt.adafactor, dict(decay_offset=1.5), ValueError, "decay_offset"),
    (jopt.adafactor, dict(clipping_threshold=0.0), ValueError, "clipping_threshold"),
    (jopt.adafactor, dict(momentum=1.2), ValueError, "momentum"),
    (jopt.adafactor, dict(weight_decay_rate=-1e-3), ValueError, "weight_decay_rate"),
    (jopt.adafactor, dict(eps=-1.0), ValueError, "eps"),
    (jopt.adafactor, dict(factored="yes"), TypeError, "factored"),
    (jopt.adafactor, dict(multiply_by_parameter_scale=None), TypeError,
     "multiply_by_parameter_scale"),
    (jopt.adafactor, dict(momentum=0.9, dtype_momentum=jnp.int8), TypeError, "dtype"),
    (jopt.muon, dict(learning_rate=0.02, ns_steps=0), ValueError, "ns_steps"),
    (jopt.muon, dict(learning_rate=0.02, ns_coeffs=(1.0, 2.0)), ValueError, "ns_coeffs"),
    (jopt.muon, dict(learning_rate=0.02, ns_coeffs="polar"), ValueError, "ns_coeffs"),
    (jopt.muon, dict(learning_rate=0.02, ns_coeffs=((3.0, -3.0, 1.0),) * 6), ValueError,
     "ns_steps"),
    (jopt.muon, dict(learning_rate=0.02, beta=1.0), ValueError, "beta"),
    (jopt.muon, dict(learning_rate=0.02, preconditioning="polar"), ValueError,
     "preconditioning"),
    (jopt.muon, dict(learning_rate=0.02, adam_b1=1.0), ValueError, "adam_b1"),
    (jopt.muon, dict(learning_rate=0.02, adam_b2=-0.1), ValueError, "adam_b2"),
    (jopt.muon, dict(learning_rate=0.02, adam_eps_root=-1.0), ValueError, "adam_eps_root"),
    (jopt.muon, dict(learning_rate=0.02, adam_weight_decay=-1.0), ValueError,
     "adam_weight_decay"),
    (jopt.muon, dict(learning_rate=0.02, adam_learning_rate=-1.0), ValueError,
     "adam_learning_rate"),
    (jopt.muon, dict(learning_rate=0.02, consistent_rms=-0.2), ValueError, "consistent_rms"),
    (jopt.muon, dict(learning_rate=0.02, nesterov="yes"), TypeError, "nesterov"),
    (jopt.muon, dict(learning_rate=0.02,
                     muon_weight_dimension_numbers=optax.contrib.MuonDimensionNumbers()),
     NotImplementedError, "muon_weight_dimension_numbers"),
    (jopt.schedule_free_adamw, dict(b1=0.0), ValueError, "b1"),
    (jopt.schedule_free_adamw, dict(b2=1.0), ValueError, "b2"),
    (jopt.schedule_free_adamw, dict(warmup_steps=0), ValueError, "warmup_steps"),
    (jopt.schedule_free_adamw, dict(weight_lr_power=-2.0), ValueError, "weight_lr_power"),
    (jopt.schedule_free_adamw, dict(learning_rate=lambda step: -1.0), ValueError,
     "learning_rate"),
    (jopt.schedule_free_adamw, dict(state_dtype=jnp.int32), TypeError, "dtype"),
]


@pytest.mark.parametrize("fn,kwargs,exc,text", BAD_INPUTS,
                         ids=[f"{f.__name__}-{t}-{i}" for i, (f, _, _, t) in enumerate(BAD_INPUTS)])
def test_bad_inputs_fail_at_construction_naming_the_argument(fn, kwargs, exc, text):
  with pytest.raises(exc, match=text):
    fn(**kwargs)


@pytest.mark.parametrize("tx,name,value", [
    (jopt.muon(0.02), "adam_b2", 1.5),
    (jopt.adafactor(0.01), "decay_rate", -1.0),
    (jopt.adafactor(0.01), "clipping_threshold", 0.0),
    (jopt.schedule_free_adamw(), "weight_lr_power", -1.0),
], ids=["muon-adam_b2", "adafactor-decay_rate", "adafactor-clipping", "sf-weight_lr_power"])
def test_set_hyperparams_checks_new_names(tx, name, value):
  state = tx.init(problems.quadratic_init())
  with pytest.raises(ValueError, match=name):
    jopt.set_hyperparams(state, **{name: value})


@pytest.mark.parametrize("tx", [jopt.lamb(0.1), jopt.lars(1.0), jopt.lion(0.1), jopt.adafactor(0.1),
                                jopt.muon(0.1), jopt.schedule_free_adamw()],
                         ids=["lamb", "lars", "lion", "adafactor", "muon", "schedule_free"])
def test_missing_params_is_a_clear_error(tx):
  p = problems.quadratic_init()
  with pytest.raises(ValueError, match="params"):
    tx.update(jax.grad(problems.quadratic_loss)(p), tx.init(p))


def test_adafactor_without_parameter_scale_needs_no_params():
  tx = jopt.adafactor(0.1, multiply_by_parameter_scale=False)
  p = problems.quadratic_init()
  u, _ = tx.update(jax.grad(problems.quadratic_loss)(p), tx.init(p))
  assert jax.tree.structure(u) == jax.tree.structure(p)


def test_hyperparams_live_in_state():
  h = jopt.hyperparams(jopt.adafactor(min_dim_size_to_factor=3).init(problems.quadratic_init()))
  assert float(h["learning_rate"]) == 1.0  # learning_rate=None means 1
  assert set(h) == {"learning_rate", "decay_rate", "eps", "clipping_threshold"}
  h = jopt.hyperparams(jopt.muon(0.02, adam_learning_rate=1e-3).init(problems.quadratic_init()))
  assert {"beta", "adam_b1", "adam_b2", "adam_learning_rate", "weight_decay"} <= set(h)


def _worst(tx, ref, params, loss, steps=60):
  return problems.run_side_by_side(tx, ref, params, loss, steps)[0]


# ------------------------------------------------------------------------------- adafactor

def _adafactor_params(dtype=jnp.float32):
  rng = np.random.default_rng(2)
  return {"w": jnp.asarray(rng.normal(size=(6, 5)), dtype),
          "k": jnp.asarray(rng.normal(size=(4, 3, 8)), dtype),
          "b": jnp.asarray(rng.normal(size=(5,)), dtype),
          "s": jnp.asarray(1.5, dtype)}


def _adafactor_loss(p):
  dt = p["w"].dtype
  return (jnp.sum(jnp.cos(p["w"]) * jnp.arange(30, dtype=dt).reshape(6, 5))
          + jnp.sum(p["k"] ** 4) + jnp.sum(jnp.tanh(p["b"])) + p["s"] ** 2)


def test_factored_dims_picks_the_two_largest_axes():
  assert factored_dims((6, 5), True, 3) == (1, 0)
  assert factored_dims((5, 6), True, 3) == (0, 1)
  assert factored_dims((4, 3, 8), True, 3) == (0, 2)
  assert factored_dims((4, 2, 8), True, 3) == (0, 2)
  assert factored_dims((2, 8), True, 3) is None   # second largest too small
  assert factored_dims((6, 5), False, 3) is None  # factored=False
  assert factored_dims((7,), True, 1) is None     # vectors never


def test_adafactor_factored_state_shapes():
  p = _adafactor_params()
  s = jopt.adafactor(0.01, min_dim_size_to_factor=3).init(p)
  # (6, 5): the row statistic drops the largest axis (6), the column one axis 1.
  assert s.v_row["w"].shape == (5,) and s.v_col["w"].shape == (6,) and s.v["w"].shape == (0,)
  # (4, 3, 8): largest axis 2, second largest axis 0; axis 1 is a batch axis.
  assert s.v_row["k"].shape == (4, 3) and s.v_col["k"].shape == (3, 8)
  assert s.v["k"].shape == (0,)
  for k, shape in (("b", (5,)), ("s", ())):
    assert s.v[k].shape == shape and s.v_row[k].shape == (0,) and s.v_col[k].shape == (0,)
  # Same factored statistics as optax's state.
  with jax.numpy_dtype_promotion("standard"):
    o = optax.adafactor(0.01, min_dim_size_to_factor=3).init(p)[0]
  for k in ("w", "k"):
    assert s.v_row[k].shape == o.v_row[k].shape and s.v_col[k].shape == o.v_col[k].shape
  for k in ("b", "s"):
    assert s.v[k].shape == o.v[k].shape
  # The default threshold (128) factors only large matrices: 256 + 130 numbers.
  big = {"w": jnp.zeros((256, 130)), "small": jnp.zeros((256, 64))}
  s = jopt.adafactor().init(big)
  assert s.v_row["w"].shape == (130,) and s.v_col["w"].shape == (256,)
  assert s.v["small"].shape == (256, 64)


def test_adafactor_factored_stats_keep_the_parameter_sharding():
  mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
  sharding = NamedSharding(mesh, P("d", None))
  p = {"w": jax.device_put(jnp.ones((16, 8)), sharding)}
  s = jax.jit(jopt.adafactor(min_dim_size_to_factor=4).init)(p)
  # v_col keeps axis 0 of w (the mean is over axis 1), so it keeps its sharding.
  assert s.v_col["w"].shape == (16,)
  assert s.v_col["w"].sharding.is_equivalent_to(NamedSharding(mesh, P("d")), 1)


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01, min_dim_size_to_factor=3),
    dict(learning_rate=0.01, min_dim_size_to_factor=3, momentum=0.9, clipping_threshold=2.0,
         dtype_momentum=None),
], ids=["plain", "momentum"])
def test_adafactor_rank3_matches_optax_float64(kwargs, x64):
  del x64
  err = _worst(jopt.adafactor(**kwargs), optax.adafactor(**kwargs),
                              _adafactor_params(jnp.float64), _adafactor_loss, steps=30)
  assert err <= 1e-7, err


def test_adafactor_weight_decay_scales_with_learning_rate(x64):
  """jopt multiplies weight_decay_rate by the learning rate (optax does not)."""
  del x64
  p = problems.parity_init(jnp.float64)
  g = jax.grad(problems.parity_loss)(p)
  lr, wd = 0.1, 0.01
  kw = dict(min_dim_size_to_factor=3, weight_decay_rate=wd)
  u, _ = jopt.adafactor(lr, **kw).update(g, jopt.adafactor(lr, **kw).init(p), p)
  with jax.numpy_dtype_promotion("standard"):
    tx = optax.adafactor(lr, **{**kw, "weight_decay_rate": wd * lr})
    v, _ = tx.update(g, tx.init(p), p)
  assert problems.rel_err(u, v) <= 1e-12


# ------------------------------------------------------------------------------------ muon

@pytest.mark.parametrize("shape", [(20, 12), (12, 20), (16, 16)])
def test_newton_schulz_singular_values_in_band(shape, x64):
  del x64
  x = jnp.asarray(np.random.default_rng(3).normal(size=shape))
  coeffs = NS_COEFFS_PRESETS["standard"] * 5
  o = newton_schulz(x, coeffs)
  sv = np.linalg.svd(np.asarray(o), compute_uv=False)
  # Jordan's quintic maps every singular value into a band around 1, not onto 1.
  assert sv.min() > 0.6 and sv.max() < 1.25, sv
  # Same singular vectors as the exact polar factor U V^T: o V = U diag(p(s)),
  # where p(s) > 0 is what the iteration made of each singular value of x.
  u, _, vt = np.linalg.svd(np.asarray(x), full_matrices=False)
  ov = np.asarray(o) @ vt.T
  np.testing.assert_allclose(ov, u * np.linalg.norm(ov, axis=0), atol=1e-8)
  with jax.numpy_dtype_promotion("standard"):
    ref = optax_muon.orthogonalize_via_newton_schulz(x, jnp.asarray(coeffs[0]), 5)
  np.testing.assert_allclose(np.asarray(o), np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_newton_schulz_more_steps_do_not_leave_the_band(x64):
  del x64
  x = jnp.asarray(np.random.default_rng(4).normal(size=(10, 30)))
  sv = np.linalg.svd(np.asarray(newton_schulz(x, NS_COEFFS_PRESETS["standard"] * 20)),
                     compute_uv=False)
  assert sv.min() > 0.6 and sv.max() < 1.25, sv


def test_muon_splits_matrices_from_the_rest():
  p = {"k": jnp.zeros((4, 3)), "b": jnp.zeros((3,)), "c": jnp.zeros((2, 2, 2)), "s": jnp.zeros(())}
  s = jopt.muon(0.02).init(p)
  assert s.mu["k"].shape == (4, 3) and s.nu["k"].shape == (0,)  # Muon: momentum only
  for k in ("b", "c", "s"):
    assert s.mu[k].shape == p[k].shape and s.nu[k].shape == p[k].shape  # Adam


@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01, preconditioning="aol", ns_steps=4),
    dict(learning_rate=0.01, preconditioning="schatten",
         ns_coeffs=((3.0, -3.2, 1.2), (2.0, -1.5, 0.5))),
    dict(learning_rate=0.01, ns_coeffs="dion", nesterov=False, weight_decay=0.05),
    dict(learning_rate=0.003, adaptive=True, consistent_rms=0.2),
], ids=["aol", "schatten-table", "dion", "adaptive-consistent-rms"])
def test_muon_options_match_optax_float64(kwargs, x64):
  del x64
  err = _worst(jopt.muon(**kwargs), optax.contrib.muon(**kwargs),
                              problems.parity_init(jnp.float64), problems.parity_loss)
  assert err <= 1e-7, err


def test_muon_first_step_is_scaled_orthogonal_matrix(x64):
  """Step 1 without Nesterov: m_hat = g, so u = -lr * sqrt(max(1, n_out/n_in)) * NS(g)."""
  del x64
  p = {"w": jnp.asarray(np.random.default_rng(5).normal(size=(3, 12)))}
  g = {"w": jnp.asarray(np.random.default_rng(6).normal(size=(3, 12)))}
  tx = jopt.muon(0.1, nesterov=False)
  u, _ = tx.update(g, tx.init(p), p)
  expected = -0.1 * 2.0 * newton_schulz(g["w"], NS_COEFFS_PRESETS["standard"] * 5)
  np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(expected), rtol=1e-12)


# --------------------------------------------------------------------------- schedule-free

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
  assert problems.rel_err(mine, ref) <= 1e-7
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


# ------------------------------------------------------------------------ lars, lamb, lion

def test_lars_trust_ratio_mask_gives_plain_momentum_sgd(x64):
  """With the trust ratio and decay masked off everywhere, LARS is heavy-ball SGD."""
  del x64
  p = problems.parity_init(jnp.float64)
  tx = jopt.lars(0.1, trust_ratio_mask=False, momentum=0.9)
  with jax.numpy_dtype_promotion("standard"):
    ref = optax.sgd(0.1, momentum=0.9)
  err = _worst(tx, ref, p, problems.parity_loss, steps=20)
  assert err <= 1e-12, err


def test_lamb_zero_parameter_takes_the_plain_adam_step(x64):
  """Trust ratio 1 where ||theta|| = 0: a zero-initialised bias still moves."""
  del x64
  p = {"b": jnp.zeros((3,))}
  g = {"b": jnp.asarray([1.0, -2.0, 0.5])}
  tx = jopt.lamb(0.1)
  u, _ = tx.update(g, tx.init(p), p)
  np.testing.assert_allclose(np.asarray(u["b"]), -0.1 * np.sign(np.asarray(g["b"])), rtol=1e-5)


def test_lion_moves_every_coordinate_by_the_learning_rate():
  p = problems.quadratic_init()
  tx = jopt.lion(0.01, weight_decay=0.0)
  u, _ = tx.update(jax.grad(problems.quadratic_loss)(p), tx.init(p), p)
  for leaf in jax.tree.leaves(u):
    np.testing.assert_allclose(np.abs(np.asarray(leaf)), 0.01, rtol=1e-6)
