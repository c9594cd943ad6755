#!/bin/sh
# Every tensor read by our reader equals what an independent numpy reader (the reference
# st_io.py) reads: the real fixtures (F32, BF16, 3 shards, MoE) and synthetic F16/BF16
# checkpoints.
set -eu
[ -n "$SYMPHONY_SHARED" ] || { echo "skipped: ../shared is not present"; exit 77; }
"$SYMPHONY_PYTHON" -c 'import numpy' 2>/dev/null ||
    { echo "skipped: python3-numpy is not installed"; exit 77; }

tools="$SYMPHONY_SHARED/tools"
real="$SYMPHONY_SHARED/fixtures/real"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$SYMPHONY_BUILD/tests/tool_synth" "$tmp/f16" dtype=F16 shards=2 tied=0
"$SYMPHONY_BUILD/tests/tool_synth" "$tmp/bf16" dtype=BF16 shards=1 tied=1 seed=7

for dir in "$real/base" "$real/legal-bf16" "$real/code-permuted" "$real/moe-btx" \
           "$tmp/f16" "$tmp/bf16"; do
    "$SYMPHONY_BUILD/tests/tool_dump" "$dir" "$tmp/dump"
    "$SYMPHONY_PYTHON" tests/reader_compare.py "$tools" "$dir" "$tmp/dump"
done
