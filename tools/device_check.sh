#!/usr/bin/env bash
# The one script to run when a GPU machine is lent: one call of at most 9 minutes on one GPU, everything
# written under $OUT (default ./device-out). The steps, in this order, each with its own time limit, and all
# within one budget of BUDGET seconds from the start (default 520): a step gets min(its limit, time left) and
# is skipped once the budget is spent. A failing step does not stop the others; summary.txt reports it.
#
#   card         GPU name, memory, driver; python, torch, CUDA versions                 -> card.txt
#   install      pip install -e . (no deps, no network): the entry points                -> install.txt
#   gpu_tests    pytest -m gpu                                                           -> gpu_tests.txt
#   core_tests   the core's tests with the GPU visible (device="auto" picks it)           -> core_tests.txt
#   bench_core   bench_core.py on CUDA, N=100k d=2048 C=1000 (target <= 0.15 s, H100/H200) -> bench_core.txt
#   bench_train  bench_train.py --device cuda --json: one JSON line per method           -> bench_train.jsonl
#   data         the CIFAR-10 JPEGs: $CIFAR_ROOT, else .cache/cifar10/ (or experiments/reproduce_paper.py's
#                .cache/cifar10-jpeg/), else extracted into .cache/cifar10/ once (timed) from
#                .cache/cifar10-jpeg.tar.gz (or $NCTOOLS_CIFAR10_TARBALL)                -> data.txt
#   runs         the six CIFAR-10-LT beta=100 200-epoch runs, PARALLEL at a time on the one GPU, until the
#                deadline; runs still going are then killed (SIGTERM, then SIGKILL) and keep their last
#                checkpoint (resume: allnc-train --out DIR --resume); finished runs lose theirs
#                                                      -> runs/NAME/ (run.json, dumps/), runs/status.json
#   track        nctools track of each run with dumps                                   -> runs/NAME/track/
#   results      final eval top1, many/medium/few, wall times against the targets       -> results.csv
#   pack         all of $OUT in device-check.tar.gz (15 MiB parts when larger), intermediate dumps left out
# summary.txt: every step with its exit status, seconds and limit, or why it was skipped; then the runs
# (finished, cut at which epoch, skipped and why) and the benchmark figures.
# Targets on one H200: bench_core <= 0.15 s; cifar10_lt_r100_ce 200 epochs <= 90 s, allnc <= 4 min.
#
# On a lent GPU machine, from the repository root. The tarball lives in the git-ignored .cache/, so the
# caller copies it there first and has the call carry it along (carry: [".cache/cifar10-jpeg.tar.gz"]: the
# file alone, since an extracted copy beside it in .cache/ would exceed what a call may carry):
#   mkdir -p .cache && cp ../shared/data/cifar10-jpeg.tar.gz .cache/
#   bash tools/device_check.sh                       # give the call about 560 s
# The lending tool brings back at most 8 files, 2 folders down, so without --smoke PACK=1 is the default:
# $OUT keeps summary.txt, card.txt, results.csv, bench_train.jsonl, bench_core.txt and the archive alone.
# Unpack the rest with: cat device-check.tar.gz* | tar -xz
#
#   bash tools/device_check.sh --smoke               # the same steps on the CPU, tiny sizes, about a minute
#
# Environment: OUT, BUDGET, PYTHON (default python3), CIFAR_ROOT (an extracted CIFAR-10 folder: nothing is
# extracted), NCTOOLS_CIFAR10_TARBALL, PARALLEL (runs at a time), RUNS (config names, in order), DUMP_EVERY,
# WORKERS (data.num_workers per run), PACK (1: prune $OUT to the top files and the archive).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

SMOKE=0
for arg in "$@"; do
    case $arg in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

OUT=${OUT:-./device-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
if [[ -n $(ls -A "$OUT") ]]; then  # a run directory is never overwritten, and the summary starts afresh
    echo "device_check.sh: $OUT is not empty; remove it or set OUT to a new folder" >&2; exit 2
fi
PY=${PYTHON:-python3}
CORES=$(nproc 2>/dev/null || echo 2)
export OUT PY PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[[ -f .cache/cifar10-jpeg.tar.gz ]] && export NCTOOLS_CIFAR10_TARBALL=$PWD/.cache/cifar10-jpeg.tar.gz

# The six runs, the most informative first (with 3 at a time, the first three start together):
#  1. cifar10_lt_r100_ce     the baseline every other number is read against, and the 90 s speed target;
#  2. cifar10_lt_r100_allnc  the method under study and the 4 min target; the longest run (views + 1 forward
#                            passes per image), so it starts at once to have a chance to finish;
#  3. cifar10_balanced_ce    collapse without imbalance: the reference geometry for every NC metric; 4x the
#                            images per epoch, so likely cut, but its dumps up to then still count;
#  4. cifar10_lt_r100_etf    the NC-optimal (simplex-ETF) classifier imposed: the direct contrast to AllNC;
#  5. cifar10_lt_r100_la     logit adjustment, a loss-side fix at CE's cost: usually finishes when it starts;
#  6. cifar10_lt_r100_bbn    BBN, AllNC's GBBN branch alone: an ablation AllNC largely covers, and 2 passes
#                            per image, the most expensive of the rest.
RUNS=${RUNS:-cifar10_lt_r100_ce cifar10_lt_r100_allnc cifar10_balanced_ce cifar10_lt_r100_etf cifar10_lt_r100_la
cifar10_lt_r100_bbn}
if [[ $SMOKE == 1 ]]; then
    MODE=smoke DEVICE=cpu BUDGET=${BUDGET:-300} PARALLEL=${PARALLEL:-2} WORKERS=${WORKERS:-0} PACK=${PACK:-0}
    # A train-set dump every 40 epochs would never come; epoch 1 is the last, and the last always dumps.
    DUMP_EVERY=${DUMP_EVERY:-1} MAX_RUNS=2 MIN_START=5 GRACE=3 THREADS=1 AFTER_RUNS=45 END_RESERVE=15
else
    MODE=gpu DEVICE=cuda BUDGET=${BUDGET:-520} PARALLEL=${PARALLEL:-3} PACK=${PACK:-1}
    # data.num_workers: used by data.pipeline=loader only; CIFAR runs take the batched on-device pipeline
    WORKERS=${WORKERS:-$(( CORES / PARALLEL > 4 ? 4 : CORES / PARALLEL ))}
    # Dumps and evaluations every 40 epochs: 5 points for the track curves (epochs 40..200), 1.6 MB per train
    # dump (12,406 x 64 float16) and 6.4 MB on the balanced set; the test-set dumps are off, which halves that.
    DUMP_EVERY=${DUMP_EVERY:-40} MAX_RUNS=99 MIN_START=60 GRACE=8 THREADS=$(( CORES > PARALLEL ? CORES / PARALLEL : 1 ))
    AFTER_RUNS=50   # seconds kept after the runs for track (30) and results (15), and a margin
    END_RESERVE=20  # seconds no other step may take: the pack step, which brings the results back
fi
START=$SECONDS
SUMMARY=$OUT/summary.txt
FAILED=()

left() { echo $(( BUDGET - (SECONDS - START) )); }
note() { echo "$*" | tee -a "$SUMMARY"; }
skip() { note "step $1: skipped ($2)"; }

step() {  # step NAME LIMIT COMMAND...: COMMAND within min(LIMIT, time left); its output in $OUT/NAME.txt
    # (the time left keeps END_RESERVE seconds for the pack step, which passes RESERVE=0)
    local name=$1 limit=$2 remaining log=${LOG:-$OUT/$1.txt}; shift 2
    remaining=$(( $(left) - ${RESERVE:-$END_RESERVE} - 5 ))
    (( limit > remaining )) && limit=$remaining
    if (( limit < 5 )); then skip "$name" "the budget is spent: $(left) s of $BUDGET s left"; return 0; fi
    echo "== $name (limit $limit s): $*"
    local t0=$SECONDS rc
    timeout -k 5 "$limit" "$@" > "$log" 2>&1
    rc=$?
    tail -n 12 "$log"
    local why=""
    (( rc == 124 || rc == 137 )) && why=" (stopped at its time limit)"
    note "step $name: exit $rc after $(( SECONDS - t0 )) s (limit $limit s)$why"
    (( rc == 0 )) || FAILED+=("$name")
    return "$rc"
}

card() {
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

find_cifar() {  # the folder holding train/ and test/ (the archive may wrap them in one top-level folder):
    # $CIFAR_ROOT alone when set, else ours (.cache/cifar10), else experiments/reproduce_paper.py's complete one
    local base d
    if [[ -n ${CIFAR_ROOT:-} ]]; then set -- "$CIFAR_ROOT"; else set -- .cache/cifar10
        [[ -f .cache/cifar10-jpeg/.complete ]] && set -- "$@" .cache/cifar10-jpeg
    fi
    for base in "$@"; do
        for d in "$base" "$base"/*/; do
            if [[ -d $d/train && -d $d/test ]]; then (cd "$d" && pwd); return 0; fi
        done
    done
    return 1
}

prepare_cifar() {
    if [[ -n ${CIFAR_ROOT:-} ]]; then
        find_cifar > /dev/null || { echo "CIFAR_ROOT=$CIFAR_ROOT holds no train/ and test/ folders"; return 2; }
        echo "using $(find_cifar) (from CIFAR_ROOT, nothing extracted)"; return 0
    fi
    if find_cifar > /dev/null; then echo "using $(find_cifar), extracted before"; return 0; fi
    local tarball=.cache/cifar10-jpeg.tar.gz
    [[ -f $tarball ]] || tarball=${NCTOOLS_CIFAR10_TARBALL:-}
    rm -rf .cache/cifar10 .cache/cifar10.partial && mkdir -p .cache/cifar10.partial &&
        tar -xzf "$tarball" -C .cache/cifar10.partial && mv .cache/cifar10.partial .cache/cifar10 &&
        echo "extracted $tarball into $(find_cifar)"
}
export -f card find_cifar prepare_cifar

note "device_check.sh ($MODE) started $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname): budget $BUDGET s, OUT=$OUT"

# 1. The card and the versions.
step card 30 bash -c card

# 2. The GPU tests and the core's tests.
if [[ $SMOKE == 1 ]]; then
    skip install "smoke: the code is read through PYTHONPATH, the environment is left alone"
    step gpu_tests 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/nctools/core/test_gpu.py
    step core_tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/nctools/core/test_reducer.py \
        tests/nctools/core/test_inputs.py
else
    # The entry points (checkpoint readers, console scripts) need the package installed; no network, so no
    # build isolation and no dependencies. Without it the code is still read through PYTHONPATH.
    step install 60 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
        || note "warning: torch sees no CUDA device; the CUDA steps below will fail"
    step gpu_tests 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu
    XDIST=()
    "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 8)
    step core_tests 120 "$PY" -m pytest -q -p no:cacheprovider "${XDIST[@]}" tests/nctools/core/test_functional.py \
        tests/nctools/core/test_reducer.py tests/nctools/core/test_bruteforce_twins.py \
        tests/nctools/core/test_hostile_core.py tests/nctools/core/test_inputs.py
fi

# 3. bench_core on the device.
if [[ $SMOKE == 1 ]]; then
    step bench_core 60 "$PY" benchmarks/bench_core.py --device cpu --n 5000 --dim 64 --classes 20 --repeat 1 \
        --no-textbook
else
    step bench_core 100 "$PY" benchmarks/bench_core.py --device cuda --n 100000 --dim 2048 --classes 1000 \
        --no-textbook
fi

# 4. bench_train: the JSON lines (stdout) in bench_train.jsonl, the rest in bench_train.txt.
if [[ $SMOKE == 1 ]]; then
    TRAIN_ARGS=(--device cpu --steps 1 --batch-size 8 --threads 1 --data-batches 1 --json)
else
    TRAIN_ARGS=(--device cuda --json)
fi
step bench_train 90 bash -c '"$PY" benchmarks/bench_train.py "$@" > "$OUT/bench_train.jsonl"' bench_train \
    "${TRAIN_ARGS[@]}"

# 5. The CIFAR-10-LT runs, their tracks and their results.
ROOT=""
if [[ -z ${CIFAR_ROOT:-} ]] && ! find_cifar > /dev/null && [[ ! -f .cache/cifar10-jpeg.tar.gz ]] \
        && [[ ! -f ${NCTOOLS_CIFAR10_TARBALL:-} ]]; then
    skip data "no CIFAR-10 images: no CIFAR_ROOT, no .cache/cifar10/, no .cache/cifar10-jpeg.tar.gz and no \
NCTOOLS_CIFAR10_TARBALL; before the call: mkdir -p .cache && cp ../shared/data/cifar10-jpeg.tar.gz .cache/"
elif step data 90 bash -c prepare_cifar; then
    ROOT=$(find_cifar)
fi
if [[ -z $ROOT ]]; then
    for name in runs track results; do skip "$name" "no CIFAR-10 images (see the data step)"; done
else
    SETS=("data.root=$ROOT" "run.device=$DEVICE" run.progress=false run.dump_dtype=float16
          "run.dump_every=$DUMP_EVERY" "run.eval_every=$DUMP_EVERY" run.dump_test=false run.keep_checkpoints=1
          "data.num_workers=$WORKERS")
    # Smoke: one epoch on a tiny subset (n_max 20 at beta 10 keeps >= 2 images in every class; 50 test images).
    [[ $SMOKE == 1 ]] && SETS+=(data.n_max=20 data.imbalance_ratio=10 data.test_per_class=5 optim.epochs=1)
    LIMIT=$(( $(left) - END_RESERVE - 5 - AFTER_RUNS ))
    # shellcheck disable=SC2086  # RUNS is a list of names
    step runs "$LIMIT" "$PY" -m experiments.gpu_runs train --out "$OUT/runs" --seconds $(( LIMIT - GRACE - 7 )) \
        --parallel "$PARALLEL" --max-runs "$MAX_RUNS" --min-start "$MIN_START" --grace "$GRACE" \
        --threads "$THREADS" --configs $RUNS --set "${SETS[@]}"
    step track 30 "$PY" -m experiments.gpu_runs track --out "$OUT/runs" --seconds 25 --device "$DEVICE"
    step results 15 "$PY" -m experiments.gpu_runs results --out "$OUT/runs" --csv "$OUT/results.csv"
fi

# 6. The summary: the runs and the figures, then the archive.
{
    echo "== runs (results.csv)"
    if [[ -f $OUT/results.txt ]]; then cat "$OUT/results.txt"; else echo "no runs"; fi
    echo "== figures"
    TARGET=""
    [[ $SMOKE == 0 ]] && TARGET=" (target <= 0.15 s on an H100/H200)"
    awk -F'|' -v t="$TARGET" '/nctools.analyze/ {gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $3);
        print "bench_core: " $2 ": " $3 t; found = 1; exit} END {if (!found) print "bench_core: no figure"}' \
        "$OUT/bench_core.txt" 2>/dev/null || echo "bench_core: no figure (no bench_core.txt)"
    sed 's/^/bench_train: /' "$OUT/bench_train.jsonl" 2>/dev/null
} >> "$SUMMARY"
PACK_ARGS=()
[[ $PACK == 1 ]] && PACK_ARGS=(--prune)
PACK_LOG=$(mktemp)  # outside $OUT: the archive is all that stays there besides the top files
LOG=$PACK_LOG RESERVE=0 step pack "$END_RESERVE" "$PY" -m experiments.gpu_runs pack --out "$OUT" "${PACK_ARGS[@]}"
grep -E "^(packed|pruned|warning)" "$PACK_LOG" >> "$SUMMARY"
rm -f "$PACK_LOG"
if [[ ${#FAILED[@]} -eq 0 ]]; then
    note "done after $(( SECONDS - START )) s of the $BUDGET s budget: every step that ran exited 0"
else
    note "done after $(( SECONDS - START )) s of the $BUDGET s budget: failed: ${FAILED[*]}"
fi
echo "== summary.txt"
cat "$SUMMARY"
[[ ${#FAILED[@]} -eq 0 ]]
