#!/bin/sh
# Checks every fusion rule of merge against an independent numpy computation
# (tests/fusion_check.py). Covered: SLERP of two sources, multi-SLERP of three with a
# per-layer weight schedule, linear and base attention, norms and the union vocabulary
# (rows only a longer base model has come from it),
# task arithmetic of each component (with a separate base model and with an expert as the
# base, beside a source with more vocabulary rows than the base, and with a base whose
# vocabulary is blocks shorter than the output).
# Also an untied lm_head, expert copies, random routers, and bf16 output as the rounded
# f32 result.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import numpy' 2>/dev/null; then
    echo "skipped: $PY has no numpy"
    exit 77
fi
check="$SYMPHONY_TOP/tests/fusion_check.py"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-fusion-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
"$PY" "$check" make-sources "$F" "$tmp" || { echo "could not build test sources"; exit 1; }

# run NAME ATTENTION WEIGHTS EXTRA_LINE SOURCES...: merges, then checks with numpy.
# $symphony_extra contains more lines of the symphony: section, $spec_extra more JSON keys of
# the check's spec (with a leading comma).
symphony_extra=""
spec_extra=""
run() {
    name=$1 attention=$2 weights=$3 extra=$4
    shift 4
    {
        [ -n "$extra" ] && echo "$extra"
        echo "dtype: float32"
        echo "gate_mode: random"
        echo "experts_per_token: 1"
        echo "experts:"
        for s in "$@"; do echo "  - source_model: $s"; done
        echo "symphony:"
        echo "  attention: $attention"
        [ -n "$weights" ] && echo "  weights: $weights"
        [ -n "$symphony_extra" ] && printf '%s\n' "$symphony_extra"
    } >"$tmp/$name.yml"
    "$SYMPHONY_BIN" merge -q "$tmp/$name.yml" "$tmp/$name" || { echo "$name: merge failed"; fail=1; return; }
    sources=$(printf '"%s",' "$@")
    anchor=""
    case "$extra" in base_model:*) anchor=", \"anchor\": \"${extra#base_model: }\"" ;; esac
    printf '{"output": "%s", "sources": [%s], "attention": "%s", "router": "random"%s%s%s}\n' \
        "$tmp/$name" "${sources%,}" "$attention" "${weights:+, \"weights\": $weights}" \
        "$anchor" "$spec_extra" >"$tmp/$name.json"
    "$PY" "$check" check "$tmp/$name.json" || { echo "$name: numpy check failed"; fail=1; }
}

run slerp2 slerp "[1, 3]" "" "$tmp/stories-520" "$F/legal"
run slerp3 slerp "[[1, 3], 1, 1]" "" "$F/stories" "$F/legal" "$F/code"
run linear linear "[2, 1]" "" "$F/legal" "$F/code"
run base base "" "base_model: $F/base" "$F/legal" "$tmp/docs-untied"
# A base longer than every expert donates the rows no expert has.
run donor linear "" "base_model: $tmp/stories-520" "$F/legal" "$tmp/docs-untied"

# Task arithmetic everywhere, against a base that is not an expert: stories-520 has rows
# the base lacks (their selective mean), docs-untied an lm_head (the base's is its
# embedding).
symphony_extra="  embeddings: task-arithmetic
  norms: task-arithmetic
  task_scale: 0.35"
spec_extra=", \"embeddings\": \"task-arithmetic\", \"norms\": \"task-arithmetic\", \"task_scale\": 0.35, \"base\": \"$F/base\""
run task task-arithmetic "[[1, 3], 1, 2]" "base_model: $F/base" \
    "$tmp/stories-520" "$F/legal" "$tmp/docs-untied"
# Only the embeddings, with an expert as the base; the attention stays SLERP.
symphony_extra="  embeddings: task-arithmetic
  task_scale: 0.6"
spec_extra=", \"embeddings\": \"task-arithmetic\", \"task_scale\": 0.6, \"base\": \"$F/legal\""
run task-self slerp "" "base_model: $F/legal" "$F/legal" "$F/code" "$F/docs"
# A base whose vocabulary ends whole blocks before the output's: its missing rows are the
# experts' mean, and the empty blocks are not read.
symphony_extra="  embeddings: task-arithmetic
  task_scale: 0.5"
spec_extra=", \"embeddings\": \"task-arithmetic\", \"task_scale\": 0.5, \"base\": \"$tmp/base-200\""
run task-short linear "" "base_model: $tmp/base-200" "$F/legal" "$tmp/stories-520"
symphony_extra=""
spec_extra=""

# bf16 output: the same merge as slerp3, rounded.
sed 's/^dtype: float32/dtype: bfloat16/' "$tmp/slerp3.yml" >"$tmp/slerp3-bf16.yml"
"$SYMPHONY_BIN" merge -q "$tmp/slerp3-bf16.yml" "$tmp/slerp3-bf16" || fail=1
printf '{"f32": "%s", "bf16": "%s"}\n' "$tmp/slerp3" "$tmp/slerp3-bf16" >"$tmp/bf16.json"
"$PY" "$check" check "$tmp/bf16.json" || { echo "bf16: numpy check failed"; fail=1; }

# The router depends on --seed and nothing else does.
"$SYMPHONY_BIN" merge -q --seed 99 "$tmp/slerp2.yml" "$tmp/seed99" || fail=1
"$PY" - "$tmp/slerp2" "$tmp/seed99" <<'PY' || { echo "seed check failed"; fail=1; }
import os, sys
sys.path.insert(0, os.path.join(os.environ["SYMPHONY_SHARED"], "tools"))
import numpy as np, st_io
_, a, _ = st_io.load_model_dir(sys.argv[1])
_, b, _ = st_io.load_model_dir(sys.argv[2])
for k in a:
    same = np.array_equal(a[k], b[k])
    if same == k.endswith("block_sparse_moe.gate.weight"):
        sys.exit("%s: %s with another seed" % (k, "unchanged" if same else "changed"))
PY
exit $fail
