"""jopt.distill feature and relational losses against NumPy float64 transcriptions and torch.

* FitNets hint loss (Romero et al. 2015) vs NumPy and vs torch ``F.conv2d`` with a 1x1
  kernel + ``F.mse_loss`` (value and autograd gradients, kernel and bias included).
* Attention transfer (Zagoruyko & Komodakis 2017) vs NumPy and vs torch autograd of
  ``F.normalize(x.pow(2).sum(1).flatten(1))`` and the batch-mean L2 distance.
* RKD distance / angle (Park et al. 2019) vs NumPy loops over pairs and triplets,
  and vs torch ``smooth_l1_loss(beta=1)`` with autograd on explicitly looped pairs.

Measured errors in float64 are ~1e-16 to 1e-15; tolerances are 1e-12.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jopt.distill as jd
from tests.test_distill_logits import run_doctests

TOL = 1e-12


def _rng(seed):
  return np.random.default_rng(seed)


# ---------------------------------------------------------------- hint (FitNets)

def test_init_hint_projection_shapes_dtype_and_scale():
  proj = jd.init_hint_projection(jax.random.key(0), 64, 256)
  assert set(proj) == {"kernel", "bias"}
  assert proj["kernel"].shape == (64, 256) and proj["kernel"].dtype == jnp.float32
  assert proj["bias"].shape == (256,) and np.all(np.asarray(proj["bias"]) == 0)
  # LeCun normal: variance 1/d_s; 16,384 draws give the std to ~0.6% (1 sigma)
  std = float(np.std(np.asarray(proj["kernel"])))
  assert abs(std * np.sqrt(64) - 1.0) < 0.03
  # truncated at 2 sigma of the underlying normal (flax / jax lecun_normal)
  assert float(np.max(np.abs(np.asarray(proj["kernel"])))) < 2.0 * 1.14 / np.sqrt(64)
  other = jd.init_hint_projection(jax.random.PRNGKey(1), 3, 5, bias=False, dtype=jnp.bfloat16)
  assert set(other) == {"kernel"} and other["kernel"].dtype == jnp.bfloat16
  again = jd.init_hint_projection(jax.random.key(0), 64, 256)
  assert np.array_equal(np.asarray(again["kernel"]), np.asarray(proj["kernel"]))


def np_hint(s, t, w, b, act=None):
  r = s @ w + (0.0 if b is None else b)
  if act is not None:
    r = act(r)
  return np.mean((r - t) ** 2)


@pytest.mark.parametrize("shape", [(6,), (3, 4, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_hint_loss_matches_numpy_and_gradients(shape, bias, x64):
  rng = _rng(0)
  s = rng.normal(size=shape + (5,))
  t = rng.normal(size=shape + (7,))
  w = rng.normal(size=(5, 7))
  bb = rng.normal(size=(7,)) if bias else None
  proj = {"kernel": jnp.asarray(w)}
  if bias:
    proj["bias"] = jnp.asarray(bb)
  loss, (gs, gp) = jax.value_and_grad(jd.hint_loss, argnums=(0, 2))(jnp.asarray(s),
                                                                      jnp.asarray(t), proj)
  assert loss.dtype == jnp.float64
  assert abs(float(loss) - np_hint(s, t, w, bb)) <= TOL
  # closed form: dL/dr = 2 (r - t) / N
  r = s @ w + (0.0 if bb is None else bb)
  dr = 2.0 * (r - t) / r.size
  np.testing.assert_allclose(np.asarray(gs), dr @ w.T, rtol=0, atol=TOL)
  np.testing.assert_allclose(np.asarray(gp["kernel"]),
                             s.reshape(-1, 5).T @ dr.reshape(-1, 7), rtol=0, atol=TOL)
  if bias:
    np.testing.assert_allclose(np.asarray(gp["bias"]), dr.reshape(-1, 7).sum(0), rtol=0,
                               atol=TOL)
  g_t = jax.grad(lambda tt: jd.hint_loss(jnp.asarray(s), tt, proj))(jnp.asarray(t))
  assert np.all(np.asarray(g_t) == 0.0)


def test_hint_loss_on_nhwc_is_a_1x1_conv_as_in_torch(x64):
  rng = _rng(1)
  s = rng.normal(size=(2, 5, 6, 3))   # NHWC
  t = rng.normal(size=(2, 5, 6, 8))
  w = rng.normal(size=(3, 8))
  bb = rng.normal(size=(8,))
  st = torch.tensor(s.transpose(0, 3, 1, 2), requires_grad=True)       # NCHW
  wt = torch.tensor(w.T[:, :, None, None].copy(), requires_grad=True)   # OIHW
  bt = torch.tensor(bb, requires_grad=True)
  ref = F.mse_loss(F.conv2d(st, wt, bt), torch.tensor(t.transpose(0, 3, 1, 2)))
  ref.backward()
  proj = {"kernel": jnp.asarray(w), "bias": jnp.asarray(bb)}
  loss, (gs, gp) = jax.value_and_grad(jd.hint_loss, argnums=(0, 2))(jnp.asarray(s),
                                                                      jnp.asarray(t), proj)
  assert abs(float(loss) - ref.item()) <= TOL
  np.testing.assert_allclose(np.asarray(gs), st.grad.numpy().transpose(0, 2, 3, 1), rtol=0,
                             atol=TOL)
  np.testing.assert_allclose(np.asarray(gp["kernel"]), wt.grad.numpy()[:, :, 0, 0].T, rtol=0,
                             atol=TOL)
  np.testing.assert_allclose(np.asarray(gp["bias"]), bt.grad.numpy(), rtol=0, atol=TOL)


def test_hint_loss_identity_and_activation(x64):
  rng = _rng(2)
  s, t, w = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(6, 6))
  assert abs(float(jd.hint_loss(jnp.asarray(s), jnp.asarray(t), None))
             - np.mean((s - t) ** 2)) <= TOL
  got = jd.hint_loss(jnp.asarray(s), jnp.asarray(t), {"kernel": jnp.asarray(w)},
                     activation=jax.nn.relu)
  assert abs(float(got) - np_hint(s, t, w, None, lambda r: np.maximum(r, 0.0))) <= TOL


def test_hint_loss_bf16_features_compute_in_float32():
  rng = _rng(3)
  s = jnp.asarray(rng.normal(size=(4, 6)), jnp.bfloat16)
  t = jnp.asarray(rng.normal(size=(4, 3)), jnp.bfloat16)
  proj = jd.init_hint_projection(jax.random.key(0), 6, 3)
  loss = jd.hint_loss(s, t, proj)
  assert loss.dtype == jnp.float32
  ref = np_hint(np.asarray(s, np.float64), np.asarray(t, np.float64),
                np.asarray(proj["kernel"], np.float64), np.asarray(proj["bias"], np.float64))
  assert abs(float(loss) - ref) <= 1e-5 * ref


@pytest.mark.parametrize("s,t,proj,err,match", [
    ((4, 6), (5, 3), "ok", ValueError, "must agree on every axis but the last"),
    ((2, 4, 4, 6), (2, 2, 2, 3), "ok", ValueError, "pool or resize"),
    ((4, 6), (4, 3), {"kernel": np.zeros((3, 6))}, ValueError,
     r"projection\['kernel'\] has shape \(3, 6\), but the features need \(6, 3\)"),
    ((4, 6), (4, 3), {"kernel": np.zeros((6, 3)), "bias": np.zeros(6)}, ValueError,
     r"projection\['bias'\] has shape \(6,\), expected \(3,\)"),
    ((4, 6), (4, 3), {"w": np.zeros((6, 3))}, TypeError, "projection must be None or a dict"),
    ((4, 6), (4, 3), np.zeros((6, 3)), TypeError, "projection must be None or a dict"),
    ((4, 6), (4, 3), {"kernel": np.zeros((6, 3), np.int32)}, TypeError,
     r"projection\['kernel'\] must be floating-point"),
    ((4, 6), (4, 3), None, ValueError, "projection=None needs equal channels"),
    ((6,), (6,), None, ValueError, "at least 2-D"),
])
def test_hint_loss_bad_input(s, t, proj, err, match):
  if isinstance(proj, str):
    proj = {"kernel": np.zeros((s[-1], t[-1]), np.float32)}
  with pytest.raises(err, match="hint_loss: .*" + match):
    jd.hint_loss(np.zeros(s, np.float32), np.zeros(t, np.float32), proj)


def test_hint_loss_bad_dtype_and_activation():
  with pytest.raises(TypeError, match="hint_loss: student_features must be floating-point"):
    jd.hint_loss(np.zeros((2, 3), np.int32), np.zeros((2, 3), np.float32), None)
  with pytest.raises(TypeError, match="hint_loss: activation=.* must be None or a function"):
    jd.hint_loss(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), None,
                 activation="relu")


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(student_dim=0), ValueError, "student_dim=0 must be an integer >= 1"),
    (dict(teacher_dim=2.5), TypeError, "teacher_dim=2.5 must be an integer >= 1"),
    (dict(key=0), TypeError, "key=0 must be a PRNG key"),
    (dict(dtype=jnp.int32), TypeError, "dtype=.* must be a floating dtype"),
    (dict(bias=1), TypeError, "bias=1 must be a bool"),
])
def test_init_hint_projection_bad_input(kwargs, err, match):
  args = dict(key=jax.random.key(0), student_dim=3, teacher_dim=4)
  extra = {k: kwargs.pop(k) for k in ("dtype", "bias") if k in kwargs}
  args.update(kwargs)
  with pytest.raises(err, match="init_hint_projection: " + match):
    jd.init_hint_projection(args["key"], args["student_dim"], args["teacher_dim"], **extra)


# ------------------------------------------------------------- attention transfer

def np_attention(a, p):
  q = (np.abs(a) ** p).sum(-1).reshape(a.shape[0], -1)
  return q / np.linalg.norm(q, axis=-1, keepdims=True)


def np_at_loss(s, t, p):
  return np.mean(np.linalg.norm(np_attention(s, p) - np_attention(t, p), axis=-1))


@pytest.mark.parametrize("p", [2, 1, 3, 1.5])
def test_attention_map_and_loss_match_numpy(p, x64):
  rng = _rng(4)
  s, t = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(3, 4, 5, 9))
  q = jd.attention_map(jnp.asarray(s), p)
  assert q.shape == (3, 20)
  np.testing.assert_allclose(np.asarray(q), np_attention(s, p), rtol=0, atol=TOL)
  loss = jd.attention_transfer_loss(jnp.asarray(s), jnp.asarray(t), p)
  assert abs(float(loss) - np_at_loss(s, t, p)) <= TOL
  # 1-D spatial maps (e.g. [B, L, C] sequences) work the same way
  np.testing.assert_allclose(np.asarray(jd.attention_map(jnp.asarray(s[:, 0]), p)),
                             np_attention(s[:, 0], p), rtol=0, atol=TOL)


def test_attention_transfer_gradient_matches_torch_autograd(x64):
  rng = _rng(5)
  s, t = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(3, 4, 5, 2))
  st = torch.tensor(s.transpose(0, 3, 1, 2), requires_grad=True)
  tt = torch.tensor(t.transpose(0, 3, 1, 2))
  at = lambda x: F.normalize(x.pow(2).sum(1).flatten(1), dim=1)
  ref = (at(st) - at(tt)).norm(dim=1).mean()
  ref.backward()
  loss, g = jax.value_and_grad(jd.attention_transfer_loss)(jnp.asarray(s), jnp.asarray(t))
  assert abs(float(loss) - ref.item()) <= TOL
  np.testing.assert_allclose(np.asarray(g), st.grad.numpy().transpose(0, 2, 3, 1), rtol=0,
                             atol=TOL)
  g_t = jax.grad(lambda tt: jd.attention_transfer_loss(jnp.asarray(s), tt))(jnp.asarray(t))
  assert np.all(np.asarray(g_t) == 0.0)


def test_attention_gradients_are_finite_at_equal_and_zero_maps(x64):
  rng = _rng(6)
  s = rng.normal(size=(2, 3, 3, 4))
  # uniform 2x2 maps normalize to exactly 0.5 on both sides (however XLA divides), so
  # the distance is exactly 0: its gradient there is 0, not NaN
  ones_s, ones_t = np.ones((2, 2, 2, 4)), 3.0 * np.ones((2, 2, 2, 16))
  g = jax.grad(jd.attention_transfer_loss)(jnp.asarray(ones_s), jnp.asarray(ones_t))
  assert float(jd.attention_transfer_loss(jnp.asarray(ones_s), jnp.asarray(ones_t))) == 0.0
  assert np.all(np.asarray(g) == 0.0)
  g2 = jax.grad(jd.attention_transfer_loss)(jnp.asarray(s), jnp.asarray(2.0 * s))
  assert float(jd.attention_transfer_loss(jnp.asarray(s), jnp.asarray(2.0 * s))) <= 1e-15
  assert np.all(np.isfinite(np.asarray(g2)))
  z = np.zeros((2, 3, 3, 4))
  q = jd.attention_map(jnp.asarray(z))
  assert np.all(np.asarray(q) == 0.0)
  gz = jax.grad(jd.attention_transfer_loss)(jnp.asarray(z), jnp.asarray(s))
  assert np.all(np.isfinite(np.asarray(gz)))
  assert abs(float(jd.attention_transfer_loss(jnp.asarray(z), jnp.asarray(s))) - 1.0) <= TOL


def test_attention_traced_p_and_bf16():
  rng = _rng(7)
  s = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
  t = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
  f = jax.jit(lambda s, t, p: jd.attention_transfer_loss(s, t, p))
  assert abs(float(f(s, t, 2.0)) - np_at_loss(s.astype(np.float64), t.astype(np.float64), 2)) < 1e-6
  out = jd.attention_transfer_loss(jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("s,t,p,err,match", [
    ((2, 4, 4, 3), (2, 2, 2, 3), 2, ValueError, "same batch and spatial sizes"),
    ((2, 4, 4, 3), (3, 4, 4, 3), 2, ValueError, "same batch and spatial sizes"),
    ((2, 3), (2, 3), 2, ValueError, r"student_features must be a channels-last map"),
    ((2, 4, 4, 3), (2, 4, 4, 3), 0.0, ValueError, "p=0.0 is outside"),
    ((2, 4, 4, 3), (2, 4, 4, 3), -1, ValueError, "p=-1.0 is outside"),
])
def test_attention_transfer_bad_input(s, t, p, err, match):
  with pytest.raises(err, match="attention_transfer_loss: .*" + match):
    jd.attention_transfer_loss(np.ones(s, np.float32), np.ones(t, np.float32), p)


def test_attention_map_bad_input():
  with pytest.raises(TypeError, match="attention_map: features must be floating-point"):
    jd.attention_map(np.ones((2, 3, 3, 1), np.int32))
  with pytest.raises(ValueError, match="attention_map: features must be a channels-last map"):
    jd.attention_map(np.ones((2, 3), np.float32))


# ------------------------------------------------------------------------- RKD

def _smooth_l1(x):
  return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def np_rkd_distance(s, t):
  n = len(s)
  pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
  def psi(e):
    d = {(i, j): np.linalg.norm(e[i] - e[j]) for i, j in pairs}
    mu = sum(d.values()) / len(pairs)
    return {k: v / mu for k, v in d.items()}
  ps, pt = psi(s), psi(t)
  return sum(_smooth_l1(ps[k] - pt[k]) for k in pairs) / len(pairs)


def np_rkd_angle(s, t):
  n = len(s)
  def cos(e, i, j, k):
    a, b = e[i] - e[j], e[k] - e[j]
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  triplets = list(itertools.permutations(range(n), 3))
  return sum(_smooth_l1(cos(s, *ijk) - cos(t, *ijk)) for ijk in triplets) / len(triplets)


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_rkd_losses_match_numpy_loops(scale, x64):
  rng = _rng(8)
  s, t = rng.normal(size=(6, 5)) * scale, rng.normal(size=(6, 9))
  s[0] = t[0, :5] * 4.0   # a mix of Huber's quadratic and linear pieces
  d = jd.rkd_distance_loss(jnp.asarray(s), jnp.asarray(t))
  a = jd.rkd_angle_loss(jnp.asarray(s), jnp.asarray(t))
  assert d.dtype == a.dtype == jnp.float64
  assert abs(float(d) - np_rkd_distance(s, t)) <= TOL
  assert abs(float(a) - np_rkd_angle(s, t)) <= TOL


def _torch_psi_d(e):
  n = e.shape[0]
  d = torch.stack([torch.linalg.norm(e[i] - e[j]) for i in range(n) for j in range(n) if i != j])
  return d / d.mean()


def _torch_psi_a(e):
  n = e.shape[0]
  out = []
  for i, j, k in itertools.permutations(range(n), 3):
    out.append(F.cosine_similarity(e[i] - e[j], e[k] - e[j], dim=0, eps=0.0))
  return torch.stack(out)


def test_rkd_matches_torch_smooth_l1_and_autograd(x64):
  rng = _rng(9)
  s, t = rng.normal(size=(5, 4)) * 2.0, rng.normal(size=(5, 7))
  st, tt = torch.tensor(s, requires_grad=True), torch.tensor(t)
  ref_d = F.smooth_l1_loss(_torch_psi_d(st), _torch_psi_d(tt), beta=1.0)
  ref_d.backward()
  d, g = jax.value_and_grad(jd.rkd_distance_loss)(jnp.asarray(s), jnp.asarray(t))
  assert abs(float(d) - ref_d.item()) <= TOL
  np.testing.assert_allclose(np.asarray(g), st.grad.numpy(), rtol=0, atol=TOL)
  st.grad = None
  ref_a = F.smooth_l1_loss(_torch_psi_a(st), _torch_psi_a(tt), beta=1.0)
  ref_a.backward()
  a, g = jax.value_and_grad(jd.rkd_angle_loss)(jnp.asarray(s), jnp.asarray(t))
  assert abs(float(a) - ref_a.item()) <= TOL
  np.testing.assert_allclose(np.asarray(g), st.grad.numpy(), rtol=0, atol=TOL)
  for f in (jd.rkd_distance_loss, jd.rkd_angle_loss):
    g_t = jax.grad(lambda tt: f(jnp.asarray(s), tt))(jnp.asarray(t))
    assert np.all(np.asarray(g_t) == 0.0)


def test_rkd_gradients_finite_when_embeddings_coincide(x64):
  rng = _rng(10)
  s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
  s[3] = s[1]
  t[2] = t[0]
  for f in (jd.rkd_distance_loss, jd.rkd_angle_loss):
    loss, g = jax.value_and_grad(f)(jnp.asarray(s), jnp.asarray(t))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
  # all embeddings equal: mean distance 0, normalized distances 0, no NaN
  same = np.ones((4, 3))
  for f in (jd.rkd_distance_loss, jd.rkd_angle_loss):
    loss, g = jax.value_and_grad(f)(jnp.asarray(same), jnp.asarray(t[:4]))
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
  # the coinciding pair's distance counts as 0 in the mean (as in the paper)
  s2, t2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  s2[1] = s2[0]
  d = jd.rkd_distance_loss(jnp.asarray(s2), jnp.asarray(t2))
  assert abs(float(d) - np_rkd_distance(s2, t2)) <= TOL


def test_rkd_invariances(x64):
  rng = _rng(11)
  t = rng.normal(size=(7, 5))
  rot, _ = np.linalg.qr(rng.normal(size=(5, 5)))
  moved = 2.5 * t @ rot + 3.0
  assert float(jd.rkd_distance_loss(jnp.asarray(moved), jnp.asarray(t))) <= 1e-13
  assert float(jd.rkd_angle_loss(jnp.asarray(moved), jnp.asarray(t))) <= 1e-13
  assert float(jd.rkd_distance_loss(jnp.asarray(rng.normal(size=(7, 5))), jnp.asarray(t))) > 1e-3


@pytest.mark.parametrize("fn", ["rkd_distance_loss", "rkd_angle_loss"])
@pytest.mark.parametrize("s,t,match", [
    ((4, 3), (5, 3), "must embed the same batch"),
    ((4,), (4,), r"student_emb must be \[batch, dim\]"),
    ((4, 3), (4, 2, 2), r"teacher_emb must be \[batch, dim\]"),
    ((1, 3), (1, 3), "relations need at least"),
])
def test_rkd_bad_input(fn, s, t, match):
  with pytest.raises(ValueError, match=f"{fn}: .*{match}"):
    getattr(jd, fn)(np.ones(s, np.float32), np.ones(t, np.float32))


def test_rkd_angle_needs_three_and_floats():
  with pytest.raises(ValueError, match=r"rkd_angle_loss: the batch has 2 examples.*at least 3"):
    jd.rkd_angle_loss(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
  with pytest.raises(TypeError, match="rkd_distance_loss: teacher_emb must be floating-point"):
    jd.rkd_distance_loss(np.ones((3, 3), np.float32), np.ones((3, 3), np.int32))


def test_docstring_examples_run():
  for module, expected in (("jopt.distill.features", {"init_hint_projection", "hint_loss",
                                                      "attention_map",
                                                      "attention_transfer_loss"}),
                           ("jopt.distill.relational", {"rkd_distance_loss", "rkd_angle_loss"})):
    names, failures = run_doctests(module)
    assert names >= expected
    assert failures == 0
