"""jopt.prune: bad input raises a clear error naming the argument."""

import jax.numpy as jnp
import optax
import pytest

import jopt
from jopt.prune import prune

PARAMS = {"w": jnp.ones((6, 8)), "b": jnp.ones(8)}
SGD = optax.sgd(0.1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparsity=1.0), r"sparsity=1.0 is outside the accepted range \[0.0, 1.0\)"),
    (dict(sparsity=-0.1), r"sparsity=-0.1 is outside"),
    (dict(sparsity=float("nan")), r"sparsity=nan is outside"),
    (dict(sparsity=lambda t: 1.5), r"the schedule given as sparsity=1.5"),
    (dict(), r"sparsity is required"),
    (dict(sparsity=0.5, criterion="l1"), r"criterion='l1' is not one of"),
    (dict(sparsity=0.5, granularity="row"), r"granularity='row' is not one of"),
    (dict(sparsity=0.5, scope="model"), r"scope='model' is not one of"),
    (dict(sparsity=0.5, allocation="er"), r"allocation='er' is not one of"),
    (dict(granularity="n_m", n_m=(4, 2)), r"n_m=\(4, 2\) has N > M"),
    (dict(granularity="n_m"), r"needs n_m=\(N, M\)"),
    (dict(granularity="n_m", n_m=(0, 4)), r"n_m=\(0, 4\) must be a pair of positive"),
    (dict(sparsity=0.5, granularity="n_m", n_m=(2, 4)), r"pass sparsity=None"),
    (dict(sparsity=0.5, n_m=(2, 4)), r"n_m=\(2, 4\) is only used with granularity='n_m'"),
    (dict(sparsity=0.5, granularity="block"), r"needs block="),
    (dict(sparsity=0.5, block=(2, 2)), r"block=\(2, 2\) is only used"),
    (dict(sparsity=0.5, granularity="layer"), r"granularity='layer'.*scope='global'"),
    (dict(sparsity=0.5, allocation="erk", scope="global"), r"allocation='erk'"),
    (dict(sparsity=0.5, update_every=0), r"update_every=0 must be an integer >= 1"),
    (dict(sparsity=0.5, begin_step=3, end_step=2), r"end_step=2 must be an integer >= 3"),
    (dict(sparsity=0.5, seed="x"), r"seed='x' must be an int or a PRNG key"),
])
def test_construction_errors(kwargs, match):
  with pytest.raises((ValueError, TypeError), match=match):
    prune(SGD, **kwargs)


def test_not_a_transformation():
  with pytest.raises(TypeError, match="tx=.* must be an optax transformation"):
    prune(lambda g: g, 0.5)


@pytest.mark.parametrize("kwargs, params, match", [
    (dict(sparsity=0.5, filter=False), PARAMS, r"filter=False selects no leaf"),
    (dict(sparsity=0.5, filter=lambda p: {"w": False, "b": False}), PARAMS, r"selects no leaf"),
    (dict(sparsity=0.5), {"b": jnp.ones(8)}, r"filter=None selects no leaf"),
    (dict(granularity="n_m", n_m=(2, 4)), {"w": jnp.ones((6, 8))},
     r"n_m=\(2, 4\): the input axis \(-2\) of params\['w'\].*not divisible by M=4"),
    (dict(sparsity=0.5, granularity="block", block=(4, 4)), {"w": jnp.ones((6, 8))},
     r"block=\(4, 4\) does not tile the last two axes of params\['w'\]"),
    (dict(sparsity=0.5, granularity="neuron", filter=True), PARAMS,
     r"granularity='neuron' needs kernels with ndim >= 2.*params\['b'\]"),
    (dict(sparsity=0.5, filter=True), {"w": jnp.ones((2, 2)), "n": jnp.ones((2, 2), jnp.int32)},
     r"params\['n'\] has dtype int32"),
    (dict(sparsity=0.5, filter={"w": True}), PARAMS, r"Expected a tree"),
])
def test_init_errors(kwargs, params, match):
  tx = prune(SGD, **kwargs)
  with pytest.raises((ValueError, TypeError), match=match):
    tx.init(params)


def test_update_needs_params():
  tx = prune(jopt.sgd(0.1), 0.5)
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match="update needs params"):
    tx.update(PARAMS, state)
