"""The demo data set: scikit-learn's bundled 8x8 digits, no download needed.

1,797 grey-scale images of the digits 0-9, 64 pixels each with values 0-16.
:func:`load_digits` scales them to [0, 1] and splits them deterministically
into train and test sets; :meth:`Split.batches` yields shuffled mini-batches of
a fixed shape (so a jitted step compiles once) as ``jnp`` arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import jax.numpy as jnp
import numpy as np

__all__ = ["Split", "Digits", "load_digits", "NUM_CLASSES", "NUM_FEATURES"]

NUM_CLASSES = 10
NUM_FEATURES = 64


@dataclasses.dataclass(frozen=True)
class Split:
  """One part of a data set: ``x`` float32 ``(n, 64)`` in [0, 1], ``y`` int32 ``(n,)``."""

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
      >>> x, y = next(load_digits().train.batches(128))
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


@dataclasses.dataclass(frozen=True)
class Digits:
  """The digits data set split into ``train`` and ``test``."""

  train: Split
  test: Split
  num_classes: int = NUM_CLASSES
  num_features: int = NUM_FEATURES


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
  from sklearn import datasets  # pylint: disable=import-outside-toplevel  (slow import)

  bunch = datasets.load_digits()
  x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
  y = np.asarray(bunch.target, dtype=np.int32)
  x.setflags(write=False)
  y.setflags(write=False)
  return x, y


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
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
  x, y = _raw()
  rng = np.random.default_rng(seed)
  test_idx = []
  for c in range(NUM_CLASSES):
    members = np.flatnonzero(y == c)
    k = int(round(test_fraction * members.size))
    test_idx.append(rng.permutation(members)[:k])
  test_mask = np.zeros(y.shape[0], dtype=bool)
  test_mask[np.concatenate(test_idx)] = True
  return Digits(
      train=Split(x[~test_mask], y[~test_mask]),
      test=Split(x[test_mask], y[test_mask]),
  )
