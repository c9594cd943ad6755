#!/bin/sh
# generate: greedy decoding reproduces the reference ids; sampling is reproducible by seed.
set -u
real="${SYMPHONY_SHARED:-}/fixtures/real"
if [ -z "${SYMPHONY_SHARED:-}" ] || [ ! -f "$real/reference/greedy.ids" ]; then
    echo "skipped: fixtures not found (set SYMPHONY_SHARED)"
    exit 77
fi
fail=0
expected=$(tr -s ' \n' ' ' <"$real/reference/greedy.ids" | sed 's/ $//')
# BOS + "Once upon a time": the first 5 reference ids; 60 new ids make the 65.
prompt=$(echo "$expected" | cut -d' ' -f1-5)
got=$("$SYMPHONY_BIN" generate "$real/base" --prompt-ids "$prompt" -n 60 -q)
if [ "$got" != "$expected" ]; then
    echo "FAIL: greedy ids differ"
    echo "  got      $got"
    echo "  expected $expected"
    fail=1
fi

a=$("$SYMPHONY_BIN" generate "$real/base" --prompt-ids "$prompt" -n 20 --temperature 1 \
    --seed 7 -q)
b=$("$SYMPHONY_BIN" generate "$real/base" --prompt-ids "$prompt" -n 20 --temperature 1 \
    --seed 7 -q --threads 2)
[ "$a" = "$b" ] || { echo "FAIL: same seed, different samples: $a / $b"; fail=1; }
[ "$(echo "$a" | wc -w)" -ge 6 ] || { echo "FAIL: no sampled ids: $a"; fail=1; }

# Prompt plus new tokens beyond max_position_embeddings (512) is rejected with exit 1.
"$SYMPHONY_BIN" generate "$real/base" --prompt-ids "$prompt" -n 600 >/dev/null 2>&1
[ $? -eq 1 ] || { echo "FAIL: -n 600 did not fail with exit 1"; fail=1; }
"$SYMPHONY_BIN" generate "$real/base" --prompt-ids "1 x" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: bad --prompt-ids did not exit 2"; fail=1; }

# A text prompt goes through the model's tokenizer and the output is text: the known
# greedy continuation of the reference.
text=$("$SYMPHONY_BIN" generate "$real/base" --prompt "Once upon a time" -n 64 \
    --temperature 0 -q)
expected="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
case "$text" in
    "$expected"*) ;;
    *) echo "FAIL: --prompt text output: $text"; fail=1 ;;
esac
"$SYMPHONY_BIN" generate "$real/base" --prompt "x" --prompt-ids "1" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: --prompt with --prompt-ids did not exit 2"; fail=1; }
exit $fail
