#!/bin/sh
# The bundled example behind `make demo`: merge small models into a MoE, verify the result
# and evaluate it. With ../shared/fixtures/real present it merges the four real experts of
# stories260K and scores each domain's held-out text; otherwise it merges two synthetic
# checkpoints that it generates itself.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
BUILD=${BUILD:-build}
bin="$top/$BUILD/symphony-stream"
out="$top/$BUILD/demo"
mkdir -p "$out"
real="${SYMPHONY_SHARED:-$top/../shared}/fixtures/real"

step() { printf '\n== %s\n' "$*"; }

if [ -d "$real" ]; then
    config=fixtures/configs/demo.yml
    step "inspect the four sources"
    "$bin" inspect "$real/stories" "$real/legal" "$real/code" "$real/docs" | tail -n 2
    step "merge ($config)"
    "$bin" merge --force "$config" "$out/moe"
    step "verify"
    "$bin" verify "$out/moe"
    step "held-out perplexity of the merged model, per domain"
    for domain in stories legal code docs; do
        ppl=$("$bin" eval "$out/moe" --text "$real/text/$domain/eval.txt" -q | awk '/^perplexity/ {print $2}')
        printf '  %-8s %s\n' "$domain" "$ppl"
    done
    step "greedy continuation of \"Once upon a time\""
    "$bin" generate "$out/moe" --prompt "Once upon a time" -n 40 -q
else
    echo "../shared/fixtures/real is not present: using two generated checkpoints"
    make --no-print-directory -s "$BUILD/tests/tool_synth"
    "$BUILD/tests/tool_synth" "$out/a" layers=4 hidden=64 intermediate=172 heads=8 kv_heads=4 vocab=512 seed=1
    "$BUILD/tests/tool_synth" "$out/b" layers=4 hidden=64 intermediate=172 heads=8 kv_heads=4 vocab=512 seed=2
    cat > "$out/demo.yml" <<YAML
base_model: a
dtype: bfloat16
experts_per_token: 2
gate_mode: random
experts:
  - source_model: a
  - source_model: b
YAML
    step "inspect"
    "$bin" inspect "$out/a" "$out/b" | tail -n 1
    step "merge"
    "$bin" merge --force "$out/demo.yml" "$out/moe"
    step "verify"
    "$bin" verify "$out/moe"
    step "perplexity on README (a meaningless number for random weights; it shows the path works)"
    "$bin" eval "$out/moe" --text README -q
fi
step "done: the merged model is in $out/moe"
