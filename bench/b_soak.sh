#!/bin/sh
# Kill-and-resume soak: merges the real fixtures (four experts and a base, 3 shards) and
# interrupts the merge SOAK_POINTS times (default 100) at random moments with SIGKILL or
# SIGTERM, chosen at random. After each interruption the same command runs again, and may
# itself be interrupted. Whenever a run finishes, its output is compared byte for byte with
# an uninterrupted run and a new merge starts. After an interruption the output directory
# is either absent or complete and identical.
#
#   SOAK_POINTS=100 SOAK_SEED=1 sh bench/b_soak.sh     (make soak runs it)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SYMPHONY_SHARED:-}" ] && [ -d "$top/../shared/fixtures/real" ]; then
    SYMPHONY_SHARED=$(cd "$top/../shared" && pwd)
fi
F=${SYMPHONY_SHARED:-}/fixtures/real
if [ -z "${SYMPHONY_SHARED:-}" ] || [ ! -d "$F" ]; then
    echo "skipped: SYMPHONY_SHARED with fixtures/real is not available"
    exit 77
fi
BIN=$SYMPHONY_BIN
points=${SOAK_POINTS:-100}
seed=${SOAK_SEED:-1}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-soak-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: bfloat16
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $F/stories
  - source_model: $F/legal
  - source_model: $F/code
  - source_model: $F/docs
symphony:
  attention: slerp
  seed: 7
YAML
merge() {
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$@"
}

start=$(date +%s.%N)
merge "$tmp/ref" || { echo "uninterrupted merge failed"; exit 1; }
end=$(date +%s.%N)
# Delays are drawn uniformly from 0 to 1.2 times the uninterrupted run, so a few land after
# the end and test a finished merge.
span=$(echo "$start $end" | awk '{ printf "%.3f", 1.2 * ($2 - $1) }')
echo "uninterrupted merge: $(echo "$start $end" | awk '{ printf "%.3f", $2 - $1 }') s"

same_as_ref() {
    out=$1
    a=$(cd "$tmp/ref" && ls -A | sort | tr '\n' ' ')
    b=$(cd "$out" && ls -A | sort | tr '\n' ' ')
    [ "$a" = "$b" ] || { echo "$out: files differ: [$a] vs [$b]"; return 1; }
    for f in "$tmp/ref"/*; do
        cmp -s "$f" "$out/$(basename "$f")" || { echo "$out: $(basename "$f") differs"; return 1; }
    done
}

# One line per draw: delay in seconds and signal.
awk -v n="$((points * 4))" -v seed="$seed" -v span="$span" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++)
        printf "%.3f %s\n", rand() * span, rand() < 0.5 ? "KILL" : "TERM"
}' >"$tmp/draws"

out=$tmp/out
fail=0 interrupted=0 finished=0 kills=0 terms=0 runs=0
exits=""
while read -r delay signal; do
    [ $interrupted -ge $points ] && break
    # The binary itself in the background, so that $! is its process id.
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$out" >/dev/null 2>"$tmp/err" &
    pid=$!
    sleep "$delay"
    hit=0
    kill -s "$signal" $pid 2>/dev/null && hit=1
    wait $pid 2>/dev/null
    rc=$?
    runs=$((runs + 1))
    exits="$exits $rc"
    case "$rc" in
        0) ;;
        130|137|143) ;;
        *) echo "run $runs ($signal after ${delay}s): exit $rc"; sed 's/^/    /' "$tmp/err"; fail=1 ;;
    esac
    if [ $rc -ne 0 ] && [ $hit -eq 1 ]; then
        interrupted=$((interrupted + 1))
        [ "$signal" = KILL ] && kills=$((kills + 1)) || terms=$((terms + 1))
        if [ -d "$out" ] && ! same_as_ref "$out"; then
            echo "run $runs: interrupted output was published incomplete"
            fail=1
        fi
        continue
    fi
    [ $rc -eq 0 ] || continue
    # A finished run: the output must equal the reference, with no leftovers.
    if [ -e "$out.partial" ] || [ -e "$out/.symphony-journal" ]; then
        echo "run $runs: leftover partial directory or journal"
        fail=1
    fi
    same_as_ref "$out" || { echo "run $runs: output differs from the uninterrupted run"; fail=1; }
    finished=$((finished + 1))
    rm -rf "$out" "$out.lock"
done <"$tmp/draws"

# Finish the last merge and compare it too.
if merge "$out" >/dev/null; then
    same_as_ref "$out" || { echo "final resume: output differs"; fail=1; }
    finished=$((finished + 1))
else
    echo "final resume failed"
    fail=1
fi
for code in 0 130 137 143; do
    n=$(echo "$exits" | tr ' ' '\n' | grep -c "^$code\$")
    echo "exit $code: $n runs"
done
echo "soak: $interrupted interruptions ($kills SIGKILL, $terms SIGTERM) in $runs runs," \
    "$finished merges finished and compared, seed $seed"
[ $interrupted -ge $points ] || { echo "only $interrupted interruptions"; fail=1; }
exit $fail
