"""Dtype policies: parsing (presets, aliases, key=dtype pairs), casts, the float32 rule."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import precision
from jopt.precision import DTYPE_ALIASES, PRESETS, Policy, get_policy, in_float32

F16, BF16, F32, F64 = (jnp.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32,
                                              jnp.float64))


def _triple(policy):
  return (policy.param_dtype, policy.compute_dtype, policy.output_dtype)


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("name,expected", [
    ("float32", (F32, F32, F32)),
    ("float64", (F64, F64, F64)),
    ("mixed_bfloat16", (F32, BF16, F32)),
    ("mixed_float16", (F32, F16, F32)),
    ("pure_bfloat16", (BF16, BF16, BF16)),
    ("pure_float16", (F16, F16, F16)),
])
def test_every_preset(name, expected):
  assert _triple(get_policy(name)) == expected
  assert _triple(get_policy(name.upper())) == expected
  assert _triple(get_policy(f"  {name} ")) == expected
  assert set(PRESETS) == {"float32", "float64", "mixed_bfloat16", "mixed_float16",
                          "pure_bfloat16", "pure_float16"}


@pytest.mark.parametrize("alias,dtype", [
    ("f16", F16), ("fp16", F16), ("half", F16), ("float16", F16),
    ("bf16", BF16), ("bfloat16", BF16),
    ("f32", F32), ("fp32", F32), ("single", F32), ("full", F32), ("float", F32),
    ("float32", F32), ("f64", F64), ("fp64", F64), ("double", F64), ("float64", F64),
])
def test_every_alias_as_a_value_and_as_a_preset(alias, dtype):
  assert jnp.dtype(DTYPE_ALIASES[alias]) == dtype
  assert _triple(get_policy(f"params={alias},compute={alias},output={alias}")) == (dtype,) * 3
  assert get_policy(f"c={alias}").compute_dtype == dtype
  # a bare 16-bit dtype is the mixed preset: float32 masters and outputs
  expected = (F32, dtype, F32) if dtype.itemsize == 2 else (dtype,) * 3
  assert _triple(get_policy(alias)) == expected
  assert _triple(get_policy(alias.upper())) == expected


def test_the_aliases_table_is_what_the_tests_cover():
  assert len(DTYPE_ALIASES) == 16


def test_key_value_pairs_keys_and_defaults():
  assert _triple(get_policy("params=float32,compute=bfloat16,output=float32")) == (F32, BF16, F32)
  assert _triple(get_policy("p=f32, c=f16, o=f32")) == (F32, F16, F32)
  assert _triple(get_policy("param=bf16,compute=bf16,out=f32")) == (BF16, BF16, F32)
  assert _triple(get_policy("output=f16,params=f64,compute=f32")) == (F64, F32, F16)
  # as in jmp: params defaults to float32, compute follows params, output follows compute
  assert _triple(get_policy("c=bf16")) == (F32, BF16, BF16)
  assert _triple(get_policy("p=f16")) == (F16, F16, F16)
  assert _triple(get_policy("o=bf16")) == (F32, F32, BF16)
  assert _triple(get_policy("p=f32,c=f16")) == (F32, F16, F16)


def test_str_round_trips():
  for name in PRESETS:
    policy = get_policy(name)
    assert get_policy(str(policy)) == policy
  assert str(get_policy("mixed_bfloat16")) == "params=float32,compute=bfloat16,output=float32"


def test_a_policy_is_returned_unchanged_hashable_and_frozen():
  policy = Policy("f32", "bf16", jnp.float32)
  assert get_policy(policy) is policy
  assert policy == get_policy("mixed_bfloat16")
  assert hash(policy) == hash(get_policy("mixed_bfloat16"))
  with pytest.raises(Exception):
    policy.compute_dtype = F16


@pytest.mark.parametrize("spec,token", [
    ("params=float32,compute=bfloat17", "'bfloat17'"),
    ("params=float32,compte=bfloat16", "'compte'"),
    ("params=float32;compute=bfloat16", "cannot parse 'params=float32;compute=bfloat16'"),
    ("params=float32,,compute=bfloat16", "''"),
    ("params=float32,compute", "'compute'"),
    ("params==float32", "'params==float32'"),
    ("p=f32,params=f16", "given twice"),
    ("int8", "'int8'"),
    ("mixed_int8", "'mixed_int8'"),
    ("", "''"),
    ("params=int32", "'int32'"),
])
def test_unparseable_strings_name_the_bad_token(spec, token):
  with pytest.raises(ValueError) as err:
    get_policy(spec)
  msg = str(err.value)
  assert msg.startswith("get_policy: ") and token in msg, msg
  if "unknown key" in msg:
    assert "params, param, p, compute, c, output, out, o" in msg
  if "unknown dtype" in msg or "neither a preset" in msg:
    assert "bfloat16" in msg and "float16" in msg and "fp16" in msg


def test_non_string_spec_and_non_floating_dtypes():
  with pytest.raises(TypeError, match="spec must be a string or a Policy"):
    get_policy(jnp.float32)
  with pytest.raises(TypeError, match="compute_dtype=int32 is not a real floating dtype"):
    Policy(jnp.float32, jnp.int32, jnp.float32)
  with pytest.raises(TypeError, match="param_dtype=bool is not a real floating dtype"):
    Policy(jnp.bool_, jnp.float32, jnp.float32)
  with pytest.raises(TypeError, match="output_dtype=complex64 is not a real floating"):
    Policy(jnp.float32, jnp.float32, jnp.complex64)
  with pytest.raises(ValueError, match="param_dtype='bf17' is not a dtype name"):
    Policy("bf17")
  with pytest.raises(TypeError, match="is not a dtype"):
    Policy(object())


# ---------------------------------------------------------------- casts

def _tree():
  return {
      "dense": {"kernel": jnp.ones((3, 2), jnp.float32), "bias": jnp.zeros(2, jnp.float32)},
      "LayerNorm_0": {"scale": jnp.ones(2, jnp.float32), "bias": jnp.zeros(2, jnp.float32)},
      "bn1": {"mean": np.ones(2, np.float32)},
      "ln_f": [jnp.ones(2, jnp.float32)],
      "kiln": jnp.ones(2, jnp.float32),
      "step": jnp.asarray(3, jnp.int32),
      "mask": jnp.asarray([True, False]),
      "lr": 0.5,
      "name": "mlp",
      "half": jnp.ones(2, jnp.bfloat16),
  }


def _dtypes(tree):
  return jax.tree.map(lambda x: jnp.dtype(x.dtype) if hasattr(x, "dtype") else x, tree)


def test_cast_to_compute_keeps_norm_parameters_in_float32_by_default():
  out = _dtypes(get_policy("mixed_float16").cast_to_compute(_tree()))
  assert out["dense"] == {"kernel": F16, "bias": F16}
  assert out["LayerNorm_0"] == {"scale": F32, "bias": F32}
  assert out["bn1"]["mean"] == F32 and out["ln_f"] == [F32]
  assert out["kiln"] == F16          # "ln" inside a word is not a norm
  assert out["half"] == F16
  # non-floating and non-array leaves pass unchanged
  assert out["step"] == jnp.dtype(jnp.int32) and out["mask"] == jnp.dtype(bool)
  assert out["lr"] == 0.5 and out["name"] == "mlp"


def test_keep_rule_regex_predicate_and_off():
  policy = get_policy("mixed_bfloat16")
  out = _dtypes(policy.cast_to_compute(_tree(), keep_float32=r"^dense/bias$"))
  assert out["dense"] == {"kernel": BF16, "bias": F32}
  assert out["LayerNorm_0"] == {"scale": BF16, "bias": BF16}
  out = _dtypes(policy.cast_to_compute(_tree(), keep_float32=re.compile("KERNEL", re.I)))
  assert out["dense"] == {"kernel": F32, "bias": BF16}
  seen = []
  out = _dtypes(policy.cast_to_compute(
      _tree(), keep_float32=lambda path: seen.append(path) or path.startswith("ln_f")))
  assert out["ln_f"] == [F32] and out["LayerNorm_0"]["scale"] == BF16
  assert {"dense/kernel", "ln_f/0", "LayerNorm_0/scale", "bn1/mean"} <= set(seen)
  for off in (None, False):
    out = _dtypes(policy.cast_to_compute(_tree(), keep_float32=off))
    assert out["LayerNorm_0"] == {"scale": BF16, "bias": BF16} and out["bn1"]["mean"] == BF16


def test_keep_rule_never_demotes_a_wide_compute_dtype(x64):
  tree = {"ln": {"scale": jnp.ones(2, jnp.float32)}, "w": jnp.ones(2, jnp.float32)}
  out = _dtypes(get_policy("float64").cast_to_compute(tree))
  assert out == {"ln": {"scale": F64}, "w": F64}


def test_bad_keep_rules():
  policy = get_policy("mixed_bfloat16")
  with pytest.raises(ValueError, match="keep_float32='norm\\(' is not a valid regular"):
    policy.cast_to_compute(_tree(), keep_float32="norm(")
  with pytest.raises(TypeError, match="keep_float32 must be a regex string"):
    policy.cast_to_compute(_tree(), keep_float32=3)


def test_cast_values_and_param_and_output_casts():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 5)).astype(np.float32)
  policy = get_policy("params=float32,compute=bfloat16,output=float16")
  got = policy.cast_to_compute({"x": x}, keep_float32=None)["x"]
  np.testing.assert_array_equal(np.asarray(got), x.astype(jnp.bfloat16))
  tree = {"w": jnp.asarray(x, jnp.bfloat16), "n": jnp.arange(3)}
  back = policy.cast_to_param(tree)
  assert back["w"].dtype == F32 and back["n"].dtype == jnp.dtype(jnp.int32)
  np.testing.assert_array_equal(np.asarray(back["w"]), np.asarray(tree["w"]).astype(np.float32))
  assert policy.cast_to_output((jnp.ones(2), jnp.arange(2)))[0].dtype == F16
  # jit-compatible: a Policy is static data
  f = jax.jit(lambda t: policy.cast_to_compute(t))
  assert _dtypes(f({"ln": {"scale": x}, "w": x})) == {"ln": {"scale": F32}, "w": BF16}


# ---------------------------------------------------------------- in_float32

def test_in_float32_computes_in_float32_and_returns_the_input_dtype():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(3, 50)).astype(np.float32) * 4
  zh = jnp.asarray(z, jnp.bfloat16)
  seen = []

  def softmax(x, axis=-1):
    seen.append(x.dtype)
    return jax.nn.softmax(x, axis=axis)

  out = in_float32(softmax)(zh, axis=-1)
  assert seen == [F32] and out.dtype == BF16
  # equal to the float32 softmax of the bfloat16 inputs, rounded once to bfloat16
  ref = jax.nn.softmax(np.asarray(zh).astype(np.float32), axis=-1).astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
  # float32 inputs run as they are
  out32 = in_float32(softmax)(jnp.asarray(z))
  assert seen[-1] == F32 and out32.dtype == F32
  # keyword and nested inputs are cast too; integer leaves are not
  def f(a, *, b):
    assert a["x"].dtype == F32 and b.dtype == F32 and a["i"].dtype == jnp.dtype(jnp.int32)
    return a["x"] + b, a["i"]
  y, i = in_float32(f)({"x": jnp.ones(2, jnp.float16), "i": jnp.arange(2)},
                       b=jnp.ones(2, jnp.float16))
  assert y.dtype == F16 and i.dtype == jnp.dtype(jnp.int32)
  with pytest.raises(TypeError, match="in_float32: fn must be callable"):
    in_float32(3)


def test_public_names():
  assert set(precision.__all__) == {
      "Policy", "get_policy", "in_float32", "KEEP_FLOAT32", "DTYPE_ALIASES", "PRESETS",
      "loss_scale", "LossScaleState", "scale_loss", "all_finite", "mixed_precision_step"}
  for name in precision.__all__:
    assert getattr(precision, name) is not None
