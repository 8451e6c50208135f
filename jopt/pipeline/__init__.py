"""The progressive compression pipeline: prune -> fine-tune -> quantize -> distill, with a report.

  >>> from jopt import pipeline as pl
  >>> model = pl.Model(apply=apply_fn, params=params)
  >>> data = pl.Data(train=(x, y), test=(x_test, y_test))
  >>> report = pl.run(model, [pl.Prune(sparsity=0.95, steps=3000), pl.Train(steps=500),
  ...                         pl.Quantize(bits=5, method="kmeans"),
  ...                         pl.Distill(steps=1000, temperature=4.0, alpha=0.7)],
  ...                 data, optimizer=jopt.adam(1e-3), out_dir="jopt-out")
  >>> report.save("jopt-out")      # report.json, report.md, report.png

Stages are data (reorder, repeat or drop them); the pipeline carries the
current model, its float params, masks and quantization spec; every row of the
report evaluates the stored model (masks applied, weights quantized and
dequantized) and counts its bytes in the smallest honest format per leaf.
"""

from jopt.pipeline.compressed import (
    CompressedModel as CompressedModel,
    QuantSpec as QuantSpec,
)
from jopt.pipeline.data import Data as Data
from jopt.pipeline.model import Model as Model
from jopt.pipeline.report import (
    LayerReport as LayerReport,
    Report as Report,
    StageReport as StageReport,
)
from jopt.pipeline.run import run as run
from jopt.pipeline.stages import (
    Distill as Distill,
    Prune as Prune,
    Quantize as Quantize,
    Stage as Stage,
    Train as Train,
)
from jopt.pipeline.storage import (
    LeafStorage as LeafStorage,
    leaf_storage as leaf_storage,
    tree_storage as tree_storage,
)

__all__ = [
    "run",
    "Model",
    "Data",
    "Stage",
    "Prune",
    "Train",
    "Quantize",
    "Distill",
    "Report",
    "StageReport",
    "LayerReport",
    "CompressedModel",
    "QuantSpec",
    "LeafStorage",
    "leaf_storage",
    "tree_storage",
]
