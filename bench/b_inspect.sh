#!/bin/sh
# Time to inspect a 13B-shaped sharded checkpoint (headers and config only). The shards
# are sparse files: inspect never reads tensor data, so holes do not flatter it.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$SYMPHONY_BUILD/tests/tool_synth" "$tmp/13b" layers=40 hidden=5120 intermediate=13824 \
    heads=40 kv_heads=40 vocab=32000 dtype=BF16 shards=3 sparse=1 max_position=4096
runs=20
start=$(date +%s%N)
i=0
while [ $i -lt $runs ]; do
    "$SYMPHONY_BIN" inspect "$tmp/13b" >/dev/null
    i=$((i + 1))
done
end=$(date +%s%N)
echo "inspect, 13B shape (40 layers, 363 tensors, 3 shards, $(du -sh --apparent-size "$tmp/13b" | cut -f1) apparent):"
echo "  $(( (end - start) / runs / 1000 )) us per run (mean of $runs, whole process)"
