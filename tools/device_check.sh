#!/usr/bin/env bash
# The one script to run when a GPU machine is lent: one call of at most 9 minutes on one GPU, everything
# written under $OUT (default ./device-out). The steps, in this order, each with its own time limit, and all
# within one budget of BUDGET seconds from the start (default 520): a step gets min(its limit, time left) and
# is skipped once the budget is spent. A failing step does not stop the others; summary.txt reports it.
#
#   card         GPU name, memory, driver; python, torch, CUDA versions                 -> card.txt
#   install      pip install -e . (no deps, no network): the entry points                -> install.txt
#   gpu_tests    pytest -m gpu                                                           -> gpu_tests.txt
#   bench_core   bench_core.py on CUDA, N=100k d=2048 C=1000 (target <= 0.15 s, H100/H200), with --profile:
#                where analyze's time goes (phases, the copy and product floors, torch.profiler's top ops)
#                                                                                         -> bench_core.txt
#   bench_train  the throughput probe, about a minute: bench_train.py --device cuda --json, images/s of ce
#                and allnc on this card, what the runs' wall times are read against   -> bench_train.jsonl
#   data         the JPEGs of each dataset the runs train on (CIFAR-100 only when a CIFAR-100 run is asked for):
#                $CIFAR_ROOT (CIFAR-10) / $CIFAR100_ROOT, else .cache/cifar10/ / .cache/cifar100/ (or
#                experiments/reproduce_paper.py's .cache/cifar10-jpeg/ / .cache/cifar100-jpeg/), else extracted
#                there once (timed) from .cache/cifar10-jpeg.tar.gz / .cache/cifar100-jpeg.tar.gz (or
#                $NCTOOLS_CIFAR10_TARBALL / $NCTOOLS_CIFAR100_TARBALL); a dataset without any: its runs are
#                listed as skipped                                                       -> data.txt
#   runs         the ten runs below, CIFAR-10-LT and CIFAR-100-LT (beta=100) and the balanced references, 200
#                epochs each, every run on its own dataset's images; PARALLEL at a time on the one GPU, until
#                the deadline; runs still going are then killed (SIGTERM, then SIGKILL) and keep their last
#                checkpoint (resume: allnc-train --out DIR --resume); finished runs lose theirs
#                                            -> runs/NAME/ (run.json, dumps/, dumps-test/), runs/status.json
#   track        nctools track of each run with dumps                                   -> runs/NAME/track/
#   results      final eval top1, many/medium/few, wall times against the targets       -> results.csv
#   tables       per finished run, one row of the paper's results CSV (experiments/paper_tables.py's columns:
#                accuracies, the nctools metrics of the final training-set dump and test_* of the final
#                test-set dump, wall_s, the dumps' names) and those two dumps (float16); a cut run gets no row
#                                  -> cifar10_lt_full.csv, cifar100_lt_full.csv, dumps/, analyze/ (their reports)
#   core_tests   the core's tests with the GPU visible (device="auto" picks it), in whatever time the runs
#                left: the runs come first                                                -> core_tests.txt
#   pack         all of $OUT in device-check.tar.gz (15 MiB parts when larger), intermediate dumps left out
# summary.txt: every step with its exit status, seconds and limit, or why it was skipped; then the runs
# (finished, cut at which epoch, skipped and why), the table rows and the benchmark figures.
#
# The runs, in the order they start (RUNS; with 3 at a time the first three start together, and when time is
# short the last ones are skipped): cifar10_lt_r100_ce, cifar10_lt_r100_allnc, cifar100_lt_r100_ce,
# cifar100_lt_r100_allnc, cifar10_balanced_ce, cifar10_lt_r100_la, cifar10_lt_r100_etf, cifar100_lt_r100_la,
# cifar100_lt_r100_etf, cifar100_balanced_ce. The CIFAR-100 ones train the width-2 ResNet-32 (d = 128).
# Targets on one H200: bench_core <= 0.15 s; cifar10_lt_r100_ce 200 epochs <= 90 s, allnc <= 4 min. The
# CIFAR-100 runs have none yet: width 2 is about 4x the multiply-adds per image, so expect them to take
# several times as long, and cifar100_lt_r100_allnc to be cut (its dumps up to then still come back).
#
# On a lent GPU machine, from the repository root. The tarballs live in the git-ignored .cache/, so the caller
# copies them there first and has the call carry them along: the two files alone, about 37 MiB together (an
# extracted copy beside them in .cache/ would be far more). The 64 MiB a call may carry counts the tracked files
# too: 59 MiB on 2026-12-07, 48 of them the committed dumps of docs/results/dumps, so the dumps leave the working
# tree for the call (python tools/device_tree.py park, then unpark after it; size checks first, see
# tools/device_study.sh); then both tarballs fit, with about 16 MiB to spare:
#   mkdir -p .cache && cp "$NCTOOLS_CIFAR10_TARBALL" .cache/cifar10-jpeg.tar.gz \
#       && cp "$NCTOOLS_CIFAR100_TARBALL" .cache/cifar100-jpeg.tar.gz
#   carry: [".cache/cifar10-jpeg.tar.gz", ".cache/cifar100-jpeg.tar.gz"]
#   bash tools/device_check.sh                       # give the call about 560 s
# The lending tool brings back at most 8 files, 2 folders down, so without --smoke PACK=1 is the default:
# $OUT keeps summary.txt, card.txt, results.csv, bench_train.jsonl, bench_core.txt and the archive alone.
# Unpack the rest with: cat device-check.tar.gz* | tar -xz
# The tables and their dumps then go into docs/results/ together: NAME_lt_full.csv names its dumps as
# dumps/<dataset>_<method>_b<beta>_s<seed>[_test].safetensors, relative to the archive's root. A finished run
# the tables step had no time for keeps its last dumps in runs/NAME/; its row is made from the unpacked
# archive, on any machine: python -m experiments.gpu_runs tables --out UNPACKED --seconds 600
#
#   bash tools/device_check.sh --smoke               # the same steps on the CPU, tiny sizes, a few minutes
#
# Environment: OUT, BUDGET, PYTHON (default python3), CIFAR_ROOT / CIFAR100_ROOT (an extracted CIFAR-10 /
# CIFAR-100 folder: nothing is extracted), NCTOOLS_CIFAR10_TARBALL / NCTOOLS_CIFAR100_TARBALL, PARALLEL (runs
# at a time), RUNS (config names, in order), DUMP_EVERY, WORKERS (data.num_workers per run), PACK (1: prune
# $OUT to the top files and the archive).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

source tools/device_common.sh
device_args "$0" "$@"
device_out "$0"
PY=${PYTHON:-python3}
CORES=$(nproc 2>/dev/null || echo 2)
export OUT PY PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
for name in cifar10 cifar100; do  # a carried tarball wins over the environment's
    [[ -f .cache/$name-jpeg.tar.gz ]] && export "NCTOOLS_${name^^}_TARBALL=$PWD/.cache/$name-jpeg.tar.gz"
done

# The runs, the most informative first (with 3 at a time, the first three start together):
#  1. cifar10_lt_r100_ce      the baseline every other number is read against, and the 90 s speed target;
#  2. cifar10_lt_r100_allnc   the method under study and the 4 min target; the longest CIFAR-10 run (views + 1
#                             forward passes per image), so it starts at once to have a chance to finish;
#  3. cifar100_lt_r100_ce     the same pair on CIFAR-100-LT, the second standard benchmark, where the geometry
#  4. cifar100_lt_r100_allnc  has room (d = 128 >= C - 1 = 99); the costliest LT runs, so they start early
#                             rather than after runs that only add contrasts, and a cut one still leaves dumps;
#  5. cifar10_balanced_ce     collapse without imbalance: the reference geometry for every NC metric; 4x the
#                             images per epoch, so likely cut, but its dumps up to then still count;
#  6. cifar10_lt_r100_la      logit adjustment, a loss-side fix at CE's cost: usually finishes when it starts;
#  7. cifar10_lt_r100_etf     the NC-optimal (simplex-ETF) classifier imposed: the direct contrast to AllNC;
#  8. cifar100_lt_r100_la     the same two contrasts on CIFAR-100;
#  9. cifar100_lt_r100_etf
# 10. cifar100_balanced_ce    CIFAR-100's reference geometry: 50,000 images per epoch at width 2, the costliest.
# BBN (AllNC's GBBN branch alone) is left out: an ablation AllNC largely covers, at 2 passes per image.
RUNS=${RUNS:-cifar10_lt_r100_ce cifar10_lt_r100_allnc cifar100_lt_r100_ce cifar100_lt_r100_allnc cifar10_balanced_ce
cifar10_lt_r100_la cifar10_lt_r100_etf cifar100_lt_r100_la cifar100_lt_r100_etf cifar100_balanced_ce}
ONLY=()             # the runs to train, when not all of them (the rest are listed as skipped)
declare -A SIZES=() # overrides by dataset, beside its data.root
if [[ $SMOKE == 1 ]]; then
    MODE=smoke DEVICE=cpu BUDGET=${BUDGET:-450} PARALLEL=${PARALLEL:-2} WORKERS=${WORKERS:-0} PACK=${PACK:-0}
    # A train-set dump every 40 epochs would never come; epoch 1 is the last, and the last always dumps.
    DUMP_EVERY=${DUMP_EVERY:-1} MIN_START=5 GRACE=3 THREADS=1 END_RESERVE=15
    # track and tables: nctools figures of two runs (tables: of four dumps), measured at 25-35 s and 40-50 s on
    # 2 busy CPU cores
    TRACK=60 TABLES=90
    # One tiny run per dataset: AllNC on CIFAR-10 and CE on CIFAR-100's width-2 ResNet-32, so that both methods
    # and both datasets' data, roots and tables are exercised. One epoch on subsets that keep every class:
    # CIFAR-10 n_max 20 at beta 10 (>= 2 images a class, 50 test images), CIFAR-100 n_max 4 at beta 2 (2 to 4
    # a class, 200 test images: two a class, so that the test set's classes have a spread).
    ONLY=(cifar10_lt_r100_allnc cifar100_lt_r100_ce)
    SIZES=([cifar10]="data.n_max=20 data.imbalance_ratio=10 data.test_per_class=5"
           [cifar100]="data.n_max=4 data.imbalance_ratio=2 data.test_per_class=2")
else
    MODE=gpu DEVICE=cuda BUDGET=${BUDGET:-520} PARALLEL=${PARALLEL:-3} PACK=${PACK:-1}
    # data.num_workers: used by data.pipeline=loader only; CIFAR runs take the batched on-device pipeline
    WORKERS=${WORKERS:-$(( CORES / PARALLEL > 4 ? 4 : CORES / PARALLEL ))}
    # Dumps and evaluations every 40 epochs: 5 points for the track curves (epochs 40..200), 1.6 MB per train
    # dump on CIFAR-10-LT (12,406 x 64 float16), 2.8 MB on CIFAR-100-LT (10,847 x 128), 6.4 / 12.8 MB on the
    # balanced sets. The test-set dumps come with them (1.3 / 2.6 MB, from the evaluation's own pass): the
    # tables need the final one, and only the last of each split leaves the machine.
    DUMP_EVERY=${DUMP_EVERY:-40} MIN_START=60 GRACE=8 THREADS=$(( CORES > PARALLEL ? CORES / PARALLEL : 1 ))
    TRACK=30
    # nctools analyze of two dumps per finished run, on the CPU: a few seconds each. Rows it has no time for are
    # no loss: the runs' last dumps then travel in the archive, and the tables can be made from it (header).
    TABLES=30
    END_RESERVE=20  # seconds no other step may take: the pack step, which brings the results back
fi
AFTER_RUNS=$(( TRACK + 15 + TABLES + 5 ))  # seconds kept after the runs for track, results (15), tables, a margin
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

# The images of NAME (cifar10, cifar100), from the first of: $CIFAR_ROOT (CIFAR-10; the name predates CIFAR-100)
# or $CIFAR100_ROOT, used as it is; our .cache/NAME; experiments/reproduce_paper.py's complete .cache/NAME-jpeg;
# else .cache/NAME-jpeg.tar.gz or $NCTOOLS_NAME_TARBALL, extracted into .cache/NAME.
root_var() { if [[ $1 == cifar10 ]]; then echo CIFAR_ROOT; else echo "${1^^}_ROOT"; fi; }
tarball_var() { echo "NCTOOLS_${1^^}_TARBALL"; }

find_cifar() {  # find_cifar NAME: the folder holding NAME's train/ and test/ (the archive may wrap them in
    # one top-level folder): the root variable's alone when set, else ours, else reproduce_paper.py's
    local name=$1 var base d
    var=$(root_var "$name")
    if [[ -n ${!var:-} ]]; then set -- "${!var}"; else set -- ".cache/$name"
        [[ -f .cache/$name-jpeg/.complete ]] && set -- "$@" ".cache/$name-jpeg"
    fi
    for base in "$@"; do
        for d in "$base" "$base"/*/; do
            if [[ -d $d/train && -d $d/test ]]; then (cd "$d" && pwd); return 0; fi
        done
    done
    return 1
}

has_images() {  # has_images NAME: whether some source of NAME's images is there (a folder or a tarball)
    local root tarball
    root=$(root_var "$1") tarball=$(tarball_var "$1")
    [[ -n ${!root:-} ]] || find_cifar "$1" > /dev/null || [[ -f ${!tarball:-} ]]
}

prepare_cifar() {  # prepare_cifar NAME: find NAME's images, or extract them once
    local name=$1 var tarball t0=$SECONDS
    var=$(root_var "$name")
    if [[ -n ${!var:-} ]]; then
        find_cifar "$name" > /dev/null || { echo "$var=${!var} holds no train/ and test/ folders"; return 2; }
        echo "$name: using $(find_cifar "$name") (from $var, nothing extracted)"; return 0
    fi
    if find_cifar "$name" > /dev/null; then echo "$name: using $(find_cifar "$name"), extracted before"; return 0; fi
    var=$(tarball_var "$name") tarball=${!var:-}
    rm -rf ".cache/$name" ".cache/$name.partial" && mkdir -p ".cache/$name.partial" &&
        tar -xzf "$tarball" -C ".cache/$name.partial" && mv ".cache/$name.partial" ".cache/$name" &&
        echo "$name: extracted $tarball into $(find_cifar "$name") in $(( SECONDS - t0 )) s"
}
export -f card root_var tarball_var find_cifar prepare_cifar

note "device_check.sh ($MODE) started $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname): budget $BUDGET s, OUT=$OUT"

# 1. The card and the versions.
step card 30 bash -c card

# 2. The GPU tests (the core's other tests come after the runs, in the time they leave).
if [[ $SMOKE == 1 ]]; then
    skip install "smoke: the code is read through PYTHONPATH, the environment is left alone"
    step gpu_tests 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/nctools/core/test_gpu.py
else
    # The entry points (checkpoint readers, console scripts) need the package installed; no network, so no
    # build isolation and no dependencies. Without it the code is still read through PYTHONPATH.
    step install 60 "$PY" -m pip install -q --no-deps --no-build-isolation -e .
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null \
        || note "warning: torch sees no CUDA device; the CUDA steps below will fail"
    step gpu_tests 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu
fi

# 3. bench_core on the device.
if [[ $SMOKE == 1 ]]; then
    step bench_core 60 "$PY" benchmarks/bench_core.py --device cpu --n 5000 --dim 64 --classes 20 --repeat 1 \
        --no-textbook
else
    step bench_core 100 "$PY" benchmarks/bench_core.py --device cuda --n 100000 --dim 2048 --classes 1000 \
        --no-textbook --profile
fi

# 4. bench_train: the JSON lines (stdout) in bench_train.jsonl, the rest in bench_train.txt.
if [[ $SMOKE == 1 ]]; then
    TRAIN_ARGS=(--device cpu --steps 1 --batch-size 8 --threads 1 --data-batches 1 --json)
else
    TRAIN_ARGS=(--device cuda --json)
fi
step bench_train 90 bash -c '"$PY" benchmarks/bench_train.py "$@" > "$OUT/bench_train.jsonl"' bench_train \
    "${TRAIN_ARGS[@]}"

# 5. The runs, their tracks, results and tables. Each dataset a run trains on gets its images prepared, and each
# run the data.root of its own dataset (gpu_runs train --for NAME data.root=DIR); a dataset without images is
# named to it (--no-images), so that its runs are listed as skipped rather than failed.
# shellcheck disable=SC2086  # RUNS is a list of names
DATASETS=$("$PY" -m experiments.gpu_runs datasets --configs $RUNS) \
    || note "warning: the datasets of the runs are unknown (gpu_runs datasets failed); no images are prepared"
WANTED=() NO_IMAGES=() FOR=()
for name in $DATASETS; do
    case $name in
        cifar10|cifar100) if has_images "$name"; then WANTED+=("$name"); else NO_IMAGES+=("$name"); fi ;;
    esac  # any other dataset needs no images (synthetic) or reads its config's own data.root
done
for name in "${NO_IMAGES[@]}"; do
    note "data: no $name images: no $(root_var "$name"), no .cache/$name/, no .cache/$name-jpeg.tar.gz and no \
$(tarball_var "$name"), so its runs are skipped; before the call: cp \"\$$(tarball_var "$name")\" .cache/$name-jpeg.tar.gz"
done
if [[ ${#WANTED[@]} -eq 0 ]]; then
    if [[ ${#NO_IMAGES[@]} -gt 0 ]]; then skip data "no images of ${NO_IMAGES[*]} (see above)"
    else skip data "no run reads CIFAR images"; fi
else
    step data 90 bash -c 'rc=0; for name; do prepare_cifar "$name" || rc=$?; done; exit $rc' data "${WANTED[@]}"
    for name in "${WANTED[@]}"; do
        if root=$(find_cifar "$name"); then
            # shellcheck disable=SC2206  # SIZES holds a list of overrides
            FOR+=(--for "$name" "data.root=$root" ${SIZES[$name]:-})
        else
            NO_IMAGES+=("$name")
        fi
    done
fi
if [[ ${#FOR[@]} -eq 0 && ${#NO_IMAGES[@]} -gt 0 ]]; then
    for name in runs track results tables; do skip "$name" "no images of ${NO_IMAGES[*]} (see the data step)"; done
else
    SETS=("run.device=$DEVICE" run.progress=false run.dump_dtype=float16 "run.dump_every=$DUMP_EVERY"
          "run.eval_every=$DUMP_EVERY" run.dump_test=true run.keep_checkpoints=1 "data.num_workers=$WORKERS")
    [[ $SMOKE == 1 ]] && SETS+=(optim.epochs=1)
    PICK=()
    [[ ${#ONLY[@]} -gt 0 ]] && PICK=(--only "${ONLY[@]}")
    LIMIT=$(( $(left) - END_RESERVE - 5 - AFTER_RUNS ))
    # shellcheck disable=SC2086  # RUNS is a list of names
    step runs "$LIMIT" "$PY" -m experiments.gpu_runs train --out "$OUT/runs" --seconds $(( LIMIT - GRACE - 7 )) \
        --parallel "$PARALLEL" --min-start "$MIN_START" --grace "$GRACE" --threads "$THREADS" --configs $RUNS \
        --set "${SETS[@]}" "${FOR[@]}" --no-images "${NO_IMAGES[@]}" "${PICK[@]}"
    step track "$TRACK" "$PY" -m experiments.gpu_runs track --out "$OUT/runs" --seconds $(( TRACK - 5 )) \
        --device "$DEVICE"
    step results 15 "$PY" -m experiments.gpu_runs results --out "$OUT/runs" --csv "$OUT/results.csv"
    step tables "$TABLES" "$PY" -m experiments.gpu_runs tables --out "$OUT" --seconds $(( TABLES - 5 ))
fi

# 5b. The core's tests with the device visible, in the time the runs left (skipped when they took it all).
CORE_TESTS=(tests/nctools/core/test_reducer.py tests/nctools/core/test_inputs.py) XDIST=()
if [[ $SMOKE == 0 ]]; then
    CORE_TESTS+=(tests/nctools/core/test_functional.py tests/nctools/core/test_bruteforce_twins.py
                 tests/nctools/core/test_hostile_core.py)
    "$PY" -c "import xdist" 2>/dev/null && XDIST=(-n 8)
fi
step core_tests 120 "$PY" -m pytest -q -p no:cacheprovider "${XDIST[@]}" "${CORE_TESTS[@]}"

# 6. The summary: the runs, the tables and the figures, then the archive.
{
    echo "== runs (results.csv)"
    if [[ -f $OUT/results.txt ]]; then cat "$OUT/results.txt"; else echo "no runs"; fi
    echo "== tables (NAME_lt_full.csv, dumps/)"
    if [[ -f $OUT/tables.txt ]]; then cat "$OUT/tables.txt"; else echo "no tables"; fi
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
