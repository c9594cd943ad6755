#!/bin/sh
# Size limits on hostile input, under a 1 GiB address-space limit (ulimit -v): an oversized
# config.json, model.safetensors.index.json, tokenizer.json, merge config and journal, and
# a safetensors header of the maximum length. Each must fail with exit status 1 and a
# message that names the limit, never allocate the whole file or crash. The large files are
# sparse, so they cost no disk space.
set -u
BIN=$SYMPHONY_BIN
CASES=$SYMPHONY_TOP/fixtures/bad/cases
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-limits-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

# A sanitizer build reserves terabytes of address space and cannot run under ulimit -v.
vlimit=1048576
if (ulimit -v $vlimit && "$BIN" --version) >/dev/null 2>&1; then
    limited() { (ulimit -v $vlimit && "$@"); }
    echo "running under ulimit -v $vlimit (KiB)"
else
    limited() { "$@"; }
    echo "note: this build cannot run under ulimit -v; checking the messages only"
fi

# Runs a command that must fail with exit 1 and print the expected text.
expect_limit() {
    label=$1 expected=$2
    shift 2
    limited "$@" >"$tmp/log" 2>&1
    rc=$?
    [ $rc -eq 1 ] || { echo "$label: exit $rc, expected 1"; sed 's/^/    /' "$tmp/log"; fail=1; }
    grep -q -- "$expected" "$tmp/log" ||
        { echo "$label: output lacks '$expected':"; sed 's/^/    /' "$tmp/log"; fail=1; }
}

# A model directory copied from the good case, with one file replaced by a sparse one.
model_with() {
    dir="$tmp/$1"
    rm -rf "$dir"
    cp -r "$CASES/${3:-good}" "$dir"
    rm -f "$dir/$2"
    truncate -s "$4" "$dir/$2"
    echo "$dir"
}

d=$(model_with big-config config.json good 17M)
expect_limit "config.json of 17 MiB" "limit" "$BIN" inspect "$d"

d=$(model_with big-index model.safetensors.index.json sharded-good 257M)
expect_limit "index of 257 MiB" "limit" "$BIN" inspect "$d"

d=$(model_with big-tokenizer tokenizer.json good 257M)
printf 'hello\n' >"$tmp/text"
expect_limit "tokenizer.json of 257 MiB" "limit" "$BIN" tokenize "$d" --text "$tmp/text"

# A header length of exactly 100,000,000 bytes (the maximum) over a sparse file: the
# parser sees 100 MB of zero bytes, which is not JSON.
"$SYMPHONY_PYTHON" - "$tmp/max-header.safetensors" <<'PY' || fail=1
import struct, sys
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", 100_000_000))
    f.truncate(8 + 100_000_000)
PY
d=$(model_with max-header model.safetensors good 0)
mv "$tmp/max-header.safetensors" "$d/model.safetensors"
expect_limit "header of 100,000,000 bytes" "model.safetensors" "$BIN" inspect "$d"
# One byte more is over the limit.
d=$(model_with over-header model.safetensors good 0)
"$SYMPHONY_PYTHON" - "$d/model.safetensors" <<'PY' || fail=1
import struct, sys
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", 100_000_001))
    f.truncate(8 + 100_000_001)
PY
expect_limit "header of 100,000,001 bytes" "100000000" "$BIN" inspect "$d"

# A merge config of 17 MiB: a comment line repeated.
awk 'BEGIN { for (i = 0; i < 300000; i++) print "# padding padding padding padding padding padding" }' \
    >"$tmp/big.yml"
truncate -s 17M "$tmp/big.yml"
expect_limit "merge config of 17 MiB" "SYM_MERGE_CONFIG_MAX_BYTES" \
    "$BIN" merge -q "$tmp/big.yml" "$tmp/never"
[ ! -e "$tmp/never" ] || { echo "merge config of 17 MiB: output created"; fail=1; }

# A journal of 257 MiB in the partial directory of a killed merge.
F=${SYMPHONY_SHARED:-}/fixtures/real
if [ -n "${SYMPHONY_SHARED:-}" ] && [ -d "$F" ]; then
    cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
gate_mode: random
experts:
  - source_model: $F/stories
  - source_model: $F/legal
YAML
    SYMPHONY_TEST_KILL_AT=20 "$BIN" merge -q "$tmp/merge.yml" "$tmp/out" 2>/dev/null
    truncate -s 257M "$tmp/out.partial/.symphony-journal"
    expect_limit "journal of 257 MiB" "the journal is 269484032 bytes, more than the limit" \
        "$BIN" merge -q "$tmp/merge.yml" "$tmp/out"
    "$BIN" merge -q --restart "$tmp/merge.yml" "$tmp/out" ||
        { echo "journal of 257 MiB: --restart failed"; fail=1; }
else
    echo "note: journal case skipped: SYMPHONY_SHARED with fixtures/real is not available"
fi
exit $fail
