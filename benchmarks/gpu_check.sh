#!/usr/bin/env bash
# The GPU check in one command: the GPU tests, the per-layer benchmark (generic CuPy,
# our CUDA kernels, PyTorch+cuDNN), ResNet-50/101 at batch 64 and 128 in float32, TF32
# and mixed precision, and peak GPU memory. Writes report.md, CSVs and plots into OUT.
#
#   benchmarks/gpu_check.sh OUT              # on a CUDA GPU; under 8 minutes on an H200
#   benchmarks/gpu_check.sh OUT --dry-run    # NumPy and torch-CPU, tiny shapes: checks the steps
#   benchmarks/gpu_check.sh OUT --parts layers,models --budget 300
#
# Each part runs in processes of its own with a time limit (see resnet_np/bench/gpu.py);
# the whole command is killed after 470 s, and the report is written from whatever finished.
set -u
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT [--dry-run] [--parts pytest,layers,models] [--budget SECONDS]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout -k 10 470 python3 -m resnet_np.bench.gpu "$@"
