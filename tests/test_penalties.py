"""Loss-side penalties against NumPy in float64; coupled / decoupled decay with a mask.

Also checks that the transform-side decays agree with the penalties: an
``l2_penalty`` in the loss with plain SGD is ``add_decayed_weights`` chained
before ``sgd`` (coupled L2), and ``adamw(mask=...)`` is ``torch.optim.AdamW``
with a ``weight_decay=0`` parameter group for the masked-out leaves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import jopt
from jopt.regularizers import elastic_net_penalty, l1_penalty, l2_penalty, weights_mask

_rng = np.random.default_rng(0)
TREE = {  # a kernel, a conv filter, a bias, a norm scale, a scalar
    "dense": {"kernel": _rng.normal(size=(4, 3)), "bias": _rng.normal(size=(3,))},
    "conv": _rng.normal(size=(2, 3, 2, 2)),
    "norm": {"scale": _rng.normal(size=(3,)) + 1.0},
    "temp": np.asarray(_rng.normal()),
}
WEIGHTS = [TREE["dense"]["kernel"], TREE["conv"]]
ALL = WEIGHTS + [TREE["dense"]["bias"], TREE["norm"]["scale"], TREE["temp"]]


def _jnp(tree, dtype):
  return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _np_l1(arrays):
  return sum(np.abs(a).sum() for a in arrays)


def _np_l2(arrays):
  return 0.5 * sum((np.abs(a) ** 2).sum() for a in arrays)


def _rel(a, b):
  return abs(float(a) - float(b)) / max(abs(float(b)), 1e-300)


def test_weights_mask_is_ndim_at_least_two():
  assert weights_mask(TREE) == {"dense": {"kernel": True, "bias": False}, "conv": True,
                                "norm": {"scale": False}, "temp": False}


def test_numpy_parity_float64(x64):
  p = _jnp(TREE, jnp.float64)
  s = 0.37
  cases = [
      (l1_penalty(p, strength=s), s * _np_l1(WEIGHTS)),
      (l2_penalty(p, strength=s), s * _np_l2(WEIGHTS)),
      (elastic_net_penalty(p, l1=0.3, l2=0.7), 0.3 * _np_l1(WEIGHTS) + 0.7 * _np_l2(WEIGHTS)),
      (l1_penalty(p, True, strength=s), s * _np_l1(ALL)),
      (l2_penalty(p, True, strength=s), s * _np_l2(ALL)),
  ]
  worst = 0.0
  for got, want in cases:
    assert got.dtype == jnp.float64
    worst = max(worst, _rel(got, want))
  assert worst <= 1e-15, worst  # measured 1.6e-16 (summation order)


def test_mask_forms(x64):
  p = _jnp(TREE, jnp.float64)
  assert float(l1_penalty(p, False)) == 0.0
  assert float(l2_penalty(p, False)) == 0.0
  prefix = {"dense": True, "conv": False, "norm": False, "temp": True}
  want = _np_l1([TREE["dense"]["kernel"], TREE["dense"]["bias"], TREE["temp"]])
  assert _rel(l1_penalty(p, prefix), want) <= 1e-15
  # a callable mask gets the params and returns a mask (here: only biases and scales)
  only_1d = lambda t: jax.tree.map(lambda x: x.ndim == 1, t)  # noqa: E731
  want = _np_l2([TREE["dense"]["bias"], TREE["norm"]["scale"]])
  assert _rel(l2_penalty(p, only_1d), want) <= 1e-15
  # the default and an explicit weights_mask are the same
  assert float(l1_penalty(p)) == float(l1_penalty(p, weights_mask(p)))
  assert float(l1_penalty(p)) == float(l1_penalty(p, weights_mask))


def test_gradient_of_l2_is_strength_times_w(x64):
  p = _jnp(TREE, jnp.float64)
  s = 0.3
  g = jax.grad(lambda q: l2_penalty(q, strength=s))(p)
  mask = weights_mask(p)
  for gi, pi, m in zip(jax.tree.leaves(g), jax.tree.leaves(p), jax.tree.leaves(mask)):
    want = s * np.asarray(pi) if m else np.zeros_like(np.asarray(pi))
    np.testing.assert_array_equal(np.asarray(gi), want)  # exact: 2 * (s/2 * w)
  g1 = jax.grad(lambda q: l1_penalty(q, strength=s))(p)
  np.testing.assert_array_equal(np.asarray(g1["conv"]), s * np.sign(TREE["conv"]))
  np.testing.assert_array_equal(np.asarray(g1["dense"]["bias"]), 0.0)


def test_complex_leaves_use_modulus(x64):
  z = _rng.normal(size=(3, 2)) + 1j * _rng.normal(size=(3, 2))
  p = {"z": jnp.asarray(z, jnp.complex128)}
  a, b = l1_penalty(p), l2_penalty(p, strength=2.0)
  assert a.dtype == jnp.float64 and b.dtype == jnp.float64
  assert _rel(a, np.abs(z).sum()) <= 1e-15
  assert _rel(b, (np.abs(z) ** 2).sum()) <= 1e-15


def test_dtypes(x64):
  f32 = _jnp(TREE, jnp.float32)
  assert l1_penalty(f32).dtype == jnp.float32  # float32 stays float32 under x64
  bf = _jnp(TREE, jnp.bfloat16)
  out = l2_penalty(bf)
  assert out.dtype == jnp.bfloat16
  # accumulated in float32, rounded once: within half a bfloat16 ulp of the exact sum
  exact = _np_l2([np.asarray(x, np.float64) for x in
                  (bf["dense"]["kernel"].astype(jnp.float64), bf["conv"].astype(jnp.float64))])
  assert _rel(out.astype(jnp.float64), exact) <= 2.0 ** -8
  mixed = {"a": jnp.ones((2, 2), jnp.bfloat16), "b": jnp.ones((2, 2), jnp.float32)}
  assert l1_penalty(mixed).dtype == jnp.float32
  mixed64 = {"a": jnp.ones((2, 2), jnp.float32), "b": jnp.ones((2, 2), jnp.float64)}
  assert l1_penalty(mixed64).dtype == jnp.float64
  assert l1_penalty(bf, dtype=jnp.float32).dtype == jnp.float32


def test_nnx_state_and_variables():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  k = np.asarray(model.kernel.get_value())
  np.testing.assert_allclose(float(l1_penalty(state)), np.abs(k).sum(), rtol=1e-6)
  np.testing.assert_allclose(float(l2_penalty({"k": model.kernel, "b": model.bias})),
                             0.5 * (k ** 2).sum(), rtol=1e-6)
  assert weights_mask(state)["kernel"] is True and weights_mask(state)["bias"] is False


def test_jit_and_traced_strength(x64):
  p = _jnp(TREE, jnp.float64)
  f = jax.jit(lambda q, s: elastic_net_penalty(q, l1=s, l2=s))
  want = 0.2 * (_np_l1(WEIGHTS) + _np_l2(WEIGHTS))
  assert _rel(f(p, jnp.asarray(0.2, jnp.float64)), want) <= 1e-15


def test_bad_input():
  p = _jnp(TREE, jnp.float32)
  with pytest.raises(ValueError, match="l1_penalty: strength=-1.0"):
    l1_penalty(p, strength=-1.0)
  with pytest.raises(ValueError, match="l2_penalty: strength=nan"):
    l2_penalty(p, strength=float("nan"))
  with pytest.raises(ValueError, match="elastic_net_penalty: l2=-0.5"):
    elastic_net_penalty(p, l1=0.1, l2=-0.5)
  with pytest.raises(TypeError, match="missing 2 required keyword-only"):
    elastic_net_penalty(p)  # pylint: disable=missing-kwoa
  with pytest.raises(TypeError, match="strength must be a number.*not a schedule"):
    l1_penalty(p, strength=lambda t: 0.1)
  with pytest.raises(ValueError, match=r"(?s)l1_penalty: mask.*Expected.*structure PyTreeDef"):
    l1_penalty(p, {"dense": True, "other": False})
  with pytest.raises(ValueError, match=r"l2_penalty: mask"):
    l2_penalty(p, {"dense": {"kernel": 1.0, "bias": 0.0}, "conv": True,
                   "norm": True, "temp": True})
  ints = {"w": jnp.ones((2, 2), jnp.int32), "b": jnp.ones((2, 2), jnp.float32)}
  with pytest.raises(TypeError, match=r"l1_penalty: params\['w'\] has dtype int32"):
    l1_penalty(ints)
  assert float(l1_penalty(ints, {"w": False, "b": True})) == 4.0  # masked out: fine


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=5),
                  elements=st.floats(-1e3, 1e3)),
       hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=1, max_side=5),
                  elements=st.floats(-1e3, 1e3)),
       st.floats(0.0, 10.0))
def test_property_numpy_parity(w, b, s):
  with jax.enable_x64(True):
    p = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    l1 = float(l1_penalty(p, strength=s))
    l2 = float(l2_penalty(p, strength=s))
    en = float(elastic_net_penalty(p, l1=s, l2=s))
    scale = max(1.0, s * (np.abs(w).sum() + (w ** 2).sum()))
    assert abs(l1 - s * np.abs(w).sum()) <= 1e-14 * scale
    assert abs(l2 - s * 0.5 * (w ** 2).sum()) <= 1e-14 * scale
    assert abs(en - (l1 + l2)) <= 1e-14 * scale  # elastic net = l1 + l2 (b never counted)
    assert float(l1_penalty(p, True)) >= float(l1_penalty(p))


# --- 2. coupled and decoupled decay ------------------------------------------------

_XD = _rng.normal(size=(16, 4))
_YD = _rng.normal(size=(16, 3))


def _data_loss(p):
  x, y = jnp.asarray(_XD, jnp.float64), jnp.asarray(_YD, jnp.float64)
  out = jnp.tanh(x @ p["w"] + p["b"])
  return jnp.mean((out - y) ** 2)


def _init64():
  r = np.random.default_rng(3)
  return {"w": jnp.asarray(r.normal(size=(4, 3)), jnp.float64),
          "b": jnp.asarray(r.normal(size=(3,)), jnp.float64)}


def test_l2_penalty_sgd_equals_coupled_decay(x64):
  lam, lr = 0.3, 0.1
  p_pen = p_dec = _init64()
  sgd = jopt.sgd(lr)
  s_pen = sgd.init(p_pen)
  coupled = optax.chain(jopt.add_decayed_weights(lam, mask=weights_mask), jopt.sgd(lr))
  s_dec = coupled.init(p_dec)
  pen_grad = jax.jit(jax.grad(lambda p: _data_loss(p) + l2_penalty(p, strength=lam)))
  data_grad = jax.jit(jax.grad(_data_loss))
  worst = 0.0
  for _ in range(20):
    u, s_pen = sgd.update(pen_grad(p_pen), s_pen, p_pen)
    p_pen = optax.apply_updates(p_pen, u)
    u, s_dec = coupled.update(data_grad(p_dec), s_dec, p_dec)
    p_dec = optax.apply_updates(p_dec, u)
    worst = max(worst, max(float(jnp.max(jnp.abs(a - b)))
                           for a, b in zip(jax.tree.leaves(p_pen), jax.tree.leaves(p_dec))))
  assert worst <= 1e-15, worst  # measured 0.0 (same operations up to one addition)
  # the default mask matters: penalizing the bias too moves it elsewhere
  p_all, s_all = _init64(), sgd.init(_init64())
  all_grad = jax.jit(jax.grad(lambda p: _data_loss(p) + l2_penalty(p, True, strength=lam)))
  for _ in range(20):
    u, s_all = sgd.update(all_grad(p_all), s_all, p_all)
    p_all = optax.apply_updates(p_all, u)
  assert float(jnp.max(jnp.abs(p_all["b"] - p_pen["b"]))) > 1e-3


def test_adamw_mask_matches_torch_param_groups(x64):
  lr, wd = 0.05, 0.2
  p = _init64()
  tx = jopt.adamw(lr, weight_decay=wd, mask=weights_mask)
  s = tx.init(p)
  tw = torch.tensor(np.asarray(p["w"]), dtype=torch.float64, requires_grad=True)
  tb = torch.tensor(np.asarray(p["b"]), dtype=torch.float64, requires_grad=True)
  opt = torch.optim.AdamW([{"params": [tw], "weight_decay": wd},
                           {"params": [tb], "weight_decay": 0.0}], lr=lr, foreach=False)
  grad = jax.jit(jax.grad(_data_loss))
  worst = 0.0
  for _ in range(10):
    u, s = tx.update(grad(p), s, p)
    p = optax.apply_updates(p, u)
    g = grad({"w": jnp.asarray(tw.detach().numpy()), "b": jnp.asarray(tb.detach().numpy())})
    tw.grad = torch.from_numpy(np.array(g["w"]))
    tb.grad = torch.from_numpy(np.array(g["b"]))
    opt.step()
    worst = max(worst, float(np.max(np.abs(np.asarray(p["w"]) - tw.detach().numpy()))),
                float(np.max(np.abs(np.asarray(p["b"]) - tb.detach().numpy()))))
  assert worst <= 5e-15, worst  # measured 4.4e-16
  # the mask matters: decaying the bias too gives a visibly different bias
  p2 = _init64()
  tx_all = jopt.adamw(lr, weight_decay=wd)
  s2 = tx_all.init(p2)
  for _ in range(10):
    u, s2 = tx_all.update(grad(p2), s2, p2)
    p2 = optax.apply_updates(p2, u)
  assert float(jnp.max(jnp.abs(p2["b"] - p["b"]))) > 1e-4


def test_l1_gradient_at_zero_is_zero_as_torch(x64):
  # jnp.abs has gradient 1 at 0: an exact zero weight would be pushed off zero by the
  # penalty. The subgradient the docstring promises is sign(w), 0 at 0, as torch.abs.
  w = np.array([[1.5, 0.0, -0.25], [0.0, -3.0, 2.0]])
  g = jax.grad(lambda p: l1_penalty(p, strength=0.3))({"w": jnp.asarray(w)})["w"]
  t = torch.tensor(w, requires_grad=True)
  (0.3 * t.abs().sum()).backward()
  np.testing.assert_array_equal(np.asarray(g), t.grad.numpy())
  assert np.asarray(g)[0, 1] == 0.0 and np.asarray(g)[1, 0] == 0.0
  gn = jax.grad(lambda p: elastic_net_penalty(p, l1=0.3, l2=0.0))({"w": jnp.asarray(w)})["w"]
  np.testing.assert_array_equal(np.asarray(gn), t.grad.numpy())
