#!/bin/sh
# eval against the reference perplexity table of the real fixtures.
# By default every model is scored on one domain; SYMPHONY_SLOW=1 scores the full table.
# Dense rows must agree within 1e-4 relative, MoE rows within 1e-3 (a near-tie in top-k
# may flip under float differences).
set -u
real="${SYMPHONY_SHARED:-}/fixtures/real"
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
if [ -z "${SYMPHONY_SHARED:-}" ] || [ ! -f "$real/reference/ppl.json" ]; then
    echo "skipped: fixtures not found (set SYMPHONY_SHARED)"
    exit 77
fi
if ! "$py" -c 'import json' 2>/dev/null; then
    echo "skipped: $py not available"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

check() { # model domain tolerance
    out="$tmp/$1-$2.json"
    if ! "$SYMPHONY_BIN" eval "$real/$1" --ids "$real/text/$2/eval.ids" --json -q \
            >"$out" 2>"$tmp/err"; then
        echo "FAIL $1 $2: eval failed: $(cat "$tmp/err")"
        fail=1
        return
    fi
    "$py" - "$real/reference/ppl.json" "$out" "$1" "$2" "$3" <<'PY' || fail=1
import json, sys
ref = json.load(open(sys.argv[1]))["results"][sys.argv[3]][sys.argv[4]]
got = json.load(open(sys.argv[2]))
tol = float(sys.argv[5])
rel = abs(got["ppl"] - ref["ppl"]) / ref["ppl"]
ok = rel <= tol and got["tokens"] == ref["tokens"]
print("%s %s %s: ppl %.6f, reference %.6f, relative difference %.2e, tokens %d/%d"
      % ("ok  " if ok else "FAIL", sys.argv[3], sys.argv[4], got["ppl"], ref["ppl"], rel,
         got["tokens"], ref["tokens"]))
sys.exit(0 if ok else 1)
PY
}

if [ "${SYMPHONY_SLOW:-0}" = 1 ]; then
    domains="code docs legal stories"
    for m in base stories legal code docs legal-bf16 code-permuted; do
        for d in $domains; do check $m $d 1e-4; done
    done
    for m in moe-btx moe-mergekit-hidden; do
        for d in $domains; do check $m $d 1e-3; done
    done
else
    check base stories 1e-4
    check base legal 1e-4
    check stories stories 1e-4
    check legal legal 1e-4
    check code stories 1e-4
    check docs stories 1e-4
    check legal-bf16 stories 1e-4
    check code-permuted stories 1e-4
    check moe-btx stories 1e-3
    check moe-mergekit-hidden stories 1e-3
fi

# A plan that cannot fit fails before it starts and says how much it needs.
if "$SYMPHONY_BIN" eval "$real/base" --ids "$real/text/stories/eval.ids" \
        --memory-limit 100K >/dev/null 2>"$tmp/err"; then
    echo "FAIL: eval with --memory-limit 100K succeeded"
    fail=1
elif ! grep -q "needs .* MiB" "$tmp/err"; then
    echo "FAIL: --memory-limit message: $(cat "$tmp/err")"
    fail=1
fi
# --text encodes with the model's tokenizer and gives the same perplexity as the stored ids.
for domain in stories code; do
    a=$("$SYMPHONY_BIN" eval "$real/docs" --text "$real/text/$domain/eval.txt" -q | head -n 1)
    b=$("$SYMPHONY_BIN" eval "$real/docs" --ids "$real/text/$domain/eval.ids" -q | head -n 1)
    [ "$a" = "$b" ] || { echo "FAIL: --text and --ids differ on $domain: $a / $b"; fail=1; }
done
# Usage errors exit with 2.
"$SYMPHONY_BIN" eval "$real/base" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: eval without --ids did not exit 2"; fail=1; }
exit $fail
