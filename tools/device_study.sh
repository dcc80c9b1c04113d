#!/usr/bin/env bash
# The evidence study's CIFAR-100-LT plan (docs/RESULTS.md; python -m experiments.reproduce_paper --profile cpu100:
# balanced CE, CE, LA, ETF and AllNC, seeds 0 and 1, width-2 ResNet-32, 2,131 images, 120 epochs) trained on a
# lent GPU in one call, because on the 2-core CPU one AllNC run takes about 4.3 hours (measured beside one other
# run, docs/results/cifar100_allnc_probe.json), and more on a slower machine: longer than a sitting.
# The runs are the CPU plan's recipes with run.device=cuda and run.amp=false (float32, as on the CPU); the rows
# say so in their device and recipe columns. All of a CSV's rows come from one device, so its paired seed
# differences compare like with like.
#
#   card    GPU name, memory, driver; python, torch, CUDA versions                        -> card.txt
#   install pip install -e . (no deps, no network): the allnc-train and nctools entry points  -> install.txt
#   data    the CIFAR-100 images: $CIFAR100_ROOT, else the carried tarball extracted into .cache/  -> data.txt
#   study   reproduce_paper --profile cpu100 --device cuda --jobs JOBS --hours (the budget less RESERVE): the
#           runs train JOBS at a time on the one GPU (seed 0 of every method first); each finished run's row, its
#           float16 train and test dumps and its tracks are written into this checkout's docs/results/ exactly as
#           on the CPU; a run still going at the deadline is stopped and gets no row (its folder stays behind)
#                                                                                           -> study.txt
#   pack    every file the study wrote under docs/results/, with its repository path, in study.tar.gz (15 MiB
#           parts when larger)
# summary.txt: each step's exit status and seconds, the rows written, and (on a GPU) the card, install and data
# logs, so that what comes back is summary.txt, study.txt, written.txt and the archive's parts (about 30 MiB for
# the ten runs: two or three parts), within the 8 files the lending tool returns.
#
# Before the call: the tarball goes into the git-ignored .cache/ and the call carries it:
#   mkdir -p .cache && cp "$NCTOOLS_CIFAR100_TARBALL" .cache/cifar100-jpeg.tar.gz
#   carry: [".cache/cifar100-jpeg.tar.gz"]          command: bash tools/device_study.sh   (about 560 s)
# A call carries at most 64 MiB: the tracked files (59 MiB on 2026-12-07, 48 of them the committed dumps of
# docs/results/dumps) and the 18.4 MiB tarball together exceed it. No run needs those dumps, so they leave the
# working tree and git's index for the call, parked inside .git/ (tools/device_tree.py, tested in
# tests/test_device_tree.py), and come back after it:
#   python tools/device_tree.py park && python tools/device_tree.py size .cache/cifar100-jpeg.tar.gz
#   ... the call ...  (then unpark, after unpacking what came back: below)
# After the call, from the repository root (the rows' paths are repository paths, as the CPU study's):
#   cat /path/to/files_at/study.tar.gz* | tar -xz && python tools/device_tree.py unpark
#   python -m experiments.evidence --csv docs/results/cifar100_lt.csv --classes 100 \
#       --claims docs/results/cifar100_lt_claims.csv --page docs/RESULTS.md
#   python -m pytest tests/experiments/test_committed_results.py
# A second call trains only the runs that have no row yet (the CSV is the record).
#
#   bash tools/device_study.sh --smoke    # the same steps on the CPU: one CE-LT run of the plan, 1 epoch,
#                                         # width 1, 2 test images per class, its row in $OUT/smoke/ (a minute)
#
# Environment: OUT (default ./device-out), BUDGET (seconds, default 540), JOBS (runs at a time, default 5),
# PYTHON (default python3), NCTOOLS_CIFAR100_TARBALL or CIFAR100_ROOT (an extracted image folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

source tools/device_common.sh
device_args "$0" "$@"
device_out "$0"
PY=${PYTHON:-python3} BUDGET=${BUDGET:-540} JOBS=${JOBS:-5} RESERVE=60
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[[ -f .cache/cifar100-jpeg.tar.gz ]] && export NCTOOLS_CIFAR100_TARBALL=$PWD/.cache/cifar100-jpeg.tar.gz
DATA=()
[[ -n ${CIFAR100_ROOT:-} ]] && DATA=(--data100 "$CIFAR100_ROOT")
if [[ $SMOKE == 1 ]]; then
    DEVICE=cpu RESULTS=$OUT/smoke WORK=$OUT/smoke/work
    # one run of the plan, shrunk: n_max stays 100 (the smallest that leaves no class empty at beta 100)
    EXTRA=(--only cifar100/ce_lt_r100 --set optim.epochs=1 model.width=1 data.test_per_class=2)
else
    DEVICE=cuda RESULTS=$PWD/docs/results WORK=$(mktemp -d) EXTRA=()
fi
START=$SECONDS
SUMMARY=$OUT/summary.txt
BASE=$(mkdir -p "$RESULTS" && cd "$RESULTS/../.." && pwd)  # the written files are named relative to it
STAMP=$(mktemp) && touch "$STAMP"  # what the study writes under RESULTS is newer than this
note() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME COMMAND...: its output in $OUT/NAME.txt, its exit status in the summary
    local name=$1 t0=$SECONDS rc; shift
    "$@" > "$OUT/$name.txt" 2>&1
    rc=$?
    tail -n 8 "$OUT/$name.txt"
    note "step $name: exit $rc after $(( SECONDS - t0 )) s"
    return $rc
}

note "device_study.sh ($DEVICE) started $(date -u '+%Y-%m-%d %H:%M:%S UTC'): budget $BUDGET s, $JOBS runs at a time"
step card card
[[ $SMOKE == 1 ]] || step install "$PY" -m pip install -q --no-deps --no-build-isolation -e .
# The images first, so that the study's deadline is all training: CIFAR100_ROOT as it is, else the tarball
# extracted into .cache/cifar100-jpeg/, where reproduce_paper then finds it.
step data "$PY" -c "import os; from experiments.reproduce_paper import cifar_root; print(cifar_root('cifar100', \
os.environ.get('CIFAR100_ROOT') or None, os.environ.get('NCTOOLS_CIFAR100_TARBALL'), False))"
HOURS=$("$PY" -c "print(max(60, $BUDGET - $RESERVE - ($SECONDS - $START)) / 3600)")
step study "$PY" -m experiments.reproduce_paper --profile cpu100 --device "$DEVICE" --jobs "$JOBS" --hours "$HOURS" \
    --out "$WORK" --csv "$RESULTS/cifar100_lt.csv" --dumps "$RESULTS/dumps" "${DATA[@]}" "${EXTRA[@]}"
STUDY_RC=$?
# The rows, dumps and tracks the study wrote, with their repository paths (RESULTS is docs/results on a GPU).
(cd "$BASE" && find "${RESULTS#"$BASE/"}" -type f -newer "$STAMP" ! -path "*/work/*" | sort) > "$OUT/written.txt"
rm -f "$STAMP"
ROWS=0
[[ -f $RESULTS/cifar100_lt.csv ]] && ROWS=$(( $(wc -l < "$RESULTS/cifar100_lt.csv") - 1 ))
note "written: $(wc -l < "$OUT/written.txt") files; rows in cifar100_lt.csv: $ROWS"
if [[ -s $OUT/written.txt ]]; then
    step pack bash -c 'cd "$1" && tar -czf "$2/study.tar.gz" -T "$2/written.txt" \
        && if (( $(stat -c %s "$2/study.tar.gz") > 15 * 2**20 )); then
               split -b 15M -d "$2/study.tar.gz" "$2/study.tar.gz.part-" && rm "$2/study.tar.gz"; fi' \
        pack "$BASE" "$OUT"
fi
if [[ $SMOKE == 0 ]]; then
    # the run folders do not come back: the end of each run's log does, in study.txt
    for log in "$WORK"/logs/*.log; do [[ -f $log ]] && { echo "== $log"; tail -n 5 "$log"; } >> "$OUT/study.txt"; done
    rm -rf "$WORK"
    # The lending tool brings back at most 8 files: the short step logs go into the summary.
    for name in card install data; do
        [[ -f $OUT/$name.txt ]] && { echo "== $name.txt"; cat "$OUT/$name.txt"; rm "$OUT/$name.txt"; } >> "$SUMMARY"
    done
fi
note "done after $(( SECONDS - START )) s (study exit $STUDY_RC)"
exit $STUDY_RC
