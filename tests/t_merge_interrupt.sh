#!/bin/sh
# Ctrl-C during the calibration of a real merge: the first SIGINT is acknowledged at once,
# a second one stops the process with exit 130 without waiting for the layer, and the
# printed resume command (the program path as invoked, quoted because it has a space) run
# through the shell finishes a merge byte-identical to an uninterrupted one.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-interrupt-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
mkdir "$tmp/bin dir"
ln -s "$SYMPHONY_BIN" "$tmp/bin dir/symphony-stream"
BIN="$tmp/bin dir/symphony-stream"

cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
gate_mode: hidden
$(real_experts stories legal code)
symphony:
  calibration_tokens: 24576
  router:
    steps: 100
YAML

"$BIN" merge -q "$tmp/merge.yml" "$tmp/ref" || { echo "reference merge failed"; exit 1; }

now_ms() { date +%s%3N; }
"$BIN" merge -q "$tmp/merge.yml" "$tmp/out" 2>"$tmp/err.txt" &
pid=$!
sleep 1.5
kill -INT $pid
sleep 0.2
kill -INT $pid
sent=$(now_ms)
wait $pid
rc=$?
waited=$(( $(now_ms) - sent ))
[ $rc -eq 130 ] || { echo "two SIGINTs: exit $rc, expected 130"; cat "$tmp/err.txt"; fail=1; }
[ $waited -lt 1000 ] || { echo "exit took $waited ms after the second SIGINT"; fail=1; }
[ -d "$tmp/out.partial" ] || { echo "no out.partial after the interrupt"; fail=1; }
[ ! -e "$tmp/out" ] || { echo "the interrupted merge published out"; fail=1; }
grep -q "finishing the current step; interrupt again (Ctrl-C) to stop now" "$tmp/err.txt" ||
    { echo "no acknowledgement of the first SIGINT:"; cat "$tmp/err.txt"; fail=1; }
grep -q "to resume, run:" "$tmp/err.txt" || { echo "no resume command"; fail=1; }
grep -q "^  '$tmp/bin dir/symphony-stream' merge -q " "$tmp/err.txt" ||
    { echo "the resume command does not quote the program as invoked:"; cat "$tmp/err.txt"; fail=1; }

command=$(sed -n '/to resume, run:/{n;p;}' "$tmp/err.txt")
sh -c "$command" || { echo "the printed resume command failed: $command"; fail=1; }
for f in "$tmp/ref"/*.safetensors "$tmp/ref"/*.json "$tmp/ref/README.md"; do
    name=$(basename "$f")
    [ "$name" = merge-report.json ] && continue # contains timings and peak memory
    cmp -s "$f" "$tmp/out/$name" || { echo "$name differs after the resume"; fail=1; }
done
exit $fail
