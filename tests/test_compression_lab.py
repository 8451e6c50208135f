"""The compression lab: models, the loop with jopt.prune, channel removal, the sparse format, the benchmark.

References: a NumPy float64 transcription of the MLP, torch's conv2d / max_pool2d
for the CNN, a direct NumPy count for the relative-index format.
"""

import json
import pathlib
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jopt
from jopt.prune.relative_index import (relative_index_decode, relative_index_encode,
                                       relative_index_nbytes)
from jopt.training import compression_lab as lab
from jopt.training import load_digits
from tests.references import relative_index_entries

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_lenet_shapes_and_forward_match_numpy():
  p = lab.init_lenet(0)
  assert jax.tree.map(jnp.shape, p) == {
      "dense0": {"kernel": (784, 300), "bias": (300,)},
      "dense1": {"kernel": (300, 100), "bias": (100,)},
      "dense2": {"kernel": (100, 10), "bias": (10,)}}
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(p))
  assert sum(l.size for l in jax.tree.leaves(p)) == 266_610
  bound = 1 / np.sqrt(784)
  assert 0.99 * bound < float(jnp.abs(p["dense0"]["kernel"]).max()) <= bound
  x = np.random.default_rng(0).uniform(size=(5, 784))
  h = x
  for i in range(3):
    h = h @ np.asarray(p[f"dense{i}"]["kernel"], np.float64) + np.asarray(p[f"dense{i}"]["bias"])
    h = np.maximum(h, 0) if i < 2 else h
  out = lab.apply_lenet(p, jnp.asarray(x, jnp.float32))
  assert out.shape == (5, 10)
  np.testing.assert_allclose(np.asarray(out), h, rtol=0, atol=5e-7)   # measured 4.1e-8


def _torch_cnn(p, x_nhwc):
  t = lambda a: torch.tensor(np.asarray(a, np.float64))
  x = t(x_nhwc).permute(0, 3, 1, 2)
  for name in ("conv1", "conv2"):
    w = t(p[name]["kernel"]).permute(3, 2, 0, 1)   # HWIO -> OIHW
    x = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(x, w, padding=1)), 2)
  x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)   # NHWC flatten
  return (x @ t(p["head"]["kernel"]) + t(p["head"]["bias"])).numpy()


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1)])
def test_cnn_shapes_and_forward_match_torch(shape):
  p = lab.init_cnn(1, shape, channels=(4, 6))
  h, w, _ = shape
  assert jax.tree.map(jnp.shape, p) == {
      "conv1": {"kernel": (3, 3, 1, 4)}, "conv2": {"kernel": (3, 3, 4, 6)},
      "head": {"kernel": (h // 4 * w // 4 * 6, 10), "bias": (10,)}}
  x = np.random.default_rng(1).uniform(size=(3, *shape)).astype(np.float32)
  out = lab.apply_cnn(p, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(out), _torch_cnn(p, x), rtol=0, atol=5e-7)   # measured 4.4e-8
  flat = lab.apply_cnn(p, jnp.asarray(x.reshape(3, -1)))   # flattened images are reshaped
  np.testing.assert_array_equal(np.asarray(flat), np.asarray(out))


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="image_shape"):
    lab.init_cnn(0, (10, 10, 1))
  with pytest.raises(ValueError, match="sizes"):
    lab.init_lenet(0, (784,))
  with pytest.raises(ValueError, match="steps"):
    lab.train_model(lab.apply_lenet, lab.init_lenet(0, (64, 8, 10)), jopt.adam(1e-3),
                    load_digits(), steps=0)
  with pytest.raises(ValueError, match="index_bits"):
    relative_index_encode(np.ones(3), 0)
  with pytest.raises(ValueError, match="square"):
    lab.apply_cnn(lab.init_cnn(0), jnp.zeros((1, 50)))


def test_train_with_prune_reaches_the_target_sparsity_and_learns():
  data = load_digits()
  init = lab.init_lenet(0, (64, 64, 32, 10))
  sched = jopt.polynomial_sparsity_schedule(0.7, 10, 60, frequency=10)
  tx = jopt.prune(jopt.adam(3e-3), sched, update_every=10, begin_step=10, end_step=60)
  p, state = lab.train_model(lab.apply_lenet, init, tx, data, steps=150, batch_size=64,
                             return_state=True)
  for name, layer in p.items():
    k = np.asarray(layer["kernel"])
    assert (k == 0).sum() == int(np.floor(0.7 * k.size + 0.5)), name   # exact count
    np.testing.assert_array_equal(k != 0, np.asarray(state.masks[name]["kernel"]))
    assert np.asarray(state.masks[name]["bias"]).all(), "biases are not pruned"
  dense = lab.train_model(lab.apply_lenet, init, jopt.adam(3e-3), data, steps=150, batch_size=64)
  acc = lab.accuracy_of(lab.apply_lenet, p, data.test)
  # an independent accuracy: NumPy argmax of the logits of the whole split
  logits = np.asarray(lab.apply_lenet(p, jnp.asarray(data.test.x)))
  assert acc == pytest.approx(100 * np.mean(logits.argmax(-1) == data.test.y), abs=1e-12)
  print(f"pruned {acc:.1f}%, dense {lab.accuracy_of(lab.apply_lenet, dense, data.test):.1f}%")
  assert acc > 60 and lab.accuracy_of(lab.apply_lenet, dense, data.test) > 60   # chance: 10%


def test_channel_removal_equals_the_masked_cnn():
  data = load_digits()
  init = lab.init_cnn(0, (8, 8, 1), channels=(8, 8))
  tx = jopt.prune(jopt.adam(3e-3), 0.5, granularity="channel", filter=lab.conv_filter,
                  update_every=100, begin_step=5)
  pruned = lab.train_model(lab.apply_cnn, init, tx, data, steps=12, batch_size=32)
  assert (np.asarray(pruned["head"]["kernel"]) != 0).all(), "the head is not pruned"
  small, kept = jopt.prune.remove_units(pruned, lab.cnn_unit_groups(pruned))
  assert jax.tree.map(jnp.shape, small) == {
      "conv1": {"kernel": (3, 3, 1, 4)}, "conv2": {"kernel": (3, 3, 4, 4)},
      "head": {"kernel": (4 * 4, 10), "bias": (10,)}}
  assert [len(kept["conv1"]), len(kept["conv2"])] == [4, 4]
  x = jnp.asarray(data.test.x[:64])
  diff = np.abs(np.asarray(lab.apply_cnn(small, x)) - np.asarray(lab.apply_cnn(pruned, x)))
  assert diff.max() < 1e-5   # measured ~1e-7 (float32 summation order)
  assert lab.measure_latency(lab.apply_cnn, small, x, repeats=2, warmup=0) > 0


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.integers(-3, 3).filter(lambda v: True), min_size=1, max_size=200),
                  st.integers(0, 5), st.integers(1, 8))
def test_relative_index_round_trips_and_counts(values, zeros_every, b):
  flat = np.asarray(values, np.float32)
  if zeros_every:
    flat[::zeros_every + 1] = 0
  gaps, stored = relative_index_encode(flat.reshape(1, -1), b)
  assert gaps.dtype == np.uint8 and (gaps < 2 ** b).all()
  assert gaps.size == relative_index_entries(flat, b)
  np.testing.assert_array_equal(relative_index_decode(gaps, stored, (1, flat.size)),
                                flat.reshape(1, -1))
  assert relative_index_nbytes(flat, 5, b) == -(-gaps.size * (5 + b) // 8)


@pytest.mark.slow
def test_quick_benchmark_writes_a_complete_table(tmp_path):
  md, js = tmp_path / "c.md", tmp_path / "c.json"
  proc = subprocess.run([sys.executable, "-m", "benchmarks.compression", "--quick", "--md",
                         str(md), "--json", str(js)], cwd=ROOT, capture_output=True, text=True,
                        timeout=180, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  from benchmarks import compression as bench  # pylint: disable=import-outside-toplevel
  result = json.loads(js.read_text())
  text = md.read_text()
  header = "| " + " | ".join(bench.COLUMNS) + " |"
  assert header in text and "machine:" in text and "versions:" in text and "run time:" in text
  rows = [l for l in text.splitlines() if l.startswith("| ") and l != header and "---" not in l]
  lenet = result["lenet"]["digits"]
  assert set(lenet) == {"dense", "int8", "int4", "qat4", "int8_int", "gmp92", "gmp95", "nm24",
                        "kmeans92_bitmask", "kmeans92_rel", "kmeans95_rel"}
  assert set(result["cnn"]["digits"]) == {"cnn_dense", "channel50"}
  assert len(rows) == len(lenet) + 2
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(bench.COLUMNS), row
  for key, e in {**lenet, **result["cnn"]["digits"]}.items():
    assert key in bench.LABELS and e["target"].startswith(("met", "NOT met", "-"))
    assert e["nbytes"] > 0 and e["ratio"] == pytest.approx(
        (lenet if key in lenet else result["cnn"]["digits"])[
            "dense" if key in lenet else "cnn_dense"]["nbytes"] / e["nbytes"])
  dense_bytes = 4 * (64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10)
  assert lenet["dense"]["nbytes"] == dense_bytes
  assert lenet["gmp92"]["sparsity"]["mean"] == pytest.approx(0.92, abs=1e-3)
  assert lenet["nm24"]["sparsity"]["mean"] == pytest.approx(0.5)
  assert lenet["kmeans92_rel"]["nbytes"] < lenet["gmp92"]["nbytes"]
  assert result["cnn"]["digits"]["channel50"]["runs"][0]["channels"] == [4, 8]
  assert result["cnn"]["digits"]["channel50"]["runs"][0]["removed_vs_masked_max_abs"] < 1e-5
