"""The pipeline runs every order of {Prune, Quantize, Distill, Train}; every reported number is recomputed.

The reference is written here, independently of jopt.pipeline: the stored weights
are rebuilt from the carried float params, masks and spec with jopt.quant.quantize,
the byte count of every format from np.count_nonzero, bits and shapes (a loop
transcription of Deep Compression's relative-index walk), the accuracy and loss
from a NumPy forward pass. The report can never claim what the arrays do not show.
"""

import importlib
import itertools
import math

import jax
import numpy as np
import pytest

import jopt
from jopt import pipeline as pl
from jopt.training import compression_lab as lab
from tests.references import relative_index_entries

SIZES = (16, 8, 4)
# the module (the package attribute ``run`` is the function)
run_module = importlib.import_module("jopt.pipeline.run")


def tiny_data(seed=0, n_train=192, n_test=64, unlabeled=0):
  """Random inputs labelled by a fixed random linear map: learnable, 16 features, 4 classes."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(SIZES[0], SIZES[-1]))
  x = rng.normal(size=(n_train + n_test + unlabeled, SIZES[0])).astype(np.float32)
  y = np.argmax(x @ w, axis=1).astype(np.int32)
  extra = x[n_train + n_test:] if unlabeled else None
  return pl.Data(train=(x[:n_train], y[:n_train]),
                 test=(x[n_train:n_train + n_test], y[n_train:n_train + n_test]),
                 unlabeled=extra)


def tiny_model(seed=0, sizes=SIZES):
  return pl.Model(lab.apply_lenet, lab.init_lenet(seed, sizes))


OPT = jopt.adam(3e-3)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
  """XLA's optimizations off while this module runs: compiling dominates these tiny runs."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def capture(monkeypatch):
  """Record the CompressedModel behind every report row (run's call of evaluate)."""
  seen = []
  original = run_module.evaluate

  def spy(model, *args, **kwargs):
    seen.append(model)
    return original(model, *args, **kwargs)

  monkeypatch.setattr(run_module, "evaluate", spy)
  return seen


def reference_stored(cm):
  """(path, stored float values, bits or None, side bytes) per leaf, rebuilt here."""
  out = []
  leaves = jax.tree_util.tree_flatten_with_path(cm.params)[0]
  masks = jax.tree.leaves(cm.masks) if cm.masks is not None else [None] * len(leaves)
  for (path, p), m in zip(leaves, masks):
    name = "/".join(str(k.key) for k in path)
    w = np.asarray(p)
    if m is not None:
      w = np.where(np.asarray(m), w, np.float32(0))
    if cm.quant is None or w.ndim < 2:
      out.append((name, w, None, 0))
      continue
    spec = cm.quant
    kw = {"method": spec.method}
    if spec.method == "kmeans":
      kw["keep_zeros"] = True
    qa = jopt.quant.quantize(w, spec.bits, **kw)
    side = {"linear": 4, "kmeans": 4 * 2 ** spec.bits, "log2": 4, "nf4": 4}[spec.method]
    out.append((name, np.asarray(qa.dequantize()), spec.bits, side))
  return out


def reference_bytes(w, bits, side):
  n, k = w.size, int(np.count_nonzero(w))
  flat = w.reshape(-1)
  if bits is None:
    cand = {"float32": 4 * n, "bitmask+float32": math.ceil(n / 8) + 4 * k}
    cand.update({f"relidx{i}+float32":
                 math.ceil(relative_index_entries(flat, i) * (32 + i) / 8)
                 for i in range(1, 9)})
  else:
    cand = {f"{bits}bit": math.ceil(n * bits / 8) + side,
            f"bitmask+{bits}bit": math.ceil(n / 8) + math.ceil(k * bits / 8) + side}
    cand.update({f"relidx{i}+{bits}bit":
                 math.ceil(relative_index_entries(flat, i) * (bits + i) / 8) + side
                 for i in range(1, 9)})
  best = min(cand.values())
  return best, {f for f, v in cand.items() if v == best}


def numpy_metrics(stored, x, y):
  h = x.astype(np.float64)
  n = len(stored)
  for i in range(n):
    h = h @ stored[f"dense{i}"]["kernel"].astype(np.float64) + stored[f"dense{i}"]["bias"]
    if i < n - 1:
      h = np.maximum(h, 0)
  z = h - h.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return 100.0 * np.mean(h.argmax(1) == y), float(-logp[np.arange(len(y)), y].mean())


def check_row(row, cm, data):
  """Every number of ``row`` against the reference rebuilt from ``cm``'s arrays."""
  ref = reference_stored(cm)
  assert [r.path for r in row.layers] == [name for name, *_ in ref]
  total = 0
  stored = {}
  for layer, (name, w, bits, side) in zip(row.layers, ref):
    best, formats = reference_bytes(w, bits, side)
    assert layer.bytes == best and layer.format in formats, (name, layer, best, formats)
    assert layer.nonzeros == np.count_nonzero(w) and layer.params == w.size
    assert layer.bits == bits and tuple(layer.shape) == w.shape
    total += best
    a, b = name.split("/")
    stored.setdefault(a, {})[b] = w
  assert row.bytes == total
  assert row.params == sum(w.size for _, w, _, _ in ref)
  assert row.nonzeros == sum(np.count_nonzero(w) for _, w, _, _ in ref)
  acc, loss = numpy_metrics(stored, *data.test)
  # measured 0; one test example (100/64 points) allowed: float32 against float64 may flip a tie
  assert abs(row.accuracy - acc) <= 100.0 / len(data.test[1]) + 1e-9
  assert row.loss == pytest.approx(loss, rel=1e-6)   # measured max 1.0e-7 (float32 vs float64)
  if cm.masks is not None:
    for p, m in zip(jax.tree.leaves(cm.params), jax.tree.leaves(cm.masks)):
      assert not np.asarray(p)[~np.asarray(m)].any(), "a pruned weight is not exactly zero"


STAGES = {
    "prune": pl.Prune(sparsity=0.5, steps=2),
    "quantize": pl.Quantize(bits=4, qat_steps=1),
    "distill": pl.Distill(steps=2, temperature=2.0, alpha=0.5),
    "train": pl.Train(steps=2),
}


@pytest.mark.parametrize("order", list(itertools.permutations(STAGES)),
                         ids=lambda o: "-".join(o))
def test_every_order_runs_and_the_report_matches_the_arrays(order, monkeypatch):
  data = tiny_data()
  seen = capture(monkeypatch)
  report = pl.run(tiny_model(), [STAGES[k] for k in order], data, optimizer=OPT,
                  batch_size=32, progress=False, latency_repeats=1)
  assert [s.kind for s in report.stages] == ["start", *order]
  assert len(seen) == 5 and report.model is seen[-1]
  for row, cm in zip(report.stages, seen):
    check_row(row, cm, data)
  assert report.stages[0].compression == 1.0
  for row in report.stages:
    assert row.compression == pytest.approx(report.stages[0].bytes / row.bytes, rel=1e-12)
  # after the prune stage half of each kernel is pruned, and stays so to the end
  first = order.index("prune") + 1
  for row in report.stages[first:]:
    for layer in row.layers:
      if len(layer.shape) == 2:
        assert layer.params - layer.nonzeros >= round(0.5 * layer.params)
