#!/usr/bin/env bash
# The suite on a lent accelerator machine, in one call (see issue 3, part 4):
#   device run: bash benchmarks/on_device.sh
# Needs jax with the accelerator's plugin already installed there (nothing can be
# downloaded on that machine). Results land in $OUT (or benchmarks/) as
# results_<backend>.json and RESULTS_<backend>.md; copy them into the repo and
# name the card (it is printed in the header) in the closing note.
set -euo pipefail
out="${OUT:-benchmarks}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python -c "import jax; print(jax.__version__, jax.devices())"
backend=$(python -c "import jax; print(jax.default_backend())")
python -m benchmarks.suite --repeats 20 \
  --out "$out/results_${backend}.json" --markdown "$out/RESULTS_${backend}.md"
python -m benchmarks.parallel --out "$out"
