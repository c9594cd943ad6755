#!/bin/sh
# eval on synthetic BF16 models of one width (hidden 1024, FFN 2816) with 4, 8 and 16
# layers, from a cold page cache: peak RSS must not grow with the layer count. Then the
# 16-layer model with each prefetch mode, and fio's sequential io_uring read of the same
# file for the read-bound floor.
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
}

for layers in 4 8 16; do run $layers read; done
run 16 advise
run 16 none
if command -v fio >/dev/null; then
    evict "$dir/l16/model.safetensors"
    fio --name=seq --filename="$dir/l16/model.safetensors" --rw=read --bs=1M \
        --ioengine=io_uring --iodepth=16 --readonly 2>/dev/null |
        sed -n 's/^ *READ: \(bw=[^ ]*\).*/fio sequential io_uring read: \1/p'
fi
