#!/usr/bin/env bash
# Instructions of one steady-state train step (W0 and W1 by default), through the tape
# (plain ops, the fused `linear`, `linear` + reuse), through nn + optim, and by hand,
# counted by callgrind: independent of the machine's load.
#
#   benches/callgrind.sh [features] [workloads]     e.g. benches/callgrind.sh openblas "W0 W1"
#
# Each count is (instructions of 1 + 2N steps − instructions of 1 + N steps) / N, which
# removes the set-up. OpenBLAS runs on one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
features=${1:-openblas}
workloads=${2:-W0 W1}
command -v valgrind >/dev/null || { echo "callgrind.sh needs valgrind (apt-get install valgrind)"; exit 1; }
cargo bench -p tapegrad-benches --features "$features" --bench instructions --no-run 2>/dev/null
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -n 1)
count() {
    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for w in $workloads; do
    n=4
    [ "$w" = W0 ] && n=200
    declare -A per
    for t in plain linear tape nn hand; do
        a=$(count "$w" "$t" "$n")
        b=$(count "$w" "$t" "$((2 * n))")
        per[$t]=$(( (b - a) / n ))
    done
    printf '%s: instructions per step: hand %d' "$w" "${per[hand]}"
    for t in plain linear tape nn; do
        printf ', %s %d (%.3f)' "$t" "${per[$t]}" "$(echo "${per[$t]} / ${per[hand]}" | bc -l)"
    done
    printf '   (tape = linear + reuse; ratio to hand in parentheses)\n'
done
