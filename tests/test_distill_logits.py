"""jopt.distill.distill_loss / soft_targets against a NumPy float64 transcription and torch.

The reference is Hinton, Vinyals & Dean (2015), section 2, written out in NumPy:
:math:`\\alpha T^2 \\langle KL(p^T \\| q^T)\\rangle + (1-\\alpha)\\langle CE(q^1, y)\\rangle`.
The gradient is checked three ways: the closed form
:math:`\\alpha T (q^T - p^T)/B + (1-\\alpha)(q^1 - e_y)/B`, torch autograd through
``F.kl_div(..., reduction="batchmean") * T * T`` + ``F.cross_entropy``, and Hinton's
high-temperature limit (eq. 4). Measured errors in float64 are ~1e-16; the
tolerances are 1e-12.
"""

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jopt
import jopt.distill as jd

TOL = 1e-12


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_distill(s, t, y, temperature, alpha):
  """Hinton et al. 2015, section 2, in float64 loops-free NumPy."""
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  c = s.shape[-1]
  s2, t2 = s.reshape(-1, c), t.reshape(-1, c)
  lp, lq = _log_softmax(t2 / temperature), _log_softmax(s2 / temperature)
  p = np.exp(lp)
  terms = np.zeros_like(p)
  m = p > 0   # 0 log 0 = 0: a masked (-inf) teacher class contributes nothing
  terms[m] = p[m] * (lp[m] - lq[m])
  kl = terms.sum(-1).mean()
  loss = alpha * temperature ** 2 * kl
  if y is not None:
    y2 = np.asarray(y).reshape(-1)
    ce = -_log_softmax(s2)[np.arange(len(y2)), y2].mean()
    loss += (1 - alpha) * ce
  return loss


def np_grad(s, t, y, temperature, alpha):
  """The closed-form gradient wrt the student logits."""
  s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
  c = s.shape[-1]
  s2, t2 = s.reshape(-1, c), t.reshape(-1, c)
  b = s2.shape[0]
  q_t, p_t = np.exp(_log_softmax(s2 / temperature)), np.exp(_log_softmax(t2 / temperature))
  g = alpha * temperature * (q_t - p_t) / b
  if y is not None:
    onehot = np.eye(c)[np.asarray(y).reshape(-1)]
    g += (1 - alpha) * (np.exp(_log_softmax(s2)) - onehot) / b
  return g.reshape(s.shape)


def _data(seed=0, shape=(6, 5), scale=3.0):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=shape) * scale
  t = rng.normal(size=shape) * scale
  y = rng.integers(0, shape[-1], size=shape[:-1])
  return s, t, y


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_value_and_gradient_match_numpy(temperature, alpha, x64):
  s, t, y = _data()
  loss, g = jax.value_and_grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y),
                                                temperature=temperature, alpha=alpha)
  assert loss.dtype == jnp.float64
  ref = np_distill(s, t, y, temperature, alpha)
  assert abs(float(loss) - ref) <= TOL * max(1.0, abs(ref))
  np.testing.assert_allclose(np.asarray(g), np_grad(s, t, y, temperature, alpha), rtol=0,
                             atol=TOL)


@pytest.mark.parametrize("temperature", [1.0, 2.5, 8.0])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_matches_torch_kl_div_batchmean_and_autograd(temperature, alpha, x64):
  s, t, y = _data(1, (7, 10))
  st = torch.tensor(s, requires_grad=True)
  tt = torch.tensor(t)
  soft = F.kl_div(F.log_softmax(st / temperature, dim=-1), F.softmax(tt / temperature, dim=-1),
                  reduction="batchmean") * temperature * temperature
  ref = alpha * soft + (1 - alpha) * F.cross_entropy(st, torch.tensor(y))
  ref.backward()
  loss, g = jax.value_and_grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y),
                                                temperature=temperature, alpha=alpha)
  assert abs(float(loss) - ref.item()) <= TOL
  np.testing.assert_allclose(np.asarray(g), st.grad.numpy(), rtol=0, atol=TOL)


def test_t_squared_scaling(x64):
  """The soft term is T² times the mean KL, and with T² its gradient stays O(1) as T grows.

  Hinton et al. eq. (4): for zero-mean logits and large T, the (unscaled) soft
  gradient is (z_s - z_t) / (C T²) per example; the T² factor makes it (z_s - z_t) / C.
  """
  s, t, _ = _data(2, (4, 6))
  s, t = s - s.mean(-1, keepdims=True), t - t.mean(-1, keepdims=True)
  for temperature in (2.0, 7.0):
    loss = jd.distill_loss(jnp.asarray(s), jnp.asarray(t), temperature=temperature, alpha=1.0)
    kl = np_distill(s, t, None, temperature, 1.0) / temperature ** 2
    assert abs(float(loss) / temperature ** 2 - kl) <= TOL
  big_t = 1e3
  g = jax.grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), temperature=big_t, alpha=1.0)
  limit = (s - t) / s.shape[-1] / s.shape[0]
  rel = np.max(np.abs(np.asarray(g) - limit)) / np.max(np.abs(limit))
  assert rel < 1e-2   # measured 3.1e-3: the next order of the expansion is O(1/T)
  g_small = jax.grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), temperature=10.0, alpha=1.0)
  assert 0.3 < np.linalg.norm(g_small) / np.linalg.norm(limit) < 3.0


def test_gradient_matches_finite_differences(x64):
  s, t, y = _data(3, (3, 4))
  f = lambda z: jd.distill_loss(z, jnp.asarray(t), jnp.asarray(y), temperature=3.0, alpha=0.7)
  g = np.asarray(jax.grad(f)(jnp.asarray(s)))
  eps = 1e-6
  fd = np.zeros_like(s)
  for idx in np.ndindex(s.shape):
    e = np.zeros_like(s)
    e[idx] = eps
    fd[idx] = (float(f(jnp.asarray(s + e))) - float(f(jnp.asarray(s - e)))) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=0, atol=1e-9)


def test_teacher_receives_no_gradient(x64):
  s, t, y = _data(4)
  g_t = jax.grad(lambda tt: jd.distill_loss(jnp.asarray(s), tt, jnp.asarray(y), temperature=2.0,
                                            alpha=0.5))(jnp.asarray(t))
  assert np.all(np.asarray(g_t) == 0.0)
  g_st = jax.grad(lambda tt: jnp.sum(jd.soft_targets(tt, 2.0) ** 2))(jnp.asarray(t))
  assert np.all(np.asarray(g_st) == 0.0)


def test_labels_none_is_pure_distillation(x64):
  s, t, y = _data(5)
  pure = jd.distill_loss(jnp.asarray(s), jnp.asarray(t), temperature=3.0, alpha=1.0)
  with_labels = jd.distill_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), temperature=3.0,
                                alpha=1.0)
  assert abs(float(pure) - np_distill(s, t, None, 3.0, 1.0)) <= TOL
  assert float(pure) == float(with_labels)


def test_leading_batch_axes_average_every_example(x64):
  s, t, y = _data(6, (2, 3, 5))
  loss, g = jax.value_and_grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y),
                                                temperature=2.0, alpha=0.4)
  flat = jd.distill_loss(jnp.asarray(s.reshape(6, 5)), jnp.asarray(t.reshape(6, 5)),
                         jnp.asarray(y.reshape(6)), temperature=2.0, alpha=0.4)
  assert abs(float(loss) - float(flat)) <= TOL
  assert abs(float(loss) - np_distill(s, t, y, 2.0, 0.4)) <= TOL
  np.testing.assert_allclose(np.asarray(g), np_grad(s, t, y, 2.0, 0.4), rtol=0, atol=TOL)
  single = jd.distill_loss(jnp.asarray(s[0, 0]), jnp.asarray(t[0, 0]), jnp.asarray(y[0, 0]),
                           temperature=2.0, alpha=0.4)
  assert abs(float(single) - np_distill(s[0, 0], t[0, 0], y[0, 0], 2.0, 0.4)) <= TOL


def test_bf16_inputs_are_upcast_to_float32():
  s, t, y = _data(7)
  s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
  loss = jd.distill_loss(s16, t16, jnp.asarray(y), temperature=4.0, alpha=0.5)
  assert loss.dtype == jnp.float32
  up = jd.distill_loss(s16.astype(jnp.float32), t16.astype(jnp.float32), jnp.asarray(y),
                       temperature=4.0, alpha=0.5)
  assert float(loss) == float(up)
  ref = np_distill(np.asarray(s16.astype(jnp.float32)), np.asarray(t16.astype(jnp.float32)), y,
                   4.0, 0.5)
  assert abs(float(loss) - ref) <= 1e-6 * abs(ref)
  g = jax.grad(jd.distill_loss)(s16, t16, jnp.asarray(y), temperature=4.0, alpha=0.5)
  assert g.dtype == jnp.bfloat16
  assert jd.soft_targets(t16, 2.0).dtype == jnp.float32


def test_float32_and_float64_mix_under_strict_promotion(x64):
  s, t, y = _data(8)
  loss = jd.distill_loss(jnp.asarray(s, jnp.float32), jnp.asarray(t), jnp.asarray(y),
                         temperature=2.0, alpha=0.5)
  assert loss.dtype == jnp.float64
  ref = np_distill(np.float32(s).astype(np.float64), t, y, 2.0, 0.5)
  assert abs(float(loss) - ref) <= TOL


def test_masked_teacher_classes_contribute_zero(x64):
  s, t, y = _data(9)
  t[:, 2] = -np.inf
  loss, g = jax.value_and_grad(jd.distill_loss)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y),
                                                temperature=2.0, alpha=0.8)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(g)))
  assert abs(float(loss) - np_distill(s, t, y, 2.0, 0.8)) <= TOL
  np.testing.assert_allclose(np.asarray(g), np_grad(s, t, y, 2.0, 0.8), rtol=0, atol=TOL)


def test_soft_targets_match_numpy(x64):
  _, t, _ = _data(10, (3, 2, 4))
  p = jd.soft_targets(jnp.asarray(t), 3.0)
  np.testing.assert_allclose(np.asarray(p), np.exp(_log_softmax(t / 3.0)), rtol=0, atol=TOL)


def test_traced_hyperparameters_under_jit(x64):
  s, t, y = _data(11)
  f = jax.jit(lambda s, t, y, temp, a: jd.distill_loss(s, t, y, temperature=temp, alpha=a))
  got = f(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), 3.0, 0.25)
  assert abs(float(got) - np_distill(s, t, y, 3.0, 0.25)) <= TOL
  # labels closed over by a jitted function are concrete: still range-checked
  bad = jnp.asarray(np.full(y.shape, 7))
  with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
    jax.jit(lambda s: jd.distill_loss(s, jnp.asarray(t), bad, temperature=2.0, alpha=0.5))(
        jnp.asarray(s))
  # labels=None with a traced alpha cannot be checked: it is used as given
  g = jax.jit(lambda s, t, a: jd.distill_loss(s, t, temperature=2.0, alpha=a))
  got = g(jnp.asarray(s), jnp.asarray(t), 1.0)
  assert abs(float(got) - np_distill(s, t, None, 2.0, 1.0)) <= TOL


S, T, Y = np.zeros((4, 3), np.float32), np.ones((4, 3), np.float32), np.zeros(4, np.int32)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(teacher_logits=np.ones((4, 5), np.float32)), ValueError,
     r"student_logits \(4, 3\) and teacher_logits \(4, 5\)"),
    (dict(temperature=0.0), ValueError, "temperature=0.0 is outside"),
    (dict(temperature=-2.0), ValueError, "temperature=-2.0 is outside"),
    (dict(temperature=float("inf")), ValueError, "temperature=inf"),
    (dict(alpha=1.5), ValueError, r"alpha=1.5 is outside the accepted range \[0.0, 1.0\]"),
    (dict(alpha=-0.1), ValueError, "alpha=-0.1 is outside"),
    (dict(alpha="0.5"), TypeError, "alpha must be a real number"),
    (dict(labels=None, alpha=0.5), ValueError, "labels=None .* alpha must be 1.0"),
    (dict(labels=None, alpha=np.float32(0.5)), ValueError, "labels=None .* alpha must be 1.0"),
    (dict(student_logits=np.zeros((4, 3), np.int32)), TypeError,
     "student_logits must be floating-point"),
    (dict(teacher_logits=np.ones((4, 3), np.int32)), TypeError,
     "teacher_logits must be floating-point"),
    (dict(student_logits=np.float32(1.0), teacher_logits=np.float32(1.0)), ValueError,
     "student_logits must have a classes axis"),
    (dict(labels=np.zeros(4, np.float32)), TypeError, "labels must be integer class indices"),
    (dict(labels=np.zeros(4, bool)), TypeError, "labels must be integer class indices"),
    (dict(labels=np.zeros((4, 1), np.int32)), ValueError,
     r"labels \(4, 1\) must have the logits' shape"),
    (dict(labels=np.array([0, 1, 3, 0], np.int32)), ValueError, r"labels must be in \[0, 3\)"),
    (dict(labels=np.array([0, -1, 2, 0], np.int32)), ValueError, r"labels must be in \[0, 3\)"),
])
def test_bad_input_names_the_argument(kwargs, err, match):
  args = dict(student_logits=S, teacher_logits=T, labels=Y, temperature=2.0, alpha=0.5)
  args.update(kwargs)
  with pytest.raises(err, match=match):
    jd.distill_loss(args.pop("student_logits"), args.pop("teacher_logits"), args.pop("labels"),
                    **args)


def test_soft_targets_bad_input():
  with pytest.raises(ValueError, match="soft_targets: temperature=0.0"):
    jd.soft_targets(T, 0.0)
  with pytest.raises(TypeError, match="soft_targets: teacher_logits must be floating-point"):
    jd.soft_targets(np.ones(3, np.int32), 1.0)


class _JoptView:
  """``jopt`` as the docstrings use it, before the top-level re-exports exist."""

  def __getattr__(self, name):
    return getattr(jopt, name) if hasattr(jopt, name) else getattr(jopt.distill, name)


def run_doctests(module_name):
  finder = doctest.DocTestFinder()
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  import optax
  globs = dict(jax=jax, jnp=jnp, np=np, optax=optax, jopt=_JoptView())
  tests = [t for t in finder.find(importlib.import_module(module_name), globs=globs) if t.examples]
  for t in tests:
    runner.run(t)
  return {t.name.rsplit(".", 1)[-1] for t in tests}, runner.failures


def test_docstring_examples_run():
  names, failures = run_doctests("jopt.distill.logits")
  assert names >= {"distill_loss", "soft_targets"}
  assert failures == 0
