#!/bin/sh
# Runs inspect on every case of the bad-input corpus (fixtures/bad/expected.tsv) and checks
# the exit status and the message. Under a sanitizer build any report fails the case too.
set -u
bin=$SYMPHONY_BIN
cd "$SYMPHONY_TOP"
failures=0
cases=0
tab=$(printf '\t')
while IFS="$tab" read -r args status text; do
    case "$args" in '#'*|'') continue ;; esac
    cases=$((cases + 1))
    dirs=""
    for a in $args; do dirs="$dirs fixtures/bad/cases/$a"; done
    # shellcheck disable=SC2086
    out=$("$bin" inspect $dirs 2>&1)
    rc=$?
    if [ "$rc" != "$status" ]; then
        echo "FAIL inspect $args: exit $rc, expected $status: $out" | head -c 600; echo
        failures=$((failures + 1))
        continue
    fi
    case "$out" in
        *"$text"*) ;;
        *) echo "FAIL inspect $args: output lacks '$text':"; echo "$out" | tail -n 5
           failures=$((failures + 1)); continue ;;
    esac
    case "$out" in
        *Sanitizer*|*"runtime error"*) echo "FAIL inspect $args: sanitizer report"; echo "$out"
           failures=$((failures + 1)) ;;
    esac
    # A failure is exactly one line on stderr, prefixed with the program name.
    if [ "$status" = 1 ] && [ "$(echo "$out" | grep -c '^problem:')" = 0 ]; then
        lines=$("$bin" inspect $dirs 2>&1 >/dev/null | wc -l)
        [ "$lines" = 1 ] || { echo "FAIL inspect $args: $lines lines on stderr"; failures=$((failures + 1)); }
    fi
done < fixtures/bad/expected.tsv

"$bin" inspect >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL inspect without arguments: exit $rc, expected 2"; failures=$((failures + 1)); }
"$bin" inspect --bogus fixtures/bad/cases/good >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL inspect --bogus: exit $rc, expected 2"; failures=$((failures + 1)); }
"$bin" frobnicate >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || { echo "FAIL unknown command: exit $rc, expected 2"; failures=$((failures + 1)); }

# --json is one valid document with the documented keys.
json=$("$bin" inspect --json fixtures/bad/cases/good fixtures/bad/cases/rope-1e6)
if command -v python3 >/dev/null; then
    echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["compatible"] is False, d
assert any("rope_theta" in p for p in d["problems"]), d["problems"]
m = d["models"][0]
for k in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size", "num_parameters"):
    assert k in m, k
assert m["num_parameters"] == 632, m["num_parameters"]
' || { echo "FAIL inspect --json"; failures=$((failures + 1)); }
fi

echo "$cases corpus cases, $failures failures"
[ $failures = 0 ]
