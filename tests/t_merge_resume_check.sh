#!/bin/sh
# Resume checks end to end. After a SIGKILL, a journaled tensor damaged in its first or
# last bytes, or a shard file truncated through journaled tensors, fails the quick check
# (the default). merge then warns, writes those tensors again, and the output is
# byte-identical to an uninterrupted run. --resume-check full catches a byte flipped in
# the middle of a tensor. An unknown mode is a usage error. test_resume_check covers which
# middle bytes the quick check skips.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
PY=$SYMPHONY_PYTHON
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-resume-check-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
# float32 output, so that most tensors are larger than the 32 KiB the quick check samples.
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $F/stories
  - source_model: $F/legal
symphony:
  attention: slerp
  seed: 3
YAML
merge() {
    "$BIN" merge --no-progress --shard-size 512K "$tmp/merge.yml" "$@"
}

merge "$tmp/ref" >/dev/null || { echo "uninterrupted merge failed"; exit 1; }

same_as_ref() {
    for f in "$tmp/ref"/*; do
        cmp -s "$f" "$1/$(basename "$f")" || { echo "$1: $(basename "$f") differs"; return 1; }
    done
}

# Prints "FILE OFFSET LENGTH NAME" for every journaled tensor of a partial directory of
# more than 64 KiB, from the journal's records and the shard headers.
journaled() {
    "$PY" - "$1" <<'PY'
import glob, json, os, struct, sys
d = sys.argv[1]
where = {}
for shard in sorted(glob.glob(os.path.join(d, "model-*.safetensors"))):
    with open(shard, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    for name, t in header.items():
        if name != "__metadata__":
            where[name] = (shard, 8 + n + t["data_offsets"][0])
data = open(os.path.join(d, ".symphony-journal"), "rb").read()
pos = 0
while pos + 8 <= len(data):
    magic, name_len = struct.unpack_from("<4sI", data, pos)
    fixed = 40 if magic == b"SYJ2" else 32
    offset, length = struct.unpack_from("<QQ", data, pos + 8)
    name = data[pos + fixed:pos + fixed + name_len].decode()
    pos += fixed + name_len + 8
    shard, start = where[name]
    if start != offset:
        sys.exit("journal offset %d of %s differs from the header's %d" % (offset, name, start))
    if length > 65536:
        print(shard, offset, length, name)
PY
}

flip_byte() { # file offset
    "$PY" - "$1" "$2" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x40]))
PY
}

# Kills a merge into $1 after several tensors are journaled; prints the first journaled
# tensor of more than 64 KiB.
killed_partial() {
    SYMPHONY_TEST_KILL_AT=120 merge "$1" >/dev/null 2>&1
    rc=$?
    [ $rc -eq 137 ] || { echo "kill: exit $rc, expected 137" >&2; return 1; }
    journaled "$1.partial" | head -1
}

# Resumes $1 with the extra options; expects the warning and the reference bytes.
resume_rewrites() {
    out=$1
    shift
    merge "$out" "$@" >"$tmp/resume.out" 2>"$tmp/resume.err"
    rc=$?
    [ $rc -eq 0 ] || { echo "$out: resume exit $rc"; cat "$tmp/resume.err"; return 1; }
    grep -q "failed the resume check" "$tmp/resume.err" ||
        { echo "$out: no warning about the failed resume check"; return 1; }
    same_as_ref "$out" || return 1
}

# First and last byte of a journaled tensor: always sampled.
for where in first last; do
    out="$tmp/damaged-$where"
    set -- $(killed_partial "$out") || { fail=1; continue; }
    [ $# -eq 4 ] || { echo "$where: no journaled tensor over 64 KiB"; fail=1; continue; }
    if [ $where = first ]; then at=$2; else at=$(($2 + $3 - 1)); fi
    flip_byte "$1" "$at"
    resume_rewrites "$out" || { echo "quick check missed the $where byte of $4"; fail=1; }
    grep -q "'$4'" "$tmp/resume.err" || { echo "$where: warning does not name $4"; fail=1; }
done

# A shard cut in the middle of a journaled tensor.
out="$tmp/truncated"
set -- $(killed_partial "$out")
if [ $# -eq 4 ]; then
    truncate -s $(($2 + $3 / 2)) "$1"
    resume_rewrites "$out" || { echo "quick check missed the truncated shard"; fail=1; }
else
    echo "truncated: no journaled tensor over 64 KiB"
    fail=1
fi

# The full check catches a byte flipped at a third and at two thirds of a tensor.
for part in 1 2; do
    out="$tmp/full-$part"
    set -- $(killed_partial "$out") || { fail=1; continue; }
    [ $# -eq 4 ] || { echo "full: no journaled tensor over 64 KiB"; fail=1; continue; }
    flip_byte "$1" $(($2 + $3 * part / 3))
    resume_rewrites "$out" --resume-check full ||
        { echo "full check missed a byte at $part/3 of $4"; fail=1; }
done

# A resume of an undamaged partial in either mode writes nothing twice and warns nothing.
for mode in quick full; do
    out="$tmp/clean-$mode"
    killed_partial "$out" >/dev/null || { fail=1; continue; }
    merge "$out" --resume-check $mode >"$tmp/clean.out" 2>"$tmp/clean.err" ||
        { echo "clean $mode: resume failed"; fail=1; }
    grep -q "failed the resume check" "$tmp/clean.err" && { echo "clean $mode: warned"; fail=1; }
    grep -q "tensors resumed from the journal" "$tmp/clean.out" ||
        { echo "clean $mode: nothing resumed"; fail=1; }
    same_as_ref "$out" || fail=1
done

merge "$tmp/usage" --resume-check sometimes >/dev/null 2>"$tmp/usage.err"
rc=$?
[ $rc -eq 2 ] || { echo "--resume-check sometimes: exit $rc, expected 2"; fail=1; }
grep -q "quick or full" "$tmp/usage.err" || { echo "usage error does not list the modes"; fail=1; }
exit $fail
