#!/bin/sh
# tokenize against the fixtures' independent PyTorch oracle (oracle.py encode and decode),
# on varied text written for this test and on two whole corpus files.
set -u
real=${SYMPHONY_SHARED:-}/fixtures/real
oracle=${SYMPHONY_SHARED:-}/tools/oracle.py
python=${SYMPHONY_PYTHON:-/usr/bin/python3}
if [ -z "${SYMPHONY_SHARED:-}" ] || [ ! -f "$oracle" ] || [ ! -d "$real/base" ]; then
    echo "skipped: the real fixtures or oracle.py are missing (set SYMPHONY_SHARED)"
    exit 77
fi
if ! "$python" -c 'import torch, numpy' 2>/dev/null; then
    echo "skipped: $python cannot import torch and numpy, which oracle.py needs"
    exit 77
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$real/base
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# Normalizes whitespace so that only the sequence of ids is compared.
ids_of() {
    tr -s ' \n' '\n\n' < "$1" | sed '/^$/d'
}

check_file() {
    name=$1
    text=$2
    "$python" "$oracle" encode --model "$model" "$text" > "$tmp/$name.oracle" ||
        { fail "$name: oracle.py encode failed"; return; }
    "$SYMPHONY_BIN" tokenize "$model" --text "$text" --bos > "$tmp/$name.ids" ||
        { fail "$name: tokenize --text failed"; return; }
    ids_of "$tmp/$name.oracle" > "$tmp/a"
    ids_of "$tmp/$name.ids" > "$tmp/b"
    cmp -s "$tmp/a" "$tmp/b" || fail "$name: ids differ from oracle.py: $(diff "$tmp/a" "$tmp/b" | head -4 | tr '\n' ' ')"

    "$python" "$oracle" decode --model "$model" "$tmp/$name.oracle" > "$tmp/$name.oracle.txt" ||
        { fail "$name: oracle.py decode failed"; return; }
    "$SYMPHONY_BIN" tokenize "$model" --decode --ids "$tmp/$name.ids" > "$tmp/$name.txt" ||
        { fail "$name: tokenize --decode failed"; return; }
    cmp -s "$tmp/$name.oracle.txt" "$tmp/$name.txt" || fail "$name: decoded text differs from oracle.py"
    echo "ok: $name ($(wc -l < "$tmp/b") ids)"
}

check_file varied "$SYMPHONY_TOP/tests/tokenizer/varied.txt"
check_file docs-eval "$real/text/docs/eval.txt"
check_file code-eval "$real/text/code/eval.txt"

# Text without special-token strings decodes back to itself.
"$SYMPHONY_BIN" tokenize "$model" --decode --ids "$tmp/docs-eval.ids" | cmp -s - "$real/text/docs/eval.txt" ||
    fail "docs-eval: decode(encode(text)) differs from the text"

[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "t_tokenizer_oracle: all checks passed"
