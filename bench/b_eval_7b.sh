#!/bin/sh
# eval on a synthetic model of Llama 2 7B's width (hidden 4096, 32 heads, 32 KV heads, FFN
# 11008, vocab 32000, BF16, 4 shards) with LAYERS decoder layers (default 8, about 3.7 GB
# on disk), measured two ways:
#
# 1. Read-bound: one chunk of 16 tokens from a cold page cache in each prefetch mode,
#    against fio's sequential io_uring read of the same shards in the same run. The ratio
#    is (bytes of all shards / eval wall time) / fio bandwidth.
# 2. Compute-bound: 4 chunks of 128 tokens with a warm page cache. The FLOPs of the
#    attention and FFN phases over their timed wall time are compared with OpenBLAS sgemm
#    at the same shapes and thread count (bench/bench_forward.c). The total also counts
#    the conversion to f32, and the I/O wait is compared with the wall time.
#
# A cold cache needs root for /proc/sys/vm/drop_caches; without it each shard is evicted
# with posix_fadvise(DONTNEED), which leaves pages that other processes hold mapped.
# Environment: BENCH_DIR (the model is kept there between runs; remove it afterwards),
# LAYERS, THREADS (default nproc), MODES (default "read advise none"), COMPUTE=0 skips
# the compute-bound part.
set -eu
if ! command -v fio >/dev/null; then
    echo "b_eval_7b: fio not found; install fio (Debian package fio) to run this benchmark"
    exit 0
fi
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
dir=${BENCH_DIR:-/tmp/symphony-bench-eval7b}
layers=${LAYERS:-8}
threads=${THREADS:-$(nproc)}
model="$dir/m$layers"
mkdir -p "$dir"
[ -f "$model/config.json" ] ||
    "$py" "$SYMPHONY_TOP/bench/make_synthetic.py" "$model" "$layers" 4096 11008 32000 32 32 4
shards=$(ls "$model"/model-*.safetensors)
bytes=$(cat $shards | wc -c)
echo "model: $layers layers, $bytes bytes in $(echo $shards | wc -w) shards, $threads threads"
"$py" -c 'import random; random.seed(1); print(" ".join(str(random.randrange(3, 32000)) for _ in range(512)))' >"$dir/ids"
head -c 100 "$dir/ids" | cut -d' ' -f1-16 >"$dir/ids16"

cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then
        echo 3 >/proc/sys/vm/drop_caches
    else
        for f in $shards; do
            "$py" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$f"
        done
    fi
}

# Runs eval with the remaining arguments; sets wall and the timing line in $dir/log.
run_eval() {
    /usr/bin/time -f 'wall %e' "$SYMPHONY_BIN" eval "$model" --threads "$threads" -v -v \
        "$@" >/dev/null 2>"$dir/log"
    wall=$(sed -n 's/^wall //p' "$dir/log")
}

# fio with 1 MiB reads at depth 16 reached a third to a half of the bandwidth of 4 MiB at
# depth 64 on the test machine, so the ratio uses the deeper queue, buffered like eval's
# reads.
# The O_DIRECT figure is shown for reference only.
fio_read() { # extra fio options...
    cold
    fio --name=seq --filename="$(echo $shards | tr ' ' ':')" --file_service_type=sequential \
        --rw=read --bs=4M --ioengine=io_uring --iodepth=64 --readonly --output-format=json \
        "$@" >"$dir/fio.json"
    "$py" -c 'import json,sys; r=json.load(open(sys.argv[1]))["jobs"][0]["read"]; print(r["io_bytes"] / (r["runtime"] / 1000))' "$dir/fio.json"
}
fio_bw=$(fio_read)
fio_direct=$(fio_read --direct=1)
echo "$fio_bw $fio_direct" | awk '{printf "fio sequential io_uring read, bs 4M, depth 64: " \
    "%.0f MB/s buffered, %.0f MB/s O_DIRECT\n", $1 / 1e6, $2 / 1e6}'

for mode in ${MODES:-read advise none}; do
    cold
    run_eval --ids "$dir/ids16" --seq-len 16 --prefetch "$mode"
    echo "$wall $bytes $fio_bw $mode" | awk '{bw = $2 / $1;
        printf "read-bound eval, prefetch %-6s: wall %6.2f s, %5.0f MB/s, %.0f%% of fio\n",
               $4, $1, bw / 1e6, 100 * bw / $3}'
    sed -n 's/^time: /    /p' "$dir/log"
done

[ "${COMPUTE:-1}" = 0 ] && exit 0
# Compute-bound: warm the cache first so the first layer does not wait on the disk.
cat $shards >/dev/null
run_eval --ids "$dir/ids" --seq-len 128 --prefetch read
timing=$(sed -n 's/^time: //p' "$dir/log")
echo "compute-bound eval (512 tokens, 4 chunks of 128): wall $wall s"
echo "    $timing"
"$SYMPHONY_BUILD/bench/bench_forward" 512 4096 11008 4096 4096 "$threads" >"$dir/sgemm"
"$py" - "$dir/sgemm" "$layers" "$wall" "$timing" <<'EOF'
import re, sys
sgemm = {}
for line in open(sys.argv[1]):
    f = line.split()
    sgemm[f[1]] = (float(f[3]), float(f[5]))
layers, wall = int(sys.argv[2]), float(sys.argv[3])
t = dict((k.strip(), float(v)) for k, v in re.findall(r"([A-Za-z/ ]+) ([0-9.]+) s", sys.argv[4]))
tokens, seq, d, f, heads, hd = 512, 128, 4096, 11008, 32, 128
# Causal attention: QK^T and PV over (i + 1) keys at position i.
scores = 2 * 2 * hd * heads * (tokens // seq) * seq * (seq + 1) / 2
model = {"attention": layers * (2 * tokens * 4 * d * d + scores),
         "ffn": layers * 2 * tokens * 3 * d * f}
for phase, key in (("attention", "attention"), ("ffn", "FFN")):
    rate = model[phase] / t[key]
    ref = sgemm[phase][0] / sgemm[phase][1]
    print("    %-9s %6.1f GFLOP/s, sgemm %6.1f GFLOP/s: %3.0f%%" %
          (phase, rate / 1e9, ref / 1e9, 100 * rate / ref))
total = model["attention"] + model["ffn"]
busy = t["convert"] + t["attention"] + t["FFN"]
ref = (sgemm["attention"][0] + sgemm["ffn"][0]) / (sgemm["attention"][1] + sgemm["ffn"][1])
print("    layers incl. conversion %6.1f GFLOP/s, sgemm %6.1f GFLOP/s: %3.0f%%" %
      (total / busy / 1e9, ref / 1e9, 100 * total / busy / ref))
print("    I/O wait %.3f s of %.2f s wall: %.1f%%" % (t["I/O wait"], wall,
                                                    100 * t["I/O wait"] / wall))
EOF
