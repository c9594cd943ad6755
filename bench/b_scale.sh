#!/bin/sh
# Two-source merges at Llama 2 13B width (hidden 5120, 40 heads, FFN 13824, vocab 32000;
# WIDTH=7b for 7B width), BF16, 2 shards per source, with LAYERS layers each, every run
# from a cold page cache inside a memory cgroup of LIMIT bytes (needs root; without it
# the runs have no limit).
# Per run: wall time, time per stage and per layer, peak anonymous memory, cgroup peak,
# block I/O delay. Then a kill at 50% of the bytes and the resume, and the in-memory
# PyTorch merge of the same sources. Results go to $BENCH_DIR/results.txt; samples for
# plot_scale.gp to $BENCH_DIR/*.tsv.
#
# Settings (environment): LAYERS ("2 4 8"), LIMIT (4294967296), RESUME_LAYERS (4; it
# needs the merge of that many layers from LAYERS; each resume runs with --resume-check
# quick and full), TORCH_LAYERS ("2 4"), CALIBRATION
# (0), THREADS (1), WIDTH (13b, or 7b for Llama 2 7B: hidden 4096, 32 heads, FFN 11008),
# BENCH_DIR (/tmp/symphony-bench-scale; each WIDTH needs its own), KEEP=1 keeps the
# checkpoints. THREADS above 1 makes the CPU/run-queue/blocked split meaningless.
# PERF=1 records each merge with `perf record -F 49` into $BENCH_DIR/TAG.perf.data. With
# CALIBRATION above 0, sgemm is timed at each shape the pipeline multiplies and
# bench/calib_efficiency.py compares every stage of the last merge with it.
# An empty LAYERS, RESUME_LAYERS or TORCH_LAYERS skips that part.
# SOURCES=unrelated (default) writes the two sources from independent seeds, so their FFN
# neurons correlate only by chance and the assignment solve meets its hardest case.
# SOURCES=related writes both from one base (base_seed 1) plus a different perturbation of
# up to 8/1024 per value, as fine-tunes of one base would be, and stores the second
# source's FFN neurons in a known permuted order, which the alignment has to undo.
set -eu
py=${SYMPHONY_PYTHON:-/usr/bin/python3}
dir=${BENCH_DIR:-/tmp/symphony-bench-scale}
layers_list=${LAYERS-2 4 8}
limit=${LIMIT:-4294967296}
resume_layers=${RESUME_LAYERS-4}
torch_layers=${TORCH_LAYERS-2 4}
calibration=${CALIBRATION:-0}
sources=${SOURCES:-unrelated}
case $sources in
unrelated) related_1= related_2= ;;
related) related_1="base_seed=1 perturb=8" related_2="base_seed=1 perturb=8 permute_ffn=1" ;;
*) echo "b_scale.sh: SOURCES must be related or unrelated, got '$sources'" >&2; exit 2 ;;
esac
case ${WIDTH:-13b} in
13b) shape="hidden=5120 intermediate=13824 heads=40 kv_heads=40" ;;
7b) shape="hidden=4096 intermediate=11008 heads=32 kv_heads=32" ;;
*) echo "b_scale.sh: WIDTH must be 13b or 7b, got '$WIDTH'" >&2; exit 2 ;;
esac
bench="$SYMPHONY_TOP/bench"
mkdir -p "$dir"
results="$dir/results.txt"
: >"$results"

make --no-print-directory -C "$SYMPHONY_TOP" BUILD="$BUILD" "$BUILD/tests/tool_synth" >/dev/null
synth="$SYMPHONY_BUILD/tests/tool_synth"

if [ "$(id -u)" -ne 0 ]; then
    echo "not root: runs without a memory cgroup and with a warm page cache" | tee -a "$results"
    limit=0
fi
# Per-task block I/O delay accounting (kernel.task_delayacct). It was off on the machine
# in docs/BENCHMARKS.md; this turns it on for the whole machine and leaves it on.
[ -w /proc/sys/kernel/task_delayacct ] && echo 1 >/proc/sys/kernel/task_delayacct

log() { echo "$*" | tee -a "$results"; }

cold() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

make_sources() { # layers
    for seed in 1 2; do
        m="$dir/src$1-$seed"
        [ -f "$m/config.json" ] && grep -q "\"synthetic_base_seed\"" "$m/config.json" &&
            [ "$sources" = unrelated ] && rm -rf "$m"
        [ -f "$m/config.json" ] && ! grep -q "\"synthetic_base_seed\"" "$m/config.json" &&
            [ "$sources" = related ] && rm -rf "$m"
        [ -f "$m/config.json" ] && continue
        [ $seed = 1 ] && related=$related_1 || related=$related_2
        "$synth" "$m.tmp" layers="$1" $shape vocab=32000 dtype=BF16 shards=2 seed=$seed \
            $related
        mv "$m.tmp" "$m"
    done
    # Calibration text: random lower-case words, different per domain. The synthetic
    # tokenizer has no merges, so every byte becomes one token.
    for seed in 1 2; do
        [ -f "$dir/calib$seed.txt" ] || "$py" -c 'import random, sys
random.seed(int(sys.argv[1]))
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 9)))
         for _ in range(400)]
print(" ".join(random.choice(words) for _ in range(40000)))' "$seed" >"$dir/calib$seed.txt"
    done
    cat >"$dir/merge$1.yml" <<YAML
base_model: $dir/src$1-1
dtype: bfloat16
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $dir/src$1-1
    calibration: $dir/calib1.txt
  - source_model: $dir/src$1-2
    calibration: $dir/calib2.txt
symphony:
  attention: slerp
YAML
}

monitored_merge() { # tag layers [monitor options]
    tag=$1 layers=$2
    shift 2
    out="$dir/out$layers"
    cold
    "$py" "$bench/monitor.py" --limit "$limit" --tsv "$dir/$tag.tsv" \
        --journal "$out.partial/.symphony-journal" --events "$dir/$tag.events" "$@" -- \
        ${PERF:+perf record -q -F 49 -o "$dir/$tag.perf.data" --} \
        "$SYMPHONY_BIN" merge -q --calibration-tokens "$calibration" \
        --threads "${THREADS:-1}" ${merge_options:-} "$dir/merge$layers.yml" "$out" \
        >"$dir/$tag.summary" || true
}

log "machine: $(nproc) CPUs, $(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)," \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory," \
    "kernel $(uname -r)"
log "binary: $SYMPHONY_BIN; width: ${WIDTH:-13b} ($shape); calibration tokens:" \
    "$calibration; sources: $sources; limit: $limit bytes"

for layers in $layers_list; do
    make_sources "$layers"
    rm -rf "$dir/out$layers" "$dir/out$layers.partial"
    monitored_merge "merge$layers" "$layers"
    log "== $layers layers: $(du -sm "$dir/src$layers-1" | cut -f1) MB per source," \
        "exit $(sed -n 's/^exit_status //p' "$dir/merge$layers.summary")," \
        "output $(du -sm "$dir/out$layers" 2>/dev/null | cut -f1) MB"
    "$py" "$bench/scale_report.py" "$dir/merge$layers.summary" "$dir/merge$layers.events" |
        tee -a "$results"
done

# Seconds from a cold page cache to the first test kill point, which comes before the
# first tensor is written: opening the sources, the plan and the shards, and on a resume
# the journal and its check. Calibration runs would stop in the pipeline instead.
startup_seconds() { # layers output [merge options]
    layers=$1 out=$2
    shift 2
    cold
    start=$(date +%s.%N)
    SYMPHONY_TEST_KILL_AT=1 "$SYMPHONY_BIN" merge -q --calibration-tokens "$calibration" \
        --threads "${THREADS:-1}" "$@" "$dir/merge$layers.yml" "$out" >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}

report_resume() { # layers mode
    "$py" - "$dir" "$1" "$2" <<'PY'
import sys
d, layers, mode = sys.argv[1], sys.argv[2], sys.argv[3]
def summary(tag):
    return dict(l.split(None, 1) for l in open("%s/%s.summary" % (d, tag)))
full = summary("merge" + layers)
kill = summary("kill" + layers + ("-full" if mode == "full" else ""))
resume = summary("resume%s-%s" % (layers, mode))
events = [l.split() for l in open("%s/merge%s.events" % (d, layers))]
done = float(kill["killed_at_bytes"])
# Time the uninterrupted run still needed once it had journaled the same bytes.
acc, at = 0, 0.0
for when, name, length in events:
    acc += int(length)
    if acc >= done:
        at = float(when)
        break
remaining = float(full["wall_seconds"]) - at
took = float(resume["wall_seconds"])
share = 100 * done / sum(int(e[2]) for e in events)
print("== resume (--resume-check %s) after SIGKILL at %.0f%% of the bytes (%d layers): "
      "uninterrupted run needed %.1f s after that point, the resumed run took %.1f s: "
      "overhead %.1f s = %.1f%% of the remaining work; resume exit %s"
      % (mode, share, int(layers), remaining, took, took - remaining,
         100 * (took - remaining) / remaining, resume["exit_status"].strip()))
PY
}

# Kill at 50% of the output bytes, then resume; compare with the uninterrupted run. The
# resume check's own cost is timed apart, in both modes, on the same partial output.
for layers in $resume_layers; do
    make_sources "$layers"
    half=$(awk '{ total += $3 } END { printf "%.0f", total / 2 }' "$dir/merge$layers.events")
    rm -rf "$dir/out$layers" "$dir/out$layers.partial" "$dir/fresh"
    monitored_merge "kill$layers" "$layers" --kill-at-bytes "$half"
    fresh=$(startup_seconds "$layers" "$dir/fresh")
    rm -rf "$dir/fresh" "$dir/fresh.partial" "$dir/fresh.lock"
    quick=$(startup_seconds "$layers" "$dir/out$layers" --resume-check quick)
    full=$(startup_seconds "$layers" "$dir/out$layers" --resume-check full)
    log "== start-up to the first tensor, cold cache ($layers layers, load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg)): fresh output ${fresh} s, resume with" \
        "--resume-check quick ${quick} s, with --resume-check full ${full} s"
    for mode in quick full; do
        if [ $mode = full ]; then
            rm -rf "$dir/out$layers" "$dir/out$layers.partial"
            monitored_merge "kill$layers-$mode" "$layers" --kill-at-bytes "$half"
        fi
        merge_options="--resume-check $mode" monitored_merge "resume$layers-$mode" "$layers"
        report_resume "$layers" "$mode" | tee -a "$results"
    done
done

# The in-memory PyTorch merge, first without a limit, then inside the same cgroup.
for layers in $torch_layers; do
    make_sources "$layers"
    for lim in 0 "$limit"; do
        [ "$lim" = 0 ] && tag="torch$layers" || tag="torch$layers-limit"
        rm -rf "$dir/torch-out"
        cold
        "$py" "$bench/monitor.py" --limit "$lim" --tsv "$dir/$tag.tsv" -- "$py" \
            "$bench/torch_merge.py" "$dir/src$layers-1" "$dir/src$layers-2" "$dir/torch-out" \
            >"$dir/$tag.summary" 2>&1 || true
        log "== PyTorch in-memory merge, $layers layers, limit $lim:" \
            "exit $(sed -n 's/^exit_status //p' "$dir/$tag.summary")," \
            "wall $(sed -n 's/^wall_seconds //p' "$dir/$tag.summary") s," \
            "peak anonymous $(sed -n 's/^peak_anon_kib //p' "$dir/$tag.summary") KiB," \
            "cgroup peak $(sed -n 's/^cgroup_peak_kib //p' "$dir/$tag.summary") KiB," \
            "OOM kills $(sed -n 's/^cgroup_oom_kills //p' "$dir/$tag.summary")"
    done
done
rm -rf "$dir/torch-out"

# OpenBLAS sgemm at one calibration layer's shapes with 2048 tokens: the compute reference.
sgemm="$SYMPHONY_BUILD/bench/bench_sgemm"
[ -x "$sgemm" ] || make --no-print-directory -C "$SYMPHONY_TOP" BUILD="$BUILD" \
    "$BUILD/bench/bench_sgemm" >/dev/null
hidden=${shape#hidden=}
hidden=${hidden%% *}
inter=${shape#*intermediate=}
inter=${inter%% *}
if [ "$calibration" -gt 0 ] && [ -n "$layers_list" ]; then
    last=$(echo $layers_list | awk '{ print $NF }')
    report="$dir/out$last/merge-report.json"
    seq=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["sequence_length"])' \
        "$report")
    # Tokens per multiplication of a source's forward pass, as sym_pipeline_forward_sequences
    # chooses them.
    forward=$((seq >= 512 ? seq : 512 / seq * seq))
    log "== sgemm at the calibration shapes, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$sgemm" "$forward" "$hidden" "$inter" "${THREADS:-1}" 2 |
        tee "$dir/sgemm-$forward.txt" | tee -a "$results"
    "$sgemm" 1024 "$hidden" "$inter" "${THREADS:-1}" 2 correlation |
        tee "$dir/sgemm-1024.txt" | tee -a "$results"
    "$sgemm" "$calibration" "$hidden" "$inter" "${THREADS:-1}" 2 |
        tee "$dir/sgemm-$calibration.txt" | tee -a "$results"
    # Rows of the logit lens multiplication, 0 when the merge used no lens domain weights.
    lens_rows=$("$py" -c 'import json, sys; sys.path.insert(0, sys.argv[1])
import calib_efficiency; print(calib_efficiency.lens_rows(json.load(open(sys.argv[2]))))' \
        "$bench" "$report")
    if [ "$lens_rows" -gt 0 ]; then
        "$sgemm" "$lens_rows" "$hidden" "$inter" "${THREADS:-1}" 2 lens |
            tee "$dir/sgemm-lens.txt" | tee -a "$results"
    fi
    log "== compute efficiency of the $last-layer calibrated merge against sgemm"
    "$py" "$bench/calib_efficiency.py" --forward-tokens "$forward" "$report" \
        "$dir/src$last-1/config.json" "$dir"/sgemm-*.txt | tee -a "$results"
    if [ -n "${PERF:-}" ]; then
        perf report -q -i "$dir/merge$last.perf.data" --sort dso,sym --stdio 2>/dev/null |
            head -25 | tee -a "$results"
    fi
else
    "$sgemm" 2048 "$hidden" "$inter" "${THREADS:-1}" 2 | tee -a "$results"
fi

if command -v gnuplot >/dev/null; then
    for tag in $(cd "$dir" && ls merge*.tsv | sed 's/\.tsv$//'); do
        gnuplot -e "input='$dir/$tag.tsv'; output='$dir/$tag.png'; title='$tag'" \
            "$bench/plot_scale.gp"
    done
    log "plots: $dir/merge*.png"
fi
if [ "${KEEP:-0}" != 1 ]; then rm -rf "$dir"/src* "$dir"/out*; fi
