#!/usr/bin/env bash
# The GPU bundle's one command (copied into the bundle as run_gpu.sh by
# `python -m normexp.gpu_bundle build`). Needs python3 with PyTorch and numpy; brings Hydra,
# OmegaConf and the rest as wheels, reaches no network, tracks nothing (W&B off).
#   bash run_gpu.sh                      both parts at the anchors' scale on the GPU
#   bash run_gpu.sh --smoke --device cpu the same path at smoke scale, on the CPU
#   bash run_gpu.sh --help               every option (budget, results folder, jobs)
# Checks every file against MANIFEST.json first, then unpacks the data and the wheels under
# work/, calibrates, trains, and packs the runs into gpu_results.tar.gz ($OUT when set).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$HERE/code${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m normexp.gpu_bundle run --bundle "$HERE" "$@"
