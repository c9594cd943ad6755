#!/bin/sh
# Inputs that cannot live in the committed corpus: a directory that is not a model, FIFOs
# (which must be rejected without blocking), text that is not UTF-8, and a header with
# more tensors than the limit.
set -u
bin=$SYMPHONY_BIN
real="$SYMPHONY_TOP/fixtures/bad/cases/good"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

expect() { # expect STATUS TEXT COMMAND...
    status=$1 text=$2
    shift 2
    out=$(timeout 20 "$@" 2>&1)
    rc=$?
    [ "$rc" = "$status" ] || { echo "FAIL: $*: exit $rc, expected $status: $out"; fail=1; return; }
    case "$out" in *"$text"*) ;; *) echo "FAIL: $*: output lacks '$text': $out"; fail=1 ;; esac
}

# A directory without config.json, and a path that does not exist.
mkdir "$tmp/empty"
expect 1 "empty: no config.json, so this is not a Hugging Face model directory" \
    "$bin" inspect "$tmp/empty"
expect 1 "missing: not a model directory: No such file or directory" \
    "$bin" inspect "$tmp/missing"

mkfifo "$tmp/fifo.txt"
expect 1 "fifo.txt: not a regular file" "$bin" eval "$real" --text "$tmp/fifo.txt"
expect 1 "fifo.txt: not a regular file" "$bin" tokenize "$real" --text "$tmp/fifo.txt"

mkdir "$tmp/fifo-model"
cp "$real/config.json" "$real/tokenizer.json" "$tmp/fifo-model/"
mkfifo "$tmp/fifo-model/model.safetensors"
expect 1 "model.safetensors: not a regular file" "$bin" inspect "$tmp/fifo-model"
rm "$tmp/fifo-model/config.json"
mkfifo "$tmp/fifo-model/config.json"
expect 1 "config.json: not a regular file" "$bin" inspect "$tmp/fifo-model"

printf 'abc \303\050 def' > "$tmp/bad-utf8.txt"
expect 1 "invalid UTF-8 at byte 4 (0xc3)" "$bin" tokenize "$real" --text "$tmp/bad-utf8.txt"
printf 'surrogate \355\240\200' > "$tmp/surrogate.txt"
expect 1 "invalid UTF-8 at byte 10 (0xed)" "$bin" eval "$real" --text "$tmp/surrogate.txt"
printf 'overlong \300\257' > "$tmp/overlong.txt"
expect 1 "invalid UTF-8 at byte 9 (0xc0)" "$bin" tokenize "$real" --text "$tmp/overlong.txt"
printf 'fine: \303\251\342\226\201\360\237\231\202\n' > "$tmp/good.txt"
expect 0 "" "$bin" tokenize "$real" --text "$tmp/good.txt"

# One tensor over the count limit, each a single byte: rejected before the JSON is parsed.
if command -v python3 >/dev/null; then
    mkdir "$tmp/many"
    cp "$real/config.json" "$tmp/many/"
    python3 - "$tmp/many/model.safetensors" <<'PY'
import json, struct, sys
n = 262145
header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(n)}
text = json.dumps(header, separators=(",", ":")).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + bytes(n))
PY
    expect 1 "header lists about 262145 tensors, more than the limit of 262144" \
        "$bin" inspect "$tmp/many"
fi
exit $fail
