#!/bin/sh
# I/O faults during a merge: a failing write (EIO and ENOSPC from the fault shim, and a real
# ENOSPC on a small tmpfs), a failing fsync, read errors and short reads, and a source file
# truncated or replaced while the merge runs. Each fault must give a one-line message naming
# the file or tensor, exit status 1 and no published output; once the fault is gone, the
# same command resumes and the output is byte-identical to an uninterrupted run.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
SHIM=$SYMPHONY_BUILD/tests/faultshim.so
if [ ! -f "$SHIM" ]; then
    echo "skipped: $SHIM is not built (make test-bin builds it)"
    exit 77
fi
# A sanitizer build wants its runtime first in the preload list; the shim only wraps libc.
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0
export ASAN_OPTIONS
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-fault-XXXXXX")
mounted=""
cleanup() {
    [ -n "$mounted" ] && umount "$mounted" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0

# Private copies of the sources, so that the test may truncate and replace them.
mkdir "$tmp/src"
for d in base stories legal code docs; do
    cp -a "$F/$d" "$tmp/src/$d"
done
S=$tmp/src
cat >"$tmp/merge.yml" <<YAML
base_model: $S/base
dtype: bfloat16
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $S/stories
  - source_model: $S/legal
  - source_model: $S/code
  - source_model: $S/docs
symphony:
  attention: slerp
  seed: 7
YAML
merge() {
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$@"
}
with_fault() {
    env LD_PRELOAD="$SHIM" SYMPHONY_FAULT="$1" SYMPHONY_FAULT_AT="$2" \
        SYMPHONY_FAULT_PATH="${3:-}" "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$4"
}

merge "$tmp/ref" || { echo "uninterrupted merge failed"; exit 1; }

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

# Checks a failed run: exit 1, one error line of the program that contains the expected
# words, and nothing published.
check_failure() {
    label=$1 rc=$2 errfile=$3 expected=$4 out=$5
    ok=0
    [ "$rc" -eq 1 ] || { echo "$label: exit $rc, expected 1"; ok=1; }
    lines=$(grep -c '^symphony-stream: ' "$errfile")
    [ "$lines" -eq 1 ] || { echo "$label: $lines error lines, expected 1"; ok=1; }
    grep -q "$expected" "$errfile" || { echo "$label: message lacks '$expected'"; ok=1; }
    [ ! -e "$out" ] || { echo "$label: $out was published"; ok=1; }
    [ $ok -eq 0 ] || sed 's/^/    /' "$errfile"
    return $ok
}

# One fault: fails as expected, then the rerun resumes to the reference bytes.
fault_case() {
    label=$1 fault=$2 at=$3 expected=$4
    out="$tmp/out-$label"
    with_fault "$fault" "$at" "" "$out" 2>"$tmp/err"
    check_failure "$label" $? "$tmp/err" "$expected" "$out" || fail=1
    merge "$out" >/dev/null || { echo "$label: rerun failed"; fail=1; }
    same_as_ref "$out" || { echo "$label: rerun differs from the uninterrupted run"; fail=1; }
    rm -rf "$out" "$out.lock"
}

# Write call 1 is the merge state file, 5 a shard header or the first tensor, 40 and 150
# tensors in the middle, 300 one of the metadata files written last (a merge of this
# config makes 305 write calls).
fault_case eio-state write-eio 1 "symphony-merge.json: write failed: Input/output error"
fault_case eio-tensor write-eio 40 "tensor '.*': write failed: Input/output error; fix the cause"
fault_case enospc-tensor write-enospc 150 "write failed: No space left on device; fix the cause"
fault_case enospc-late write-enospc 300 "No space left on device"
fault_case fsync-state fsync-eio 1 "fsync failed: Input/output error"
fault_case fsync-tensor fsync-eio 40 "tensor '.*': fdatasync failed: Input/output error"
fault_case read-config read-eio 1 "config.json: read failed: Input/output error"

# Short reads everywhere (7 bytes at most per call) change nothing.
out="$tmp/out-short"
with_fault read-short 1 "" "$out" 2>/dev/null || { echo "read-short: merge failed"; fail=1; }
same_as_ref "$out" || { echo "read-short: output differs"; fail=1; }
rm -rf "$out" "$out.lock"

# On resume, the journal and every journaled tensor are read back: a read error there
# fails cleanly, and short reads resume to the same bytes.
out="$tmp/out-resume"
SYMPHONY_TEST_KILL_AT=150 merge "$out" 2>/dev/null
[ -d "$out.partial" ] || { echo "resume reads: no partial directory after the kill"; fail=1; }
cp -a "$out.partial" "$tmp/saved.partial"
for at in 10 30; do
    with_fault read-eio $at "" "$out" 2>"$tmp/err"
    check_failure "read-eio at $at on resume" $? "$tmp/err" "failed.*Input/output error" \
        "$out" || fail=1
done
grep -q "tensor '.*': reading it back failed" "$tmp/err" ||
    { echo "read-eio on resume: no tensor name in '$(cat "$tmp/err")'"; fail=1; }
rm -rf "$out.partial"
cp -a "$tmp/saved.partial" "$out.partial"
with_fault read-short 1 "" "$out" 2>/dev/null || { echo "read-short resume failed"; fail=1; }
same_as_ref "$out" || { echo "read-short resume: output differs"; fail=1; }
rm -rf "$out" "$out.lock"

# A source truncated while mapped: SIGBUS becomes a clear message; restoring the file with
# its modification time lets the same command resume.
src=$S/code/model.safetensors
cp -p "$src" "$tmp/code.orig"
out="$tmp/out-truncate"
with_fault truncate 20 "$src" "$out" 2>"$tmp/err"
check_failure truncate $? "$tmp/err" "became shorter while it was being read" "$out" || fail=1
cp -p "$tmp/code.orig" "$src"
merge "$out" >/dev/null || { echo "truncate: rerun after restoring failed"; fail=1; }
same_as_ref "$out" || { echo "truncate: rerun differs"; fail=1; }
rm -rf "$out" "$out.lock"

# A source replaced (renamed over) during the merge: nothing is published; once the file is
# back as it was, the rerun resumes.
out="$tmp/out-replace"
with_fault replace 30 "$src" "$out" 2>"$tmp/err"
check_failure replace $? "$tmp/err" "code: the source model changed while the merge" "$out" ||
    fail=1
touch -r "$tmp/code.orig" "$src"
merge "$out" >/dev/null || { echo "replace: rerun after restoring failed"; fail=1; }
same_as_ref "$out" || { echo "replace: rerun differs"; fail=1; }
rm -rf "$out" "$out.lock"

# A real ENOSPC: a 4 MiB tmpfs of the test's own passes the free-space check (the output
# is 1.5 MB), then another file fills it during the merge.
disk=$tmp/disk
mkdir "$disk"
if mount -t tmpfs -o size=4m symphony-fault "$disk" 2>/dev/null; then
    mounted=$disk
    out="$disk/out"
    with_fault fill 60 "$disk/filler" "$out" 2>"$tmp/err"
    check_failure tmpfs-full $? "$tmp/err" "No space left on device; fix the cause" "$out" ||
        fail=1
    rm -f "$disk/filler"
    merge "$out" >/dev/null || { echo "tmpfs-full: rerun after freeing space failed"; fail=1; }
    same_as_ref "$out" || { echo "tmpfs-full: rerun differs"; fail=1; }
    rm -rf "$out" "$out.lock"

    # Too little space from the start: refused before any tensor is written.
    head -c 3M /dev/zero >"$disk/filler"
    merge "$out" 2>"$tmp/err"
    check_failure tmpfs-small $? "$tmp/err" "MiB free, the merge needs about" "$out" || fail=1
    umount "$disk" && mounted=""
    echo "tmpfs cases ran"
else
    echo "note: tmpfs cases skipped: mount -t tmpfs is not permitted here (needs root)"
fi
exit $fail
