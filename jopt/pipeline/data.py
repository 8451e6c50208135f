r"""The pipeline's data: train and test arrays (and an optional unlabeled transfer set), validated.

Batches are drawn from ``numpy.random.default_rng([seed, stage, stream])``
permutations (:func:`batch_indices`), so each stage's batch order is a pure
function of the seed and the stage's index: a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Data", "batch_indices"]


def _pair(name: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
  if hasattr(value, "x") and hasattr(value, "y"):
    x, y = value.x, value.y
  elif isinstance(value, (tuple, list)) and len(value) == 2:
    x, y = value
  else:
    raise TypeError(f"Data: {name} must be an (x, y) pair of arrays or a"
                    f" jopt.training.Split, got {type(value).__name__}.")
  return _inputs(name, x), _labels(name, y, len(np.asarray(x)))


def _inputs(name: str, x: Any) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim < 2 or x.shape[0] == 0:
    raise ValueError(f"Data: {name} inputs have shape {x.shape}; pass a non-empty batch of"
                     " examples, shape (n, features...).")
  if not np.issubdtype(x.dtype, np.floating):
    raise TypeError(f"Data: {name} inputs have dtype {x.dtype}; pass floating inputs"
                    " (e.g. images scaled to [0, 1]).")
  return x.astype(np.float32)


def _labels(name: str, y: Any, n: int) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"Data: {name} labels have shape {y.shape} and dtype {y.dtype}; pass"
                     " integer class indices of shape (n,).")
  if y.shape[0] != n:
    raise ValueError(f"Data: {name} has {n} inputs but {y.shape[0]} labels; pass the same"
                     " number of each.")
  if (y < 0).any():
    raise ValueError(f"Data: {name} labels contain negative values; pass class indices >= 0.")
  return y.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Data:
  r"""Train and test sets as NumPy arrays, and an optional unlabeled transfer set.

  Inputs are cast to float32 and labels to int32; every part must have the
  train inputs' per-example shape.

  Attributes:
    train: ``(x, y)`` or a :class:`jopt.training.Split`.
    test: ``(x, y)`` or a Split; every stage's accuracy and loss are on it.
    unlabeled: inputs ``x`` (an array, or a Split whose labels are ignored)
      for ``Distill(transfer="unlabeled")``, or None.

  Example:
    >>> from jopt import pipeline as pl
    >>> x, y = np.ones((10, 4)), np.arange(10) % 3           # float64 and int64 here
    >>> data = pl.Data(train=(x[:8], y[:8]), test=(x[8:], y[8:]))
    >>> data.train[0].dtype, data.train[1].dtype, data.test[0].shape
    (dtype('float32'), dtype('int32'), (2, 4))

    A :class:`jopt.training.Split` works too, e.g. ``d = jopt.training.load_mnist_subset()``
    then ``pl.Data(train=d.train, test=d.test)``.

  Reference: the train / test / transfer sets of Hinton et al., 2015, section 3.
  """

  train: Any
  test: Any
  unlabeled: Any = None

  def __post_init__(self):
    train = _pair("train", self.train)
    test = _pair("test", self.test)
    if test[0].shape[1:] != train[0].shape[1:]:
      raise ValueError(f"Data: test inputs have per-example shape {test[0].shape[1:]}, train"
                       f" inputs {train[0].shape[1:]}; pass the same shape.")
    object.__setattr__(self, "train", train)
    object.__setattr__(self, "test", test)
    if self.unlabeled is not None:
      u = self.unlabeled.x if hasattr(self.unlabeled, "x") else self.unlabeled
      u = _inputs("unlabeled", u)
      if u.shape[1:] != train[0].shape[1:]:
        raise ValueError(f"Data: unlabeled inputs have per-example shape {u.shape[1:]}, train"
                         f" inputs {train[0].shape[1:]}; pass the same shape.")
      object.__setattr__(self, "unlabeled", u)

  def describe(self) -> dict[str, Any]:
    """Shapes and a digest of every array (for the resume fingerprint)."""
    import hashlib  # pylint: disable=import-outside-toplevel
    parts = {"train_x": self.train[0], "train_y": self.train[1], "test_x": self.test[0],
             "test_y": self.test[1]}
    if self.unlabeled is not None:
      parts["unlabeled"] = self.unlabeled
    return {k: [list(v.shape), hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]]
            for k, v in parts.items()}


Data.__module__ = "jopt.pipeline"


def batch_indices(n: int, batch_size: int, steps: int, seed: int, stage: int,
                  stream: int = 0) -> np.ndarray:
  r"""The ``(steps, batch_size)`` example indices of one stage: fresh permutations per epoch.

  .. math:: \pi_e \sim \text{default\_rng}([s, i, k]),\quad
     \text{batch}_t = \pi_{e(t)}[\,jB : (j + 1)B\,]

  the last partial batch of each epoch dropped (every batch has ``B`` examples).

  Args:
    n: examples in the split.
    batch_size: :math:`B \le n`.
    steps: batches wanted.
    seed: the run's seed :math:`s`.
    stage: the stage's index :math:`i`.
    stream: :math:`k`, 0 for labeled batches, 1 for unlabeled ones.

  Returns:
    An int32 array of shape ``(steps, batch_size)``.

  Example:
    >>> from jopt.pipeline.data import batch_indices
    >>> batch_indices(10, 4, 3, seed=0, stage=1).shape
    (3, 4)

  Reference: ``jopt.training.Split.batches`` (the same drop-last epochs).
  """
  rng = np.random.default_rng([seed, stage, stream])
  per = n // batch_size
  out = []
  while len(out) < steps:
    order = rng.permutation(n)
    out.extend(order[j * batch_size:(j + 1) * batch_size] for j in range(per))
  return np.asarray(out[:steps], np.int32).reshape(steps, batch_size)
