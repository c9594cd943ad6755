#!/bin/sh
# merge's progress line and summary: no progress when stderr is not a terminal, the
# summary's per-layer figures equal merge-report.json, -q prints nothing, -v logs each
# layer, and (when tmux is installed) a terminal gets the progress line unless
# --no-progress is given.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-progress-XXXXXX")
session=symphony-progress-$$
trap 'tmux kill-session -t "$session" 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0
BIN=$SYMPHONY_BIN

cat >"$tmp/merge.yml" <<YAML
dtype: float32
gate_mode: hidden
experts:
  - source_model: $F/legal
    calibration: [$F/text/legal/calib.txt]
  - source_model: $F/code
    calibration: [$F/text/code/calib.txt]
symphony:
  calibration_tokens: 1024
  router:
    steps: 20
YAML

# Not a terminal: no progress line, a summary on stdout.
"$BIN" merge "$tmp/merge.yml" "$tmp/out" >"$tmp/stdout" 2>"$tmp/stderr" ||
    { echo "merge failed"; cat "$tmp/stderr"; fail=1; }
[ -s "$tmp/stderr" ] && { echo "stderr is not a terminal, yet merge printed:"; cat "$tmp/stderr"; fail=1; }
for pattern in "summary of the merge into" "^  read  *[0-9.]* KiB\|MiB of source tensors" \
    "peak memory" "router_training" "fusion and writing"; do
    grep -q "$pattern" "$tmp/stdout" || { echo "summary lacks '$pattern'"; fail=1; }
done
"$PY" - "$tmp/stdout" "$tmp/out/merge-report.json" <<'PYEOF' || fail=1
import json, sys
lines = open(sys.argv[1]).read().splitlines()
report = json.load(open(sys.argv[2]))
start = next(i for i, l in enumerate(lines) if l.strip().startswith("layer  corr_min"))
rows = [l.split() for l in lines[start + 1:] if l.strip()]
bad = []
if len(rows) != len(report["layers"]):
    bad.append("%d layer rows, report has %d" % (len(rows), len(report["layers"])))
for row, layer in zip(rows, report["layers"]):
    corr = [a["mean_matched_corr"] for a in layer["alignment"]]
    router = layer["router"]
    want = [layer["layer"], min(corr), sum(corr) / len(corr), None, router["train_loss"],
            router["holdout_accuracy"], min(router["expert_load"]), max(router["expert_load"])]
    for k, (got, exp) in enumerate(zip(row, want)):
        if exp is not None and abs(float(got) - exp) > 6e-4:
            bad.append("layer %s column %d: %s, report %.6f" % (row[0], k, got, exp))
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PYEOF

# -q: nothing at all; -v: one line per calibrated layer on stderr.
"$BIN" merge -q --force --restart "$tmp/merge.yml" "$tmp/q" >"$tmp/stdout" 2>"$tmp/stderr" ||
    { echo "merge -q failed"; fail=1; }
[ -s "$tmp/stdout" ] || [ -s "$tmp/stderr" ] && { echo "merge -q printed something"; fail=1; }
"$BIN" merge -v "$tmp/merge.yml" "$tmp/v" >"$tmp/stdout" 2>"$tmp/stderr" ||
    { echo "merge -v failed"; fail=1; }
n=$(grep -c "layer [1-5]/5 calibrated in" "$tmp/stderr")
[ "$n" -eq 5 ] || { echo "merge -v logged $n layers, expected 5:"; cat "$tmp/stderr"; fail=1; }
grep -q "ETA" "$tmp/stderr" && { echo "merge -v drew a progress line off a terminal"; fail=1; }

# A terminal: tmux records everything the merge writes to its pane.
if ! command -v tmux >/dev/null 2>&1; then
    echo "tmux not installed: terminal checks not run"
    exit $fail
fi
# run_in_terminal LOG ARGS...: runs merge ARGS in a tmux pane and records the pane in LOG.
run_in_terminal() {
    log=$1
    shift
    : >"$log"
    tmux new-session -d -s "$session" -x 160 -y 20 "sh" || return 1
    tmux pipe-pane -t "$session" -o "cat >>'$log'"
    tmux send-keys -t "$session" "'$BIN' merge $* >/dev/null; echo merge-exit-\$?; exit" Enter
    for _ in $(seq 1 600); do
        grep -q "merge-exit-[0-9]" "$log" && break
        sleep 0.1
    done
    sleep 0.2
    tmux kill-session -t "$session" 2>/dev/null
    grep -q "merge-exit-0" "$log"
}
run_in_terminal "$tmp/tty.log" "'$tmp/merge.yml' '$tmp/t1'" || { echo "merge in tmux failed:"; cat -v "$tmp/tty.log"; fail=1; }
grep -q "ETA" "$tmp/tty.log" || { echo "no progress line on a terminal:"; cat "$tmp/tty.log"; fail=1; }
grep -q "calibrate *layer [1-5]/5" "$tmp/tty.log" || { echo "progress line lacks the layer"; fail=1; }
grep -q "tokens/s" "$tmp/tty.log" || { echo "progress line lacks tokens/s"; fail=1; }
run_in_terminal "$tmp/tty2.log" "--no-progress '$tmp/merge.yml' '$tmp/t2'" ||
    { echo "merge --no-progress in tmux failed"; fail=1; }
grep -q "ETA" "$tmp/tty2.log" && { echo "--no-progress still drew the progress line"; fail=1; }
exit $fail
