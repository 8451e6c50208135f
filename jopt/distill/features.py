"""Feature distillation: FitNets hints through a learned projection, and attention transfer.

Both compare an intermediate student representation with the teacher's, the
teacher's side under ``stop_gradient``. Features are channels-last (``[B, d]``
vectors or ``[B, H, W, C]`` maps, JAX's NHWC convention); transpose NCHW maps first.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jopt._core.validate import check_positive_int, check_range, is_concrete
from jopt.distill.logits import as_float, compute_dtype, safe_norm
from jopt.nn._common import check_key

__all__ = ["init_hint_projection", "hint_loss", "attention_map", "attention_transfer_loss"]


def init_hint_projection(key: Any, student_dim: int, teacher_dim: int, *, bias: bool = True,
                         dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  r"""Parameters of the linear regressor that maps student features onto the teacher's.

  .. math::
    W_{ij} \sim \mathcal{N}_\text{trunc}(0,\ 1/d_s), \qquad b = 0

  (LeCun-normal, Flax ``nn.Dense``'s default). Keep the returned dict inside the
  student's trainable parameters (e.g. ``{"net": net_params, "hint": proj}``) so the
  optimizer trains it with the student, as FitNets does in its first stage.

  Args:
    key: a PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``).
    student_dim: :math:`d_s \ge 1`, the student's feature (channel) size.
    teacher_dim: :math:`d_t \ge 1`, the teacher's feature (channel) size.
    bias: include a bias :math:`b \in \mathbb{R}^{d_t}` (default True).
    dtype: floating dtype of the parameters (default float32).

  Returns:
    ``{"kernel": [d_s, d_t]}`` plus ``"bias": [d_t]`` when ``bias`` is True.

  Example:
    >>> proj = jopt.distill.init_hint_projection(jax.random.key(0), 8, 16)
    >>> {k: v.shape for k, v in proj.items()}
    {'kernel': (8, 16), 'bias': (16,)}

  Reference: Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015,
  section 2.2 (the regressor :math:`r` on top of the guided layer).
  """
  where = "init_hint_projection: "
  key = check_key(where, key)
  d_s = check_positive_int("student_dim", student_dim, where)
  d_t = check_positive_int("teacher_dim", teacher_dim, where)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{where}dtype={dtype!r} must be a floating dtype, e.g. jnp.float32.")
  if not isinstance(bias, bool):
    raise TypeError(f"{where}bias={bias!r} must be a bool.")
  kernel = jax.nn.initializers.lecun_normal()(key, (d_s, d_t), dtype)
  if not bias:
    return {"kernel": kernel}
  return {"kernel": kernel, "bias": jnp.zeros((d_t,), dtype)}


def _check_projection(projection: Any, d_s: int, d_t: int, where: str) -> tuple[Any, Any]:
  """``(kernel, bias_or_None)`` of a projection dict, its shapes checked."""
  if not isinstance(projection, dict) or "kernel" not in projection or (
      set(projection) - {"kernel", "bias"}):
    raise TypeError(f"{where}projection must be None or a dict with 'kernel' (and optionally"
                    f" 'bias'), as returned by init_hint_projection; got {projection!r:.80}.")
  kernel = as_float(projection["kernel"], "projection['kernel']", where, "weights")
  if kernel.shape != (d_s, d_t):
    raise ValueError(f"{where}projection['kernel'] has shape {kernel.shape}, but the features"
                     f" need ({d_s}, {d_t}) = (student channels, teacher channels); build it"
                     f" with init_hint_projection(key, {d_s}, {d_t}).")
  b = projection.get("bias")
  if b is not None:
    b = as_float(b, "projection['bias']", where, "weights")
    if b.shape != (d_t,):
      raise ValueError(f"{where}projection['bias'] has shape {b.shape}, expected ({d_t},).")
  return kernel, b


def hint_loss(student_features: Any, teacher_features: Any, projection: Any, *,
              activation: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
  r"""FitNets hint loss: mean squared error between projected student and teacher features.

  With the regressor :math:`r(v) = \sigma(v W + b)` applied over the last (channel)
  axis, i.e. a dense layer for ``[B, d]`` features and a 1x1 convolution for
  ``[B, H, W, C]`` maps:

  .. math::
    L = \frac{1}{N} \sum_{n} \big( r(v_s)_n - u_t{}_n \big)^2

  the mean over all :math:`N` entries of the teacher features :math:`u_t`
  (gradient stopped). Departures from the paper: FitNets writes
  :math:`\tfrac12 \lVert u_t - r(v_s) \rVert^2` (a sum); the mean here does not
  grow with the batch or the map size (multiply by :math:`N/2` for the paper's
  value). FitNets' regressor is a convolution of whatever size matches the
  teacher's spatial size; here it is 1x1, so the spatial sizes must already match
  (pool or resize first). The paper requires :math:`r` to end in the hint layer's
  non-linearity: pass it as ``activation`` (e.g. ``jax.nn.relu``); the default is
  linear.

  Args:
    student_features: ``[..., d_s]`` floating-point features of the guided layer.
    teacher_features: ``[..., d_t]`` features of the hint layer, the same leading
      shape.
    projection: ``{"kernel": [d_s, d_t], "bias": [d_t]}`` (bias optional) from
      :func:`init_hint_projection`, trained with the student; or ``None`` for no
      regressor (then ``d_s`` must equal ``d_t``).
    activation: optional function applied to the regressor's output.

  Returns:
    The scalar loss, in at least float32.

  Example:
    >>> s, t = jnp.ones((2, 4, 4, 8)), jnp.ones((2, 4, 4, 16))
    >>> proj = jopt.distill.init_hint_projection(jax.random.key(0), 8, 16)
    >>> loss = jopt.distill.hint_loss(s, t, proj)   # a 1x1 conv from 8 to 16 channels
    >>> loss.shape
    ()
    >>> float(jopt.distill.hint_loss(t, t, None))     # no regressor: equal features give 0
    0.0

  Reference: Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015,
  section 2.2 (hint-based training, the hint loss).
  """
  where = "hint_loss: "
  s = as_float(student_features, "student_features", where, "features")
  t = as_float(teacher_features, "teacher_features", where, "features")
  if s.ndim < 2 or t.ndim < 2:
    raise ValueError(f"{where}features must be [batch, ..., channels] (at least 2-D), got"
                     f" student_features {s.shape} and teacher_features {t.shape}.")
  if s.shape[:-1] != t.shape[:-1]:
    raise ValueError(f"{where}student_features {s.shape} and teacher_features {t.shape} must"
                     f" agree on every axis but the last (channels); the 1x1 projection does"
                     f" not resize, so pool or resize the larger map first.")
  if activation is not None and not callable(activation):
    raise TypeError(f"{where}activation={activation!r} must be None or a function.")
  d_s, d_t = s.shape[-1], t.shape[-1]
  if projection is None:
    if d_s != d_t:
      raise ValueError(f"{where}projection=None needs equal channels, got {d_s} (student) and"
                       f" {d_t} (teacher); pass init_hint_projection(key, {d_s}, {d_t}).")
    kernel = b = None
    dtype = compute_dtype(s, t)
  else:
    kernel, b = _check_projection(projection, d_s, d_t, where)
    dtype = compute_dtype(s, t, kernel, *([] if b is None else [b]))
  r = s.astype(dtype)
  if kernel is not None:
    r = jnp.matmul(r, kernel.astype(dtype))
    if b is not None:
      r = r + b.astype(dtype)
  if activation is not None:
    r = activation(r)
  t = jax.lax.stop_gradient(t.astype(dtype))
  return jnp.mean(jnp.square(r - t))


def _check_p(p: Any, where: str) -> Any:
  """``p`` checked: a Python int when integer-valued (``|A|^2`` as an exact integer
  power, finite gradient at 0), a Python float when concrete, else the traced value."""
  check_range("p", p, 0.0, low_open=True, where=where)
  if not is_concrete(p):
    return p
  return int(float(p)) if float(p) == int(float(p)) else float(p)


def _attention(a: jax.Array, p: Any) -> jax.Array:
  """Flattened, L2-normalized :math:`\\sum_c |A_c|^p`, rows of 0 where the map is 0."""
  dtype = compute_dtype(a)
  a = jnp.abs(a.astype(dtype))
  q = jnp.sum(a ** p if isinstance(p, int) else a ** jnp.asarray(p, dtype), axis=-1)
  q = q.reshape(q.shape[0], -1)
  n = safe_norm(q, axis=-1, keepdims=True)
  pos = n > 0
  return jnp.where(pos, q / jnp.where(pos, n, jnp.ones_like(n)), jnp.zeros_like(q))


def _check_map(x: Any, name: str, where: str) -> jax.Array:
  x = as_float(x, name, where, "features")
  if x.ndim < 3:
    raise ValueError(f"{where}{name} must be a channels-last map [batch, *spatial, channels]"
                     f" (e.g. NHWC, at least 3-D), got shape {x.shape}.")
  return x


def attention_map(features: Any, p: Any = 2) -> jax.Array:
  r"""Activation-based spatial attention map: normalized channel sum of :math:`|A|^p`.

  .. math::
    Q = \operatorname{vec}\Big(\sum_{c=1}^{C} |A_c|^p\Big), \qquad
    \hat Q = Q / \lVert Q \rVert_2

  per example, over the spatial positions of a channels-last map. An all-zero map
  gives an all-zero row (not NaN).

  Args:
    features: ``[B, *spatial, C]`` floating-point activations (e.g. NHWC).
    p: the power :math:`p > 0` (default 2, the paper's choice).

  Returns:
    ``[B, prod(spatial)]`` L2-normalized maps, in at least float32.

  Example:
    >>> q = jopt.distill.attention_map(jnp.ones((2, 4, 4, 3)))
    >>> q.shape, round(float(jnp.linalg.norm(q[0])), 6)
    ((2, 16), 1.0)

  Reference: Zagoruyko & Komodakis, *Paying More Attention to Attention*, ICLR
  2017, section 3.1 (:math:`F^p_\text{sum}` and the normalized maps).
  """
  where = "attention_map: "
  a = _check_map(features, "features", where)
  return _attention(a, _check_p(p, where))


def attention_transfer_loss(student_features: Any, teacher_features: Any, p: Any = 2) -> jax.Array:
  r"""Attention transfer: mean over the batch of the L2 distance of normalized attention maps.

  .. math::
    L = \frac{1}{B} \sum_{b=1}^{B} \Big\lVert \frac{Q_s^{(b)}}{\lVert Q_s^{(b)} \rVert_2}
        - \frac{Q_t^{(b)}}{\lVert Q_t^{(b)} \rVert_2} \Big\rVert_2

  with :math:`Q` from :func:`attention_map` and the teacher's side gradient-stopped.
  This is one layer pair's term of the paper's loss *without* its
  :math:`\beta/2` factor: the full loss is
  :math:`L_\text{CE} + \tfrac{\beta}{2}\sum_j L_j`, so multiply by
  :math:`\beta/2` and sum over the layer pairs you match. (The authors' code
  instead averages the *squared* difference over batch and positions, with
  :math:`\beta = 10^3`.) The distance's gradient is 0, not NaN, where the maps are
  equal. Channels may differ; batch and spatial sizes must match.

  Args:
    student_features: ``[B, *spatial, C_s]`` student activations (channels-last).
    teacher_features: ``[B, *spatial, C_t]`` teacher activations.
    p: the power :math:`p > 0` of :func:`attention_map` (default 2).

  Returns:
    The scalar loss, in at least float32.

  Example:
    >>> s, t = jnp.ones((2, 4, 4, 8)), jnp.ones((2, 4, 4, 32))
    >>> float(jopt.distill.attention_transfer_loss(s, t))   # uniform maps agree
    0.0

  Reference: Zagoruyko & Komodakis, *Paying More Attention to Attention: Improving
  the Performance of Convolutional Neural Networks via Attention Transfer*, ICLR
  2017, section 3.1 (the attention-transfer loss).
  """
  where = "attention_transfer_loss: "
  s = _check_map(student_features, "student_features", where)
  t = _check_map(teacher_features, "teacher_features", where)
  if s.shape[:-1] != t.shape[:-1]:
    raise ValueError(f"{where}student_features {s.shape} and teacher_features {t.shape} must"
                     f" have the same batch and spatial sizes (channels may differ); resize"
                     f" or pool one map to the other's spatial size first.")
  p = _check_p(p, where)
  return (_at_loss_static if is_concrete(p) else _at_loss)(s, t, p)


def _at_loss(s: jax.Array, t: jax.Array, p: Any) -> jax.Array:
  dtype = compute_dtype(s, t)
  q_s = _attention(s.astype(dtype), p)
  q_t = jax.lax.stop_gradient(_attention(t.astype(dtype), p))
  return jnp.mean(safe_norm(q_s - q_t, axis=-1))


# compiled once per shape and p, so eager calls are not dispatched op by op
_at_loss_static = jax.jit(_at_loss, static_argnums=2)
