"""Same seed, same bits: the pipeline demo and every notebook's training cells, run twice.

Each run is a fresh child process (its own JAX, its own compilation cache), so a cache in
one process cannot hide nondeterminism. The children dump what they trained (parameters,
optimizer states, metrics, curves) to ``.npz`` files (no pickle); the test compares the two
dumps bit for bit: the same keys in the same order, and for each key the same dtype, shape
and bytes. Wall-clock fields (``seconds``, ``latency_ms``, ``wall_time``,
``steps_per_sec``) are the only things left out. The two runs get different
``PYTHONHASHSEED`` values (set-of-strings order) and JAX's persistent compilation cache off
(no compiled code shared through the disk).

The notebooks run in the fast mode of tests/test_notebooks.py (``JOPT_NOTEBOOK_FAST=1``),
code cells verbatim and in order, up to and including the last training cell checked here
(``TRAINING_CELLS``).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIMEOUT_S = 300   # one child; the slowest takes ~35 CPU s (~100 s wall on a busy 2-core box)

# wall-clock fields: they differ between runs by nature and are not compared
TIME_FIELDS = ("seconds", "latency_ms", "wall_time", "steps_per_sec")

# The dumper, shared by both children: any result tree -> {path: NumPy array}. Containers
# are walked in their own order (dict insertion order is part of what is compared);
# functions (a model's apply) are skipped; an unknown type fails loudly, so nothing the
# cells produce is silently left out.
_FLATTEN = """
import dataclasses
import numpy as np

TIME_FIELDS = %r


def flatten(obj, path, out):
    import jax
    if isinstance(obj, jax.Array) and jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
        out[path + "#key"] = np.asarray(jax.random.key_data(obj))
    elif isinstance(obj, (jax.Array, np.ndarray, np.generic, bool, int, float, complex, str)):
        out[path] = np.asarray(obj)
    elif obj is None:
        out[path + "#None"] = np.zeros(0)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in TIME_FIELDS:
                flatten(v, f"{path}/{k}", out)
    elif isinstance(obj, tuple) and hasattr(obj, "_fields"):   # NamedTuple (optax states)
        out[path + "#" + type(obj).__name__] = np.zeros(0)
        for k, v in zip(obj._fields, obj):
            flatten(v, f"{path}/{k}", out)
    elif isinstance(obj, (list, tuple)):
        out[path + "#len"] = np.asarray(len(obj))
        for i, v in enumerate(obj):
            flatten(v, f"{path}/{i}", out)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out[path + "#" + type(obj).__name__] = np.zeros(0)
        for f in dataclasses.fields(obj):
            if f.name not in TIME_FIELDS:
                flatten(getattr(obj, f.name), f"{path}/{f.name}", out)
    elif callable(obj):
        pass   # a model's apply function: code, not a result
    else:
        raise TypeError(f"flatten: {path} is a {type(obj).__name__}; teach flatten() about it")
    return out
""" % (TIME_FIELDS,)

# Child 1: the demo's Python entry, run_demo, with its own out_dir (report.json as the demo
# writes it) and the final compressed model's params and masks as params.npz.
_DEMO_CHILD = _FLATTEN + """
import json, os, sys
from jopt.pipeline import demo

steps, outs = tuple(json.loads(sys.argv[1])), json.loads(sys.argv[2])
for seed, out in outs:
    stages = demo.demo_stages(steps=steps)
    report = demo.run_demo(out, seed=seed, progress=False, stages=stages, latency_repeats=1)
    model = report.model
    arrays = flatten({"params": model.params, "masks": model.masks, "quant": model.quant}, "", {})
    np.savez(os.path.join(out, "params.npz"), **arrays)
    print("@@ demo seed", seed, "->", out, flush=True)
"""

# Child 2: a notebook's code cells, verbatim and in order, up to the last cell of `dumps`
# ({cell index: [expressions]}); after each cell in `dumps`, its expressions are dumped.
_NOTEBOOK_CHILD = _FLATTEN + """
import json, sys, time
path, dumps, out = sys.argv[1], {int(k): v for k, v in json.loads(sys.argv[2]).items()}, sys.argv[3]
nb = json.loads(open(path, encoding="utf-8").read())
ns = {"__name__": "__main__"}
arrays = {}
for i, cell in enumerate(nb["cells"]):
    if i > max(dumps):
        break
    if cell["cell_type"] != "code":
        continue
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    start, cpu = time.perf_counter(), time.process_time()
    exec(compile(src, f"{path} [code cell {i}]", "exec"), ns)
    print(f"@@ ran code cell {i} in {time.perf_counter() - start:.2f} s"
          f" ({time.process_time() - cpu:.2f} s CPU)", flush=True)
    for expr in dumps.get(i, []):
        flatten(eval(expr, ns), f"cell{i}:{expr}", arrays)
np.savez(out, **arrays)
print("@@ dumped", len(arrays), "arrays", flush=True)
"""


def _child(code: str, args: list[str], cwd: pathlib.Path, hash_seed: int) -> float:
  """Run `code` in a fresh Python with the notebooks' test environment; its wall seconds.

  Each run gets its own ``PYTHONHASHSEED``, so a result that hangs on the order of a set of
  strings differs between the two runs instead of matching by luck.
  """
  pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = {k: v for k, v in os.environ.items()
         if k not in {"DISPLAY", "WAYLAND_DISPLAY", "JAX_COMPILATION_CACHE_DIR"}}
  env.update(PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict",
             MPLBACKEND="Agg", JOPT_NOTEBOOK_FAST="1",
             JAX_ENABLE_COMPILATION_CACHE="false",   # no compiled code shared through the disk
             PYTHONHASHSEED=str(hash_seed))
  start = time.perf_counter()
  try:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  except subprocess.TimeoutExpired:
    pytest.fail(f"a child run did not finish within {TIMEOUT_S} s: {args}")
  assert proc.returncode == 0, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
  return time.perf_counter() - start


def _load(path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def _differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
  """Every way two dumps differ: keys or their order, dtype, shape, bytes (NaN and -0.0 count)."""
  if list(a) != list(b):
    only = sorted(set(a) ^ set(b))
    return [f"keys differ: {only[:10]}" if only else "same keys in another order"]
  out = []
  for k in a:
    x, y = a[k], b[k]
    if (x.dtype, x.shape) != (y.dtype, y.shape):
      out.append(f"{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
    elif x.tobytes() != y.tobytes():
      if np.issubdtype(x.dtype, np.number):
        err = np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))
        out.append(f"{k}: {np.sum(x != y)} of {x.size} entries differ, max abs {err:.3g}")
      else:
        out.append(f"{k}: {x!r} vs {y!r}")
  return out


def test_differences_sees_one_flipped_bit_nan_and_signed_zero():
  base = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.asarray("adam")}
  assert _differences(base, {k: v.copy() for k, v in base.items()}) == []
  flipped = base["w"].copy()
  flipped.view(np.uint32)[1, 2] ^= 1   # the last bit of one float32
  assert _differences(base, {**base, "w": flipped}) == [
      "w: 1 of 6 entries differ, max abs 4.77e-07"]
  nan1, nan2 = np.full(1, np.nan, np.float32), np.full(1, np.nan, np.float32)
  nan2.view(np.uint32)[0] ^= 1   # another NaN payload
  assert _differences({"n": nan1}, {"n": nan1.copy()}) == []
  assert len(_differences({"n": nan1}, {"n": nan2})) == 1
  assert len(_differences({"z": np.zeros(1)}, {"z": -np.zeros(1)})) == 1
  assert _differences(base, {"s": base["s"], "w": base["w"]}) == ["same keys in another order"]
  assert _differences(base, {**base, "w": base["w"].astype(np.float64)}) == [
      "w: float32(2, 3) vs float64(2, 3)"]
  assert _differences(base, {**base, "s": np.asarray("lion")})[0].startswith("s: ")


# --- the demo ------------------------------------------------------------------------------

# (dense, prune, finetune, distill) steps: the demo's recipe and data, 10x fewer steps than
# --quick (300, 300, 100, 30); the prune stage still ramps its sparsity over them
DEMO_STEPS = (30, 30, 10, 3)


def _report_numbers(path: pathlib.Path) -> dict:
  """report.json without its wall-clock fields."""
  report = json.loads(path.read_text(encoding="utf-8"))
  for s in report["stages"]:
    for k in TIME_FIELDS:
      s.pop(k, None)
  return report


def test_demo_same_seed_same_bits_other_seed_other_params(tmp_path):
  a, b, other = tmp_path / "a", tmp_path / "b", tmp_path / "seed1"
  steps = json.dumps(DEMO_STEPS)
  t_a = _child(_DEMO_CHILD, [steps, json.dumps([[0, str(a)]])], tmp_path, hash_seed=1)
  # the second fresh run, then (in the same process: only the "differs" check) another seed
  t_b = _child(_DEMO_CHILD, [steps, json.dumps([[0, str(b)], [1, str(other)]])], tmp_path,
               hash_seed=2)
  print(f"demo child runs: {t_a:.1f} s (seed 0), {t_b:.1f} s (seed 0, then seed 1)")
  ra, rb = _report_numbers(a / "report.json"), _report_numbers(b / "report.json")
  assert [s["name"] for s in ra["stages"]] == ["start", "dense", "prune", "finetune", "quantize",
                                               "distill"]
  assert ra == rb, "the same seed gave other report numbers"
  pa, pb = _load(a / "params.npz"), _load(b / "params.npz")
  kernels = [k for k in pa if k.startswith("/params/") and k.endswith("/kernel")]
  assert len(kernels) == 3 and pa[kernels[0]].dtype == np.float32, list(pa)
  assert _differences(pa, pb) == []
  # another seed: other params (the check above can fail) and other numbers
  p1 = _load(other / "params.npz")
  assert list(p1) == list(pa)
  assert all(not np.array_equal(pa[k], p1[k]) for k in kernels)
  r1 = _report_numbers(other / "report.json")
  assert r1["meta"]["seed"] == 1 and ra["meta"]["seed"] == 0
  assert [s["loss"] for s in r1["stages"]] != [s["loss"] for s in ra["stages"]]


# --- the notebooks -------------------------------------------------------------------------

# notebook -> {training cell index: the names it trains}. The indices count all cells
# (markdown too), as nb["cells"] does; the test below checks that each named cell still
# trains what it names, so an edited notebook fails here instead of passing vacuously.
# Left out to keep this file near 3 CPU minutes, each with its cost (CPU s per run):
# regularization cell 12 (~8 s: dropout + batch norm in both orders, through the same `fit`
# as cell 8's dropout and batch-norm runs) and compression cell 14 (~4 s: post-training
# k-means sharing, no training; the demo's Quantize stage runs the same k-means).
TRAINING_CELLS = {
    "quickstart.ipynb": {
        7: ["params", "opt_state", "batch_loss", "curves", "test_loss", "test_acc"],
        13: ["params", "opt_state", "loss"],
        15: ["result"],
    },
    "regularization.ipynb": {
        8: ["results"],
    },
    "compression.ipynb": {
        10: ["dense", "dense_acc", "pruned", "accs"],
    },
    "pipeline.ipynb": {
        7: ["report"],
        14: ["teacher", "students", "accuracies"],
    },
    "precision_parallel.ipynb": {
        10: ["p", "state", "scales", "skipped", "losses"],
    },
}

# a substring of each training cell's source that marks it as the one that trains
_TRAINS = {
    ("quickstart.ipynb", 7): "train_step(params, opt_state, batch)",
    ("quickstart.ipynb", 13): "train_step(params, opt_state, next(batches))",
    ("quickstart.ipynb", 15): "train(tx, steps=300",
    ("regularization.ipynb", 8): "fit(model, tx, lab",
    ("compression.ipynb", 10): "lab.train_model(",
    ("pipeline.ipynb", 7): "demo.run_demo(",
    ("pipeline.ipynb", 14): "jax.lax.scan(step",
    ("precision_parallel.ipynb", 10): "step(p, state, (xb, y))",
}


def test_every_notebook_is_covered_and_its_training_cells_still_train():
  assert sorted(TRAINING_CELLS) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
  assert sorted(_TRAINS) == sorted((n, i) for n, cells in TRAINING_CELLS.items() for i in cells)
  for (name, i), needle in _TRAINS.items():
    cell = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"][i]
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    assert cell["cell_type"] == "code" and needle in src, (name, i, needle)


@pytest.mark.parametrize("name", list(TRAINING_CELLS))
def test_notebook_training_cells_same_bits_twice(name, tmp_path):
  path, dumps = NOTEBOOKS / name, TRAINING_CELLS[name]
  seconds = [_child(_NOTEBOOK_CHILD, [str(path), json.dumps(dumps), str(tmp_path / f"{run}.npz")],
                    path.parent, hash_seed=hash_seed)
             for run, hash_seed in (("a", 1), ("b", 2))]
  print(f"{name}: two fresh runs up to code cell {max(dumps)}:"
        f" {seconds[0]:.1f} s, {seconds[1]:.1f} s")
  a, b = _load(tmp_path / "a.npz"), _load(tmp_path / "b.npz")
  # every named result was dumped, with at least one float array of trained numbers
  for cell, exprs in dumps.items():
    for expr in exprs:
      leaves = [v for k, v in a.items() if k.split("/")[0].split("#")[0] == f"cell{cell}:{expr}"]
      assert leaves, (cell, expr)
  floats = [v for v in a.values() if np.issubdtype(v.dtype, np.floating) and v.size > 1]
  assert sum(v.size for v in floats) > 1000, "the dump holds trained parameters"
  diffs = _differences(a, b)
  assert diffs == [], f"{name}: {len(diffs)} differences between two runs, e.g. {diffs[:5]}"
