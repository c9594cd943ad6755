#!/bin/sh
# Run every test program ($BUILD/tests/test_*) and shell test (tests/t_*.sh).
# A test exits 0 to pass, 77 to skip (its last output line gives the reason), anything
# else to fail. TESTS="name1 name2" runs a subset. Logs go to $BUILD/tests/logs/.
set -u
BUILD=${BUILD:-build}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

SYMPHONY_BIN="$top/$BUILD/symphony-stream"
SYMPHONY_BUILD="$top/$BUILD"
SYMPHONY_TOP="$top"
SYMPHONY_PYTHON=${SYMPHONY_PYTHON:-/usr/bin/python3}
if [ -z "${SYMPHONY_SHARED:-}" ] && [ -d "$top/../shared/fixtures/real" ]; then
    SYMPHONY_SHARED=$(cd "$top/../shared" && pwd)
fi
SYMPHONY_SHARED=${SYMPHONY_SHARED:-}
export SYMPHONY_BIN SYMPHONY_BUILD SYMPHONY_TOP SYMPHONY_PYTHON SYMPHONY_SHARED

logs="$BUILD/tests/logs"
mkdir -p "$logs"
passed=0 failed=0 skipped=0 failures=""

run_one() {
    name=$1
    shift
    case " ${TESTS:-$name} " in *" $name "*) ;; *) return ;; esac
    log="$logs/$name.log"
    start=$(date +%s)
    "$@" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        printf 'PASS  %-28s %4ss\n' "$name" "$secs"
    elif [ $rc -eq 77 ]; then
        skipped=$((skipped + 1))
        printf 'SKIP  %-28s %s\n' "$name" "$(tail -n 1 "$log")"
    else
        failed=$((failed + 1))
        failures="$failures $name"
        printf 'FAIL  %-28s exit %s, log %s\n' "$name" "$rc" "$log"
        tail -n 20 "$log" | sed 's/^/      /'
    fi
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue ;; esac
    run_one "$(basename "$t")" "$t"
done
for t in tests/t_*.sh; do
    [ -f "$t" ] || continue
    run_one "$(basename "$t" .sh)" sh "$t"
done

echo
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
