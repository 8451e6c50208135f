"""Smoke test of benchmarks/parallel.py: the quick run's table agrees with its JSON and the shapes.

The expected per-device bytes are worked out here from the quick MLP's shapes
(64-256-64, one block; kernels sharded, biases under FSDP's 1,024-element
minimum replicated), not read back from the benchmark. The HLO parser is
checked on hand-written instructions, async pairs and tuples included.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import parallel as bench
from tests.tables import cells as _cells

ROOT = pathlib.Path(__file__).resolve().parents[1]

HLO = """
HloModule m
%fused (param_0: f32[4,8]) -> f32[4,8] {
  ROOT %x = f32[4,8]{1,0} parameter(0)
}
ENTRY %main (a: f32[16,32], b: bf16[64]) -> f32[16,32] {
  %a = f32[16,32]{1,0} parameter(0)
  %all-reduce.1 = f32[16,32]{1,0} all-reduce(%a), replica_groups={{0,1}}, to_apply=%add
  %ag-start = (f32[2,32]{1,0}, f32[16,32]{1,0}) all-gather-start(%x), dimensions={0}
  %ag-done = f32[16,32]{1,0} all-gather-done(%ag-start)
  %tuple-ar = (f32[8]{0}, bf16[64]{0}) all-reduce(%p, %b), to_apply=%add
  %rs = f32[2,32]{1,0:T(8,128)} reduce-scatter(%a), dimensions={0}, to_apply=%add
  %cp-start = (s32[10]{0}, s32[10]{0}, u32[], u32[]) collective-permute-start(%i)
  %cp-done = s32[10]{0} collective-permute-done(%cp-start)
  ROOT %d = f32[16,32]{1,0} dot(%a, %x), lhs_contracting_dims={1}
}
"""


def test_collective_bytes_counts_sync_ops_and_the_done_half_of_async_pairs():
  got = bench.collective_bytes(HLO)
  assert got == {
      "all-reduce": {"ops": 2, "bytes": 16 * 32 * 4 + 8 * 4 + 64 * 2},
      "all-gather": {"ops": 1, "bytes": 16 * 32 * 4},
      "reduce-scatter": {"ops": 1, "bytes": 2 * 32 * 4},
      "all-to-all": {"ops": 0, "bytes": 0},
      "collective-permute": {"ops": 1, "bytes": 10 * 4},
  }
  assert bench.dot_dtypes(HLO) == {"f32,f32->f32": 1}
  with pytest.raises(ValueError, match="unknown HLO element type 'q7'"):
    bench.collective_bytes("%z = q7[3]{0} all-reduce(%a)")


@pytest.mark.slow
def test_quick_run_writes_a_table_consistent_with_its_json_and_the_shapes(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.parallel", "--quick", "--out",
                         str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  res = json.loads((tmp_path / "parallel.json").read_text())
  md = (tmp_path / "PARALLEL.md").read_text()
  assert res["quick"] is True and res["seconds"] > 0 and res["platform"] == "cpu"
  assert len(res["devices"]) == 8 and {"cpu", "jax", "optax", "jopt"} <= set(res["machine"])
  assert set(res["cpu_flags"]) >= {"avx512_bf16", "amx_bf16"}
  assert "python -m benchmarks.parallel" in md

  w, h = 64, 256
  kernel, bias_up, bias_down = w * h * 4, h * 4, w * 4
  params = 2 * kernel + bias_up + bias_down
  assert res["parameters"] * 4 == params
  rows = {r["layout"]: r for r in res["layouts"]}
  assert list(rows) == list(bench.LAYOUTS)
  scalars = rows["replicated"]["state_bytes_total"] - 2 * params   # Adam's count, hyperparams
  assert 0 < scalars <= 64
  fsdp_params = 2 * kernel // 8 + bias_up + bias_down            # kernels split 8 ways
  tp_params = 2 * kernel // 4 + bias_up // 4 + bias_down         # down bias replicated
  want = {"replicated": (params, 2 * params + scalars),
          "zero1": (params, 2 * fsdp_params + scalars),
          "zero2": (params, 2 * fsdp_params + scalars),
          "fsdp": (fsdp_params, 2 * fsdp_params + scalars),
          "tensor": (tp_params, 2 * tp_params + scalars)}
  for name, (p, s) in want.items():
    r = rows[name]
    assert (r["param_bytes_per_device"], r["state_bytes_per_device"]) == (p, s), name
    assert r["param_bytes_total"] == params and r["state_bytes_total"] == 2 * params + scalars
    cells = _cells(md, r["label"])
    assert cells[2:6] == [bench._mb(p), bench._mb(s), bench._mb(params),
                          bench._mb(2 * params + scalars)], (name, cells)
    for kind, cell in zip(bench.COLLECTIVES, cells[6:6 + len(bench.COLLECTIVES)]):
      c = r["collectives"][kind]
      assert cell == (f"{c['ops']} ({bench._mb(c['bytes'])})" if c["ops"] else "-"), (name, kind)
    assert r["collective_bytes"] == sum(c["bytes"] for c in r["collectives"].values())
  # the collectives each layout must have: gradients summed, sharded pieces gathered
  assert rows["replicated"]["collectives"]["all-reduce"]["ops"] >= 1
  assert rows["replicated"]["collectives"]["all-gather"]["ops"] == 0
  for name in ("zero1", "zero2", "fsdp"):
    assert rows[name]["collectives"]["all-gather"]["ops"] >= 1, name
  assert rows["tensor"]["mesh"] == {"data": 2, "model": 4}
  assert rows["tensor"]["collectives"]["all-reduce"]["ops"] >= 1

  prec = {r["policy"]: r for r in res["precision"]}
  assert list(prec) == list(bench.POLICIES)
  assert prec["float32"]["time_vs_float32"] == 1.0
  for name, r in prec.items():
    assert r["step_ms"] > 0 and r["skipped"] >= 0 and sum(r["dot_dtypes"].values()) >= 4, name
    cells = _cells(md, name + " |")
    assert cells[1] == f"{r['step_ms']:.2f}" and cells[2] == f"{r['time_vs_float32']:.2f}x"
  assert res["precision_note"] in md
