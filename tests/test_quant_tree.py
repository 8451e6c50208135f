"""jopt.quant parameter trees: rules by path, dequantize_params, size_report."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import quant


def _params():
  k = jax.random.split(jax.random.key(0), 4)
  return {
      "encoder": {"dense": {"kernel": jax.random.normal(k[0], (16, 8)),
                            "bias": jnp.zeros(8)}},
      "layers": [{"kernel": jax.random.normal(k[1], (8, 8))},
                 {"kernel": jax.random.normal(k[2], (8, 8))}],
      "head": {"kernel": jax.random.normal(k[3], (8, 4)), "bias": jnp.ones(4)},
      "step": jnp.int32(3),
  }


def test_defaults_quantize_matrices_and_keep_vectors():
  p = _params()
  q = quant.quantize_params(p)
  for path in (("encoder", "dense", "kernel"), ("head", "kernel")):
    leaf = q[path[0]][path[1]] if len(path) == 2 else q[path[0]][path[1]][path[2]]
    assert isinstance(leaf, quant.QuantizedArray) and leaf.bits == 8
  assert q["encoder"]["dense"]["bias"] is p["encoder"]["dense"]["bias"]
  assert q["head"]["bias"] is p["head"]["bias"] and q["step"] is p["step"]


def test_rules_by_glob_first_match_wins():
  p = _params()
  rules = [("layers/0/*", None), ("layers/*", 4),
           ("head/kernel", {"method": "kmeans", "bits": 5, "iters": 5}),
           ("*/bias", {"bits": 6, "scheme": "asymmetric"})]
  q = quant.quantize_params(p, rules, default_bits=3, granularity="channel")
  assert q["layers"][0]["kernel"] is p["layers"][0]["kernel"]
  assert q["layers"][1]["kernel"].bits == 4 and q["layers"][1]["kernel"].granularity == "channel"
  assert q["head"]["kernel"].method == "kmeans" and q["head"]["kernel"].bits == 5
  assert q["encoder"]["dense"]["kernel"].bits == 3
  bias = q["head"]["bias"]
  assert bias.bits == 6 and bias.scheme == "asymmetric" and bias.scale.shape == (4,)
  expect = quant.quantize(p["head"]["kernel"], 5, method="kmeans", iters=5,
                          granularity="channel")
  np.testing.assert_array_equal(q["head"]["kernel"].dequantize(), expect.dequantize())


def test_dequantize_params_and_jit():
  p = _params()
  q = quant.quantize_params(p, {"head/*": 4}, granularity="channel")
  d = quant.dequantize_params(q)
  assert jax.tree.structure(d) == jax.tree.structure(p)
  for a, b in zip(jax.tree.leaves(d), jax.tree.leaves(p)):
    assert a.shape == b.shape and a.dtype == b.dtype
  np.testing.assert_array_equal(d["layers"][1]["kernel"], q["layers"][1]["kernel"].dequantize())
  err = float(jnp.abs(d["head"]["kernel"] - p["head"]["kernel"]).max())
  assert err <= float(jnp.abs(p["head"]["kernel"]).max()) / 7 / 2 * (1 + 1e-6)
  jitted = jax.jit(lambda t: quant.dequantize_params(
      quant.quantize_params(t, {"head/*": 4}, granularity="channel")))(p)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(d)):
    np.testing.assert_array_equal(a, b)


def test_size_report_counts_true_bytes():
  p = _params()
  q = quant.quantize_params(p, {"layers/*": 4, "head/kernel": {"method": "kmeans", "bits": 2}})
  r = quant.size_report(q)
  expect = (16 * 8 + 4) + 8 * 4 + 2 * (8 * 8 // 2 + 4) + (8 * 4 * 2 // 8 + 4 * 4) + 4 * 4 + 4
  assert r.nbytes == expect
  assert r.float32_nbytes == 4 * (16 * 8 + 8 + 2 * 64 + 32 + 4 + 1)
  assert r.ratio == r.float32_nbytes / r.nbytes
  assert r.leaves["layers/1/kernel"] == quant.LeafSize(36, 256, "linear 4-bit tensor")
  assert r.leaves["encoder/dense/bias"].kind == "float32"
  assert "total" in str(r) and "head/kernel" in str(r)
  plain = quant.size_report(p)
  assert plain.nbytes == plain.float32_nbytes and plain.ratio == 1.0


def test_flax_nnx_state_is_unwrapped():
  from flax import nnx  # pylint: disable=import-outside-toplevel
  model = nnx.Linear(6, 3, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  q = quant.quantize_params(state, {"kernel": 4})
  r = quant.size_report(q)
  assert set(r.leaves) == {"bias", "kernel"} and r.leaves["kernel"].nbytes == 9 + 4
  np.testing.assert_allclose(quant.dequantize_params(q)["kernel"], model.kernel.get_value(),
                             atol=float(jnp.abs(model.kernel.get_value()).max()) / 7)


def test_tree_bad_input_names_the_argument():
  p = _params()
  with pytest.raises(ValueError, match=r"quantize_params: rules \['dec/\*'\] match no"):
    quant.quantize_params(p, {"dec/*": 4})
  with pytest.raises(TypeError, match=r"quantize_params: rules\['step'\] matches 'step'"):
    quant.quantize_params(p, {"step": 4})
  with pytest.raises(TypeError, match=r"quantize_params: rules\['head/\*'\] = 'int4'"):
    quant.quantize_params(p, {"head/*": "int4"})
  with pytest.raises(TypeError, match="quantize_params: rules must be a dict or a list"):
    quant.quantize_params(p, ["head/*"])
  with pytest.raises(TypeError, match="quantize_params: pass the bits .* as default_bits=4"):
    quant.quantize_params(p, bits=4)
  with pytest.raises(ValueError, match="quantize_params: parameter 'head/kernel': quantize:"
                                       " bits=12 is outside"):
    quant.quantize_params(p, {"head/kernel": 12})
  with pytest.raises(ValueError, match="parameter 'layers/0/kernel': quantize: x contains NaN"):
    quant.quantize_params({"layers": [{"kernel": jnp.full((2, 2), jnp.nan)}]})
