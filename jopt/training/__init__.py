"""A small reference train step and loop that the demo and the notebooks share.

Digits data (bundled with scikit-learn), a plain-JAX MLP, and a loop that runs
any optax-compatible transform:

  >>> from jopt.training import train
  >>> result = train(jopt.adam(3e-3), steps=300)
  >>> result.test_accuracy
"""

from jopt.training.data import (
    Digits as Digits,
    Split as Split,
    load_digits as load_digits,
)
from jopt.training.model import (
    init_mlp as init_mlp,
    apply_mlp as apply_mlp,
    cross_entropy as cross_entropy,
    loss_fn as loss_fn,
    accuracy as accuracy,
)
from jopt.training.loop import (
    TrainResult as TrainResult,
    TrainingDiverged as TrainingDiverged,
    TrainingInterrupted as TrainingInterrupted,
    make_train_step as make_train_step,
    evaluate as evaluate,
    train as train,
)

__all__ = [
    "Digits",
    "Split",
    "load_digits",
    "init_mlp",
    "apply_mlp",
    "cross_entropy",
    "loss_fn",
    "accuracy",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "make_train_step",
    "evaluate",
    "train",
]
