"""Pipeline semantics: masks survive every later stage, zeros stay zero through k-means QAT and
distillation, a later Prune never revives a weight, a smaller student, exact resume, report files.

Reference: the arrays themselves (masks, np.count_nonzero) and the independent
recomputation of tests/test_pipeline_orders.py (check_row).
"""

import json

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jopt import pipeline as pl
from jopt.pipeline import execute as execute_module
from tests.test_pipeline_orders import OPT, capture, check_row, tiny_data, tiny_model
from tests.test_pipeline_orders import _fast_compiles  # noqa: F401  (autouse fixture)


def _kernels(tree):
  return [np.asarray(v) for v in jax.tree.leaves(tree) if np.ndim(v) == 2]


def test_masks_survive_zeros_stay_zero_and_later_prune_never_revives(monkeypatch):
  data = tiny_data()
  seen = capture(monkeypatch)
  stages = [pl.Prune(sparsity=0.75, steps=8, update_every=2),      # gradual, 3 mask updates
            pl.Quantize(bits=3, method="kmeans", qat_steps=3),
            pl.Distill(steps=3, temperature=3.0, alpha=0.8),
            pl.Prune(sparsity=0.3, steps=3, schedule="one_shot")]   # a lower target
  report = pl.run(tiny_model(), stages, data, optimizer=OPT, batch_size=32, progress=False,
                  latency_repeats=1)
  for row, cm in zip(report.stages, seen):
    check_row(row, cm, data)
  first = _kernels(seen[1].masks)
  for m, k in zip(first, _kernels(seen[1].params)):   # exact Zhu & Gupta final target
    assert (~m).sum() == int(np.floor(0.75 * m.size + 0.5))
    assert not k[~m].any()
  for cm in seen[2:]:
    for m0, m, k, s in zip(first, _kernels(cm.masks), _kernels(cm.params),
                           _kernels(cm.stored_params())):
      assert not (m & ~m0).any(), "a later stage revived a pruned weight"
      assert not k[~m0].any() and not s[~m0].any(), "a pruned weight is not exactly 0.0"
  # the lower-target prune changed nothing (the zeros rank lowest)
  for m0, m in zip(first, _kernels(seen[4].masks)):
    np.testing.assert_array_equal(m, m0)
  # k-means with keep_zeros: 3-bit codes, an 8-entry float32 codebook per kernel
  for layer in report.stages[-1].layers:
    if len(layer.shape) == 2:
      assert layer.bits == 3 and layer.format.endswith("+3bit")


def test_distill_into_a_smaller_student_changes_the_parameter_count(monkeypatch):
  data = tiny_data()
  teacher = tiny_model(0)
  before = jax.tree.map(np.array, teacher.params)
  student = tiny_model(1, sizes=(16, 4, 4))
  seen = capture(monkeypatch)
  report = pl.run(teacher, [pl.Prune(0.5, steps=2), pl.Quantize(bits=4),
                            pl.Distill(steps=4, student=student, temperature=2.0)],
                  data, optimizer=OPT, batch_size=32, progress=False, latency_repeats=1)
  for row, cm in zip(report.stages, seen):
    check_row(row, cm, data)
  assert report.stages[0].params == 16 * 8 + 8 + 8 * 4 + 4
  assert report.stages[-1].params == 16 * 4 + 4 + 4 * 4 + 4
  assert seen[-1].masks is None and seen[-1].quant == pl.QuantSpec(4)
  assert seen[-1].apply is student.apply
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, teacher.params))


# the leading Train makes the Distill's "dense" teacher a checkpointed carry, restored on resume
STAGES = [pl.Train(steps=3), pl.Prune(sparsity=0.5, steps=4),
          pl.Quantize(bits=4, method="kmeans"),
          pl.Distill(steps=3, transfer="unlabeled", alpha=0.5)]


def test_the_dense_teacher_is_the_model_after_the_leading_train_stages(monkeypatch):
  """teacher="dense" (default) == an explicit Model of the params after the Train stage; "start"
  (the untrained given model) gives different params, so the test can fail."""
  data = tiny_data()
  kw = dict(optimizer=OPT, batch_size=32, progress=False, latency_repeats=1)
  dense = pl.run(tiny_model(), [pl.Train(steps=5)], data, **kw).model
  teachers = {}
  original = execute_module.Teacher

  def spy(apply, params, *rest):
    teachers["params"] = params
    return original(apply, params, *rest)

  monkeypatch.setattr(execute_module, "Teacher", spy)
  tail = [pl.Prune(0.5, steps=3)]
  default = pl.run(tiny_model(), [pl.Train(steps=5)] + tail + [pl.Distill(steps=3)], data, **kw)
  jax.tree.map(np.testing.assert_array_equal, teachers["params"], dense.params)
  explicit = pl.run(tiny_model(), [pl.Train(steps=5)] + tail + [
      pl.Distill(steps=3, teacher=pl.Model(apply=dense.apply, params=dense.params))], data, **kw)
  start = pl.run(tiny_model(), [pl.Train(steps=5)] + tail + [pl.Distill(steps=3, teacher="start")],
                 data, **kw)
  jax.tree.map(np.testing.assert_array_equal, teachers["params"], tiny_model().params)
  jax.tree.map(np.testing.assert_array_equal, default.model.params, explicit.model.params)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(default.model.params),
                                                      jax.tree.leaves(start.model.params)))
  with pytest.raises(ValueError, match="teacher"):
    pl.Distill(steps=3, teacher="best")


def _fields(report):
  out = []
  for s in report.stages:
    d = s.to_dict()
    d.pop("seconds")
    d.pop("latency_ms")
    out.append(d)
  return out


def test_resume_after_an_interruption_equals_the_uninterrupted_run(tmp_path, monkeypatch):
  data = tiny_data(unlabeled=96)
  kw = dict(optimizer=OPT, batch_size=32, progress=False, latency_repeats=1)
  full = pl.run(tiny_model(), STAGES, data, out_dir=str(tmp_path / "a"), **kw)

  calls = []
  original = execute_module.execute

  def interrupted(stage, index, model, ctx):
    calls.append(index)
    if index == 3:
      raise KeyboardInterrupt
    return original(stage, index, model, ctx)

  run_module = __import__("importlib").import_module("jopt.pipeline.run")
  monkeypatch.setattr(run_module, "execute", interrupted)
  with pytest.raises(KeyboardInterrupt):
    pl.run(tiny_model(), STAGES, data, out_dir=str(tmp_path / "b"), **kw)
  assert calls == [1, 2, 3]
  progress = json.loads((tmp_path / "b" / "checkpoints" / "progress.json").read_text())
  assert [e["index"] for e in progress["finished"]] == [1, 2]

  calls.clear()
  monkeypatch.setattr(run_module, "execute",
                      lambda *a: (calls.append(a[1]), original(*a))[1])
  resumed = pl.run(tiny_model(), STAGES, data, out_dir=str(tmp_path / "b"), **kw)
  assert calls == [3, 4], "finished stages ran again"
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               full.model.params, resumed.model.params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               full.model.masks, resumed.model.masks)
  assert _fields(full) == _fields(resumed)

  # a finished run resumes to the same report without training
  calls.clear()
  again = pl.run(tiny_model(), STAGES, data, out_dir=str(tmp_path / "b"), **kw)
  assert calls == [] and _fields(again) == _fields(full)
  with pytest.raises(ValueError, match="seed.*resume=False"):
    pl.run(tiny_model(), STAGES, data, out_dir=str(tmp_path / "b"), **dict(kw, seed=1))
  with pytest.raises(ValueError, match="stage list"):
    pl.run(tiny_model(), STAGES[:3], data, out_dir=str(tmp_path / "b"), **kw)
  # resume=False starts over in the same folder
  calls.clear()
  pl.run(tiny_model(), STAGES[:1], data, out_dir=str(tmp_path / "b"), resume=False, **kw)
  assert calls == [1]


def test_report_round_trips_json_and_writes_markdown_and_png(tmp_path):
  data = tiny_data()
  stages = [pl.Prune(0.5, steps=2, name="prune-50"), pl.Quantize(bits=5, method="kmeans"),
            pl.Train(steps=2, name="fine-tune")]
  report = pl.run(tiny_model(), stages, data, optimizer=OPT, batch_size=32, progress=False,
                  latency_repeats=1)
  paths = report.save(str(tmp_path))
  back = pl.Report.from_json((tmp_path / "report.json").read_text())
  assert back == report and back.model is None
  assert back.stages[-1].accuracy == report.stages[-1].accuracy
  md = (tmp_path / "report.md").read_text()
  assert md == report.to_markdown()
  for s in report.stages:
    assert f"| {s.index} | {s.name} | {s.kind} | {s.accuracy:.2f} |" in md
    assert f"### {s.index}. {s.name} ({s.kind})" in md
  png = (tmp_path / "report.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
  assert set(paths) == {"json", "md", "png"}


def test_flax_linen_and_nnx_models_run(monkeypatch):
  data = tiny_data()

  class Net(linen.Module):
    @linen.compact
    def __call__(self, x):
      return linen.Dense(4)(jax.nn.relu(linen.Dense(8)(x)))

  net = Net()
  variables = net.init(jax.random.key(0), jnp.zeros((1, 16)))
  linen_model = pl.Model.from_linen(net, variables)
  x = jnp.asarray(data.test[0][:5])
  np.testing.assert_array_equal(linen_model.apply(linen_model.params, x), net.apply(variables, x))

  class NnxNet(nnx.Module):
    def __init__(self, rngs):
      self.a, self.b = nnx.Linear(16, 8, rngs=rngs), nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
      return self.b(jax.nn.relu(self.a(x)))

  module = NnxNet(nnx.Rngs(0))
  nnx_model = pl.Model.from_nnx(module)
  np.testing.assert_array_equal(nnx_model.apply(nnx_model.params, x), module(x))
  for model in (linen_model, nnx_model):
    report = pl.run(model, [pl.Prune(0.5, steps=2), pl.Train(steps=1)], data, optimizer=OPT,
                    batch_size=32, progress=False, latency_repeats=1)
    kernels = [r for r in report.stages[-1].layers if len(r.shape) == 2]
    assert len(kernels) == 2 and all(r.params - r.nonzeros == r.params // 2 for r in kernels)
