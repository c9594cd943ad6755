#!/bin/sh
# eval on synthetic BF16 models of one width (hidden 1024, FFN 2816) with 4, 8 and 16
# layers, from a cold page cache: peak RSS must not grow with the layer count. Then the
# 16-layer model with each prefetch mode, and fio's sequential io_uring read of the same
# file: each 16-layer run's file bytes over its wall time, as a share of fio's bandwidth.
# With 1024 tokens these runs are compute-bound, so the share is far below 100%;
# bench/b_eval_7b.sh measures the read-bound case.
set -eu
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
dir=${BENCH_DIR:-/tmp/symphony-bench-eval}
mkdir -p "$dir"
"$py" -c 'import random; random.seed(1); print(" ".join(str(random.randrange(3, 4096)) for _ in range(1024)))' >"$dir/ids"

evict() { "$py" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"; }

run() { # layers prefetch
    m="$dir/l$1"
    [ -f "$m/config.json" ] || "$py" "$SYMPHONY_TOP/bench/make_synthetic.py" "$m" "$1"
    evict "$m/model.safetensors"
    /usr/bin/time -v "$SYMPHONY_BIN" eval "$m" --ids "$dir/ids" --prefetch "$2" -v -v \
        --threads "${THREADS:-2}" >/dev/null 2>"$dir/log"
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$dir/log")
    wall=$(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$dir/log")
    tps=$(sed -n 's/.* \([0-9]*\) tokens\/s.*/\1/p' "$dir/log")
    size=$(du -m "$m/model.safetensors" | cut -f1)
    printf '%-3s layers %5s MB  prefetch %-6s  peak RSS %7s KiB  wall %8s  %6s tokens/s\n' \
        "$1" "$size" "$2" "$rss" "$wall" "$tps"
    # /usr/bin/time prints the wall time as [h:]m:ss.ss.
    seconds=$(echo "$wall" | awk -F: '{s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s}')
    [ "$1" = 16 ] && echo "$2 $seconds $(stat -c %s "$m/model.safetensors")" >>"$dir/walls"
    return 0
}
: >"$dir/walls"

for layers in 4 8 16; do run $layers read; done
run 16 advise
run 16 none
if command -v fio >/dev/null; then
    evict "$dir/l16/model.safetensors"
    fio --name=seq --filename="$dir/l16/model.safetensors" --rw=read --bs=4M \
        --ioengine=io_uring --iodepth=64 --readonly --output-format=json >"$dir/fio.json"
    fio_bw=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1]))["jobs"][0]["read"]; print(r["io_bytes"] / (r["runtime"] / 1000))' "$dir/fio.json")
    echo "$fio_bw" | awk '{printf "fio sequential io_uring read (bs 4M, depth 64): %.0f MB/s\n", $1 / 1e6}'
    while read -r mode seconds bytes; do
        echo "$mode $seconds $bytes $fio_bw" | awk '{bw = $3 / $2;
            printf "16 layers, prefetch %-6s: %5.0f MB/s, %.0f%% of fio\n", $1, bw / 1e6,
                   100 * bw / $4}'
    done <"$dir/walls"
fi
