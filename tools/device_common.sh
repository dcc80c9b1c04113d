# Sourced by tools/device_check.sh and tools/device_study.sh: their arguments, their output folder and the card.

device_args() {  # device_args SCRIPT ARGS...: SMOKE=1 with --smoke, else 0; --help prints SCRIPT's header
    local script=$1 arg
    shift
    SMOKE=0
    for arg in "$@"; do
        case $arg in
            --smoke) SMOKE=1 ;;
            -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$script"; exit 0 ;;
            *) echo "$(basename "$script"): unknown argument $arg (see --help)" >&2; exit 2 ;;
        esac
    done
}

device_out() {  # device_out SCRIPT: OUT (default ./device-out) made absolute; it must be new or empty, since
    # a run directory is never overwritten and the summary starts afresh
    OUT=${OUT:-./device-out}
    mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
    if [[ -n $(ls -A "$OUT") ]]; then
        echo "$(basename "$1"): $OUT is not empty; remove it or set OUT to a new folder" >&2; exit 2
    fi
}

card() {  # the GPU, its driver, and the python, torch and CUDA versions ($PY runs python)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: none (no NVIDIA driver on this machine)"
    "$PY" - <<'EOF'
import os, platform, sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs, {torch.cuda.device_count()} visible")
else:
    print("device: no CUDA device visible to torch")
print(f"host {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}")
EOF
}
