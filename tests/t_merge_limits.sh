#!/bin/sh
# Pre-run limits of a calibrated merge on the real fixtures: a merge whose calibration
# caches do not fit on a small tmpfs is rejected before it creates anything, naming the free
# and needed sizes; --memory-limit below the plan's working-memory estimate is rejected
# before any work, and the estimate itself is accepted.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-limits-XXXXXX")
mounted=""
trap '[ -n "$mounted" ] && umount "$mounted" 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0

cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
gate_mode: hidden
$(real_experts stories legal)
symphony:
  calibration_tokens: 8192
  router:
    steps: 10
YAML

"$BIN" merge --check --json "$tmp/merge.yml" "$tmp/plan-out" >"$tmp/plan.json" ||
    { echo "merge --check failed"; exit 1; }
field() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
    "$tmp/plan.json" "$1"; }
memory=$(field memory_bytes)
cache=$(field cache_bytes)
output=$(field output_bytes)

# Memory: one byte below the estimate is rejected with the estimate in the message, at
# once and without creating the output; the estimate itself is accepted.
below=$((memory - 1))
"$BIN" merge -q --memory-limit "$below" "$tmp/merge.yml" "$tmp/m1" 2>"$tmp/err.txt"
rc=$?
[ $rc -eq 1 ] || { echo "--memory-limit $below (estimate $memory): exit $rc"; fail=1; }
grep -q "($memory bytes) of working memory" "$tmp/err.txt" ||
    { echo "the memory message lacks the estimate $memory:"; cat "$tmp/err.txt"; fail=1; }
grep -q "more than --memory-limit" "$tmp/err.txt" ||
    { echo "the memory message lacks the limit:"; cat "$tmp/err.txt"; fail=1; }
[ ! -e "$tmp/m1.partial" ] || { echo "a rejected merge created m1.partial"; fail=1; }
"$BIN" merge -q --memory-limit "$memory" "$tmp/merge.yml" "$tmp/m2" 2>"$tmp/err.txt" ||
    { echo "--memory-limit at the estimate $memory was rejected:"; cat "$tmp/err.txt"; fail=1; }
[ -f "$tmp/m2/merge-report.json" ] || { echo "the merge at the estimate wrote no report"; fail=1; }

# The report's cache_bytes is what lies in the work directory, and the plan bounds it.
"$PY" - "$tmp/m2" "$cache" <<'PYEOF' || fail=1
import json, os, sys
out, bound = sys.argv[1], int(sys.argv[2])
work = os.path.join(out, "symphony-work")
on_disk = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work))
report = json.load(open(os.path.join(out, "merge-report.json")))
bad = []
if report["cache_bytes"] != on_disk:
    bad.append("report cache_bytes %d, work directory %d" % (report["cache_bytes"], on_disk))
if on_disk > bound:
    bad.append("work directory %d above the plan's bound %d" % (on_disk, bound))
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PYEOF

# Disk: a tmpfs with room for the output shards but not the caches.
disk="$tmp/disk"
mkdir "$disk"
size_kib=$(( (output + 2 * 1048576) / 1024 + (cache / 1024) / 2 ))
if mount -t tmpfs -o size=${size_kib}k symphony-limits "$disk" 2>/dev/null; then
    mounted=$disk
    start=$(date +%s)
    "$BIN" merge -q "$tmp/merge.yml" "$disk/out" 2>"$tmp/err.txt"
    rc=$?
    seconds=$(( $(date +%s) - start ))
    [ $rc -eq 1 ] || { echo "merge on a ${size_kib} KiB tmpfs: exit $rc"; fail=1; }
    grep -q "free, the merge needs about" "$tmp/err.txt" ||
        { echo "no free-space message:"; cat "$tmp/err.txt"; fail=1; }
    grep -q "of calibration caches" "$tmp/err.txt" ||
        { echo "the message does not name the caches:"; cat "$tmp/err.txt"; fail=1; }
    [ -z "$(ls -A "$disk")" ] || { echo "the rejected merge wrote:"; ls -A "$disk"; fail=1; }
    [ "$seconds" -le 5 ] || { echo "the rejection took $seconds s"; fail=1; }
    umount "$disk" && mounted=""
else
    echo "note: tmpfs case skipped: mount -t tmpfs is not permitted here (needs root)"
fi
exit $fail
