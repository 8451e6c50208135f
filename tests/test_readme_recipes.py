"""The README's recipes (Flax NNX, orbax, regularization, pruning, quantization) run as written.

Each section's python block is executed on its own in a fresh interpreter (CPU,
default JAX settings, a temporary working directory, Python warnings as errors)
with a hard timeout, so the README cannot drift from what works. The checks on
stdout are the values the blocks' comments promise.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

# section heading -> lines the block must print (its comments promise them)
RECIPES = {
    "## With Flax NNX": ["0.0003"],
    "## Checkpoints (orbax)": ["0.01"],
    "## Regularizers: penalties, proximal L1, early stopping": [
        "stopped at step 80 best check 74", "exact zeros in w: 8"],
    "## Dropout and normalization (`jopt.nn`)": ["(32, 8) (32, 8) True"],
    "## Data augmentation (`jopt.augment`)": ["(128, 32, 32, 3) (128, 32, 32, 3) True",
                                              "True True"],
    "## Regularization lab: do the regularizers regularize?": ["True True"],
    "## Pruning (`jopt.prune`)": ["kernel sparsity 0.8999, bytes 1412 vs 9640",
                                  "[0, 2] (2, 2)"],
    "## Quantization (`jopt.quant`)": ["122043 954040 7.82x", "int32 0 9605"],
    "## Quantization-aware training and integer inference": [
        "[-1.0, 0.0, 1.0]", "[1.0, 1.0, 0.0]", "True True", "True 44", "True"],
    "## Mixed precision: bits per layer under a size budget": [
        "head bits 8 within budget True"],
    "## Compression lab: prune, share, quantize, measured": [
        "kernel sparsity 0.900", "int8: 3.79x fewer bytes than float32"],
    "## Knowledge distillation (`jopt.distill`)": [
        "distill_loss at init: 2.1349", "after 200 steps: loss 0.2092, agreement 0.97"],
    "## Compress a model: prune → quantize → distill, with a report (`jopt.pipeline`)": [
        "| # | stage | kind | accuracy % | loss | params | non-zeros | sparsity | bytes | × smaller"
        " | latency ms | seconds |",
        "23.2x fewer bytes than the dense trained model, accuracy -1.4 points"],
    "## Mixed precision training and loss scaling (`jopt.precision`)": [
        "params=float32,compute=float16,output=float32 test accuracy 0.947", "False 32768.0 1 True"],
    "## Skipping non-finite steps (`jopt.skip_nonfinite`)": ["[1.0, 1.0, 1.0] 1"],
    "## Data parallelism and multi-host (`jopt.parallel`)": [
        "devices: 8, per-device batch: 16", "loss after 30 steps: 0.21"],
    "## Model parallelism and sharded optimizer state (`jopt.parallel`)": [
        "tensor parallel: P(None, 'model') (16, 8)", "ZeRO-2: P(None, 'data') 256 of 2048 bytes"],
}


def _python_block(heading):
  text = (ROOT / "README.md").read_text()
  assert text.count(f"\n{heading}\n") == 1, f"README has no single section {heading!r}"
  section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)
  assert len(blocks) == 1, f"{heading!r} should hold exactly one python block"
  return blocks[0]


@pytest.mark.parametrize("heading", sorted(RECIPES))
def test_readme_recipe_runs(heading, tmp_path):
  script = tmp_path / "recipe.py"
  script.write_text(_python_block(heading) + "\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  try:
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"README recipe {heading!r} ran past {TIMEOUT_S}s:\n{e.stdout}\n{e.stderr}")
  assert proc.returncode == 0, (
      f"README recipe {heading!r} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}")
  lines = [line.strip() for line in proc.stdout.splitlines()]
  for want in RECIPES[heading]:
    assert want in lines, (want, proc.stdout)
