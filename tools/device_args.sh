# Sourced by tools/device_check.sh and tools/device_study.sh: their arguments and their output folder.

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
