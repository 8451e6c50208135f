"""Muon: the reference rule (NumPy transcription, torch.optim.Muon), routing, optax variant.

The default ``jopt.muon`` is the rule of Jordan et al. as ``torch.optim.Muon``
implements it; ``variant="optax"`` is optax.contrib.muon's bias-corrected rule.
With the default settings the two differ from step 2 on, by 3e-3 to 1e-1
(max-relative) depending on how much the gradients vary between steps, so the
reference tolerance here (1e-13) is ten orders of magnitude below what the
other rule would need; ``test_checks_catch_a_wrong_rule`` shows it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
import torch
from optax.contrib import _muon as optax_muon

import jopt
from jopt.optimizers.muon import NS_COEFFS_PRESETS, newton_schulz
from tests import problems

STEPS = 8
NS = (3.4445, -4.7750, 2.0315)
# Measured max relative errors of the updates (float64, 8 steps): NumPy <= 1e-14,
# torch with its NS in float64 <= 1.4e-14, torch as shipped (NS in bfloat16) 3.1e-2.
TOL_REF = 1e-13
TOL_TORCH_BF16 = 5e-2


# ------------------------------------------------------------------------ float64 NumPy rule

def np_newton_schulz(x, steps=5, coeffs=NS, eps=1e-7):
  """Jordan's quintic iteration on the wide orientation, after x / max(||x||_F, eps)."""
  a, b, c = coeffs
  tall = x.shape[0] > x.shape[1]
  if tall:
    x = x.T
  x = x / max(np.linalg.norm(x), eps)
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if tall else x


class NumpyMuon:
  """The reference rule for one kernel W (n_in, n_out), float64.

  ``bias_correction=True`` is a deliberately wrong rule (optax's momentum form).
  """

  def __init__(self, lr, beta=0.95, weight_decay=0.0, nesterov=True, eps=1e-7,
               consistent_rms=None, bias_correction=False):
    self.lr, self.beta, self.wd, self.nesterov = lr, beta, weight_decay, nesterov
    self.eps, self.rms, self.bias_correction = eps, consistent_rms, bias_correction
    self.m, self.t = None, 0

  def update(self, g, w):
    beta = self.beta
    self.t += 1
    self.m = (1 - beta) * g + beta * (0.0 if self.m is None else self.m)
    if self.bias_correction:
      m = (beta * self.m / (1 - beta ** (self.t + 1)) + (1 - beta) * g / (1 - beta ** self.t))
    else:
      m = beta * self.m + (1 - beta) * g if self.nesterov else self.m
    o = np_newton_schulz(m, eps=self.eps)
    n_in, n_out = g.shape
    if self.rms is None:
      scale = math.sqrt(max(1.0, n_out / n_in))
    else:
      scale = self.rms * math.sqrt(max(n_in, n_out))
    return -self.lr * (scale * o + self.wd * w)


class NumpyNAdamW:
  """optax.adamw for one array (its Nesterov form by default), float64."""

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, nesterov=True):
    self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, weight_decay
    self.nesterov = nesterov
    self.m = self.v = 0.0
    self.t = 0

  def update(self, g, p):
    b1, b2 = self.b1, self.b2
    self.t += 1
    self.m = b1 * self.m + (1 - b1) * g
    self.v = b2 * self.v + (1 - b2) * g * g
    if self.nesterov:
      m_hat = b1 * self.m / (1 - b1 ** (self.t + 1)) + (1 - b1) * g / (1 - b1 ** self.t)
    else:
      m_hat = self.m / (1 - b1 ** self.t)
    v_hat = self.v / (1 - b2 ** self.t)
    return -self.lr * (m_hat / (np.sqrt(v_hat) + self.eps) + self.wd * p)


def model_init(scale=1.0):
  """Kernels of both orientations (wide 6x10, tall 10x4) and a bias."""
  rng = np.random.default_rng(0)
  return {"w_in": jnp.asarray(rng.normal(size=(6, 10)) * 0.5 * scale),
          "b": jnp.asarray(rng.normal(size=(10,)) * 0.1),
          "w_out": jnp.asarray(rng.normal(size=(10, 4)) * 0.5 * scale)}


_X = np.random.default_rng(1).normal(size=(16, 6))
_Y = np.random.default_rng(2).normal(size=(16, 4))


def model_loss(p):
  h = jnp.tanh(jnp.asarray(_X) @ p["w_in"] + p.get("b", jnp.zeros((10,), p["w_in"].dtype)))
  return 0.5 * jnp.mean((h @ p["w_out"] - jnp.asarray(_Y)) ** 2)


def against_numpy(tx, refs, steps=STEPS, grad_scale=1.0):
  """Max over steps and leaves of rel_err(jopt update, NumPy update); each side
  takes the loss gradient at its own parameters."""
  grad = jax.jit(jax.grad(model_loss))
  p = model_init()
  q = {k: np.asarray(v) for k, v in p.items()}
  s = tx.init(p)
  worst = 0.0
  for _ in range(steps):
    g = jax.tree.map(lambda x: x * grad_scale, grad(p))
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    h = {k: np.asarray(v) * grad_scale for k, v in grad(jax.tree.map(jnp.asarray, q)).items()}
    v = {k: refs[k].update(h[k], q[k]) for k in q}
    q = {k: q[k] + v[k] for k in q}
    worst = max(worst, problems.rel_err(u, v))
  return worst


def _numpy_refs(lr=0.02, adam_lr=None, **muon_kw):
  return {"w_in": NumpyMuon(lr, **muon_kw), "w_out": NumpyMuon(lr, **muon_kw),
          "b": NumpyNAdamW(lr if adam_lr is None else adam_lr,
                           nesterov=muon_kw.get("nesterov", True))}


@pytest.mark.parametrize("jopt_kw,np_kw", [
    (dict(), dict()),
    (dict(weight_decay=0.1, beta=0.9), dict(weight_decay=0.1, beta=0.9)),
    (dict(nesterov=False), dict(nesterov=False)),
    (dict(consistent_rms=0.2), dict(consistent_rms=0.2)),
], ids=["default", "decay-beta", "no-nesterov", "consistent-rms"])
def test_matches_numpy_reference_float64(jopt_kw, np_kw, x64, record_property):
  del x64
  err = against_numpy(jopt.muon(0.02, **jopt_kw), _numpy_refs(0.02, **np_kw))
  record_property("max_rel_err", err)
  assert err <= TOL_REF, err


def test_eps_guards_the_norm_as_a_floor_float64(x64):
  """Gradients of norm ~1e-7: dividing by max(||m||, eps), not ||m|| + eps, matters."""
  del x64
  err = against_numpy(jopt.muon(0.02), _numpy_refs(0.02), grad_scale=1e-7)
  assert err <= TOL_REF, err
  # the optax form of the guard is visibly different at this scale
  assert against_numpy(jopt.muon(0.02, variant="optax", eps=1e-7), _numpy_refs(0.02),
                       steps=1, grad_scale=1e-7) > 1e-3


def test_checks_catch_a_wrong_rule(x64):
  """The comparisons above can fail: optax's rule is >= 3e-3 away, 1e10 x the tolerance."""
  del x64
  wrong = against_numpy(jopt.muon(0.02), _numpy_refs(0.02, bias_correction=True))
  assert wrong > 1e-3, wrong
  optax_vs_ref = against_numpy(jopt.muon(0.02, variant="optax"), _numpy_refs(0.02))
  assert optax_vs_ref > 1e-3, optax_vs_ref
  # the first step agrees (the rules differ by a scalar there, which NS removes)
  assert against_numpy(jopt.muon(0.02, variant="optax"), _numpy_refs(0.02), steps=1) < 1e-7


# ------------------------------------------------------------------------- torch.optim.Muon

def against_torch(tx, torch_kw, steps=STEPS, grad_scale=1.0):
  """Max over steps of rel_err(jopt update, torch update^T) for the two kernels.

  torch holds each kernel as (out, in) = W^T and receives the transposed gradient
  at its own parameters; the bias is a constant of the loss.
  """
  grad = jax.jit(jax.grad(model_loss))
  p = {k: v for k, v in model_init().items() if k != "b"}
  tp = {k: torch.tensor(np.asarray(v).T.copy(), dtype=torch.float64, requires_grad=True)
        for k, v in p.items()}
  opt = torch.optim.Muon(list(tp.values()), **torch_kw)
  s = tx.init(p)
  worst = 0.0
  for _ in range(steps):
    u, s = tx.update(jax.tree.map(lambda x: x * grad_scale, grad(p)), s, p)
    p = optax.apply_updates(p, u)
    before = {k: t.detach().numpy().copy() for k, t in tp.items()}
    g = grad({k: jnp.asarray(before[k].T) for k in tp})
    for k, t in tp.items():
      t.grad = torch.from_numpy(np.array(g[k], dtype=np.float64).T * grad_scale)
    opt.step()
    v = {k: (t.detach().numpy() - before[k]).T for k, t in tp.items()}
    worst = max(worst, problems.rel_err(u, v))
  return worst


@pytest.fixture
def torch_ns_float64(monkeypatch):
  """torch.optim.Muon runs Newton–Schulz in bfloat16 (``grad.bfloat16()``); make that
  cast a float64 copy so that its rule can be compared at float64 precision."""
  monkeypatch.setattr(torch.Tensor, "bfloat16",
                      lambda self, memory_format=torch.preserve_format: self.clone())


TORCH_CASES = [
    (dict(), dict(lr=0.02, weight_decay=0.0)),
    (dict(weight_decay=0.1), dict(lr=0.02)),  # torch's default decay
    (dict(beta=0.9, nesterov=False), dict(lr=0.02, weight_decay=0.0, momentum=0.9,
                                          nesterov=False)),
    (dict(consistent_rms=0.2), dict(lr=0.02, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")),
]
TORCH_IDS = ["default", "decay", "no-nesterov", "match-rms-adamw"]


@pytest.mark.parametrize("jopt_kw,torch_kw", TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_muon_float64(jopt_kw, torch_kw, torch_ns_float64, x64, record_property):
  del torch_ns_float64, x64
  err = against_torch(jopt.muon(0.02, **jopt_kw), torch_kw)
  record_property("max_rel_err", err)
  assert err <= TOL_REF, err


def test_matches_torch_eps_floor_float64(torch_ns_float64, x64):
  del torch_ns_float64, x64
  kw = dict(lr=0.02, weight_decay=0.0)
  assert against_torch(jopt.muon(0.02), kw, grad_scale=1e-7) <= TOL_REF
  assert against_torch(jopt.muon(0.02, variant="optax", eps=1e-7), kw, steps=1,
                       grad_scale=1e-7) > 1e-3


def test_torch_comparison_catches_the_optax_rule(torch_ns_float64, x64):
  del torch_ns_float64, x64
  err = against_torch(jopt.muon(0.02, variant="optax"), dict(lr=0.02, weight_decay=0.0))
  assert err > 1e-3, err


def test_matches_torch_muon_as_shipped_bfloat16_ns(x64, record_property):
  """Unpatched torch (bfloat16 Newton–Schulz): agreement to bfloat16 precision.

  Coarse (a wrong weight decay shows, the optax-vs-reference gap does not); the
  float64 comparisons above are the discriminating ones.
  """
  del x64
  err = against_torch(jopt.muon(0.02, weight_decay=0.1), dict(lr=0.02, weight_decay=0.1))
  record_property("max_rel_err", err)
  assert err <= TOL_TORCH_BF16, err


# ---------------------------------------------------------------------------------- routing

def lm_init():
  rng = np.random.default_rng(7)
  return {"embed": jnp.asarray(rng.normal(size=(12, 5))),
          "blocks": {"w": jnp.asarray(rng.normal(size=(5, 6)) * 0.5),
                     "b": jnp.asarray(rng.normal(size=(6,)) * 0.1)},
          "head": {"kernel": jnp.asarray(rng.normal(size=(6, 12)) * 0.5),
                   "bias": jnp.zeros((12,))}}


def lm_loss(p):
  tokens = jnp.asarray([0, 3, 5, 7, 11, 2])
  h = jnp.tanh(p["embed"][tokens] @ p["blocks"]["w"] + p["blocks"]["b"])
  logits = h @ p["head"]["kernel"] + p["head"]["bias"]
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[jnp.arange(6), tokens])


def _by_path(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[0].key in ("embed", "head"), params)


ADAM_KW = dict(adam_b1=0.8, adam_b2=0.99, adam_weight_decay=0.01, adam_learning_rate=3e-3)


@pytest.mark.parametrize("mask", [
    {"embed": True, "blocks": False, "head": True},  # a prefix of the params
    {"embed": True, "blocks": {"w": False, "b": False},
     "head": {"kernel": True, "bias": True}},       # the full tree
    _by_path,                                        # params -> tree (a path predicate)
], ids=["prefix", "tree", "callable"])
def test_adam_mask_routes_embedding_and_head_to_adam(mask, x64):
  """Routed matrices take exactly optax.adamw's (Nesterov) step, on the same
  gradients and parameters; the rest is unchanged."""
  del x64
  sub = lambda t: {"embed": t["embed"], "head": t["head"]}  # noqa: E731
  p = lm_init()
  tx = jopt.muon(0.02, weight_decay=0.1, adam_mask=mask, **ADAM_KW)
  plain = jopt.muon(0.02, weight_decay=0.1, **ADAM_KW)
  with jax.numpy_dtype_promotion("standard"):
    adam = optax.adamw(3e-3, b1=0.8, b2=0.99, eps=1e-8, weight_decay=0.01, nesterov=True)
    r = adam.init(sub(p))
  s = tx.init(p)
  assert s.nu["embed"].shape == (12, 5) and s.nu["head"]["kernel"].shape == (6, 12)
  assert s.nu["blocks"]["w"].shape == (1,)  # a placeholder (orbax cannot save zero-size arrays)
  grad = jax.jit(jax.grad(lm_loss))
  for i in range(5):
    g = grad(p)
    u, s = tx.update(g, s, p)
    with jax.numpy_dtype_promotion("standard"):
      v, r = adam.update(sub(g), r, sub(p))
    assert problems.rel_err(sub(u), v) <= 1e-14
    if i == 0:
      w, _ = plain.update(g, plain.init(p), p)
      # the hidden kernel takes the same Muon step, the biases the same Adam step
      assert problems.rel_err(u["blocks"], w["blocks"]) <= 1e-14
      assert problems.rel_err(u["head"]["bias"], w["head"]["bias"]) <= 1e-14
      # without the mask the embedding takes the Muon step: far from Adam's
      assert problems.rel_err(w["embed"], v["embed"]) > 1e-1
    p = optax.apply_updates(p, u)


@pytest.mark.parametrize("mu_dtype,nu_dtype", [(jnp.float32, None), (None, jnp.float32)])
def test_adam_mask_state_dtypes(mu_dtype, nu_dtype, x64):
  """A routed matrix's second moment is full-size in nu_dtype (default: the param's)."""
  del x64
  p = lm_init()
  tx = jopt.muon(0.02, mu_dtype=mu_dtype, nu_dtype=nu_dtype,
                 adam_mask={"embed": True, "blocks": False, "head": False})
  s = tx.init(p)
  want_nu = jnp.float64 if nu_dtype is None else nu_dtype
  want_mu = jnp.float64 if mu_dtype is None else mu_dtype
  assert s.nu["embed"].shape == (12, 5) and s.nu["embed"].dtype == want_nu
  assert s.nu["head"]["kernel"].shape == (1,) and s.nu["head"]["kernel"].dtype == want_nu
  assert s.mu["embed"].dtype == want_mu
  _, s2 = tx.update(jax.grad(lm_loss)(p), s, p)
  assert [(x.shape, x.dtype) for x in jax.tree.leaves(s2)] == [
      (x.shape, x.dtype) for x in jax.tree.leaves(s)]


def test_adam_mask_works_under_jit(x64):
  del x64
  p = lm_init()
  tx = jopt.muon(0.02, adam_mask={"embed": True, "blocks": False, "head": True})
  step = jax.jit(lambda p, s: tx.update(jax.grad(lm_loss)(p), s, p))
  u, s = step(p, tx.init(p))
  v, _ = tx.update(jax.grad(lm_loss)(p), tx.init(p), p)
  assert problems.rel_err(u, v) <= 1e-14
  assert jax.tree.structure(s) == jax.tree.structure(tx.init(p))


# ------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("mask,text", [
    ({"embed": False, "blocks": False, "head": False}, "selects no parameter"),
    (False, "selects no parameter"),
    ({"embed": False, "blocks": {"w": False, "b": True}, "head": {"kernel": False,
                                                                 "bias": True}},
     "not 2-D"),
    (lambda params: jax.tree.map(lambda _: False, params), "selects no parameter"),
], ids=["all-false", "false", "only-vectors", "callable"])
def test_adam_mask_selecting_no_matrix_is_a_clear_error(mask, text):
  tx = jopt.muon(0.02, adam_mask=mask)
  with pytest.raises(ValueError, match="adam_mask") as e:
    tx.init(lm_init())
  assert text in str(e.value) and "adam_mask=None" in str(e.value)


def test_adam_mask_of_the_wrong_shape_names_the_argument():
  tx = jopt.muon(0.02, adam_mask={"embedding": True, "head": True})
  with pytest.raises(ValueError, match="adam_mask"):
    tx.init(lm_init())


@pytest.mark.parametrize("variant", ["torch", "Optax", None, 1])
def test_bad_variant_names_the_argument(variant):
  with pytest.raises(ValueError, match="variant") as e:
    jopt.muon(0.02, variant=variant)
  assert "reference" in str(e.value) and "optax" in str(e.value)


def test_bad_eps_mode_names_the_argument():
  with pytest.raises(ValueError, match="eps_mode"):
    newton_schulz(jnp.ones((2, 3)), NS_COEFFS_PRESETS["standard"], eps_mode="clamp")


BAD_INPUTS = [
    (dict(learning_rate=0.02, ns_steps=0), ValueError, "ns_steps"),
    (dict(learning_rate=0.02, ns_coeffs=(1.0, 2.0)), ValueError, "ns_coeffs"),
    (dict(learning_rate=0.02, ns_coeffs="polar"), ValueError, "ns_coeffs"),
    (dict(learning_rate=0.02, ns_coeffs=((3.0, -3.0, 1.0),) * 6), ValueError, "ns_steps"),
    (dict(learning_rate=0.02, beta=1.0), ValueError, "beta"),
    (dict(learning_rate=0.02, eps=-1e-7), ValueError, "eps"),
    (dict(learning_rate=0.02, preconditioning="polar"), ValueError, "preconditioning"),
    (dict(learning_rate=0.02, adam_b1=1.0), ValueError, "adam_b1"),
    (dict(learning_rate=0.02, adam_b2=-0.1), ValueError, "adam_b2"),
    (dict(learning_rate=0.02, adam_eps=-1.0), ValueError, "adam_eps"),
    (dict(learning_rate=0.02, adam_eps_root=-1.0), ValueError, "adam_eps_root"),
    (dict(learning_rate=0.02, adam_weight_decay=-1.0), ValueError, "adam_weight_decay"),
    (dict(learning_rate=0.02, adam_learning_rate=-1.0), ValueError, "adam_learning_rate"),
    (dict(learning_rate=0.02, consistent_rms=-0.2), ValueError, "consistent_rms"),
    (dict(learning_rate=0.02, nesterov="yes"), TypeError, "nesterov"),
    (dict(learning_rate=0.02, muon_weight_dimension_numbers=optax.contrib.MuonDimensionNumbers()),
     NotImplementedError, "muon_weight_dimension_numbers"),
]


@pytest.mark.parametrize("kwargs,exc,text", BAD_INPUTS,
                         ids=[f"{t}-{i}" for i, (_, _, t) in enumerate(BAD_INPUTS)])
def test_bad_inputs_fail_at_construction_naming_the_argument(kwargs, exc, text):
  with pytest.raises(exc, match=text):
    jopt.muon(**kwargs)


def test_set_hyperparams_checks_adam_names():
  state = jopt.muon(0.02).init(problems.quadratic_init())
  for name, value in (("adam_b2", 1.5), ("adam_eps", -1.0)):
    with pytest.raises(ValueError, match=name):
      jopt.set_hyperparams(state, **{name: value})


def test_missing_params_is_a_clear_error():
  tx, p = jopt.muon(0.1), problems.quadratic_init()
  with pytest.raises(ValueError, match="params"):
    tx.update(jax.grad(problems.quadratic_loss)(p), tx.init(p))


def test_hyperparams_live_in_state():
  h = jopt.hyperparams(jopt.muon(0.02, adam_learning_rate=1e-3).init(problems.quadratic_init()))
  assert {"beta", "eps", "adam_b1", "adam_b2", "adam_eps", "adam_learning_rate",
          "weight_decay"} <= set(h)
  assert float(h["eps"]) == pytest.approx(1e-7) and float(h["adam_eps"]) == pytest.approx(1e-8)
  # the optax variant shares one eps (1e-8) between Newton–Schulz and Adam
  h = jopt.hyperparams(jopt.muon(0.02, variant="optax").init(problems.quadratic_init()))
  assert "adam_eps" not in h and float(h["eps"]) == pytest.approx(1e-8)


# ---------------------------------------------------------------------- Newton–Schulz, shapes

@pytest.mark.parametrize("shape", [(20, 12), (12, 20), (16, 16)])
def test_newton_schulz_singular_values_in_band(shape, x64):
  del x64
  x = jnp.asarray(np.random.default_rng(3).normal(size=shape))
  coeffs = NS_COEFFS_PRESETS["standard"] * 5
  o = newton_schulz(x, coeffs)
  sv = np.linalg.svd(np.asarray(o), compute_uv=False)
  # Jordan's quintic maps every singular value into a band around 1, not onto 1.
  assert sv.min() > 0.6 and sv.max() < 1.25, sv
  # Same singular vectors as the exact polar factor U V^T: o V = U diag(p(s)),
  # where p(s) > 0 is what the iteration made of each singular value of x.
  u, _, vt = np.linalg.svd(np.asarray(x), full_matrices=False)
  ov = np.asarray(o) @ vt.T
  np.testing.assert_allclose(ov, u * np.linalg.norm(ov, axis=0), atol=1e-8)
  with jax.numpy_dtype_promotion("standard"):
    ref = optax_muon.orthogonalize_via_newton_schulz(x, jnp.asarray(coeffs[0]), 5)
  np.testing.assert_allclose(np.asarray(o), np.asarray(ref), rtol=1e-12, atol=1e-12)
  # eps_mode="max" with eps=1e-7 is the NumPy transcription; transposition commutes
  o_max = newton_schulz(x, coeffs, 1e-7, eps_mode="max")
  np.testing.assert_allclose(np.asarray(o_max), np_newton_schulz(np.asarray(x)),
                             rtol=1e-12, atol=1e-13)
  np.testing.assert_allclose(np.asarray(newton_schulz(x.T, coeffs, 1e-7, eps_mode="max")),
                             np.asarray(o_max).T, rtol=1e-12, atol=1e-13)


def test_newton_schulz_more_steps_do_not_leave_the_band(x64):
  del x64
  x = jnp.asarray(np.random.default_rng(4).normal(size=(10, 30)))
  sv = np.linalg.svd(np.asarray(newton_schulz(x, NS_COEFFS_PRESETS["standard"] * 20)),
                     compute_uv=False)
  assert sv.min() > 0.6 and sv.max() < 1.25, sv


def test_muon_splits_matrices_from_the_rest():
  p = {"k": jnp.zeros((4, 3)), "b": jnp.zeros((3,)), "c": jnp.zeros((2, 2, 2)), "s": jnp.zeros(())}
  s = jopt.muon(0.02).init(p)
  assert s.mu["k"].shape == (4, 3) and s.nu["k"].shape == (1,)  # Muon: momentum only
  for k in ("b", "c", "s"):
    assert s.mu[k].shape == p[k].shape and s.nu[k].shape == p[k].shape  # Adam


@pytest.mark.parametrize("variant", ["reference", "optax"])
def test_muon_first_step_is_scaled_orthogonal_matrix(variant, x64):
  """Step 1 without Nesterov: the momentum is (1 - beta) g (reference) or g (optax,
  bias-corrected), so u = -lr * sqrt(max(1, n_out/n_in)) * NS(g) with each one's
  eps guard (a floor at 1e-7 / an addition of 1e-8)."""
  del x64
  p = {"w": jnp.asarray(np.random.default_rng(5).normal(size=(3, 12)))}
  g = {"w": jnp.asarray(np.random.default_rng(6).normal(size=(3, 12)))}
  tx = jopt.muon(0.1, nesterov=False, variant=variant)
  u, _ = tx.update(g, tx.init(p), p)
  coeffs = NS_COEFFS_PRESETS["standard"] * 5
  o = (newton_schulz(g["w"], coeffs, 1e-7, eps_mode="max") if variant == "reference"
       else newton_schulz(g["w"], coeffs, 1e-8))
  np.testing.assert_allclose(np.asarray(u["w"]), np.asarray(-0.1 * 2.0 * o), rtol=1e-12)


# -------------------------------------------------------------------- optax variant parity

@pytest.mark.parametrize("kwargs", [
    dict(learning_rate=0.01, preconditioning="aol", ns_steps=4),
    dict(learning_rate=0.01, preconditioning="schatten",
         ns_coeffs=((3.0, -3.2, 1.2), (2.0, -1.5, 0.5))),
    dict(learning_rate=0.01, ns_coeffs="dion", nesterov=False, weight_decay=0.05),
    dict(learning_rate=0.003, adaptive=True, consistent_rms=0.2),
], ids=["aol", "schatten-table", "dion", "adaptive-consistent-rms"])
def test_optax_variant_options_match_optax_float64(kwargs, x64):
  del x64
  err = problems.run_side_by_side(jopt.muon(**kwargs, variant="optax"),
                                  optax.contrib.muon(**kwargs),
                                  problems.parity_init(jnp.float64), problems.parity_loss)[0]
  assert err <= 1e-7, err


def test_default_is_not_optax_rule(x64):
  """The reference default really departs from optax.contrib.muon (so the parity
  above is a property of variant="optax" only)."""
  del x64
  err = problems.run_side_by_side(jopt.muon(0.01), optax.contrib.muon(0.01),
                                  problems.parity_init(jnp.float64), problems.parity_loss,
                                  steps=5)[0]
  assert err > 1e-4, err


def test_complex_params_are_a_type_error_naming_the_fix():
  with pytest.raises(TypeError, match=r"muon: params must be real.*jopt.adam"):
    jopt.muon(0.02).init({"w": jnp.ones((3, 2), jnp.complex64)})
