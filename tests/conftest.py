"""Test configuration: 8 fake CPU devices, strict dtype promotion, a float64 fixture.

``JOPT_TEST_CPU_DEVICES=1`` runs the tests on one device instead (what a laptop or
one-GPU user has); tests/test_optimizer_properties.py re-runs itself that way.

JAX reads these settings when its backend starts, so they are set here, before
any test module imports ``jax.numpy`` arrays onto a device.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", int(os.environ.get("JOPT_TEST_CPU_DEVICES", "8")))
jax.config.update("jax_numpy_dtype_promotion", "strict")

import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Run the test with float64 enabled (``jax_enable_x64``), then restore."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def standard_promotion():
  """Context for calling third-party code (optax) that relies on implicit promotion."""
  return jax.numpy_dtype_promotion("standard")
