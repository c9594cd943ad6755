#!/bin/sh
# Build every tests/fuzz/fuzz_*.c with clang's libFuzzer and run each for FUZZ_SECONDS
# (default 60; FUZZ_TARGETS="fuzz_x fuzz_y" runs a subset), seeded from the bad-input corpus and the real fixtures when present.
# Crashes are written to build-fuzz/crashes/; each one becomes a case in fixtures/bad/.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
seconds=${FUZZ_SECONDS:-60}
out=build-fuzz
mkdir -p "$out/crashes"
command -v clang >/dev/null || { echo "fuzz: clang is not installed (apt-get install clang libclang-rt-14-dev)"; exit 1; }

lib_src=$(ls src/*.c src/simd/*.c 2>/dev/null || true)
flags="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Isrc $(pkg-config --cflags liburing libzstd jansson yaml-0.1 openblas libxxhash)"
libs="$(pkg-config --libs liburing libzstd jansson yaml-0.1 openblas libxxhash) -lm -lpthread"
simd_flags() {
    case "$1" in
        *_avx2.c) echo "-mavx2 -mfma -mf16c" ;;
        *_avx512.c) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c" ;;
    esac
}
mkdir -p "$out/obj"
objs=""
for f in $lib_src; do
    o="$out/obj/$(echo "$f" | tr / _).o"
    # shellcheck disable=SC2046
    clang $flags $(simd_flags "$f") -fsanitize=fuzzer-no-link,address,undefined -c "$f" -o "$o"
    objs="$objs $o"
done

seed_dir() {
    name=$1
    d="$out/seeds/$name"
    rm -rf "$d"
    mkdir -p "$d"
    case "$name" in
        fuzz_safetensors)
            for f in fixtures/bad/cases/*/model*.safetensors; do
                head -c 65536 "$f" > "$d/$(echo "$f" | tr / _)"
            done ;;
        fuzz_config)
            for f in fixtures/bad/cases/*/config.json ../shared/fixtures/real/*/config.json; do
                [ -f "$f" ] && cp "$f" "$d/$(echo "$f" | tr / _)"
            done ;;
        fuzz_model_dir)
            cp fixtures/bad/cases/*/model.safetensors.index.json "$d/" 2>/dev/null || true
            i=0
            for f in fixtures/bad/cases/*/model.safetensors.index.json; do
                cp "$f" "$d/index$i.json"; i=$((i + 1))
            done ;;
        fuzz_tokenizer)
            for f in fixtures/bad/tokenizer/*.json ../shared/fixtures/real/base/tokenizer.json; do
                [ -f "$f" ] && cp "$f" "$d/$(echo "$f" | tr / _)"
            done ;;
        fuzz_mergecfg)
            for f in fixtures/configs/*.yml; do
                [ -f "$f" ] && cp "$f" "$d/$(echo "$f" | tr / _)"
            done ;;
        *)
            for f in tests/fuzz/seeds/"$name"/*; do [ -f "$f" ] && cp "$f" "$d/"; done ;;
    esac
    echo "$d"
}

for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    case " ${FUZZ_TARGETS:-$name} " in *" $name "*) ;; *) continue ;; esac
    # shellcheck disable=SC2086
    clang $flags -fsanitize=fuzzer,address,undefined -o "$out/$name" "$src" $objs $libs
    seeds=$(seed_dir "$name")
    echo "== $name: ${seconds}s"
    mkdir -p "$out/corpus-$name"
    SYMPHONY_TOP="$top" "$out/$name" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$out/crashes/$name-" "$out/corpus-$name" "$seeds" 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE|INFO: .*corpus|==[0-9]+==ERROR)" || true
done
ls "$out/crashes" | head
