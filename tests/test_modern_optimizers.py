"""LAMB, LARS, Lion, Adafactor, Schedule-Free: input checks and algorithm-specific behaviour.

Muon's tests live in test_muon.py, Schedule-Free's in test_schedule_free.py (the
shared tables below still list schedule_free_adamw).

Generic properties and eager optax parity live in test_optimizer_properties.py and
test_parity_optax.py (entries in registry_modern.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jopt
from jopt.optimizers.adafactor import factored_dims
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
    (jopt.adafactor, dict(decay_offset=1.5), TypeError, "decay_offset"),
    (jopt.adafactor, dict(clipping_threshold=0.0), ValueError, "clipping_threshold"),
    (jopt.adafactor, dict(momentum=1.2), ValueError, "momentum"),
    (jopt.adafactor, dict(weight_decay_rate=-1e-3), ValueError, "weight_decay_rate"),
    (jopt.adafactor, dict(eps=-1.0), ValueError, "eps"),
    (jopt.adafactor, dict(factored="yes"), TypeError, "factored"),
    (jopt.adafactor, dict(multiply_by_parameter_scale=None), TypeError,
     "multiply_by_parameter_scale"),
    (jopt.adafactor, dict(momentum=0.9, dtype_momentum=jnp.int8), TypeError, "dtype"),
    # schedule_free_adamw's bad inputs: tests/test_schedule_free.py
]


@pytest.mark.parametrize("fn,kwargs,exc,text", BAD_INPUTS,
                         ids=[f"{f.__name__}-{t}-{i}" for i, (f, _, _, t) in enumerate(BAD_INPUTS)])
def test_bad_inputs_fail_at_construction_naming_the_argument(fn, kwargs, exc, text):
  with pytest.raises(exc, match=text):
    fn(**kwargs)


@pytest.mark.parametrize("tx,name,value", [
    (jopt.adafactor(0.01), "decay_rate", -1.0),
    (jopt.adafactor(0.01), "clipping_threshold", 0.0),
    (jopt.schedule_free_adamw(), "weight_lr_power", -1.0),
], ids=["adafactor-decay_rate", "adafactor-clipping", "sf-weight_lr_power"])
def test_set_hyperparams_checks_new_names(tx, name, value):
  state = tx.init(problems.quadratic_init())
  with pytest.raises(ValueError, match=name):
    jopt.set_hyperparams(state, **{name: value})


@pytest.mark.parametrize("tx", [jopt.lamb(0.1), jopt.lars(1.0), jopt.lion(0.1), jopt.adafactor(0.1),
                                jopt.schedule_free_adamw()],
                         ids=["lamb", "lars", "lion", "adafactor", "schedule_free"])
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
  assert set(h) == {"learning_rate", "decay_rate", "decay_offset", "eps", "clipping_threshold"}


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
  # Unused slots are one-element placeholders, as optax keeps (orbax cannot save zero-size arrays).
  assert s.v_row["w"].shape == (5,) and s.v_col["w"].shape == (6,)
  assert s.v["w"].shape == (1,)
  # (4, 3, 8): largest axis 2, second largest axis 0; axis 1 is a batch axis.
  assert s.v_row["k"].shape == (4, 3) and s.v_col["k"].shape == (3, 8)
  assert s.v["k"].shape == (1,)
  for k, shape in (("b", (5,)), ("s", ())):
    assert s.v[k].shape == shape
    assert s.v_row[k].shape == (1,) and s.v_col[k].shape == (1,)
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
