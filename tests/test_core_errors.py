"""Bad input fails early and names the argument; nothing silently becomes NaN."""

import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from tests import problems


@pytest.mark.parametrize("kwargs,name", [
    (dict(learning_rate=-1e-3), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(learning_rate=float("inf")), "learning_rate"),
    (dict(learning_rate=1e-3, b1=1.0), "b1"),
    (dict(learning_rate=1e-3, b1=-0.1), "b1"),
    (dict(learning_rate=1e-3, b2=1.5), "b2"),
    (dict(learning_rate=1e-3, eps=-1e-8), "eps"),
    (dict(learning_rate=1e-3, eps_root=float("nan")), "eps_root"),
    (dict(learning_rate=lambda t: jnp.float32(-1.0)), "learning_rate"),
])
def test_adam_rejects_bad_hyperparameters(kwargs, name):
  with pytest.raises(ValueError, match=name):
    jopt.adam(**kwargs)


def test_non_numeric_hyperparameter_is_a_type_error():
  with pytest.raises(TypeError, match="learning_rate"):
    jopt.adam("0.1")
  with pytest.raises(TypeError, match="b1"):
    jopt.adam(1e-3, b1=[0.9])


def test_weight_decay_needs_params():
  tx = jopt.adamw(1e-3)
  p = problems.quadratic_init()
  s = tx.init(p)
  with pytest.raises(ValueError, match="params"):
    tx.update(p, s)


def test_integer_params_rejected_at_init():
  with pytest.raises(TypeError, match="floating point"):
    jopt.adam(1e-3).init({"w": jnp.zeros((3,), jnp.int32)})


def test_bad_mask_is_an_error():
  tx = jopt.adamw(1e-3, mask={"w": True})
  p = problems.quadratic_init()
  with pytest.raises(ValueError, match="mask"):
    tx.update(p, tx.init(p), p)


def test_mask_selects_decayed_leaves():
  p = problems.quadratic_init()
  zero = {k: jnp.zeros_like(v) for k, v in p.items()}
  tx = jopt.adamw(1.0, weight_decay=0.5, mask=lambda params: {"w": True, "b": False})
  u, _ = tx.update(zero, tx.init(p), p)
  np.testing.assert_allclose(u["w"], -0.5 * p["w"], rtol=1e-6)
  np.testing.assert_array_equal(u["b"], jnp.zeros_like(p["b"]))


def test_state_dtype_must_be_float():
  with pytest.raises(TypeError, match="floating"):
    jopt.adam(1e-3, mu_dtype=jnp.int8)
