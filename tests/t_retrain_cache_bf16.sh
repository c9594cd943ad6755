#!/bin/sh
# symphony.cache_dtype bf16: the hidden-state caches are stored as bf16, a merge killed
# inside calibration resumes to model files byte-identical to an uninterrupted run, and
# retrain-router on the bf16 router inputs reproduces the merge's routers byte for byte.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-cache-bf16-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
experts_per_token: 2
$(real_experts)
symphony:
  calibration_tokens: 2048
  cache_dtype: bf16
  seed: 3
  router:
    objective: distill
    steps: 40
YAML
merge() {
    "$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$@"
}
merge "$tmp/ref" || { echo "uninterrupted merge failed"; exit 1; }

# Byte 8 of a cache file is its dtype: 1 for bf16.
for f in merged-3.hc h-1-2.hc x-4.hc; do
    dtype=$(od -An -tu1 -j8 -N1 "$tmp/ref/symphony-work/$f" | tr -d ' ')
    [ "$dtype" = 1 ] || { echo "$f: dtype byte $dtype, expected 1 (bf16)"; fail=1; }
done
"$BIN" merge -q --cache-dtype f32 --shard-size 512K "$tmp/merge.yml" "$tmp/f32" ||
    { echo "merge --cache-dtype f32 failed"; exit 1; }
dtype=$(od -An -tu1 -j8 -N1 "$tmp/f32/symphony-work/merged-3.hc" | tr -d ' ')
[ "$dtype" = 0 ] || { echo "--cache-dtype f32: dtype byte $dtype, expected 0"; fail=1; }
cat "$tmp/ref"/*.safetensors >"$tmp/ref.bin"
cat "$tmp/f32"/*.safetensors >"$tmp/f32.bin"
cmp -s "$tmp/ref.bin" "$tmp/f32.bin" &&
    { echo "the bf16 cache gave the same model as the f32 cache"; fail=1; }
rm -rf "$tmp/f32" "$tmp/f32.bin"

same_as_ref() {
    for f in "$tmp/ref"/*; do
        name=$(basename "$f")
        case $name in merge-report.json | symphony-work) continue ;; esac
        cmp -s "$f" "$1/$name" || { echo "$1: $name differs"; return 1; }
    done
}

points=0
for k in 3 8 20 45; do
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
[ $points -ge 3 ] || { echo "only $points kill points were reached"; fail=1; }

cp -R "$tmp/ref" "$tmp/retrained"
"$BIN" retrain-router -q "$tmp/retrained" || { echo "retrain-router failed"; exit 1; }
cat "$tmp/retrained"/*.safetensors >"$tmp/retrained.bin"
cmp -s "$tmp/ref.bin" "$tmp/retrained.bin" &&
    cmp -s "$tmp/ref/symphony-manifest.json" "$tmp/retrained/symphony-manifest.json" ||
    { echo "retrain-router on the bf16 cache did not reproduce the merge"; fail=1; }
echo "$points kill points resumed"
exit $fail
