"""Every notebook under notebooks/ is valid nbformat-4 JSON and its code cells run in order.

Each notebook runs in a child process (fresh JAX, strict dtype promotion, a hard
timeout) with the notebook's folder as working directory, as Jupyter would.
Shell and magic lines (``!pip install ...``, ``%time``) are skipped.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 300

# Runs in the child: exec each code cell in one namespace, naming the cell in tracebacks.
_RUNNER = """
import json, sys
path = sys.argv[1]
nb = json.load(open(path, encoding="utf-8"))
ns = {"__name__": "__main__"}
for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
        continue
    src = "".join(cell["source"])
    lines = [l for l in src.splitlines() if not l.lstrip().startswith(("!", "%"))]
    exec(compile("\\n".join(lines), f"{path} [code cell {i}]", "exec"), ns)
print("NOTEBOOK OK")
"""


def _source(cell) -> str:
  src = cell["source"]
  return src if isinstance(src, str) else "".join(src)


def test_there_is_a_quickstart_notebook():
  assert ROOT / "notebooks" / "quickstart.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_nbformat_4(path):
  nb = json.loads(path.read_text(encoding="utf-8"))
  assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
  assert isinstance(nb["metadata"], dict) and nb["cells"]
  for cell in nb["cells"]:
    assert cell["cell_type"] in {"markdown", "code", "raw"}
    assert isinstance(cell["metadata"], dict)
    assert isinstance(cell["source"], (str, list))
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [] and cell["execution_count"] is None, "commit notebooks without outputs"
  code = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "code")
  compile("\n".join(l for l in code.splitlines() if not l.lstrip().startswith(("!", "%"))),
          str(path), "exec")


def test_quickstart_shows_what_it_promises():
  nb = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text(encoding="utf-8"))
  code = "\n".join(_source(c) for c in nb["cells"] if c["cell_type"] == "code")
  for needle in ["pip install", "jopt.adam(", "schedule", "jopt.training",
                 "jopt.set_hyperparams(", "optax.clip_by_global_norm(", "optax.chain("]:
    assert needle in code, needle


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_code_cells_run_in_order(path):
  pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu",
             JAX_NUMPY_DTYPE_PROMOTION="strict")
  try:
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(path)], cwd=path.parent, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  except subprocess.TimeoutExpired:
    pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s")
  assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
  assert "NOTEBOOK OK" in proc.stdout
