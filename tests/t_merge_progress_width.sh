#!/bin/sh
# The merge's progress line on a 50-column terminal (a pty from script(1)): every redraw
# fits in 49 columns, ends at a whole word, and has one layout: stage, layer l/5,
# elapsed time and ETA, never the tensor counter.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
if ! command -v script >/dev/null 2>&1; then
    echo "skipped: script(1) from util-linux is not installed"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-width-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
gate_mode: hidden
$(real_experts stories legal)
symphony:
  calibration_tokens: 8192
YAML
script -qc "stty cols 50; '$SYMPHONY_BIN' merge '$tmp/merge.yml' '$tmp/out'" /dev/null \
    >"$tmp/tty.raw" 2>&1 || { echo "merge on a pty failed"; cat "$tmp/tty.raw"; exit 1; }
tr '\r' '\n' <"$tmp/tty.raw" | sed 's/\x1b\[K//g' |
    grep -E '^(calibrate|write) +layer' >"$tmp/lines"
[ -s "$tmp/lines" ] || { echo "no progress line drawn:"; cat "$tmp/tty.raw"; exit 1; }
awk 'length($0) > 49 { print "line of " length($0) " columns: " $0; bad = 1 }
     END { exit bad }' "$tmp/lines" || fail=1
grep -v -E '^(calibrate|write) +layer [1-5]/5  elapsed [0-9]+:[0-9]{2}  ETA ' "$tmp/lines" &&
    { echo "lines above break the layout"; fail=1; }
grep -q "tensors" "$tmp/lines" && { echo "the tensor counter is back"; fail=1; }
grep -E ' [a-z]$' "$tmp/lines" && { echo "a line ends mid-word"; fail=1; }
exit $fail
