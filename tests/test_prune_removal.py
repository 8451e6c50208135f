"""Physical removal of pruned units: the smaller model computes what the masked one does.

Models are written in plain JAX here (``jopt.nn.batch_norm`` for BN, NHWC / HWIO
convolutions); the masks that zero ~50% of the units are built here too. Every
comparison is in float64; the measured max |removed - masked| is 0 for the MLPs and
the flattened CNN heads and 3.6e-15 (3.9e-16 relative, outputs up to ~500) for the
global-average-pool head (a smaller contraction sums in another order).
"""

import math

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

import jopt
from jopt.prune.removal import Coupled, UnitGroup, remove_units

TOL = 1e-13          # absolute; measured: <= 3.6e-15 on these shapes (float64)


def _rng(seed):
  return np.random.default_rng(seed)


def _count(tree):
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def _dead(rng, n, frac=0.5):
  """A boolean mask of n units, exactly round(frac * n) of them dead."""
  dead = np.zeros(n, bool)
  dead[rng.choice(n, int(round(frac * n)), replace=False)] = True
  return dead


# --------------------------------------------------------------------------- MLP


def mlp_variables(rng, d_in=7, h1=16, h2=12, d_out=3):
  """Linen layout: params and batch_stats."""
  n = lambda *s: rng.standard_normal(s)
  return {
      "params": {
          "dense1": {"kernel": n(d_in, h1), "bias": n(h1)},
          "bn1": {"scale": 1 + 0.1 * n(h1), "bias": n(h1)},
          "dense2": {"kernel": n(h1, h2), "bias": n(h2)},
          "dense3": {"kernel": n(h2, d_out), "bias": n(d_out)},
      },
      "batch_stats": {"bn1": {"mean": n(h1), "var": 0.5 + rng.random(h1)}},
  }


def mlp(variables, x):
  """Dense -> BN (inference statistics) -> ReLU -> Dense -> ReLU -> Dense."""
  p, s = variables["params"], variables["batch_stats"]
  h = x @ p["dense1"]["kernel"] + p["dense1"]["bias"]
  stats = jopt.nn.BatchNormStats(s["bn1"]["mean"], s["bn1"]["var"])
  h, _ = jopt.nn.batch_norm(h, p["bn1"]["scale"], p["bn1"]["bias"], stats, train=False)
  h = jax.nn.relu(h)
  h = jax.nn.relu(h @ p["dense2"]["kernel"] + p["dense2"]["bias"])
  return h @ p["dense3"]["kernel"] + p["dense3"]["bias"]


MLP_GROUPS = [
    UnitGroup("hidden1", source=("params/dense1/kernel", 1), coupled=[
        ("params/dense1/bias", 0), ("params/bn1/scale", 0), ("params/bn1/bias", 0),
        ("batch_stats/bn1/mean", 0), ("batch_stats/bn1/var", 0),
        ("params/dense2/kernel", 0)]),
    UnitGroup("hidden2", source=(("params", "dense2", "kernel"), -1), coupled=[
        Coupled(("params", "dense2", "bias"), 0), Coupled("params/dense3/kernel", 0)]),
]


def mask_mlp(v, dead1, dead2):
  """Neuron pruning: a dead unit's kernel column, bias and BN scale / offset are zero."""
  v = jax.tree.map(np.array, v)
  p = v["params"]
  p["dense1"]["kernel"][:, dead1] = 0
  for leaf in (p["dense1"]["bias"], p["bn1"]["scale"], p["bn1"]["bias"]):
    leaf[dead1] = 0
  p["dense2"]["kernel"][:, dead2] = 0
  p["dense2"]["bias"][dead2] = 0
  return v


def test_mlp_removed_equals_masked(x64):
  rng = _rng(0)
  v = mlp_variables(rng)
  dead1, dead2 = _dead(rng, 16), _dead(rng, 12)
  masked = jax.tree.map(jnp.asarray, mask_mlp(v, dead1, dead2))
  small, kept = remove_units(masked, MLP_GROUPS)
  np.testing.assert_array_equal(kept["hidden1"], np.nonzero(~dead1)[0])
  np.testing.assert_array_equal(kept["hidden2"], np.nonzero(~dead2)[0])
  assert kept["hidden1"].dtype == np.int64
  assert jax.tree.structure(small) == jax.tree.structure(masked)
  assert small["params"]["dense1"]["kernel"].shape == (7, 8)
  assert small["batch_stats"]["bn1"]["var"].shape == (8,)
  assert small["params"]["dense2"]["kernel"].shape == (8, 6)
  assert small["params"]["dense3"]["kernel"].shape == (6, 3)
  x = jnp.asarray(rng.standard_normal((32, 7)))
  err = float(jnp.max(jnp.abs(mlp(small, x) - mlp(masked, x))))
  assert err <= TOL, err
  # 7*16+16 + 4*16 + 16*12+12 + 12*3+3 = 435  ->  7*8+8 + 4*8 + 8*6+6 + 6*3+3 = 171
  assert (_count(masked), _count(small)) == (435, 171)
  # and the masked model really differs from the unmasked one (the test can fail)
  assert float(jnp.max(jnp.abs(mlp(jax.tree.map(jnp.asarray, v), x) - mlp(masked, x)))) > 0.1


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2 ** 16), f1=st.floats(0.0, 0.9), f2=st.floats(0.0, 0.9))
def test_mlp_any_sparsity_property(seed, f1, f2):
  with jax.enable_x64(True):
    rng = _rng(seed)
    v = mlp_variables(rng, h1=10, h2=9)
    dead1, dead2 = _dead(rng, 10, f1), _dead(rng, 9, f2)
    masked = jax.tree.map(jnp.asarray, mask_mlp(v, dead1, dead2))
    small, kept = remove_units(masked, MLP_GROUPS)
    assert kept["hidden1"].tolist() == np.nonzero(~dead1)[0].tolist()
    assert kept["hidden2"].tolist() == np.nonzero(~dead2)[0].tolist()
    x = jnp.asarray(rng.standard_normal((8, 7)))
    assert float(jnp.max(jnp.abs(mlp(small, x) - mlp(masked, x)))) <= TOL


def test_linen_model_with_the_smaller_widths(x64, standard_promotion):
  class MLP(linen.Module):
    h1: int
    h2: int

    @linen.compact
    def __call__(self, x):
      x = linen.Dense(self.h1, name="dense1")(x)
      x = linen.BatchNorm(use_running_average=True, name="bn1")(x)
      x = linen.relu(x)
      x = linen.relu(linen.Dense(self.h2, name="dense2")(x))
      return linen.Dense(3, name="dense3")(x)

  rng = _rng(1)
  x = jnp.asarray(rng.standard_normal((16, 7)))
  with standard_promotion:
    v = MLP(16, 12).init(jax.random.key(0), x)
  v = jax.tree.map(lambda a: np.asarray(a, np.float64), v)
  v["batch_stats"]["bn1"]["mean"] = rng.standard_normal(16)   # non-trivial statistics
  v["params"]["bn1"]["bias"] = rng.standard_normal(16)
  v["params"]["dense1"]["bias"] = rng.standard_normal(16)
  masked = mask_mlp(v, _dead(rng, 16), _dead(rng, 12))
  small, kept = remove_units(masked, MLP_GROUPS)
  assert isinstance(small["params"]["dense1"]["kernel"], np.ndarray)   # NumPy stays NumPy
  with standard_promotion:
    want = MLP(16, 12).apply(masked, x)
    got = MLP(len(kept["hidden1"]), len(kept["hidden2"])).apply(small, x)
    also = mlp(jax.tree.map(jnp.asarray, masked), x)        # the plain-JAX model agrees
  assert float(jnp.max(jnp.abs(got - want))) <= TOL
  assert float(jnp.max(jnp.abs(also - want))) <= 1e-12


def test_nnx_state_keeps_variable_types(x64):
  class MLP(nnx.Module):
    def __init__(self, rngs):
      self.dense1 = nnx.Linear(5, 8, rngs=rngs, param_dtype=jnp.float64)
      self.bn1 = nnx.BatchNorm(8, rngs=rngs, param_dtype=jnp.float64)
      self.dense2 = nnx.Linear(8, 2, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x):
      return self.dense2(nnx.relu(self.bn1(self.dense1(x))))

  rng = _rng(2)
  model = MLP(nnx.Rngs(0))
  model.eval()
  dead = _dead(rng, 8)
  model.bn1.mean.set_value(jnp.asarray(rng.standard_normal(8)))   # float32 -> float64
  model.bn1.var.set_value(jnp.asarray(0.5 + rng.random(8)))
  model.dense1.kernel.set_value(jnp.where(dead, 0.0, model.dense1.kernel[...]))
  for var in (model.dense1.bias, model.bn1.scale, model.bn1.bias):
    var.set_value(jnp.where(dead, 0.0, jnp.asarray(rng.standard_normal(8))))
  x = jnp.asarray(rng.standard_normal((6, 5)))
  want = model(x)
  graph, state = nnx.split(model)
  groups = [UnitGroup("h", source=("dense1/kernel", 1), coupled=[
      ("dense1/bias", 0), ("bn1/scale", 0), ("bn1/bias", 0), ("bn1/mean", 0),
      ("bn1/var", 0), ("dense2/kernel", 0)])]
  small, kept = remove_units(state, groups)
  assert type(small) is type(state)
  assert type(small["bn1"]["mean"]) is nnx.BatchStat and type(small["dense1"]["kernel"]) is nnx.Param
  assert small["dense2"]["kernel"][...].shape == (4, 2)
  assert kept["h"].tolist() == np.nonzero(~dead)[0].tolist()
  got = nnx.merge(graph, small)(x)
  assert float(jnp.max(jnp.abs(got - want))) <= TOL
  assert model.dense1.kernel[...].shape == (5, 8)        # the input state is untouched


# --------------------------------------------------------------------------- CNN


def conv(x, w, b):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + b


def cnn_params(rng, c_in=3, c1=8, c2=10, hw=6, d_out=5, head="flatten"):
  n = lambda *s: rng.standard_normal(s)
  feat = c2 * hw * hw if head != "gap" else c2
  return {
      "conv1": {"kernel": n(3, 3, c_in, c1), "bias": n(c1)},
      "bn1": {"scale": 1 + 0.1 * n(c1), "bias": n(c1), "mean": n(c1),
              "var": 0.5 + rng.random(c1)},
      "conv2": {"kernel": n(3, 3, c1, c2), "bias": n(c2)},
      "dense": {"kernel": n(feat, d_out), "bias": n(d_out)},
  }


def cnn(p, x, head="flatten"):
  """conv -> BN -> ReLU -> conv -> ReLU -> (NHWC flatten | NCHW flatten | GAP) -> dense."""
  h = conv(x, p["conv1"]["kernel"], p["conv1"]["bias"])
  stats = jopt.nn.BatchNormStats(p["bn1"]["mean"], p["bn1"]["var"])
  h, _ = jopt.nn.batch_norm(h, p["bn1"]["scale"], p["bn1"]["bias"], stats, train=False)
  h = jax.nn.relu(h)
  h = jax.nn.relu(conv(h, p["conv2"]["kernel"], p["conv2"]["bias"]))
  if head == "gap":
    h = h.mean(axis=(1, 2))
  elif head == "flatten_nchw":
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
  else:
    h = h.reshape(h.shape[0], -1)
  return h @ p["dense"]["kernel"] + p["dense"]["bias"]


def _nchw_index_map(hw):
  def index_map(kept, num):
    del num
    return (kept[:, None] * hw + np.arange(hw)[None, :]).reshape(-1)
  return index_map


def cnn_groups(head, hw=6):
  if head == "gap":
    dense_in = ("dense/kernel", 0)
  elif head == "flatten":
    dense_in = Coupled("dense/kernel", 0, repeat=hw * hw)               # NHWC: units last
  elif head == "flatten_nchw":
    dense_in = Coupled("dense/kernel", 0, repeat=hw * hw, order="units_first")
  else:   # the same NCHW layout through a callable index map
    dense_in = Coupled("dense/kernel", 0, index_map=_nchw_index_map(hw * hw))
  return [
      UnitGroup("conv1", source=("conv1/kernel", 3), coupled=[
          ("conv1/bias", 0), ("bn1/scale", 0), ("bn1/bias", 0), ("bn1/mean", 0),
          ("bn1/var", 0), ("conv2/kernel", 2)]),
      UnitGroup("conv2", source=[("conv2/kernel", 3), ("conv2/bias", 0)], coupled=[dense_in]),
  ]


def mask_cnn(p, dead1, dead2):
  """Filter pruning: a dead filter's kernel, bias and BN scale / offset are zero."""
  p = jax.tree.map(np.array, p)
  p["conv1"]["kernel"][..., dead1] = 0
  for leaf in (p["conv1"]["bias"], p["bn1"]["scale"], p["bn1"]["bias"]):
    leaf[dead1] = 0
  p["conv2"]["kernel"][..., dead2] = 0
  p["conv2"]["bias"][dead2] = 0
  return jax.tree.map(jnp.asarray, p)


@pytest.mark.parametrize("head", ["flatten", "flatten_nchw", "index_map", "gap"])
def test_cnn_removed_equals_masked(head, x64):
  rng = _rng(3)
  model_head = "flatten_nchw" if head == "index_map" else head
  p = cnn_params(rng, head=model_head)
  dead1, dead2 = _dead(rng, 8), _dead(rng, 10)
  masked = mask_cnn(p, dead1, dead2)
  small, kept = remove_units(masked, cnn_groups(head))
  assert kept["conv1"].tolist() == np.nonzero(~dead1)[0].tolist()
  assert kept["conv2"].tolist() == np.nonzero(~dead2)[0].tolist()
  assert small["conv2"]["kernel"].shape == (3, 3, 4, 5)
  feat = 5 if head == "gap" else 5 * 36
  assert small["dense"]["kernel"].shape == (feat, 5)
  x = jnp.asarray(rng.standard_normal((4, 6, 6, 3)))
  want, got = cnn(masked, x, model_head), cnn(small, x, model_head)
  err = float(jnp.max(jnp.abs(got - want)))
  assert err <= TOL, err
  c1 = 3 * 3 * 3 * 4 + 4 + 4 * 4           # conv1 + 4 BN vectors of the 4 kept filters
  c2 = 3 * 3 * 4 * 5 + 5
  assert _count(small) == c1 + c2 + feat * 5 + 5
  # the wrong layout for a flatten is caught by the outputs: units_first vs units_last
  if head == "flatten":
    wrong = cnn_groups("flatten_nchw")
    bad, _ = remove_units(masked, wrong)
    assert float(jnp.max(jnp.abs(cnn(bad, x, model_head) - want))) > 1e-3


# --------------------------------------------------------------------------- decisions


def test_sources_must_all_be_zero_and_keep_overrides(x64):
  p = {"d1": {"kernel": jnp.asarray([[1.0, 0.0, 0.0, 3.0]]),
              "bias": jnp.asarray([0.0, 2.0, 0.0, 0.0])},
       "d2": {"kernel": jnp.ones((4, 2))}}
  coupled = [("d1/bias", 0), ("d2/kernel", 0)]
  _, kept = remove_units(p, [UnitGroup("h", ("d1/kernel", 1), coupled)])
  assert kept["h"].tolist() == [0, 3]                       # the kernel alone decides
  _, kept = remove_units(p, [UnitGroup("h", [("d1/kernel", 1), ("d1/bias", 0)], coupled)])
  assert kept["h"].tolist() == [0, 1, 3]                    # unit 1 has a nonzero bias
  small, kept = remove_units(p, [UnitGroup("h", ("d1/kernel", 1), coupled)],
                             keep={"h": np.asarray([False, True, True, False])})
  assert kept["h"].tolist() == [1, 2]
  np.testing.assert_array_equal(np.asarray(small["d1"]["bias"]), [2.0, 0.0])


def test_lists_tuple_paths_and_a_source_repeated_in_coupled():
  p = {"layers": [{"w": np.asarray([[0.0, 1.0], [0.0, 2.0]])}, {"w": np.ones((2, 3))}]}
  g = UnitGroup("a", ("layers/0/w", 1), [(("layers", 0, "w"), 1), (("layers", 1, "w"), 0)])
  small, kept = remove_units(p, [g])
  assert kept["a"].tolist() == [1]
  assert small["layers"][0]["w"].shape == (2, 1) and small["layers"][1]["w"].shape == (1, 3)
  assert isinstance(small["layers"], list)


# --------------------------------------------------------------------------- bad input


def _p():
  return {"d1": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
          "d2": {"kernel": jnp.ones((4, 2))}, "conv": {"kernel": jnp.ones((3, 3, 2, 4))}}


BAD = [
    ([UnitGroup("h", ("d1/kernal", 1))], {}, "'d1/kernal', which is not a leaf"),
    ([UnitGroup("h", ("d1/kernel", 1), [("d9/kernel", 0)])], {},
     "coupled[0] names 'd9/kernel'"),
    ([UnitGroup("h", ("d1/kernel", 1), [("d2/kernel", 1)])], {},
     "d2/kernel axis 1 has size 2, but group 'h' has 4 units (from d1/kernel axis 1)"),
    ([UnitGroup("h", ("d1/kernel", 1), [Coupled("d2/kernel", 0, repeat=2)])], {},
     "d2/kernel axis 0 has size 4, but group 'h' has 4 units (from d1/kernel axis 1)"
     " x repeat 2"),
    ([UnitGroup("h", [("d1/kernel", 1), ("conv/kernel", 0)])], {},
     "d1/kernel axis 1 has 4, conv/kernel axis 0 has 3"),
    ([UnitGroup("h", ("d1/kernel", 2))], {}, "axis=2 is not an axis of d1/kernel"),
    ([UnitGroup("h", ("d1/kernel", 1))], {"h": np.zeros(4, bool)}, "every one of its 4"),
    ([UnitGroup("h", ("d1/kernel", 1))], {"h": np.ones(3, bool)}, "shape (4,)"),
    ([UnitGroup("h", ("d1/kernel", 1))], {"h": np.ones(4)}, "boolean array"),
    ([UnitGroup("h", ("d1/kernel", 1))], {"x": np.ones(4, bool)}, "not group names"),
    ([UnitGroup("h", ("d1/kernel", 1)), UnitGroup("h", ("d2/kernel", 1))], {},
     "unique"),
    ([UnitGroup("h", ("d1/kernel", 1), [("d2/kernel", 0)]),
      UnitGroup("g", ("conv/kernel", 3), [("d2/kernel", 0)])], {},
     "d2/kernel axis 0 is declared in groups 'h' and 'g'"),
    ([UnitGroup("h", ("d1/kernel", 1), ["d2/kernel"])], {}, "coupled[0]='d2/kernel'"),
    ([UnitGroup("h", ("d1/kernel", 1), [Coupled("d2/kernel", 0, repeat=0)])], {},
     "repeat=0"),
    ([UnitGroup("h", ("d1/kernel", 1), [Coupled("d2/kernel", 0, order="nchw")])], {},
     "order='nchw'"),
    ([UnitGroup("h", ("d1/kernel", 1),
                [Coupled("d2/kernel", 0, index_map=lambda k, n: k + 10)])], {},
     "index_map returned"),
    ([UnitGroup("h", ("d1/kernel", 1), [(7, 0)])], {}, "path=7"),
    ([UnitGroup("h", [])], {}, "source=[]"),
    (UnitGroup("h", ("d1/kernel", 1)), {}, "wrap a single group in a list"),
    ([("h", ("d1/kernel", 1))], {}, "each entry must be a UnitGroup"),
]


@pytest.mark.parametrize("groups, keep, message", BAD)
def test_bad_input_is_a_clear_error(groups, keep, message):
  # a wrong kind of object (a non-bool mask, a bare path for a Coupled, a group not in
  # a list) is a TypeError, every other mistake a ValueError (docs/errors.md)
  wrong_type = ("boolean array", "coupled[0]='d2/kernel'", "path=7",
                "wrap a single group in a list", "each entry must be a UnitGroup")
  expected = TypeError if message in wrong_type else ValueError
  with pytest.raises(expected) as e:
    remove_units(_p(), groups, keep=keep)
  assert type(e.value) is expected
  assert message in str(e.value), str(e.value)


def test_all_zero_group_and_traced_trees_are_refused():
  p = _p()
  p["d1"]["kernel"] = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match="every one of its 4 units is zero"):
    remove_units(p, [UnitGroup("h", ("d1/kernel", 1))])
  with pytest.raises(TypeError, match="traced value"):
    jax.jit(lambda q: remove_units(q, [UnitGroup("h", ("d1/kernel", 1))])[0])(_p())
