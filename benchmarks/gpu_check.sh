#!/usr/bin/env bash
# The GPU check in one command, at most 300 s in all: the kernels' tests, the kernels
# against the generic CuPy code at every timed layer shape, ResNet-50/101 at batch 64 and
# 128 in float32, TF32 and mixed precision against PyTorch+cuDNN (time, images/s, peak
# memory), every ResNet-50 layer shape, and compute-sanitizer on the kernels.
#
#   benchmarks/gpu_check.sh OUT              # on a CUDA GPU
#   benchmarks/gpu_check.sh OUT --dry-run    # every step on tiny shapes, under 2 minutes
#
# OUT gets three files: report.md, results.tar.gz (CSVs, plots, logs) and gpu_check.log.
# The parts share 250 s (see resnet_np/bench/gpu.py); the whole is killed at 290 s.
set -u -o pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 OUT [--dry-run] [--parts tests,check,models,layers,sanitizer]" >&2
    exit 2
fi
mkdir -p "$1" && out="$(cd "$1" && pwd)" || exit 2
shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout -k 10 280 python3 -m resnet_np.bench.gpu "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
