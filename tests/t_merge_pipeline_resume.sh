#!/bin/sh
# A calibrated merge (alignment, caches, routers, task-arithmetic embeddings and norms)
# killed with SIGKILL at points spread over the run, inside the calibration of a layer and
# inside tensor writes, resumes to model files byte-identical to an uninterrupted run. merge-report.json (timings, peak memory)
# and the work folder are not compared byte for byte.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-pipe-resume-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: bfloat16
experts_per_token: 2
$(real_experts)
symphony:
  calibration_tokens: 2048
  embeddings: task-arithmetic
  norms: task-arithmetic
  task_scale: 0.35
  seed: 3
  router:
    objective: distill
    steps: 40
YAML
merge() {
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$@"
}
merge "$tmp/ref" || { echo "uninterrupted merge failed"; exit 1; }

same_as_ref() {
    for f in "$tmp/ref"/*; do
        name=$(basename "$f")
        case $name in merge-report.json | symphony-work) continue ;; esac
        cmp -s "$f" "$1/$name" || { echo "$1: $name differs"; return 1; }
    done
    [ -s "$1/merge-report.json" ] || { echo "$1: no merge-report.json"; return 1; }
}

points=0
for k in 2 5 12 40 150 260; do
    out="$tmp/out-$k"
    SYMPHONY_TEST_KILL_AT=$k merge "$out" 2>/dev/null
    rc=$?
    if [ $rc -eq 0 ]; then
        rm -rf "$out"
        continue
    fi
    [ $rc -eq 137 ] || { echo "kill point $k: exit $rc, expected 137"; fail=1; continue; }
    merge "$out" || { echo "kill point $k: resume failed"; fail=1; continue; }
    same_as_ref "$out" || { echo "kill point $k: output differs"; fail=1; }
    points=$((points + 1))
    rm -rf "$out"
done
[ $points -ge 5 ] || { echo "only $points kill points were reached"; fail=1; }
echo "$points kill points resumed"
exit $fail
