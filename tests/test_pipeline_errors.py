"""Bad input to the pipeline: a clear error naming the argument, raised before any training starts."""

import importlib

import numpy as np
import pytest

from jopt import pipeline as pl
from tests.test_pipeline_orders import OPT, tiny_data, tiny_model

run_module = importlib.import_module("jopt.pipeline.run")


@pytest.fixture
def no_training(monkeypatch):
  """Fail the test if a stage or an evaluation starts."""
  def boom(*args, **kwargs):
    raise AssertionError("training or evaluation started before the input was checked")
  monkeypatch.setattr(run_module, "execute", boom)
  monkeypatch.setattr(run_module, "evaluate", boom)


@pytest.mark.parametrize("make, match", [
    (lambda: pl.Prune(sparsity=1.0, steps=10), "Prune: sparsity=1.0 is outside"),
    (lambda: pl.Prune(sparsity=-0.1, steps=10), "sparsity=-0.1"),
    (lambda: pl.Prune(sparsity=0.5, steps=0), "steps=0"),
    (lambda: pl.Prune(sparsity=0.5, steps=5, ramp=0.0), "ramp"),
    (lambda: pl.Prune(sparsity=0.5, steps=5, criterion="biggest"), "Prune: criterion"),
    (lambda: pl.Prune(sparsity=0.5, steps=5, schedule="cubic"), "schedule"),
    (lambda: pl.Prune(steps=5), "Prune: sparsity is required"),
    (lambda: pl.Prune(n_m=(2, 4), steps=5, schedule="polynomial"), "N:M"),
    (lambda: pl.Prune(sparsity=0.5, n_m=(2, 4), steps=5), "n_m"),
    (lambda: pl.Train(steps=0), "Train: steps=0"),
    (lambda: pl.Train(steps=2.5), "steps=2.5"),
    (lambda: pl.Quantize(bits=9), "Quantize: bits=9"),
    (lambda: pl.Quantize(bits=1), "bits=1"),
    (lambda: pl.Quantize(bits=3, method="nf4"), "nf4"),
    (lambda: pl.Quantize(method="pq"), "method"),
    (lambda: pl.Quantize(bits=4, method="kmeans", scheme="asymmetric"), "scheme"),
    (lambda: pl.Quantize(bits=4, granularity="group"), "group_size"),
    (lambda: pl.Quantize(bits=4, qat_steps=-1), "qat_steps"),
    (lambda: pl.Distill(temperature=0.0), "Distill: temperature=0.0"),
    (lambda: pl.Distill(temperature=-2.0), "temperature"),
    (lambda: pl.Distill(alpha=1.5), "alpha=1.5"),
    (lambda: pl.Distill(alpha=-0.1), "alpha"),
    (lambda: pl.Distill(transfer="augmented"), "transfer"),
    (lambda: pl.Distill(student="small"), "student"),
    (lambda: pl.Train(steps=1, optimizer="adam"), "optimizer"),
])
def test_stage_hyperparameters_are_checked_at_construction(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


@pytest.mark.parametrize("make, match", [
    (lambda: pl.Data(train=(np.zeros((10, 16), np.float32), np.zeros(9, np.int32)),
                     test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32))),
     "train has 10 inputs but 9 labels"),
    (lambda: pl.Data(train=(np.zeros((10, 16), np.float32), np.zeros(10, np.int32)),
                     test=(np.zeros((4, 15), np.float32), np.zeros(4, np.int32))),
     "test inputs have per-example shape"),
    (lambda: pl.Data(train=(np.zeros((10, 16), np.float32), np.zeros(10, np.int32)),
                     test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32)),
                     unlabeled=np.zeros((5, 8), np.float32)),
     "unlabeled inputs have per-example shape"),
    (lambda: pl.Data(train=(np.zeros((10, 16), np.float32), np.zeros(10, np.float32)),
                     test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32))),
     "train labels"),
    (lambda: pl.Data(train=(np.zeros((10, 16), np.int32), np.zeros(10, np.int32)),
                     test=(np.zeros((4, 16), np.float32), np.zeros(4, np.int32))),
     "train inputs have dtype int32"),
    (lambda: pl.Data(train=np.zeros((10, 16)), test=None), "train must be an"),
    (lambda: pl.Model(apply=None, params={"w": np.zeros(2)}), "apply"),
])
def test_data_and_model_are_validated(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


def test_run_checks_everything_before_training(tmp_path, no_training):
  data, model = tiny_data(), tiny_model()
  kw = dict(optimizer=OPT, batch_size=32, progress=False)
  with pytest.raises(ValueError, match="stages is empty"):
    pl.run(model, [], data, **kw)
  with pytest.raises(TypeError, match=r"stages\[1\]="):
    pl.run(model, [pl.Train(steps=1), "prune"], data, **kw)
  with pytest.raises(TypeError, match="stages must be a list"):
    pl.run(model, pl.Train(steps=1), data, **kw)
  with pytest.raises(TypeError, match="model="):
    pl.run(lambda p, x: x, [pl.Train(steps=1)], data, **kw)
  with pytest.raises(TypeError, match="data="):
    pl.run(model, [pl.Train(steps=1)], (data.train, data.test), **kw)
  with pytest.raises(ValueError, match="batch_size=1000"):
    pl.run(model, [pl.Train(steps=1)], data, **dict(kw, batch_size=1000))
  with pytest.raises(TypeError, match="optimizer="):
    pl.run(model, [pl.Train(steps=1)], data, **dict(kw, optimizer=3))
  # a stage that needs data it was not given
  with pytest.raises(ValueError, match=r"stages\[1\].*needs data.unlabeled"):
    pl.run(model, [pl.Train(steps=1), pl.Distill(steps=1, transfer="unlabeled")], data, **kw)
  # a student whose output shape differs from the teacher's
  student = tiny_model(1, sizes=(16, 8, 3))
  with pytest.raises(ValueError, match="student's output shape .* differs from the teacher's"):
    pl.run(model, [pl.Distill(steps=1, student=student)], data, **kw)
  # a model whose outputs cannot hold the labels, or that does not take the data
  with pytest.raises(ValueError, match="label 3, but the model has 3 outputs"):
    pl.run(tiny_model(sizes=(16, 8, 3)), [pl.Train(steps=1)], data, **kw)
  with pytest.raises(ValueError, match="model.apply fails on a test batch"):
    pl.run(tiny_model(sizes=(12, 8, 4)), [pl.Train(steps=1)], data, **kw)
  # stage settings that do not fit the parameters' shapes
  with pytest.raises(ValueError, match=r"stages\[0\].*group_size"):
    pl.run(model, [pl.Quantize(bits=4, granularity="group", group_size=3)], data, **kw)
  with pytest.raises(ValueError, match=r"stages\[0\].*"):
    pl.run(model, [pl.Prune(n_m=(3, 5), steps=1)], data, **kw)
  # an output folder that cannot be written (a path below a regular file)
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  with pytest.raises(ValueError, match="out_dir=.* cannot be written"):
    pl.run(model, [pl.Train(steps=1)], data, out_dir=str(blocker / "out"), **kw)
