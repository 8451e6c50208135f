"""Every jopt.augment op keeps float16 and float64 images (the registry:
test_augment_properties.py; bfloat16: test_augment_vmap.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_augment_properties import NAMES, REGISTRY, _images, _jitted


@pytest.mark.parametrize("name", NAMES)
def test_float16_kept(name):
  x = _images(8, dtype=jnp.float16)
  y = _jitted(name)(x, jax.random.key(7))
  assert y.dtype == jnp.float16 and y.shape == x.shape
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  # parameters drawn and arithmetic done in float32: the float32 result rounded once
  y32 = _jitted(name)(x.astype(jnp.float32), jax.random.key(7))
  np.testing.assert_array_equal(y, y32.astype(jnp.float16))


@pytest.mark.parametrize("name", NAMES)
def test_float64_kept(name, x64):
  del x64
  x64_images = _images(9, dtype=jnp.float64)
  y = jax.jit(lambda x, k: REGISTRY[name].op(x, key=k))(x64_images, jax.random.key(8))
  assert y.dtype == jnp.float64
  assert float(y.min()) >= 0 and float(y.max()) <= 1
