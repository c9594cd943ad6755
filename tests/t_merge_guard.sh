#!/bin/sh
# merge and verify on bad input: an output that overlaps a source, weights whose sum
# overflows or is zero, an empty or root OUTPUT_DIR, repeated YAML keys, a second YAML
# document, a tiny --memory-limit, a directory as the config, a missing or foreign
# manifest, and a source with a short sliding window.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-guard-XXXXXX")
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
fail=0
BIN=$SYMPHONY_BIN

# expect STATUS PATTERN COMMAND ARGS...: checks the exit status and that stderr or stdout
# contains PATTERN.
expect() {
    want=$1 pattern=$2
    shift 2
    "$BIN" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    if [ $rc -ne "$want" ] || ! grep -q -- "$pattern" "$tmp/stderr" "$tmp/stdout"; then
        echo "$*: exit $rc (expected $want), output:"
        cat "$tmp/stdout" "$tmp/stderr"
        echo "expected the pattern: $pattern"
        fail=1
    fi
}

# Copies of two sources, so that a merge that deletes one cannot touch the fixtures.
mkdir "$tmp/src"
cp -r "$F/legal" "$F/code" "$tmp/src/"
config() {
    file=$1
    shift
    {
        echo "dtype: float32"
        echo "gate_mode: random"
        echo "experts:"
        echo "  - source_model: $tmp/src/legal"
        echo "  - source_model: $tmp/src/code"
        for line in "$@"; do echo "$line"; done
    } >"$file"
}
config "$tmp/ok.yml"
sum_before=$(cat "$tmp/src/legal"/* | cksum)

# An output equal to, inside, or containing a source: rejected with and without --force.
expect 1 "overlaps source_model '$tmp/src/legal'" merge --force "$tmp/ok.yml" "$tmp/src/legal"
expect 1 "overlaps source_model" merge "$tmp/ok.yml" "$tmp/src/legal"
expect 1 "overlaps source_model" merge --force "$tmp/ok.yml" "$tmp/src/legal/out"
expect 1 "overlaps source_model" merge --force "$tmp/ok.yml" "$tmp/src"
ln -s "$tmp/src/code" "$tmp/code-link"
expect 1 "overlaps source_model '$tmp/src/code'" merge --force "$tmp/ok.yml" "$tmp/code-link"
config "$tmp/base.yml" "base_model: $F/base"
expect 1 "overlaps base_model" merge --force "$tmp/base.yml" "$F/base"
[ "$(cat "$tmp/src/legal"/* | cksum)" = "$sum_before" ] ||
    { echo "a rejected merge changed the source"; fail=1; }
[ -e "$tmp/src/legal.partial" ] || [ -e "$tmp/src/legal.lock" ] &&
    { echo "a rejected merge left .partial or .lock"; fail=1; }
# A sibling whose name starts with the source's name is not inside it.
"$BIN" merge -q "$tmp/ok.yml" "$tmp/src/legal2" || { echo "merge into legal2 failed"; fail=1; }

# Weights: an overflowing sum, a zero sum, and a schedule that is zero at one layer.
config "$tmp/w1.yml" "symphony:" "  weights: [1e308, 1e308]"
expect 1 "'symphony.weights' at layer 0 are \[1e+308, 1e+308\], which sum to inf" \
    merge "$tmp/w1.yml" "$tmp/o"
config "$tmp/w0.yml" "symphony:" "  weights: [0, 0]"
expect 1 "which sum to 0; expected a finite sum above 0" merge "$tmp/w0.yml" "$tmp/o"
config "$tmp/wl.yml" "symphony:" "  weights: [[1, 0], [1, 0]]"
expect 1 "'symphony.weights' at layer 4 are \[0, 0\]" merge "$tmp/wl.yml" "$tmp/o"

# OUTPUT_DIR "" is a usage error before any work; "/" contains every source.
(cd "$tmp" && "$BIN" merge ok.yml "" >stdout 2>stderr)
rc=$?
[ $rc -eq 2 ] || { echo "merge CONFIG '': exit $rc, expected 2"; cat "$tmp/stderr"; fail=1; }
grep -q "OUTPUT_DIR is empty" "$tmp/stderr" || { echo "no message for ''"; fail=1; }
[ -e "$tmp/.partial" ] || [ -e "$tmp/.lock" ] && { echo "merge '' left files"; fail=1; }
expect 1 "output directory / (/) overlaps source_model" merge "$tmp/ok.yml" /
grep -q -- "--force" "$tmp/stderr" && { echo "merge CONFIG / suggests --force"; fail=1; }

# YAML: a repeated key names both lines; a second document is rejected.
config "$tmp/dup.yml" "dtype: bfloat16"
expect 1 "key 'dtype' appears twice in one mapping (lines 1 and 6)" merge "$tmp/dup.yml" "$tmp/o"
config "$tmp/dup2.yml" "symphony:" "  seed: 1" "  seed: 2"
expect 1 "key 'seed' appears twice in one mapping (lines 7 and 8)" merge "$tmp/dup2.yml" "$tmp/o"
config "$tmp/doc2.yml" "---" "dtype: float16"
expect 1 "a second YAML document starts near line 7" merge "$tmp/doc2.yml" "$tmp/o"

# A tiny --memory-limit is printed in bytes, not as 0 MiB.
expect 1 "more than --memory-limit (1 bytes)" merge --memory-limit 1 "$tmp/ok.yml" "$tmp/o"
grep -q "0 MiB" "$tmp/stderr" && { echo "--memory-limit 1 printed 0 MiB"; fail=1; }
expect 1 "more than --memory-limit (2.00 KiB)" merge --memory-limit 2K "$tmp/ok.yml" "$tmp/o"

# A directory given as the config.
expect 1 "$tmp/src is a directory; expected a YAML merge config file" merge "$tmp/src" "$tmp/o"

# verify: a deleted manifest and a manifest naming another checksum algorithm.
cp -r "$tmp/src/legal2" "$tmp/v1"
rm "$tmp/v1/symphony-manifest.json"
expect 1 "symphony-manifest.json: cannot be read: No such file or directory" verify "$tmp/v1"
grep -q "line -1" "$tmp/stdout" && { echo "verify printed line -1"; fail=1; }
cp -r "$tmp/src/legal2" "$tmp/v2"
sed -i 's/"xxh3-64"/"md5"/' "$tmp/v2/symphony-manifest.json"
expect 1 '"checksum" is "md5"; expected "xxh3-64"' verify "$tmp/v2"

# A source with a sliding window shorter than its context is rejected; a window at least
# as long as the context (no effect) is accepted.
cp -r "$F/code" "$tmp/sw"
sed -i 's/^{/{"sliding_window": 128,/' "$tmp/sw/config.json"
sed "s|$tmp/src/code|$tmp/sw|" "$tmp/ok.yml" >"$tmp/sw.yml"
expect 1 "'sliding_window' is 128, below max_position_embeddings 512" merge "$tmp/sw.yml" "$tmp/o"
sed -i 's/"sliding_window": 128/"sliding_window": 512/' "$tmp/sw/config.json"
"$BIN" merge -q "$tmp/sw.yml" "$tmp/sw-out" || { echo "sliding_window 512 rejected"; fail=1; }
[ -e "$tmp/o" ] || [ -e "$tmp/o.partial" ] && { echo "a rejected merge left output"; fail=1; }
exit $fail
