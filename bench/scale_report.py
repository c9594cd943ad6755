#!/usr/bin/python3
"""Summarise one monitored merge: time per stage, per layer, memory and I/O stall.

usage: scale_report.py SUMMARY EVENTS

SUMMARY is monitor.py's "key value" output, EVENTS its --events file (one line per
journal record: seconds since start, tensor name, bytes). A tensor's time is the gap
between its record and the previous one, so it includes reading, fusing, writing and
the fdatasync before the record. The first record's time includes startup (planning,
headers). The merge deletes its journal when it publishes the output, so records written
just before that may be missed; "finish" then includes them.
"""
import collections
import sys


def stage_of(name):
    if "embed_tokens" in name:
        return "embeddings"
    if name.startswith("lm_head"):
        return "lm_head"
    if name.endswith("input_layernorm.weight"):
        # A calibrated merge runs the layer's calibration before its first tensor.
        return "layer start"
    if "norm" in name:
        return "norms"
    if ".self_attn." in name:
        return "attention"
    if ".gate.weight" in name:
        return "router"
    if ".experts." in name:
        return "experts"
    return "other"


def main():
    summary = dict(line.split(None, 1) for line in open(sys.argv[1]) if line.strip())
    summary = {k: v.strip() for k, v in summary.items()}
    events = [line.split() for line in open(sys.argv[2]) if line.strip()]
    wall = float(summary["wall_seconds"])
    stages = collections.OrderedDict()
    layers = collections.OrderedDict()
    previous = 0.0
    for when, name, length in events:
        when = float(when)
        if previous == 0.0:
            stages["startup+" + stage_of(name)] = [when, int(length)]
        else:
            stage = stages.setdefault(stage_of(name), [0.0, 0])
            stage[0] += when - previous
            stage[1] += int(length)
            if name.startswith("model.layers."):
                layer = int(name.split(".")[2])
                layers[layer] = layers.get(layer, 0.0) + when - previous
        previous = when
    stages["finish"] = [wall - previous, 0]
    cpu = float(summary.get("cpu_seconds", "nan"))
    blkio = float(summary.get("blkio_delay_seconds", "nan"))
    run_queue = float(summary.get("run_queue_wait_seconds", "nan"))
    # Wall time = CPU time + time runnable but waiting for a CPU (run queue) + time
    # blocked. The merge runs one thread, so blocked time is time waiting for reads,
    # writeback and fdatasync: the I/O stall. Block I/O delay counts only the waits the
    # kernel marks as I/O waits, so it is given as a cross-check.
    blocked = wall - cpu - run_queue
    if blocked < 0:
        # CPU time sums every thread but the run-queue wait is the main thread's alone, so
        # with --threads above 1 the split does not add up.
        print("wall %.1f s, CPU %.1f s over all threads; the I/O stall split needs one "
              "thread" % (wall, cpu))
    else:
        print("wall %.1f s = CPU %.1f s + run queue %.1f s + blocked %.1f s; I/O stall "
              "(blocked) %.1f%% of wall, block I/O delay %.1f s (%.1f%%); load average %s" % (
                  wall, cpu, run_queue, blocked, 100.0 * blocked / wall, blkio,
                  100.0 * blkio / wall, summary.get("load_average_1min", "?")))
    print("peak anonymous memory %.0f MiB, peak RSS %.0f MiB, cgroup peak %.0f MiB" % (
        int(summary["peak_anon_kib"]) / 1024, int(summary["peak_rss_kib"]) / 1024,
        int(summary.get("cgroup_peak_kib", "0")) / 1024))
    for stage, (seconds, nbytes) in stages.items():
        rate = " %7.0f MB/s written" % (nbytes / 1e6 / seconds) if nbytes and seconds else ""
        print("  stage %-20s %7.1f s%s" % (stage, seconds, rate))
    if layers:
        per_layer = list(layers.values())
        print("  per layer: mean %.2f s, min %.2f s, max %.2f s over %d layers" % (
            sum(per_layer) / len(per_layer), min(per_layer), max(per_layer), len(per_layer)))


if __name__ == "__main__":
    main()
