#!/usr/bin/env bash
# The one script to run when a GPU machine is lent: card and versions, the GPU tests and the core's
# tests on CUDA, bench_core at ImageNet-LT size on CUDA, then the default test suite with the GPU
# visible (nctools' device="auto" picks it). Everything goes under $OUT (default ./device-out).
# Each step has its own time limit so the whole call ends within about 8 minutes.
#
#   mkdir -p .cache && cp <cifar10-jpeg.tar.gz> .cache/   # the tests' offline CIFAR-10 copy (git-ignored)
#   OUT=/tmp/out bash benchmarks/device_check.sh [--smoke]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./device-out}
mkdir -p "$OUT"
SMOKE=0; [[ "${1:-}" == "--smoke" ]] && SMOKE=1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
[[ -f .cache/cifar10-jpeg.tar.gz ]] && export NCTOOLS_CIFAR10_TARBALL=$PWD/.cache/cifar10-jpeg.tar.gz

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output, say how it ended
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt"
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
} | tee "$OUT/card.txt"
# The entry points (checkpoint readers) need the package installed; without network, no build isolation.
$PY -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.txt" 2>&1 || export PYTHONPATH=$PWD

if [[ $SMOKE == 1 ]]; then
    step core_tests 300 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_functional.py
    step bench_core 120 $PY benchmarks/bench_core.py --n 5000 --dim 64 --classes 20 --repeat 1 --no-textbook
    exit 0
fi
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
step core_tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_functional.py \
    tests/test_reducer.py tests/test_bruteforce_twins.py tests/test_hostile_core.py tests/test_inputs.py
step bench_core 100 $PY benchmarks/bench_core.py --device "$DEVICE" --n 100000 --dim 2048 --classes 1000 --no-textbook
step full_suite 220 $PY -m pytest -q -p no:cacheprovider --timeout 120 -m "not slow"
cat "$OUT/summary.txt"
