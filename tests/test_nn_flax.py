"""jopt.nn inside Flax: an NNX module, a Linen module and a plain jitted function agree.

The same small block (dense -> batch norm -> relu -> group norm -> spatial dropout
-> residual with drop path -> layer norm -> dropout) is written three times:

* an ``nnx.Module``: parameters in ``nnx.Param``, running statistics in
  ``nnx.BatchStat``, the dropout key from the module's ``nnx.Rngs``, the mode in
  a ``deterministic`` attribute (so ``model.train()`` / ``model.eval()`` work);
* a Linen module: statistics in the ``"batch_stats"`` collection (updated with
  ``mutable=["batch_stats"]``), the key from ``self.make_rng("dropout")``;
* a plain function under ``jax.jit`` taking the parameters, stats and key.

Driven with the same inputs and keys for three training steps and one
evaluation step, the outputs and statistics agree. The NNX key is reproduced
independently with a second ``nnx.Rngs`` of the same seed (its stream draws
``fold_in(key, count)``); Linen derives its key from the module path, so the
Linen module sows the key it drew and the plain function is given that one.
Finally jopt's batch norm inside an NNX module is compared with
``nnx.BatchNorm`` (flax's ``momentum=0.99`` is ``decay=0.99`` with
``running_var="biased"``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jopt.nn as jnn

C_IN, C = 3, 8
RATES = dict(spatial=0.25, path=0.2, drop=0.5)
DECAY = 0.9


def _params():
  rng = np.random.default_rng(0)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"w": f(C_IN, C), "bn_scale": 1 + 0.1 * f(C), "bn_bias": 0.1 * f(C),
          "gn_scale": 1 + 0.1 * f(C), "gn_bias": 0.1 * f(C),
          "ln_scale": 1 + 0.1 * f(C), "ln_bias": 0.1 * f(C)}


def _batches(n):
  keys = jax.random.split(jax.random.key(42), n)
  return [jax.random.normal(k, (6, 4, 4, C_IN)) * 2 + 1 for k in keys]


# (c) plain JAX ---------------------------------------------------------------

@jax.jit
def plain_train(p, stats, x, key):
  k_spatial, k_path, k_drop = jax.random.split(key, 3)
  h = jnp.einsum("nhwc,cd->nhwd", x, p["w"])
  h, stats = jnn.batch_norm(h, p["bn_scale"], p["bn_bias"], stats, train=True, decay=DECAY)
  h = jax.nn.relu(h)
  h = jnn.group_norm(h, p["gn_scale"], p["gn_bias"], num_groups=2)
  h = jnn.spatial_dropout(h, RATES["spatial"], key=k_spatial)
  h = h + jnn.drop_path(jnp.tanh(h), RATES["path"], key=k_path)
  h = jnn.layer_norm(h, p["ln_scale"], p["ln_bias"])
  return jnn.dropout(h, RATES["drop"], key=k_drop), stats


@jax.jit
def plain_eval(p, stats, x):
  h = jnp.einsum("nhwc,cd->nhwd", x, p["w"])
  h, _ = jnn.batch_norm(h, p["bn_scale"], p["bn_bias"], stats, train=False)
  h = jax.nn.relu(h)
  h = jnn.group_norm(h, p["gn_scale"], p["gn_bias"], num_groups=2)
  h = jnn.spatial_dropout(h, RATES["spatial"], key=None, train=False)
  h = h + jnn.drop_path(jnp.tanh(h), RATES["path"], key=None, train=False)
  h = jnn.layer_norm(h, p["ln_scale"], p["ln_bias"])
  return jnn.dropout(h, RATES["drop"], key=None, train=False)


# (a) Flax NNX ----------------------------------------------------------------

class NnxBlock(nnx.Module):
  """The block as an NNX module; ``deterministic`` is flipped by .train() / .eval()."""

  def __init__(self, params, *, rngs: nnx.Rngs):
    for name, value in params.items():
      setattr(self, name, nnx.Param(value))
    self.mean = nnx.BatchStat(jnp.zeros((C,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((C,), jnp.float32))
    self.rngs = rngs
    self.deterministic = False

  def __call__(self, x):
    train = not self.deterministic
    keys = jax.random.split(self.rngs.dropout(), 3) if train else [None] * 3
    h = jnp.einsum("nhwc,cd->nhwd", x, self.w[...])
    h, stats = jnn.batch_norm(h, self.bn_scale[...], self.bn_bias[...],
                              jnn.BatchNormStats(self.mean[...], self.var[...]),
                              train=train, decay=DECAY)
    self.mean[...], self.var[...] = stats.mean, stats.var
    h = jax.nn.relu(h)
    h = jnn.group_norm(h, self.gn_scale[...], self.gn_bias[...], num_groups=2)
    h = jnn.spatial_dropout(h, RATES["spatial"], key=keys[0], train=train)
    h = h + jnn.drop_path(jnp.tanh(h), RATES["path"], key=keys[1], train=train)
    h = jnn.layer_norm(h, self.ln_scale[...], self.ln_bias[...])
    return jnn.dropout(h, RATES["drop"], key=keys[2], train=train)


# (b) Flax Linen --------------------------------------------------------------

class LinenBlock(nn.Module):
  """The block as a Linen module; statistics in the "batch_stats" collection."""

  @nn.compact
  def __call__(self, x, train: bool):
    p = {name: self.param(name, nn.initializers.zeros, shape)
         for name, shape in (("w", (C_IN, C)), ("bn_scale", (C,)), ("bn_bias", (C,)),
                             ("gn_scale", (C,)), ("gn_bias", (C,)), ("ln_scale", (C,)),
                             ("ln_bias", (C,)))}
    mean = self.variable("batch_stats", "mean", jnp.zeros, (C,), jnp.float32)
    var = self.variable("batch_stats", "var", jnp.ones, (C,), jnp.float32)
    keys = [None] * 3
    if train:
      key = self.make_rng("dropout")
      self.sow("intermediates", "dropout_key", key)
      keys = jax.random.split(key, 3)
    h = jnp.einsum("nhwc,cd->nhwd", x, p["w"])
    h, stats = jnn.batch_norm(h, p["bn_scale"], p["bn_bias"],
                              jnn.BatchNormStats(mean.value, var.value), train=train,
                              decay=DECAY)
    if train and not self.is_initializing():
      mean.value, var.value = stats.mean, stats.var
    h = jax.nn.relu(h)
    h = jnn.group_norm(h, p["gn_scale"], p["gn_bias"], num_groups=2)
    h = jnn.spatial_dropout(h, RATES["spatial"], key=keys[0], train=train)
    h = h + jnn.drop_path(jnp.tanh(h), RATES["path"], key=keys[1], train=train)
    h = jnn.layer_norm(h, p["ln_scale"], p["ln_bias"])
    return jnn.dropout(h, RATES["drop"], key=keys[2], train=train)


def _err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_nnx_linen_and_plain_agree(record_property):
  params = _params()
  batches = _batches(4)
  seed = 7

  # NNX, stepped with nnx.jit; the key it will draw is replayed by a twin stream
  model = NnxBlock(params, rngs=nnx.Rngs(dropout=seed))
  twin = nnx.Rngs(dropout=seed)
  nnx_step = nnx.jit(lambda m, x: m(x))

  linen = LinenBlock()
  variables = linen.init(jax.random.key(0), batches[0], train=False)
  assert set(variables) == {"params", "batch_stats"}
  variables = {"params": dict(params), "batch_stats": dict(variables["batch_stats"])}
  linen_train = jax.jit(lambda v, x, key: linen.apply(
      v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats", "intermediates"]))
  linen_eval = jax.jit(lambda v, x: linen.apply(v, x, train=False))

  s_plain = s_linen = jnn.batch_norm_stats(C)
  errs = {"nnx_y": 0.0, "nnx_stats": 0.0, "linen_y": 0.0, "linen_stats": 0.0}
  for step, x in enumerate(batches[:3]):
    linen_key = jax.random.fold_in(jax.random.key(seed + 1), step)
    # (a) NNX vs (c) plain with the key the NNX stream drew
    y_nnx = nnx_step(model, x)
    y_plain, s_plain = plain_train(params, s_plain, x, twin.dropout())
    errs["nnx_y"] = max(errs["nnx_y"], _err(y_nnx, y_plain))
    errs["nnx_stats"] = max(errs["nnx_stats"], _err(model.mean[...], s_plain.mean),
                            _err(model.var[...], s_plain.var))
    # (b) Linen vs (c) plain with the key Linen drew
    y_linen, updates = linen_train(variables, x, linen_key)
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
    drawn = updates["intermediates"]["dropout_key"][0]
    y_lp, s_linen = plain_train(params, s_linen, x, drawn)
    errs["linen_y"] = max(errs["linen_y"], _err(y_linen, y_lp))
    errs["linen_stats"] = max(errs["linen_stats"],
                              _err(variables["batch_stats"]["mean"], s_linen.mean),
                              _err(variables["batch_stats"]["var"], s_linen.var))
    # the masks are real: some values dropped, not all
    assert 0 < np.mean(np.asarray(y_nnx) == 0) < 1

  # both frameworks moved their statistics exactly as the plain function did,
  # so all three now hold the same statistics
  assert _err(s_plain.var, s_linen.var) == 0.0
  model.eval()
  assert model.deterministic
  x = batches[3]
  y_eval_plain = plain_eval(params, s_plain, x)
  before = np.asarray(model.mean[...])
  errs["nnx_eval"] = _err(nnx_step(model, x), y_eval_plain)
  np.testing.assert_array_equal(model.mean[...], before)     # eval leaves the stats alone
  errs["linen_eval"] = _err(linen_eval(variables, x), y_eval_plain)
  for k, v in errs.items():
    record_property(f"max_abs_err_{k}", v)
  # measured: 0 (bit for bit) everywhere
  assert max(errs.values()) <= 1e-6, errs


def test_nnx_train_and_eval_methods_switch_the_mode():
  model = NnxBlock(_params(), rngs=nnx.Rngs(dropout=0))
  x = _batches(1)[0]
  model.eval()
  a = model(x)
  b = model(x)
  np.testing.assert_array_equal(a, b)              # no dropout, no stat update
  model.train()
  c = model(x)
  d = model(x)
  assert not np.array_equal(c, d)                  # a new key each call
  assert not np.array_equal(model.mean[...], np.zeros(C))


class JoptBatchNorm(nnx.Module):
  """jopt's batch norm in the convention of nnx.BatchNorm (decay, biased running var)."""

  def __init__(self, num_features, *, rngs):
    del rngs
    self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
    self.use_running_average = False

  def __call__(self, x):
    y, stats = jnn.batch_norm(x, self.scale[...], self.bias[...],
                              jnn.BatchNormStats(self.mean[...], self.var[...]),
                              train=not self.use_running_average, decay=0.99,
                              running_var="biased")
    self.mean[...], self.var[...] = stats.mean, stats.var
    return y


@pytest.mark.parametrize("fast_variance", [True, False])
def test_nnx_module_matches_nnx_batchnorm(fast_variance, standard_promotion, record_property):
  c = 5
  ours = JoptBatchNorm(c, rngs=nnx.Rngs(0))
  ref = nnx.BatchNorm(c, use_fast_variance=fast_variance, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(3)
  w, b = rng.uniform(0.5, 1.5, size=c), rng.normal(size=c)
  for m in (ours, ref):
    m.scale[...] = jnp.asarray(w, jnp.float32)
    m.bias[...] = jnp.asarray(b, jnp.float32)
  step = nnx.jit(lambda m, x: m(x))
  errs = {"y": 0.0, "mean": 0.0, "var": 0.0}
  for i in range(5):
    x = jnp.asarray(rng.normal(size=(16, 3, c)) * 1.5 + 0.5, jnp.float32)
    y = step(ours, x)
    with standard_promotion:
      y_ref = step(ref, x)
    errs["y"] = max(errs["y"], _err(y, y_ref))
    errs["mean"] = max(errs["mean"], _err(ours.mean[...], ref.mean[...]))
    errs["var"] = max(errs["var"], _err(ours.var[...], ref.var[...]))
  ours.eval()
  ref.eval()
  assert ours.use_running_average and ref.use_running_average
  x = jnp.asarray(rng.normal(size=(16, 3, c)), jnp.float32)
  with standard_promotion:
    errs["y_eval"] = _err(step(ours, x), step(ref, x))
  for k, v in errs.items():
    record_property(f"max_abs_err_{k}", v)
  # float32, |y| <= ~5: measured <= 9.6e-7 (fast variance) and <= 4.8e-7 (exact)
  assert max(errs.values()) <= 1e-6, errs
