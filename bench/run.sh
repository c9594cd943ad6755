#!/bin/sh
# Run every benchmark script bench/b_*.sh. BENCH="name ..." runs a subset.
# Benchmarks are long and noisy; they report ratios measured in one run.
set -u
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export SYMPHONY_BIN="$top/$BUILD/symphony-stream" SYMPHONY_BUILD="$top/$BUILD" SYMPHONY_TOP="$top"
status=0
for b in bench/b_*.sh; do
    [ -f "$b" ] || continue
    name=$(basename "$b" .sh)
    case " ${BENCH:-$name} " in *" $name "*) ;; *) continue ;; esac
    echo "== $name"
    sh "$b" || { echo "benchmark $name failed" >&2; status=1; }
done
exit $status
