#!/bin/sh
# merge killed with SIGKILL at 25+ points spread over the run (before, inside and after
# tensor writes, inside a journal record, just before and after the rename) resumes to a
# directory byte-identical to an uninterrupted run. Also: SIGINT finishes the current
# record and exits 130, and a chain of kills resumes correctly.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-resume-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
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

merge "$tmp/ref" || { echo "uninterrupted merge failed"; exit 1; }
shards=$(ls "$tmp/ref" | grep -c '^model-.*safetensors$')
[ "$shards" -ge 2 ] || { echo "expected several shards, got $shards"; fail=1; }

# Compares a finished output with the reference, file by file.
same_as_ref() {
    out=$1
    if [ -e "$out.partial" ] || [ -e "$out/.symphony-journal" ]; then
        echo "$out: leftover partial directory or journal"
        return 1
    fi
    a=$(cd "$tmp/ref" && ls -A | sort | tr '\n' ' ')
    b=$(cd "$out" && ls -A | sort | tr '\n' ' ')
    [ "$a" = "$b" ] || { echo "$out: files differ: [$a] vs [$b]"; return 1; }
    for f in "$tmp/ref"/*; do
        cmp -s "$f" "$out/$(basename "$f")" || { echo "$out: $(basename "$f") differs"; return 1; }
    done
}

# Kills at point k, resumes, compares. Returns 2 when k is past the last kill point.
kill_and_resume() {
    k=$1
    out="$tmp/out-$k"
    SYMPHONY_TEST_KILL_AT=$k merge "$out" 2>/dev/null
    rc=$?
    if [ $rc -eq 0 ]; then
        rm -rf "$out"
        return 2
    fi
    [ $rc -eq 137 ] || { echo "kill point $k: exit $rc, expected 137 (SIGKILL)"; return 1; }
    merge "$out" || { echo "kill point $k: resume failed"; return 1; }
    same_as_ref "$out" || { echo "kill point $k: output differs from the uninterrupted run"; return 1; }
    rm -rf "$out"
}

points=0
k=1
last_killed=0
while :; do
    kill_and_resume $k
    rc=$?
    [ $rc -eq 2 ] && break
    [ $rc -eq 0 ] || fail=1
    points=$((points + 1))
    last_killed=$k
    k=$((k + 13))
done
# The last points of a merge are the rename and the journal deletion after it: find
# the last one, then test both unless the stride already did.
last=$((k - 1))
while :; do
    rm -rf "$tmp/probe" "$tmp/probe.partial"
    SYMPHONY_TEST_KILL_AT=$last merge "$tmp/probe" 2>/dev/null
    [ $? -eq 137 ] && break
    last=$((last - 1))
done
rm -rf "$tmp/probe" "$tmp/probe.partial"
for t in $((last - 1)) $last; do
    [ $(((t - 1) % 13)) -eq 0 ] && continue
    kill_and_resume $t || fail=1
    points=$((points + 1))
done
echo "killed and resumed at $points points"
[ $points -ge 20 ] || { echo "only $points kill points; expected at least 20"; fail=1; }

# A chain: killed three times, then resumed to the end.
out="$tmp/chain"
for k in 40 90 35; do
    SYMPHONY_TEST_KILL_AT=$k merge "$out" 2>/dev/null
    [ $? -eq 137 ] || { echo "chain: kill at $k did not happen"; fail=1; }
done
merge "$out" && same_as_ref "$out" || { echo "chain: resume differs"; fail=1; }

# A journaled tensor damaged on disk is rewritten on resume, not trusted.
out="$tmp/damaged"
SYMPHONY_TEST_KILL_AT=200 merge "$out" 2>/dev/null
"$SYMPHONY_PYTHON" - "$out.partial/model-00001-of-0000$shards.safetensors" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    f.seek(8 + n + 100)
    b = f.read(1)
    f.seek(8 + n + 100)
    f.write(bytes([b[0] ^ 0x40]))
PY
merge "$out" && same_as_ref "$out" || { echo "damaged journaled tensor: resume differs"; fail=1; }

# SIGINT: the tensor in progress is finished and journaled, exit 130 with the command.
out="$tmp/sigint"
SYMPHONY_TEST_KILL_AT=100 SYMPHONY_TEST_KILL_SIGNAL=INT merge "$out" 2>"$tmp/sigint.err"
rc=$?
[ $rc -eq 130 ] || { echo "SIGINT: exit $rc, expected 130"; fail=1; }
grep -q "to resume, run:" "$tmp/sigint.err" || { echo "SIGINT: no resume command"; fail=1; }
grep -q "merge -q --shard-size 512K" "$tmp/sigint.err" || { echo "SIGINT: wrong command"; fail=1; }
merge "$out" >/dev/null && same_as_ref "$out" || { echo "SIGINT: resume differs"; fail=1; }

exit $fail
