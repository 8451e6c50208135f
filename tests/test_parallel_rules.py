"""Sharding rules by path, tensor-parallel and FSDP layouts: results equal one device, HLO collectives."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jopt.parallel.fsdp import fsdp_spec, fsdp_specs
from jopt.parallel.rules import (check_specs, column_parallel, data_model_mesh, match_specs,
                                 megatron_mlp, row_parallel, shard_params, specs_from_nnx)

PATH_SPECS = lambda t: jax.tree.leaves(t, is_leaf=lambda x: isinstance(x, P))


def _mlp(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s) / np.sqrt(s[0]), jnp.float32)
  return {"mlp": {"up": {"kernel": f(16, 32), "bias": f(32)},
                  "down": {"kernel": f(32, 8), "bias": f(8)}}}


def _loss(p, batch):
  x, y = batch
  h = jax.nn.gelu(x @ p["mlp"]["up"]["kernel"] + p["mlp"]["up"]["bias"])
  return jnp.mean((h @ p["mlp"]["down"]["kernel"] + p["mlp"]["down"]["bias"] - y) ** 2)


def _batch(n, seed=1):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, 16)), jnp.float32),
          jnp.asarray(rng.normal(size=(n, 8)), jnp.float32))


def _collectives(hlo):
  """Result shapes of each collective in an HLO text, e.g. {'all-gather': ['f32[16,32]']}."""
  out = {}
  for m in re.finditer(r"= (\(?[^=]*?\)?) (all-reduce|all-gather|reduce-scatter|all-to-all)\(",
                       hlo):
    out.setdefault(m.group(2), []).extend(re.findall(r"[a-z0-9]+\[[0-9,]*\]", m.group(1)))
  return out


def _maxdiff(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_regex_first_match_and_default():
  rules = [(r"up/kernel$", P(None, "model")), (r"kernel$", P("model", None)),
           (r"up/kernel$", P("model"))]
  specs = match_specs(_mlp(), rules)
  assert specs["mlp"]["up"]["kernel"] == P(None, "model")    # first of two matches
  assert specs["mlp"]["down"]["kernel"] == P("model", None)
  assert specs["mlp"]["up"]["bias"] == P() and specs["mlp"]["down"]["bias"] == P()
  assert match_specs(_mlp(), [], default=P("data"))["mlp"]["down"]["bias"] == P("data")
  assert match_specs(_mlp(), {r"bias": (None,)})["mlp"]["up"]["bias"] == P(None)


def test_presets():
  specs = match_specs(_mlp(), megatron_mlp("mlp/up", "mlp/down"))
  assert specs == {"mlp": {"up": {"kernel": P(None, "model"), "bias": P("model")},
                           "down": {"kernel": P("model", None), "bias": P()}}}
  assert column_parallel("a", "tp")[0] == (r"a/kernel$", P(None, "tp"))
  assert row_parallel("a", "tp")[0] == (r"a/kernel$", P("tp", None))
  mesh = data_model_mesh(2, 4)
  assert dict(mesh.shape) == {"data": 2, "model": 4}
  assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
  with pytest.raises(ValueError, match="data \\* model = 16"):
    data_model_mesh(4, 4)


def test_strict_names_the_unmatched_rule():
  rules = [(r"up/kernel", P(None, "model")), (r"attn/qkv", P(None, "model"))]
  assert match_specs(_mlp(), rules)["mlp"]["up"]["kernel"] == P(None, "model")
  with pytest.raises(ValueError, match=r"strict=True.*'attn/qkv'.*mlp/up/kernel"):
    match_specs(_mlp(), rules, strict=True)
  with pytest.raises(ValueError, match="not a valid regex"):
    match_specs(_mlp(), [("(", P())])
  with pytest.raises(TypeError, match="list of \\(regex, PartitionSpec\\)"):
    match_specs(_mlp(), [P("model")])


def test_bad_axis_and_divisibility_errors():
  mesh = data_model_mesh(2, 4)
  with pytest.raises(ValueError, match=r"mlp/up/kernel.*'tensor'.*\('data', 'model'\)"):
    match_specs(_mlp(), [(r"up/kernel", P(None, "tensor"))], mesh=mesh)
  with pytest.raises(ValueError, match=r"b: dimension 0 of shape \(12,\) has size 12, not"
                     r" divisible by the mesh axis \('data', 'model'\) of size 8"):
    shard_params({"b": jnp.zeros(12, jnp.float32)}, mesh, [(r"b", P(("data", "model")))])
  params = {"w": jnp.zeros((6, 4), jnp.float32)}
  with pytest.raises(ValueError, match=r"w: dimension 0 of shape \(6, 4\) has size 6, not "
                     r"divisible by the mesh axis 'model' of size 4"):
    shard_params(params, mesh, {"w": P("model")})
  with pytest.raises(ValueError, match="has 3 entries"):
    check_specs(params, {"w": P(None, None, "data")}, mesh)
  with pytest.raises(ValueError, match="'data' twice"):
    check_specs(params, {"w": P("data", "data")}, mesh)


def test_nnx_partitioning_metadata_is_honoured():
  class Mlp(nnx.Module):
    def __init__(self, rngs):
      part = lambda spec: nnx.with_partitioning(nnx.initializers.lecun_normal(), spec)
      self.up = nnx.Linear(16, 32, kernel_init=part((None, "model")), rngs=rngs)
      self.down = nnx.Linear(32, 8, kernel_init=part(("model", None)), rngs=rngs)

  with nnx.use_eager_sharding(False):
    model = Mlp(nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  specs = specs_from_nnx(state)
  want = jax.tree.map(lambda v: v.get_value(), nnx.get_partition_spec(state),
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert PATH_SPECS(specs) == PATH_SPECS(want)
  assert specs["up"]["kernel"] == P(None, "model") and specs["down"]["kernel"] == P("model", None)
  # the model's annotation wins over a rule for the same leaf; rules fill the rest
  mixed = match_specs(state, [(r"kernel", P()), (r"up/bias", P("model"))])
  assert mixed["up"]["kernel"] == P(None, "model") and mixed["up"]["bias"] == P("model")
  mesh = data_model_mesh(2, 4)
  placed = shard_params(state, mesh, [(r"up/bias", P("model"))])
  assert placed["up"]["kernel"].sharding.spec == P(None, "model")
  assert placed["up"]["bias"].sharding.spec == P("model")
  np.testing.assert_array_equal(placed["down"]["kernel"], state["down"]["kernel"].get_value())


def test_tensor_parallel_mlp_equals_one_device():
  """Megatron MLP on a 2 x 4 data x model mesh: loss and grads as on one device."""
  mesh = data_model_mesh(2, 4)
  params, batch = _mlp(), _batch(16)
  ref_loss, ref_grads = jax.value_and_grad(_loss)(params, batch)
  sharded = shard_params(params, mesh, megatron_mlp("mlp/up", "mlp/down"))
  assert sharded["mlp"]["up"]["kernel"].addressable_shards[0].data.shape == (16, 8)
  sb = jax.device_put(batch, NamedSharding(mesh, P("data")))
  fn = jax.jit(jax.value_and_grad(_loss))
  loss, grads = fn(sharded, sb)
  assert abs(float(loss) - float(ref_loss)) <= 1e-6 * abs(float(ref_loss))
  assert _maxdiff(grads, ref_grads) <= 1e-6     # measured 3.0e-8 (float32 summation order)
  assert grads["mlp"]["up"]["kernel"].sharding.is_equivalent_to(
      sharded["mlp"]["up"]["kernel"].sharding, 2)
  hlo = fn.lower(sharded, sb).compile().as_text()
  coll = _collectives(hlo)
  # row-parallel partial products of the down projection are summed over "model"
  # (the [8, 8] per-data-shard activations), and grads over "data"
  assert "f32[8,8]" in coll.get("all-reduce", []), coll
  assert "all-gather" not in coll or "f32[16,32]" not in coll["all-gather"], coll


def test_fsdp_spec_rule():
  assert fsdp_spec((16, 32), 8, "data", min_size=1) == P(None, "data")
  assert fsdp_spec((32, 8), 8, "data", min_size=1) == P("data")
  assert fsdp_spec((16, 16), 8, "data", min_size=1) == P("data")   # tie: the first
  assert fsdp_spec((6, 5), 8, "data", min_size=1) == P()           # nothing divisible
  assert fsdp_spec((16, 32), 8, "data", min_size=1024) == P()      # too small
  assert fsdp_spec((), 8, "data", min_size=0) == P()
  assert fsdp_spec((16, 32), 2, "data", min_size=1, base=P(None, "model")) == P("data", "model")
  mesh = data_model_mesh(2, 4)
  specs = fsdp_specs(_mlp(), mesh, ("data", "model"), min_size=64)
  assert specs["mlp"]["up"]["kernel"] == P(None, ("data", "model"))
  assert specs["mlp"]["up"]["bias"] == P()
  tp = match_specs(_mlp(), megatron_mlp("mlp/up", "mlp/down"))
  both = fsdp_specs(_mlp(), mesh, "data", min_size=64, base_specs=tp)
  assert both["mlp"]["up"]["kernel"] == P("data", "model")
  assert both["mlp"]["down"]["kernel"] == P("model", "data")
  with pytest.raises(ValueError, match="already use the axis 'model'"):
    fsdp_specs(_mlp(), mesh, "model", base_specs=tp)
  with pytest.raises(ValueError, match=r"'tensor'.*\('data', 'model'\)"):
    fsdp_specs(_mlp(), mesh, "tensor")
  with pytest.raises(ValueError, match="min_size=-1"):
    fsdp_specs(_mlp(), mesh, min_size=-1)


def test_fsdp_step_equals_one_device_and_all_gathers_params():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  params, batch = _mlp(), _batch(256)
  specs = fsdp_specs(params, mesh, min_size=64)
  sharded = shard_params(params, mesh, specs)
  k = sharded["mlp"]["up"]["kernel"]
  assert k.addressable_shards[0].data.shape == (16, 4) and len(k.sharding.device_set) == 8
  sb = jax.device_put(batch, NamedSharding(mesh, P("data")))
  fn = jax.jit(jax.value_and_grad(_loss), out_shardings=(
      NamedSharding(mesh, P()), jax.tree.map(lambda s: NamedSharding(mesh, s), specs)))
  loss, grads = fn(sharded, sb)
  ref_loss, ref_grads = jax.value_and_grad(_loss)(params, batch)
  assert abs(float(loss) - float(ref_loss)) <= 1e-6 * abs(float(ref_loss))
  assert _maxdiff(grads, ref_grads) <= 1e-6    # measured 4.5e-8
  assert grads["mlp"]["down"]["kernel"].sharding.spec == P("data")
  coll = _collectives(fn.lower(sharded, sb).compile().as_text())
  # the sharded kernels are gathered whole for the matmuls; gradients are summed
  # over the data axis (on CPU an all-reduce followed by a local slice)
  assert {"f32[16,32]", "f32[32,8]"} <= set(coll.get("all-gather", [])), coll
  assert coll.get("all-reduce") or coll.get("reduce-scatter"), coll
