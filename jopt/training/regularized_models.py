"""Over-parameterized models with optional dropout and batch norm, in plain JAX.

Two small classifiers for the regularization lab (``benchmarks/regularization.py``
and ``notebooks/regularization.ipynb``), built from :mod:`jopt.nn`'s pure
functions so that every regularizer shows up in a model that can overfit:

* :class:`RegMLP`: wide ReLU layers with optional dropout and batch norm, and an
  ``order`` switch for the dropout / batch-norm "disharmony" (Li et al., 2019);
* :class:`RegCNN`: 3x3 convolutions (NHWC, ``jax.lax.conv_general_dilated``) with
  optional batch norm and spatial dropout, stride-2 downsampling, and a global-average or
  dense head.

A model is a frozen (hashable) dataclass of settings with ``init`` and ``apply``.
``init`` returns ``(params, stats)``: ``params`` a dict of arrays (weights with
``ndim >= 2``, so the default masks of the weight penalties skip biases and
batch-norm scales), ``stats`` a tuple of :class:`jopt.nn.BatchNormStats`, one per
batch-norm layer (empty without batch norm), kept apart from the gradients.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jopt.nn import BatchNormStats, batch_norm, batch_norm_stats, dropout, spatial_dropout
from jopt._core.validate import check_choice, check_range

__all__ = ["RegMLP", "RegCNN", "ORDERS", "weight_sparsity"]

ORDERS = ("dropout_bn", "bn_dropout")

Params = dict[str, Any]
Stats = tuple[BatchNormStats, ...]


def _he(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype: Any) -> jax.Array:
  return jax.random.normal(key, shape, dtype) * jnp.sqrt(jnp.asarray(2.0 / fan_in, dtype))


def _bn_init(width: int, dtype: Any) -> tuple[dict[str, jax.Array], BatchNormStats]:
  return ({"scale": jnp.ones((width,), dtype), "bias": jnp.zeros((width,), dtype)},
          batch_norm_stats(width, dtype))


def _keys(key: jax.Array | None, n: int, train: bool, what: str) -> list[Any]:
  if not train or n == 0:
    return [None] * n
  if key is None:
    raise ValueError(f"{what}.apply: key is None while training with dropout; pass"
                     " key=jax.random.key(step) (or train=False for evaluation).")
  return list(jax.random.split(key, n))


def _check_rate(where: str, name: str, rate: float) -> None:
  check_range(name, rate, 0.0, 1.0, high_open=True, where=f"{where}: ")


@dataclasses.dataclass(frozen=True)
class RegMLP:
  r"""A wide ReLU MLP with optional dropout and batch norm.

  Each hidden block is :math:`h \mapsto \mathrm{relu}(\mathrm{BN}(h W + b))`
  (without batch norm: :math:`\mathrm{relu}(hW + b)`); the head is linear.
  Where dropout sits depends on ``order`` (it only matters with batch norm):

  * ``"dropout_bn"``: dropout after every hidden block, so every later batch
    norm sees dropped-out inputs (dropout *before* BN: the variance shift of
    Li et al. appears at the BN layers after the first);
  * ``"bn_dropout"``: one dropout after the last hidden block, before the head,
    so no batch norm sees dropout (Li et al.'s fix: dropout after all BN layers).

  Without batch norm both orders put dropout after every hidden block.

  Attributes:
    hidden: widths of the hidden layers, e.g. ``(512, 512)``.
    dropout: drop probability in [0, 1); 0 turns dropout off.
    batch_norm: add batch norm (scale and bias in ``params["bn"]``) after each
      hidden dense layer, before the ReLU.
    order: ``"dropout_bn"`` or ``"bn_dropout"``, see above.
    momentum: the batch-norm running-statistics momentum (torch convention:
      weight of the new batch).

  Example:
    >>> model = jopt.training.RegMLP(hidden=(512, 512), dropout=0.3, batch_norm=True)
    >>> params, stats = model.init(jax.random.key(0), 64, 10)
    >>> x = jax.random.uniform(jax.random.key(2), (8, 64))
    >>> logits, stats = model.apply(params, stats, x, train=True, key=jax.random.key(1))
    >>> logits.shape
    (8, 10)

  Reference: Srivastava et al., *Dropout*, JMLR 2014; Ioffe & Szegedy, *Batch
  Normalization*, ICML 2015; Li et al., *Understanding the Disharmony between
  Dropout and Batch Normalization by Variance Shift*, CVPR 2019.
  """

  hidden: tuple[int, ...] = (512, 512)
  dropout: float = 0.0
  batch_norm: bool = False
  order: str = "dropout_bn"
  momentum: float = 0.1

  def __post_init__(self):
    if not isinstance(self.hidden, (tuple, list)):
      raise TypeError(f"RegMLP: hidden={self.hidden!r} must be a tuple of widths, e.g. (512, 512).")
    object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
    if not self.hidden or min(self.hidden) < 1:
      raise ValueError(f"RegMLP: hidden={self.hidden} must hold at least one positive width.")
    _check_rate("RegMLP", "dropout", self.dropout)
    check_range("momentum", self.momentum, 0.0, 1.0, low_open=True, where="RegMLP: ")
    check_choice("order", self.order, ORDERS, where="RegMLP: ")
    if not isinstance(self.batch_norm, bool):
      raise TypeError(f"RegMLP: batch_norm={self.batch_norm!r} must be True or False.")

  def init(self, key: jax.Array, num_features: int, num_classes: int,
           dtype: Any = jnp.float32) -> tuple[Params, Stats]:
    """He-normal weights, zero biases, unit BN scales: ``(params, stats)``.

    Args:
      key: a PRNG key.
      num_features: input width (64 for the digits, 784 for MNIST).
      num_classes: output width.
      dtype: the parameters' and statistics' floating dtype.

    Returns:
      ``params`` = ``{"dense": [{"w", "b"}, ...], "head": {"w", "b"}}`` (plus
      ``"bn": [{"scale", "bias"}, ...]`` with batch norm) and ``stats``, a tuple
      of :class:`jopt.nn.BatchNormStats` (empty without batch norm).
    """
    sizes = (int(num_features), *self.hidden, int(num_classes))
    keys = jax.random.split(key, len(sizes) - 1)
    dense = [{"w": _he(k, (a, b), a, dtype), "b": jnp.zeros((b,), dtype)}
             for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    params: Params = {"dense": dense[:-1], "head": dense[-1]}
    stats: list[BatchNormStats] = []
    if self.batch_norm:
      bn = [_bn_init(w, dtype) for w in self.hidden]
      params["bn"] = [p for p, _ in bn]
      stats = [s for _, s in bn]
    return params, tuple(stats)

  def _drop_sites(self) -> list[bool]:
    """For each hidden block, whether a dropout follows it."""
    n = len(self.hidden)
    if self.dropout == 0.0:
      return [False] * n
    if self.batch_norm and self.order == "bn_dropout":
      return [False] * (n - 1) + [True]
    return [True] * n

  def forward(self, params: Params, stats: Stats, x: jax.Array, *, train: bool,
              key: jax.Array | None = None) -> tuple[jax.Array, Stats, list[jax.Array]]:
    """``(logits, new_stats, bn_inputs)``: :meth:`apply` plus each BN layer's input.

    ``bn_inputs`` lists, per batch-norm layer, the array it normalized (what
    :func:`jopt.training.variance_shift` compares with the running variance);
    empty without batch norm. At eval ``new_stats`` is ``stats`` itself.
    """
    h = x.reshape(x.shape[0], -1).astype(params["head"]["w"].dtype)
    sites = self._drop_sites()
    keys = _keys(key, sum(sites), train, "RegMLP")
    new_stats, bn_inputs = [], []
    for i, layer in enumerate(params["dense"]):
      h = h @ layer["w"] + layer["b"]
      if self.batch_norm:
        bn_inputs.append(h)
        h, s = batch_norm(h, params["bn"][i]["scale"], params["bn"][i]["bias"], stats[i],
                          train=train, momentum=self.momentum)
        new_stats.append(s)
      h = jax.nn.relu(h)
      if sites[i]:
        h = dropout(h, self.dropout, key=keys.pop(0), train=train)
    head = params["head"]
    return h @ head["w"] + head["b"], tuple(new_stats) if train else stats, bn_inputs

  def apply(self, params: Params, stats: Stats, x: jax.Array, *, train: bool,
            key: jax.Array | None = None) -> tuple[jax.Array, Stats]:
    """Logits ``(n, classes)`` and the updated BN statistics (unchanged at eval).

    Args:
      params, stats: from :meth:`init`.
      x: ``(n, features)``, or images ``(n, H, W, C)`` flattened row-major.
      train: True for dropout and batch statistics; False for evaluation
        (dropout is the identity, batch norm uses the running statistics).
      key: a PRNG key, needed when training with dropout.
    """
    logits, new_stats, _ = self.forward(params, stats, x, train=train, key=key)
    return logits, new_stats


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
  # 3x3, stride 2, SAME padding: each block halves the image (28 -> 14 -> 7, 8 -> 4 -> 2).
  return jax.lax.conv_general_dilated(x, w, window_strides=(2, 2), padding="SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@dataclasses.dataclass(frozen=True)
class RegCNN:
  r"""A small NHWC CNN: strided 3x3 conv blocks with optional BN and spatial dropout, a head.

  Each block is :math:`\mathrm{sdrop}(\mathrm{relu}(\mathrm{BN}(W *_2 h + b)))`, a
  3x3 convolution with stride 2 and SAME padding (so it halves the image, rounding
  up: 28 -> 14 -> 7, 8 -> 4 -> 2; strided convolutions rather than pooling, as in
  Springenberg et al.'s all-convolutional net, keep the lab fast on a CPU); the head is
  ``"gap"`` (global average pooling, then one dense layer) or ``"dense"``
  (flatten, then one dense layer), with optional dropout before it.

  Attributes:
    channels: output channels of the conv layers, e.g. ``(32, 64)``.
    batch_norm: batch norm over (N, H, W) per channel after each conv.
    spatial_dropout: drop probability of whole channels after each block, in [0, 1).
    dropout: drop probability of the head's input features, in [0, 1).
    head: ``"gap"`` or ``"dense"``.
    momentum: the batch-norm running-statistics momentum.

  Example:
    >>> model = jopt.training.RegCNN(channels=(32, 64), batch_norm=True, spatial_dropout=0.1)
    >>> params, stats = model.init(jax.random.key(0), (28, 28, 1), 10)
    >>> images = jnp.zeros((2, 28, 28, 1))
    >>> logits, new_stats = model.apply(params, stats, images, train=False)
    >>> logits.shape, jax.tree.all(jax.tree.map(jnp.array_equal, new_stats, stats))
    ((2, 10), True)

  Reference: Tompson et al., *Efficient Object Localization Using Convolutional
  Networks*, CVPR 2015 (spatial dropout); Lin et al., *Network In Network*,
  ICLR 2014 (global average pooling); Springenberg et al., *Striving for
  Simplicity: The All Convolutional Net*, ICLR 2015 workshop (strided convolutions).
  """

  channels: tuple[int, ...] = (32, 64)
  batch_norm: bool = False
  spatial_dropout: float = 0.0
  dropout: float = 0.0
  head: str = "gap"
  momentum: float = 0.1

  def __post_init__(self):
    if not isinstance(self.channels, (tuple, list)):
      raise TypeError(f"RegCNN: channels={self.channels!r} must be a tuple of channel counts,"
                      " e.g. (32, 64).")
    object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
    if not self.channels or min(self.channels) < 1:
      raise ValueError(f"RegCNN: channels={self.channels} must hold at least one positive count.")
    _check_rate("RegCNN", "spatial_dropout", self.spatial_dropout)
    _check_rate("RegCNN", "dropout", self.dropout)
    check_range("momentum", self.momentum, 0.0, 1.0, low_open=True, where="RegCNN: ")
    check_choice("head", self.head, ("gap", "dense"), where="RegCNN: ")
    if not isinstance(self.batch_norm, bool):
      raise TypeError(f"RegCNN: batch_norm={self.batch_norm!r} must be True or False.")

  def init(self, key: jax.Array, image_shape: Sequence[int], num_classes: int,
           dtype: Any = jnp.float32) -> tuple[Params, Stats]:
    """He-normal HWIO kernels, zero biases, unit BN scales: ``(params, stats)``.

    Args:
      key: a PRNG key.
      image_shape: ``(H, W, C)`` of one input image.
      num_classes: output width.
      dtype: the parameters' and statistics' floating dtype.

    Returns:
      ``params`` = ``{"conv": [{"w": (3, 3, C_in, C_out), "b"}, ...], "head": {"w", "b"}}``
      (plus ``"bn"`` with batch norm) and ``stats``, a tuple of
      :class:`jopt.nn.BatchNormStats` (empty without batch norm).
    """
    if len(image_shape) != 3:
      raise ValueError(f"RegCNN.init: image_shape={tuple(image_shape)} must be (H, W, C).")
    height, width, c_in = (int(s) for s in image_shape)
    keys = jax.random.split(key, len(self.channels) + 1)
    convs = []
    for k, c_out in zip(keys, self.channels):
      convs.append({"w": _he(k, (3, 3, c_in, c_out), 9 * c_in, dtype),
                    "b": jnp.zeros((c_out,), dtype)})
      c_in = c_out
      height, width = -(-height // 2), -(-width // 2)
    fan_in = c_in if self.head == "gap" else height * width * c_in
    params: Params = {"conv": convs,
                      "head": {"w": _he(keys[-1], (fan_in, int(num_classes)), fan_in, dtype),
                               "b": jnp.zeros((int(num_classes),), dtype)}}
    stats: list[BatchNormStats] = []
    if self.batch_norm:
      bn = [_bn_init(c, dtype) for c in self.channels]
      params["bn"] = [p for p, _ in bn]
      stats = [s for _, s in bn]
    return params, tuple(stats)

  def forward(self, params: Params, stats: Stats, x: jax.Array, *, train: bool,
              key: jax.Array | None = None) -> tuple[jax.Array, Stats, list[jax.Array]]:
    """``(logits, new_stats, bn_inputs)``: :meth:`apply` plus each BN layer's input.

    ``bn_inputs`` lists, per batch-norm layer, the array it normalized (what
    :func:`jopt.training.variance_shift` compares with the running variance);
    empty without batch norm. At eval ``new_stats`` is ``stats`` itself.
    """
    if x.ndim != 4:
      raise ValueError(f"RegCNN.apply: x has shape {x.shape}; pass NHWC images"
                       " (reshape flat inputs with x.reshape(-1, *data.image_shape)).")
    h = x.astype(params["head"]["w"].dtype)
    n_drop = len(self.channels) * (self.spatial_dropout > 0) + (self.dropout > 0)
    keys = _keys(key, n_drop, train, "RegCNN")
    new_stats, bn_inputs = [], []
    for i, layer in enumerate(params["conv"]):
      h = _conv(h, layer["w"]) + layer["b"]
      if self.batch_norm:
        bn_inputs.append(h)
        h, s = batch_norm(h, params["bn"][i]["scale"], params["bn"][i]["bias"], stats[i],
                          train=train, momentum=self.momentum)
        new_stats.append(s)
      h = jax.nn.relu(h)
      if self.spatial_dropout > 0:
        h = spatial_dropout(h, self.spatial_dropout, key=keys.pop(0), train=train)
    h = h.mean(axis=(1, 2)) if self.head == "gap" else h.reshape(h.shape[0], -1)
    if self.dropout > 0:
      h = dropout(h, self.dropout, key=keys.pop(0), train=train)
    head = params["head"]
    return h @ head["w"] + head["b"], tuple(new_stats) if train else stats, bn_inputs

  def apply(self, params: Params, stats: Stats, x: jax.Array, *, train: bool,
            key: jax.Array | None = None) -> tuple[jax.Array, Stats]:
    """Logits ``(n, classes)`` and the updated BN statistics (unchanged at eval).

    Args:
      params, stats: from :meth:`init`.
      x: NHWC images ``(n, H, W, C)``.
      train: True for dropout and batch statistics; False for evaluation.
      key: a PRNG key, needed when training with dropout.
    """
    logits, new_stats, _ = self.forward(params, stats, x, train=train, key=key)
    return logits, new_stats


def weight_sparsity(params: Params) -> float:
  r"""Share of exactly-zero entries among the weights (leaves with ``ndim >= 2``).

  .. math:: s = \frac{\#\{w_{ij} = 0\}}{\#\{w_{ij}\}}

  Args:
    params: a parameter tree.

  Returns:
    A Python float in [0, 1] (0 when the tree holds no weight).

  Example:
    >>> jopt.training.weight_sparsity({"w": jnp.array([[0.0, 1.0]]), "b": jnp.zeros(2)})
    0.5

  Reference: the default mask of :func:`jopt.proximal_l1` (weights, not biases).
  """
  leaves = [x for x in jax.tree.leaves(params) if x.ndim >= 2]
  total = sum(x.size for x in leaves)
  if total == 0:
    return 0.0
  zeros = sum(int(jnp.sum(x == 0)) for x in leaves)
  return zeros / total
