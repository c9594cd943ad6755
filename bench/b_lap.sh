#!/bin/sh
# Linear assignment: solve time of sym_lap_solve against scipy's linear_sum_assignment on
# the same matrices (maximisation), and whether the optimal totals agree within 1e-6
# relative. Matrices come from bench/lap_scipy.py; both times cover the solve alone.
#   LAP_SIZES="1024 2048"  LAP_KINDS="uniform"  narrow the run (defaults below)
# Prints a Markdown table. The 13824 runs of scipy take about 30-60 s each.
set -u
BUILD=${BUILD:-build}
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
sizes=${LAP_SIZES:-1024 2048 4096 8192 13824}
kinds=${LAP_KINDS:-uniform planted-clear planted-noisy}
bench_bin="$BUILD/bench/bench_lap"

if ! "$py" -c 'import numpy, scipy.optimize' 2>/dev/null; then
    echo "b_lap: skipped: $py cannot import numpy and scipy.optimize (Debian: python3-scipy)"
    exit 0
fi
[ -x "$bench_bin" ] || { echo "b_lap: $bench_bin is missing; run 'make bench'" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/symphony-lap-bench.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT INT TERM

echo "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo
echo "| kind | n | symphony (s) | scipy (s) | speed-up | totals agree |"
echo "| --- | ---: | ---: | ---: | ---: | --- |"
status=0
for kind in $kinds; do
    for n in $sizes; do
        file="$dir/$kind-$n.f32"
        "$py" bench/lap_scipy.py gen "$kind" "$n" "$file" || { status=1; continue; }
        ours=$("$bench_bin" "$file" "$n" max) || { status=1; continue; }
        theirs=$("$py" bench/lap_scipy.py solve "$file" "$n" max) || { status=1; continue; }
        rm -f "$file"
        "$py" - "$kind" "$n" "$ours" "$theirs" <<'PY' || status=1
import sys

kind, n, ours, theirs = sys.argv[1:5]
a = dict(field.split("=") for field in ours.split())
b = dict(field.split("=") for field in theirs.split())
t_ours, t_scipy = float(a["seconds"]), float(b["seconds"])
total_ours, total_scipy = float(a["total"]), float(b["total"])
agree = abs(total_ours - total_scipy) <= 1e-6 * max(1.0, abs(total_scipy))
verdict = "yes" if agree else f"NO ({total_ours!r} vs {total_scipy!r})"
print(f"| {kind} | {n} | {t_ours:.3f} | {t_scipy:.3f} | {t_scipy / t_ours:.1f}x | {verdict} |")
sys.exit(0 if agree else 1)
PY
    done
done
exit $status
