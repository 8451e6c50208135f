"""Every notebook under notebooks/ is valid nbformat-4 JSON and runs top to bottom.

Each notebook runs in a child process (fresh JAX, strict dtype promotion, warnings
as errors, no screen, a hard timeout) with the notebook's folder as working
directory, as Jupyter would. The child executes the committed file as it is:
every code cell, in order, verbatim. Nothing is skipped, so notebooks hold no
shell or magic lines (``!pip``, ``%time``); they install what they need in
plain Python, which Colab, Jupyter and this runner all execute.
"""

import functools
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
REGULARIZATION = ROOT / "notebooks" / "regularization.ipynb"
COMPRESSION = ROOT / "notebooks" / "compression.ipynb"
TIMEOUT_S = 120   # the quick start takes a few seconds on 2 CPU cores; this only stops a hang
COLAB_BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"
DEFAULT_BRANCH = "main"

# Runs in the child: exec each code cell verbatim in one namespace, naming the cell in
# tracebacks; report each cell run, every figure left open (rendered to PNG first), and
# the SHA-256 of the bytes that were executed.
_RUNNER = """
import hashlib, io, json, sys, time
path = sys.argv[1]
with open(path, "rb") as f:
    raw = f.read()
nb = json.loads(raw)
ns = {"__name__": "__main__"}
for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
        continue
    src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    start = time.perf_counter()
    exec(compile(src, f"{path} [code cell {i}]", "exec"), ns)
    print(f"@@ ran code cell {i} in {time.perf_counter() - start:.2f} s", flush=True)
plt = sys.modules.get("matplotlib.pyplot")
for num in plt.get_fignums() if plt is not None else []:
    fig = plt.figure(num)
    fig.savefig(io.BytesIO(), format="png")
    axes = [{"title": ax.get_title(), "points": [len(line.get_xdata()) for line in ax.get_lines()]}
            for ax in fig.axes]
    print("@@ figure " + json.dumps({"backend": plt.get_backend().lower(), "axes": axes}))
print("@@ NOTEBOOK OK " + hashlib.sha256(raw).hexdigest())
"""


def _source(cell) -> str:
  src = cell["source"]
  return src if isinstance(src, str) else "".join(src)


def _load(path: pathlib.Path) -> dict:
  return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb) -> list[tuple[int, str]]:
  return [(i, _source(c)) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def _repository_url() -> str:
  with open(ROOT / "pyproject.toml", "rb") as f:
    return tomllib.load(f)["project"]["urls"]["Repository"]


def _install_cell(nb) -> str:
  cells = [src for _, src in _code_cells(nb) if "def find_checkout(" in src]
  assert len(cells) == 1, "expected exactly one install cell (the one defining find_checkout)"
  return cells[0]


@functools.cache
def _execute(path: pathlib.Path):
  """Run the notebook in a child process once per session: (proc, wall seconds)."""
  pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
  env.update(PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", JAX_NUMPY_DTYPE_PROMOTION="strict",
             MPLBACKEND="Agg",
             JOPT_NOTEBOOK_FAST="1")   # notebooks that read it shrink their runs (Colab: full size)
  start = time.perf_counter()
  try:
    proc = subprocess.run([sys.executable, "-W", "error", "-c", _RUNNER, str(path)],
                          cwd=path.parent, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
  except subprocess.TimeoutExpired:
    pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s")
  return proc, time.perf_counter() - start


def test_there_is_a_quickstart_notebook():
  assert QUICKSTART in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_valid_nbformat_4(path):
  nb = _load(path)
  assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
  assert isinstance(nb["metadata"], dict) and nb["cells"]
  for cell in nb["cells"]:
    assert cell["cell_type"] in {"markdown", "code", "raw"}
    assert isinstance(cell["metadata"], dict)
    assert isinstance(cell["source"], (str, list))
    if cell["cell_type"] == "code":
      assert cell["outputs"] == [] and cell["execution_count"] is None, "commit notebooks without outputs"
  for i, src in _code_cells(nb):
    compile(src, f"{path} [code cell {i}]", "exec")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_passes_nbformat_validation(path):
  import nbformat  # pylint: disable=import-outside-toplevel  (a test extra)
  nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_no_shell_or_magic_lines(path):
  # The runner executes every line; a `!` or `%` line would be a SyntaxError there and
  # would hide an install step from the tests.
  for i, src in _code_cells(_load(path)):
    for line in src.splitlines():
      assert not line.lstrip().startswith(("!", "%")), f"code cell {i}: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_colab_badge_points_at_the_notebook_in_the_repository(path):
  repo = _repository_url()
  prefix = "https://github.com/"
  assert repo.startswith(prefix), repo
  owner_name = repo[len(prefix):].strip("/").removesuffix(".git")
  assert owner_name.count("/") == 1, repo
  expected = (f"https://colab.research.google.com/github/{owner_name}/blob/{DEFAULT_BRANCH}/"
              f"{path.relative_to(ROOT).as_posix()}")
  nb = _load(path)
  first = nb["cells"][0]
  assert first["cell_type"] == "markdown"
  assert f"[![Open In Colab]({COLAB_BADGE_SVG})]({expected})" in _source(first)
  # and no other Colab link anywhere in the notebook that could go stale
  text = "\n".join(_source(c) for c in nb["cells"])
  assert text.count("colab.research.google.com/github/") == text.count(expected)


def test_quickstart_shows_what_it_promises():
  nb = _load(QUICKSTART)
  code = "\n".join(src for _, src in _code_cells(nb))
  for needle in ['"-m", "pip", "install"', "git+", "def find_checkout(",   # install cell
                 "jax.devices()", "jax.default_backend()", "jax.device_count()",   # device check
                 "jopt.adam(", "schedule", "jopt.training",
                 "jopt.set_hyperparams(", "optax.clip_by_global_norm(", "optax.chain(",
                 "matplotlib", '"Agg"', "plt.show()"]:   # loss and accuracy curves
    assert needle in code, needle
  # the install cell installs from the repository that pyproject.toml names
  assert f'REPOSITORY = "{_repository_url()}"' in _install_cell(nb)


def _install_namespace(monkeypatch, cwd, *, jopt_importable):
  """Exec the quick start's install cell in `cwd` with pip stubbed out: (pip calls, namespace)."""
  calls = []
  real_jopt = __import__("jopt")

  def fake_check_call(cmd, *args, **kwargs):
    calls.append(list(cmd))
    sys.modules["jopt"] = real_jopt   # as if pip had installed it

  monkeypatch.setattr(subprocess, "check_call", fake_check_call)
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.setitem(sys.modules, "jopt", real_jopt if jopt_importable else None)
  monkeypatch.chdir(cwd)
  ns = {"__name__": "__main__"}
  exec(compile(_install_cell(_load(QUICKSTART)), "install cell", "exec"), ns)
  return [c for c in calls if "matplotlib" not in c], ns


def test_install_cell_does_nothing_when_jopt_is_importable(monkeypatch, capsys):
  calls, _ = _install_namespace(monkeypatch, QUICKSTART.parent, jopt_importable=True)
  assert calls == []
  assert "is already installed" in capsys.readouterr().out


def test_install_cell_installs_the_checkout_it_runs_in(monkeypatch, capsys):
  calls, _ = _install_namespace(monkeypatch, QUICKSTART.parent, jopt_importable=False)
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(ROOT)]]
  assert f"from the checkout {ROOT}" in capsys.readouterr().out


def test_install_cell_installs_from_the_repository_outside_a_checkout(monkeypatch, capsys, tmp_path):
  calls, _ = _install_namespace(monkeypatch, tmp_path, jopt_importable=False)
  assert calls == [[sys.executable, "-m", "pip", "install", "-q", f"git+{_repository_url()}"]]
  assert f"installing it from {_repository_url()}" in capsys.readouterr().out


def test_find_checkout_needs_a_pyproject_that_names_jopt(monkeypatch, tmp_path):
  _, ns = _install_namespace(monkeypatch, QUICKSTART.parent, jopt_importable=True)
  find_checkout = ns["find_checkout"]
  assert find_checkout() == ROOT
  assert find_checkout(ROOT) == ROOT
  assert find_checkout(ROOT / "jopt" / "training") == ROOT
  other = tmp_path / "other"
  (other / "sub").mkdir(parents=True)
  (other / "pyproject.toml").write_text('[project]\nname = "not-jopt"\n', encoding="utf-8")
  assert find_checkout(other / "sub") is None
  clone = tmp_path / "clone"
  (clone / "notebooks" / "deeper").mkdir(parents=True)
  (clone / "pyproject.toml").write_text('[project]\nname = "jopt"\n', encoding="utf-8")
  (clone / "notebooks" / "pyproject.toml").write_text("not [ toml", encoding="utf-8")
  assert find_checkout(clone / "notebooks" / "deeper") == clone.resolve()
  assert find_checkout(str(clone)) == clone.resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path):
  proc, _ = _execute(path)
  assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
  lines = proc.stdout.splitlines()
  ran = [int(l.split()[4]) for l in lines if l.startswith("@@ ran code cell ")]
  assert ran == [i for i, _ in _code_cells(_load(path))], "every code cell, in order"
  assert lines[-1] == "@@ NOTEBOOK OK " + hashlib.sha256(path.read_bytes()).hexdigest(), \
      "the child ran the committed file, unchanged"


def test_quickstart_run_takes_the_installed_branch_and_draws_both_curves():
  proc, seconds = _execute(QUICKSTART)
  assert proc.returncode == 0, proc.stderr[-6000:]
  out = proc.stdout
  # jopt is importable here (this checkout on PYTHONPATH): the install cell installs nothing
  assert f"is already installed: {ROOT / 'jopt'}" in out and "installing" not in out
  assert "default backend:   cpu" in out and "A CPU is fine" in out
  figures = [json.loads(l[len("@@ figure "):]) for l in out.splitlines() if l.startswith("@@ figure ")]
  assert len(figures) == 1, figures
  assert figures[0]["backend"] == "agg"
  axes = {ax["title"]: ax["points"] for ax in figures[0]["axes"]}
  assert set(axes) == {"Loss", "Accuracy"}
  assert len(axes["Loss"]) >= 2 and len(axes["Accuracy"]) >= 2
  assert min(axes["Loss"] + axes["Accuracy"]) > 10, "curves over the whole run"
  print(f"quickstart.ipynb ran in {seconds:.1f} s")


def _figures(out: str) -> list[dict]:
  return [json.loads(l[len("@@ figure "):]) for l in out.splitlines() if l.startswith("@@ figure ")]


def test_regularization_notebook_shows_what_it_promises():
  nb = _load(REGULARIZATION)
  code = "\n".join(src for _, src in _code_cells(nb))
  for needle in ['os.environ.get("JOPT_NOTEBOOK_FAST")', "jopt.training", "lab_data(", "fit(",
                 '"penalty":',
                 "reg.l2_penalty", "jopt.adamw(", "reg.weights_mask", "reg.proximal_l1(",
                 "reg.early_stopping(", "restore_best=True", "dropout=", "batch_norm=True",
                 '"augment":', '"mixup_alpha":', '"dropout_bn"', '"bn_dropout"', "variance_shift(",
                 "aug.random_affine(", "aug.cutout(", "aug.mixup(", "imshow(", '"Agg"',
                 "plt.show()"]:
    assert needle in code, needle
  # the same install cell as the quick start, whose behaviour the tests above pin down
  assert _install_cell(nb) == _install_cell(_load(QUICKSTART))


def test_regularization_notebook_draws_its_curves_bars_and_gallery_in_fast_mode():
  proc, seconds = _execute(REGULARIZATION)
  assert proc.returncode == 0, proc.stderr[-6000:]
  out = proc.stdout
  assert "(fast mode)" in out, "the runner sets JOPT_NOTEBOOK_FAST=1"
  figures = _figures(out)
  assert len(figures) == 4 and {f["backend"] for f in figures} == {"agg"}, figures
  curves, gap, order = ({ax["title"]: ax["points"] for ax in f["axes"]} for f in figures[:3])
  regularizers = ["none", "L2 penalty", "weight decay (AdamW)", "L1 (proximal)", "dropout",
                  "batch norm", "early stopping", "augmentation", "mixup"]
  assert list(curves) == regularizers
  for name, points in curves.items():
    # train and validation curves (and the unregularized one for comparison), each with one
    # point per evaluation: 0, 20, ..., 120 in fast mode (fewer after an early stop)
    assert len(points) == (2 if name == "none" else 3) and min(points) >= 3, (name, points)
  assert curves["none"] == [7, 7] and list(gap) == ["Generalization gap (train - test accuracy)"]
  assert set(order) == {"Validation accuracy by order", "Variance shift per BN layer"}
  assert order["Validation accuracy by order"] == [7, 7]
  assert order["Variance shift per BN layer"] == [2]   # the line at 1 (the bars are patches)
  gallery_axes = figures[3]["axes"]
  assert len(gallery_axes) == 8 * 8   # 8 rows of ops, 8 digits each, drawn with imshow
  assert [ax["title"] for ax in gallery_axes[::8]] == [
      "original", "random_affine", "random_crop", "gaussian_noise", "cutout", "random_erasing",
      "mixup", "flip (wrong for digits)"]
  print(f"regularization.ipynb ran in {seconds:.1f} s (fast mode)")


def test_compression_notebook_shows_what_it_promises():
  nb = _load(COMPRESSION)
  code = "\n".join(src for _, src in _code_cells(nb))
  for needle in ['os.environ.get("JOPT_NOTEBOOK_FAST")', "compression_lab", "jopt.prune(",
                 "jopt.polynomial_sparsity_schedule(", "jopt.one_shot_sparsity_schedule(",
                 "jopt.iterative_sparsity_schedule(", 'scope="global"',
                 "jopt.prune.sparsity_report(", "jopt.quant.kmeans_1d(", "relative_index_nbytes(",
                 "imshow(", "hist(", '"Agg"', "plt.show()"]:
    assert needle in code, needle
  # the same install cell as the quick start, whose behaviour the tests above pin down
  assert _install_cell(nb) == _install_cell(_load(QUICKSTART))


def test_compression_notebook_draws_schedules_curve_heat_map_and_histograms_in_fast_mode():
  proc, seconds = _execute(COMPRESSION)
  assert proc.returncode == 0, proc.stderr[-6000:]
  out = proc.stdout
  assert "(fast mode)" in out, "the runner sets JOPT_NOTEBOOK_FAST=1"
  figures = _figures(out)
  assert len(figures) == 4 and {f["backend"] for f in figures} == {"agg"}, figures
  schedules, curve, heat, hist = ({ax["title"]: ax["points"] for ax in f["axes"]} for f in figures)
  assert schedules == {"Sparsity schedules": [300, 300, 300]}   # three schedules, every step
  assert curve == {"Test accuracy vs sparsity": [4, 2]}   # 4 targets, and the dense line
  assert "Per-layer sparsity (%) by global target" in heat and len(heat) == 2   # and its colorbar
  assert set(hist) == {"dense0 non-zero weights, before sharing",
                       "after 5-bit k-means sharing (31 values)"}
  assert "5-bit sharing:" in out and "x smaller" in out
  print(f"compression.ipynb ran in {seconds:.1f} s (fast mode)")
