"""Every jopt.augment op under jax.vmap over an extra leading axis, and with
bfloat16 images (float16 and float64: test_augment_dtypes.py; the registry:
test_augment_properties.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_augment_properties import NAMES, REGISTRY, _images, _jitted


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_an_extra_leading_axis(name):
  xs = jnp.stack([_images(5), _images(6)])
  keys = jax.random.split(jax.random.key(5), 2)
  ys = jax.jit(jax.vmap(lambda x, k: REGISTRY[name].op(x, key=k)))(xs, keys)
  for i in range(2):
    np.testing.assert_allclose(ys[i], _jitted(name)(xs[i], keys[i]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_dtypes_kept(name, dtype):
  x = _images(8, dtype=dtype)
  y = _jitted(name)(x, jax.random.key(7))
  assert y.dtype == dtype and y.shape == x.shape
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  # the same random parameters (drawn in float32 for both) and float32 arithmetic:
  # the half-precision result is the float32 result rounded once
  y32 = _jitted(name)(x.astype(jnp.float32), jax.random.key(7))
  np.testing.assert_array_equal(y, y32.astype(dtype))
