r"""The compression lab: LeNet-300-100, a small CNN, a train loop for any transform, latency.

Shared by ``benchmarks/compression.py`` and ``notebooks/compression.ipynb``.
The models are plain-JAX parameter dicts (no framework), so every jopt
compression step applies to them directly:

* :func:`init_lenet` / :func:`apply_lenet`: LeNet-300-100, the fully connected
  784-300-100-10 network of LeCun et al. (1998) that Han et al. prune and share;
* :func:`init_cnn` / :func:`apply_cnn`: two bias-free 3x3 conv layers (ReLU,
  2x2 max-pool) and a dense head, with :func:`cnn_unit_groups` declaring the
  coupled axes for :func:`jopt.prune.remove_units` (channel removal);
* :func:`train_model`: a jitted Adam-or-anything loop that takes any optax
  transform, ``jopt.prune(...)`` included (it passes ``params`` to ``update``);
* :func:`accuracy_of` and :func:`measure_latency` (the relative-index sparse
  format of Deep Compression, counted exactly, is in :mod:`jopt.prune.relative_index`).

  >>> from jopt.training import compression_lab as lab
  >>> data = jopt.training.load_mnist_subset()
  >>> params = lab.train_model(lab.apply_lenet, lab.init_lenet(0), jopt.adam(1e-3), data,
  ...                          steps=100)
  >>> lab.accuracy_of(lab.apply_lenet, params, data.test) > 80.0   # percent; 10 by chance
  True
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jopt._core.validate import check_positive_int
from jopt.prune.removal import Coupled, UnitGroup
# The relative-index format lives in jopt.prune.relative_index; these names stay
# importable from the lab, where notebooks/compression.ipynb uses them.
from jopt.prune.relative_index import (  # pylint: disable=unused-import
    relative_index_decode as relative_index_decode,
    relative_index_encode as relative_index_encode,
    relative_index_nbytes as relative_index_nbytes,
)

__all__ = ["init_lenet", "apply_lenet", "init_cnn", "apply_cnn", "cnn_unit_groups",
           "conv_filter", "train_model", "accuracy_of", "measure_latency"]

_WHERE = "compression_lab: "


def _dense(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
  bound = 1.0 / math.sqrt(fan_in)
  kernel = jax.random.uniform(key, (fan_in, fan_out), jnp.float32, -bound, bound)
  return {"kernel": kernel, "bias": jnp.zeros((fan_out,), jnp.float32)}


def _key(seed: Any) -> jax.Array:
  if isinstance(seed, (int, np.integer)):
    return jax.random.PRNGKey(int(seed))
  return seed


def init_lenet(seed: Any = 0, sizes: tuple[int, ...] = (784, 300, 100, 10)) -> dict[str, Any]:
  r"""LeNet-300-100 parameters: ``{"dense0": {"kernel", "bias"}, ...}``, float32.

  Kernels are drawn :math:`W \sim U(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})` (the
  torch ``nn.Linear`` default bound), biases are zero.

  Args:
    seed: an int or a PRNG key.
    sizes: layer widths, input first (default 784-300-100-10).

  Returns:
    A dict of ``len(sizes) - 1`` dense layers; kernels are ``(in, out)``.

  Example:
    >>> p = jopt.training.init_lenet(0)
    >>> p["dense0"]["kernel"].shape, p["dense2"]["kernel"].shape
    ((784, 300), (100, 10))

  Reference: LeCun et al., *Gradient-Based Learning Applied to Document
  Recognition*, 1998 (LeNet-300-100); Han et al., NeurIPS 2015 (its pruning).
  """
  if len(sizes) < 2:
    raise ValueError(f"{_WHERE}sizes={sizes!r} needs at least an input and an output width.")
  keys = jax.random.split(_key(seed), len(sizes) - 1)
  return {f"dense{i}": _dense(k, sizes[i], sizes[i + 1])
          for i, k in enumerate(keys)}


def apply_lenet(params: dict[str, Any], x: jax.Array) -> jax.Array:
  r"""Logits of the MLP: :math:`h_{l+1} = \mathrm{ReLU}(h_l W_l + b_l)`, no ReLU on the last.

  Args:
    params: from :func:`init_lenet` (any number of ``dense<i>`` layers).
    x: ``(batch, 784)`` float32 inputs (flattened images).

  Returns:
    ``(batch, classes)`` logits.

  Example:
    >>> from jopt.training import apply_lenet, init_lenet
    >>> apply_lenet(init_lenet(0), jnp.zeros((2, 784))).shape
    (2, 10)

  Reference: LeCun et al., 1998.
  """
  n = len(params)
  h = x.reshape(x.shape[0], -1)
  for i in range(n):
    layer = params[f"dense{i}"]
    h = h @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      h = jax.nn.relu(h)
  return h


def init_cnn(seed: Any = 0, image_shape: tuple[int, int, int] = (28, 28, 1),
             channels: tuple[int, int] = (16, 32), num_classes: int = 10) -> dict[str, Any]:
  r"""A small CNN: conv3x3 -> ReLU -> maxpool2, twice (bias-free convs), then a dense head.

  Conv kernels are HWIO with :math:`U(-1/\sqrt{9 C_{in}}, 1/\sqrt{9 C_{in}})`
  entries. The convs have no bias, so a channel whose filter is zero outputs
  exactly zero and removing it changes nothing downstream.

  Args:
    seed: an int or a PRNG key.
    image_shape: ``(H, W, C)`` of one image; H and W divisible by 4.
    channels: ``(c1, c2)`` filters of the two convs.
    num_classes: outputs of the head.

  Returns:
    ``{"conv1": {"kernel"}, "conv2": {"kernel"}, "head": {"kernel", "bias"}}``.

  Example:
    >>> p = jopt.training.init_cnn(0)
    >>> p["conv2"]["kernel"].shape, p["head"]["kernel"].shape
    ((3, 3, 16, 32), (1568, 10))

  Reference: the conv -> pool stacks of LeCun et al., 1998; bias-free convs as in
  networks with batch norm (He et al., 2016).
  """
  h, w, c = image_shape
  if h % 4 or w % 4:
    raise ValueError(f"{_WHERE}image_shape={image_shape!r}: H and W must be divisible by 4"
                     " (two 2x2 poolings).")
  c1, c2 = channels
  k1, k2, k3 = jax.random.split(_key(seed), 3)

  def conv(k, cin, cout):
    bound = 1.0 / math.sqrt(9 * cin)
    return jax.random.uniform(k, (3, 3, cin, cout), jnp.float32, -bound, bound)

  return {"conv1": {"kernel": conv(k1, c, c1)}, "conv2": {"kernel": conv(k2, c1, c2)},
          "head": _dense(k3, (h // 4) * (w // 4) * c2, num_classes)}


def apply_cnn(params: dict[str, Any], x: jax.Array) -> jax.Array:
  r"""Logits of the CNN for NHWC images, or flattened square one-channel images.

  (A one-channel first layer is computed as nine shifted products, the same
  sums as ``lax.conv_general_dilated``, because XLA:CPU's convolution is slow for
  :math:`C_{in} = 1`.)

  .. math:: h = \mathrm{pool}(\mathrm{ReLU}(\mathrm{pool}(\mathrm{ReLU}(x * K_1)) * K_2)),
    \quad y = \mathrm{flatten}_{NHWC}(h) W + b

  Args:
    params: from :func:`init_cnn` (any channel counts, e.g. after removal).
    x: images, NHWC, or flattened square single-channel images.

  Returns:
    ``(batch, classes)`` logits.

  Example:
    >>> from jopt.training import apply_cnn, init_cnn
    >>> apply_cnn(init_cnn(0), jnp.zeros((2, 784))).shape
    (2, 10)

  Reference: LeCun et al., 1998.
  """
  if x.ndim == 2:
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
      raise ValueError(f"{_WHERE}apply_cnn: flattened inputs of {x.shape[1]} features are not"
                       " a square single-channel image; pass NHWC images.")
    x = x.reshape(x.shape[0], side, side, 1)
  h = _pool(jax.nn.relu(_conv3x3(x, params["conv1"]["kernel"])))
  h = _pool(jax.nn.relu(_conv3x3(h, params["conv2"]["kernel"])))
  h = h.reshape(h.shape[0], -1)
  return h @ params["head"]["kernel"] + params["head"]["bias"]


def _pool(h: jax.Array) -> jax.Array:
  return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _conv3x3(h: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3 'SAME' cross-correlation (NHWC x HWIO), as ``lax.conv_general_dilated`` computes it.

  With one input channel it is written as nine shifted broadcast products:
  XLA:CPU runs its convolution for ``C_in = 1`` several times slower than that
  (about 8 ms against 1 ms for 256 28x28 images and 16 filters on the benchmark
  machine), which would hide the gain of removing filters.
  """
  if h.shape[-1] != 1:
    return jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  height, width = h.shape[1], h.shape[2]
  hp = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = None
  for i in range(3):
    for j in range(3):
      term = hp[:, i:i + height, j:j + width, :] * kernel[i, j, 0]
      out = term if out is None else out + term
  return out


def conv_filter(params: dict[str, Any]) -> dict[str, Any]:
  r"""The ``filter=`` tree for ``jopt.prune`` that selects the CNN's conv kernels only.

  .. math:: f(p) = [\,p \text{ is } \texttt{conv*/kernel}\,]

  Args:
    params: from :func:`init_cnn`.

  Returns:
    A tree of bools with ``params``' structure: True at ``conv*/kernel``.

  Example:
    >>> from jopt.training import conv_filter, init_cnn
    >>> conv_filter(init_cnn(0))
    {'conv1': {'kernel': True}, 'conv2': {'kernel': True}, 'head': {'bias': False, 'kernel': False}}
    >>> tx = jopt.prune(jopt.adam(1e-3), 0.5, granularity="channel", filter=conv_filter)

  Reference: Li et al., ICLR 2017 (filters of conv layers are pruned, the
  classifier is not).
  """
  return {name: jax.tree.map(lambda _: name.startswith("conv"), layer)
          for name, layer in params.items()}


def cnn_unit_groups(params: dict[str, Any]) -> list[UnitGroup]:
  r"""The coupled axes of the CNN for :func:`jopt.prune.remove_units`.

  A filter of ``conv1`` (axis 3) is an input channel of ``conv2`` (axis 2); a
  filter of ``conv2`` owns :math:`H'W'` rows of the head kernel (NHWC flatten,
  channels fastest: ``order="units_last"``).

  Args:
    params: from :func:`init_cnn` (gives the feature-map size).

  Returns:
    ``[UnitGroup("conv1", ...), UnitGroup("conv2", ...)]``.

  Example:
    >>> from jopt.training import cnn_unit_groups, init_cnn
    >>> params = init_cnn(0)
    >>> small, kept = jopt.prune.remove_units(params, cnn_unit_groups(params))
    >>> small["conv2"]["kernel"].shape == params["conv2"]["kernel"].shape  # nothing was zero
    True

  Reference: Li et al., *Pruning Filters for Efficient ConvNets*, ICLR 2017, Sec. 3.2.
  """
  c2 = params["conv2"]["kernel"].shape[3]
  rows = params["head"]["kernel"].shape[0]
  if rows % c2:
    raise ValueError(f"{_WHERE}head kernel rows {rows} are not a multiple of conv2's {c2}"
                     " channels.")
  return [UnitGroup("conv1", source=("conv1/kernel", 3), coupled=[("conv2/kernel", 2)]),
          UnitGroup("conv2", source=("conv2/kernel", 3),
                    coupled=[Coupled("head/kernel", 0, repeat=rows // c2)])]


def _loss(apply_fn, params, x, y):
  logits = apply_fn(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_model(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
                tx: optax.GradientTransformation, data: Any, *, steps: int,
                batch_size: int = 128, seed: int = 0,
                return_state: bool = False) -> Any:
  r"""Train ``params`` with any optax transform on softmax cross-entropy; returns the params.

  Each step: :math:`g = \nabla_\theta \tfrac1B\sum_i \ell(f_\theta(x_i), y_i)`,
  ``(u, S) = tx.update(g, S, params)``, :math:`\theta \leftarrow \theta + u`
  (so ``jopt.prune`` gets the params it needs). Batches are
  ``data.train.batches(batch_size, seed)``; the step is jitted once.

  Args:
    apply_fn: ``(params, x) -> logits``.
    params: the initial parameters.
    tx: any optax transformation, e.g. ``jopt.prune(jopt.adam(1e-3), ...)``.
    data: a :class:`jopt.training.Digits` (uses ``data.train``).
    steps: number of updates, >= 1.
    batch_size: examples per step.
    seed: seed of the batch order.
    return_state: also return the final transform state.

  Returns:
    The trained params, or ``(params, state)`` with ``return_state=True``.

  Example:
    >>> from jopt.training import apply_lenet, init_lenet, load_mnist_subset, train_model
    >>> tx = jopt.prune(jopt.adam(1e-3), 0.5)                 # any transform, pruning too
    >>> params = train_model(apply_lenet, init_lenet(0), tx, load_mnist_subset(), steps=20)
    >>> print(round(jopt.training.weight_sparsity(params), 2))   # the kernels' zero share
    0.5

  Reference: the reference loop of :mod:`jopt.training.loop`, without its logging.
  """
  steps = check_positive_int("steps", steps, _WHERE + "train_model: ")

  @jax.jit
  def step(p, s, x, y):
    g = jax.grad(lambda q: _loss(apply_fn, q, x, y))(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = tx.init(params)
  batches = data.train.batches(batch_size, seed)
  for _ in range(steps):
    x, y = next(batches)
    params, state = step(params, state, x, y)
  return (params, state) if return_state else params


def accuracy_of(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, split: Any,
                batch_size: int = 1000) -> float:
  r"""Top-1 accuracy in percent on a split: :math:`100\cdot\frac1n\sum_i [\arg\max f(x_i) = y_i]`.

  Args:
    apply_fn: ``(params, x) -> logits``.
    params: the parameters.
    split: a :class:`jopt.training.Split`.
    batch_size: examples per forward pass.

  Returns:
    The accuracy in percent, a Python float.

  Example:
    >>> from jopt.training import accuracy_of, load_mnist_subset
    >>> zero = {"w": jnp.zeros((784, 10))}                     # every logit equal
    >>> accuracy_of(lambda p, x: x @ p["w"], zero, load_mnist_subset().test)  # argmax: class 0
    10.0

  Reference: the usual top-1 accuracy.
  """
  fn = jax.jit(apply_fn)
  correct = 0
  n = len(split)
  for start in range(0, n, batch_size):
    x = jnp.asarray(split.x[start:start + batch_size])
    pred = np.asarray(jnp.argmax(fn(params, x), axis=-1))
    correct += int((pred == split.y[start:start + batch_size]).sum())
  return 100.0 * correct / n


def measure_latency(fn: Callable[..., Any], *args: Any, repeats: int = 30,
                    warmup: int = 3) -> float:
  r"""The median wall time in seconds of ``jax.jit(fn)(*args)``, compiled and warmed first.

  .. math:: t = \operatorname{median}_{r=1..R}\ t_r, \quad t_r \text{ to }
    ``block_until_ready``

  Args:
    fn: the function (jitted here).
    *args: its arguments (fixed shapes).
    repeats: timed runs :math:`R`.
    warmup: untimed runs after compiling.

  Returns:
    Seconds, a Python float.

  Example:
    >>> from jopt.training import apply_lenet, init_lenet, measure_latency
    >>> seconds = measure_latency(apply_lenet, init_lenet(0), jnp.zeros((256, 784)), repeats=5)
    >>> 0.0 < seconds < 1.0
    True

  Reference: the median-of-repeats timing of ``timeit`` / pytest-benchmark.
  """
  repeats = check_positive_int("repeats", repeats, _WHERE + "measure_latency: ")
  jitted = jax.jit(fn)
  jax.block_until_ready(jitted(*args))
  for _ in range(warmup):
    jax.block_until_ready(jitted(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))
