r"""The pipeline's evaluation report: one row per stage (plus the start), per-layer tables.

A :class:`Report` is plain typed data (dataclasses of numbers and strings): it
round-trips through JSON (:meth:`Report.to_json` / :meth:`Report.from_json`, no
pickle), renders as a Markdown table (:meth:`Report.to_markdown`) and as a plot
of accuracy against bytes, one point per stage, log x axis (:meth:`Report.plot`);
:meth:`Report.save` writes ``report.json``, ``report.md`` and ``report.png``.

Every number comes from the stored model of its stage (masks applied, weights
quantized and dequantized): accuracy and loss on ``data.test``, bytes in the
smallest honest format per leaf (:mod:`jopt.pipeline.storage`), latency as the
median wall time of one jitted forward pass of the dequantized dense model on
a fixed batch on the CPU (:func:`jopt.training.compression_lab.measure_latency`;
sparsity and quantization do not speed that forward pass up: it measures the
architecture, e.g. a smaller distilled student).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

__all__ = ["LayerReport", "StageReport", "Report"]


@dataclasses.dataclass(frozen=True)
class LayerReport:
  """One leaf of one stage: path, shape, sparsity, bits (None = float), storage format, bytes."""

  path: str
  shape: tuple[int, ...]
  params: int
  nonzeros: int
  sparsity: float
  bits: int | None
  format: str
  bytes: int


@dataclasses.dataclass(frozen=True)
class StageReport:
  """One row of the report: a stage's stored model, evaluated.

  Attributes:
    index: 0 for the start row, ``i`` for the i-th stage.
    name: the stage's label (``"start"`` for the start row).
    kind: ``"start"``, ``"prune"``, ``"train"``, ``"quantize"`` or ``"distill"``.
    accuracy: top-1 test accuracy, percent.
    loss: mean test cross-entropy.
    params: parameter count (all leaves).
    nonzeros: non-zero stored values (all leaves).
    bytes: total stored bytes.
    compression: ``start bytes / bytes``.
    latency_ms: median CPU latency of one forward pass on ``latency_batch`` examples.
    seconds: wall time of the stage (training, quantization and evaluation).
    layers: the per-leaf :class:`LayerReport` rows.
  """

  index: int
  name: str
  kind: str
  accuracy: float
  loss: float
  params: int
  nonzeros: int
  bytes: int
  compression: float
  latency_ms: float
  seconds: float
  layers: tuple[LayerReport, ...]

  @property
  def sparsity(self) -> float:
    """The fraction of zero stored values, ``1 - nonzeros / params``."""
    return 1.0 - self.nonzeros / self.params if self.params else 0.0

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["layers"] = [dict(dataclasses.asdict(r), shape=list(r.shape)) for r in self.layers]
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "StageReport":
    layers = tuple(LayerReport(**dict(r, shape=tuple(r["shape"]))) for r in d["layers"])
    return cls(**dict(d, layers=layers))


def _size(n: int) -> str:
  for unit, scale in (("MB", 1e6), ("kB", 1e3)):
    if n >= scale:
      return f"{n / scale:.2f} {unit}"
  return f"{n} B"


@dataclasses.dataclass
class Report:
  r"""The report of a pipeline run: ``stages[0]`` is the start, ``stages[i]`` the i-th stage.

  .. math:: \text{compression}_i = B_0 / B_i

  Attributes:
    stages: the :class:`StageReport` rows.
    meta: run facts (seed, batch size, latency batch, device, jopt version).
    model: the final :class:`jopt.pipeline.CompressedModel` (not serialized;
      None for a report read back from JSON).

  Example:
    >>> import os, tempfile
    >>> from jopt import pipeline as pl
    >>> def apply(params, x):
    ...   return x @ params["w"] + params["b"]
    >>> params = {"w": jax.random.normal(jax.random.key(0), (16, 4)), "b": jnp.ones(4)}
    >>> x = np.asarray(jax.random.normal(jax.random.key(1), (32, 16)))
    >>> data = pl.Data(train=(x, x[:, :4].argmax(1)), test=(x, x[:, :4].argmax(1)))
    >>> report = pl.run(pl.Model(apply, params), [pl.Quantize(bits=4, method="kmeans")],
    ...                 data, batch_size=32, progress=False)
    >>> [(row.name, row.bytes) for row in report.stages]
    [('start', 272), ('quantize', 112)]

    The start stores 68 float32 values (272 B); after ``Quantize`` the kernel is 32 B of
    4-bit codes plus a 16-entry float32 codebook (64 B), the bias stays float32 (16 B).

    >>> round(report.stages[-1].compression, 4)          # 272 / 112
    2.4286
    >>> with tempfile.TemporaryDirectory() as out_dir:
    ...   paths = report.save(out_dir)                    # report.json, report.md, report.png
    ...   sorted(os.listdir(out_dir))
    ['report.json', 'report.md', 'report.png']
    >>> pl.Report.from_json(report.to_json()) == report  # plain data, no pickle
    True

  Reference: the per-stage tables of Han et al., *Deep Compression*, ICLR 2016
  (Tables 1 and 2).
  """

  stages: list[StageReport]
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)
  model: Any = dataclasses.field(default=None, compare=False, repr=False)

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready data: ``{"meta": ..., "stages": [...]}``."""
    return {"meta": dict(self.meta), "stages": [s.to_dict() for s in self.stages]}

  def to_json(self) -> str:
    """The report as a JSON string (:meth:`from_json` reads it back, equal)."""
    return json.dumps(self.to_dict(), indent=1)

  @classmethod
  def from_json(cls, text: str) -> "Report":
    """A :class:`Report` from :meth:`to_json`'s output (``model`` is None)."""
    d = json.loads(text)
    return cls([StageReport.from_dict(s) for s in d["stages"]], d.get("meta", {}))

  def to_markdown(self, layers: bool = True) -> str:
    """A Markdown summary table (one row per stage) and, with ``layers``, each stage's leaf table."""
    head = ("| # | stage | kind | accuracy % | loss | params | non-zeros | sparsity | bytes"
            " | × smaller | latency ms | seconds |")
    lines = [head, "|" + "---|" * 12]
    for s in self.stages:
      lines.append(f"| {s.index} | {s.name} | {s.kind} | {s.accuracy:.2f} | {s.loss:.4f} |"
                   f" {s.params} | {s.nonzeros} | {100 * s.sparsity:.1f}% | {s.bytes}"
                   f" ({_size(s.bytes)}) | {s.compression:.1f} | {s.latency_ms:.3f} |"
                   f" {s.seconds:.1f} |")
    b = self.meta.get("latency_batch")
    lines.append("")
    lines.append(f"Bytes: the smallest honest format per leaf. Latency: median CPU time of one"
                 f" jitted forward pass of the dequantized dense model"
                 f"{f' on a batch of {b}' if b else ''}.")
    if layers:
      for s in self.stages:
        lines += ["", f"### {s.index}. {s.name} ({s.kind})", "",
                  "| leaf | shape | sparsity | bits | format | bytes |", "|---|---|---|---|---|---|"]
        for r in s.layers:
          shape = "×".join(str(d) for d in r.shape) or "scalar"
          bits = "float" if r.bits is None else str(r.bits)
          lines.append(f"| {r.path} | {shape} | {100 * r.sparsity:.1f}% | {bits} |"
                       f" {r.format} | {r.bytes} |")
    return "\n".join(lines) + "\n"

  def plot(self, path: str) -> str:
    """Write accuracy against bytes (log x), one labelled point per stage, as a PNG; returns ``path``."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs = [s.bytes for s in self.stages]
    ys = [s.accuracy for s in self.stages]
    ax.plot(xs, ys, "-", color="0.7", zorder=1)
    ax.scatter(xs, ys, zorder=2)
    for s in self.stages:
      ax.annotate(f"{s.index}. {s.name}", (s.bytes, s.accuracy), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs. size, one point per stage")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

  def save(self, out_dir: str) -> dict[str, str]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"report.{k}") for k in ("json", "md", "png")}
    with open(paths["json"], "w", encoding="utf-8") as f:
      f.write(self.to_json())
    with open(paths["md"], "w", encoding="utf-8") as f:
      f.write(self.to_markdown())
    self.plot(paths["png"])
    return paths


for _cls in (LayerReport, StageReport, Report):
  _cls.__module__ = "jopt.pipeline"
