"""Smoke test of benchmarks/pipeline.py: ``--quick`` runs end to end and its tables add up.

Every number in PIPELINE.md is recomputed here from the per-seed reports in
pipeline.json (bytes from the per-layer rows, ratios and drops from the rows).
"""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_stage_contribution_layer_and_target_tables(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--quick", "--out",
                         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads((tmp_path / "pipeline.json").read_text())
  text = (tmp_path / "PIPELINE.md").read_text()
  assert result["quick"] and result["seeds"] == [0]
  for needle in ("machine:", "versions:", "run time:", "recipe:", "## Per stage",
                 "## Each stage's contribution", "## Per layer, seed 0", "**Target**"):
    assert needle in text, needle
  rows = result["runs"][0]["report"]["stages"]
  names = ["start", "dense", "prune", "finetune", "quantize", "distill"]
  assert [r["name"] for r in rows] == names == [s["name"] for s in result["stages"]]
  for r in rows:
    assert sum(l["bytes"] for l in r["layers"]) == r["bytes"]
    assert sum(l["nonzeros"] for l in r["layers"]) == r["nonzeros"]
  dense, last = rows[1], rows[-1]
  agg = result["stages"]
  assert agg[-1]["ratio"]["mean"] == pytest.approx(dense["bytes"] / last["bytes"])
  assert agg[-1]["drop"]["mean"] == pytest.approx(dense["accuracy"] - last["accuracy"])
  assert math.prod(r["factor"]["mean"] for r in agg[2:]) == pytest.approx(
      dense["bytes"] / last["bytes"])
  met = agg[-1]["ratio"]["mean"] >= 40 and agg[-1]["drop"]["mean"] <= 1.0
  assert result["target"]["met"] == met
  assert f"**{'met' if met else 'NOT met'}**" in text
  table = [l for l in text.split("## Per stage", 1)[1].split("##", 1)[0].splitlines()
           if l.startswith("| ") and "---" not in l]
  assert len(table) == 1 + len(names)   # the header and one row per stage
  for line, r in zip(table[1:], agg):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == r["name"] and cells[5] == f"{r['ratio']['mean']:.1f}x"
    assert cells[2] == f"{r['accuracy']['mean']:.2f} ± 0.00"
  layers = text.split("## Per layer", 1)[1]
  for layer in last["layers"]:
    assert f"| {layer['path']} |" in layers and f"{layer['format']}" in layers
  assert f"| total | | {dense['bytes']:,} |" in layers
