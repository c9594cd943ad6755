#!/usr/bin/python3
"""Compute efficiency of a calibrated merge against OpenBLAS sgemm, per pipeline stage.

usage: calib_efficiency.py [--forward-tokens N] REPORT CONFIG SGEMM_FILE...

REPORT is the merge's merge-report.json, CONFIG a source's config.json, and each
SGEMM_FILE the output of bench/bench_sgemm (with "correlation") at one token count. For
each stage it counts the GEMM FLOPs that the stage runs (a multiply-add is 2 FLOPs) and
takes the sgemm rate at the shape the stage multiplies. It prints the FLOP rate of the
stage and its ratio to sgemm, which is the time sgemm alone would need divided by the
stage's time. Shapes: the source forward multiplies FORWARD_TOKENS rows at a time (the
--forward-tokens option, 512 by default), and the merged attention all tokens at once.
The expert outputs and the correlation blocks take 1024 tokens at a time. The logit lens
of the router's domain weights (when the report has them) multiplies all sampled states
by blocks of 512 lm_head rows. Work that is no GEMM (weight conversion, attention softmax, the assignment
solve, cache I/O, router steps) counts as time only.
"""
import argparse
import json
import re

LINE = re.compile(r"sgemm (\S+)\s+(\d+) x (\d+) x (\d+), \d+ thread\(s\): ([\d.]+) s, "
                  r"([\d.]+) GFLOP/s")


def read_sgemm(paths):
    """Return {(name, first dimension): GFLOP/s}; first is TOKENS, or I for correlation."""
    rates = {}
    for path in paths:
        for line in open(path):
            m = LINE.match(line)
            if m:
                rates[(m.group(1), int(m.group(2)))] = float(m.group(6))
    return rates


def forward_rate(rates, tokens, qkvo_flops, ffn_flops):
    """Return the sgemm rate of a layer's projections at tokens rows: four q/k/v/o
    multiplications, two gate/up and one down, weighted by their FLOPs."""
    per_ffn = ffn_flops / 3
    seconds = qkvo_flops / rates[("q/k/v/o", tokens)]
    seconds += 2 * per_ffn / rates[("gate/up", tokens)] + per_ffn / rates[("down", tokens)]
    return (qkvo_flops + ffn_flops) / seconds


def lens_rows(report):
    """Return the rows of the logit lens multiplication per layer, 0 without lens domain
    weights: two states (own expert, mixture) per sampled token, and src/pipeline_lens.c
    samples up to 1024 tokens of each domain, leaving out each sequence's first."""
    if "domain_weights" not in report["layers"][0].get("router", {}):
        return 0
    seq = report["sequence_length"]
    samples = 0
    for domain in report["domains"]:
        usable = domain["tokens"] - (domain["tokens"] + seq - 1) // seq
        samples += min(usable, 1024)
    return 2 * samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forward-tokens", type=int, default=512)
    ap.add_argument("report")
    ap.add_argument("config")
    ap.add_argument("sgemm", nargs="+")
    args = ap.parse_args()
    report = json.load(open(args.report))
    config = json.load(open(args.config))
    rates = read_sgemm(args.sgemm)

    d, f = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or d // config["num_attention_heads"]
    qd = config["num_attention_heads"] * head_dim
    kvd = config["num_key_value_heads"] * head_dim
    tokens = report["calibration_tokens"]
    layers, experts = len(report["layers"]), len(report["domains"])
    models = experts  # the base model is one of the experts in bench/b_scale.sh
    qkvo = 2.0 * tokens * (2 * d * qd + 2 * d * kvd)
    ffn = 2.0 * tokens * 3 * d * f
    rows = lens_rows(report)
    lens = layers * 2.0 * rows * d * config["vocab_size"]
    router_flops = layers * experts * ffn + lens
    router_seconds = layers * experts * ffn / forward_rate(rates, 1024, 0.0, ffn)
    if lens > 0 and ("lens", rows) not in rates:
        print("logit lens not counted: no sgemm lens line for %d rows" % rows)
        router_flops -= lens
    elif lens > 0:
        router_seconds += lens / rates[("lens", rows)]
    stages = [
        ("source_forward", models * layers * (qkvo + ffn),
         forward_rate(rates, args.forward_tokens, qkvo, ffn)),
        ("alignment", (experts - 1) * layers * 2.0 * tokens * f * f,
         rates[("correlation", f)]),
        ("merged_forward", layers * qkvo, rates[("q/k/v/o", tokens)]),
        ("router_training", router_flops, router_flops / router_seconds),
    ]
    seconds = report["stage_seconds"]
    ideal_sum = time_sum = flops_sum = 0.0
    print("stage             GFLOP   seconds  GFLOP/s  sgemm GFLOP/s  ratio")
    for name, flops, rate in stages:
        took = seconds[name]
        ideal = flops / 1e9 / rate
        ideal_sum += ideal
        time_sum += took
        flops_sum += flops
        print("%-16s %7.0f %8.1f %8.1f %13.1f %5.0f%%" % (name, flops / 1e9, took,
              flops / 1e9 / took, rate, 100 * ideal / took))
    cache = seconds.get("cache_io", 0.0)
    print("%-16s %7s %8.1f" % ("cache_io", "-", cache))
    time_sum += cache
    print("all stages       %7.0f %8.1f %8.1f %13s %5.0f%%" % (flops_sum / 1e9, time_sum,
          flops_sum / 1e9 / time_sum, "", 100 * ideal_sum / time_sum))
    print_alignment_steps(report)


def print_alignment_steps(report):
    """Print the seconds per step of the alignment and router training stages, summed
    over layers (and sources), and the mean identity fraction of the permutations."""
    steps, identity, router = {}, [], {}
    for layer in report["layers"]:
        for name, took in layer.get("router", {}).get("seconds", {}).items():
            router[name] = router.get(name, 0.0) + took
        for diag in layer.get("alignment", []):
            identity.append(diag["identity_fraction"])
            for name, took in diag.get("seconds", {}).items():
                steps[name] = steps.get(name, 0.0) + took
    if steps:
        print("alignment steps: " + ", ".join("%s %.1f s" % kv for kv in sorted(steps.items())))
    if router:
        print("router_training steps: " +
              ", ".join("%s %.1f s" % kv for kv in sorted(router.items())))
    if identity:
        print("identity fraction of the permutations: mean %.4f over %d"
              % (sum(identity) / len(identity), len(identity)))


if __name__ == "__main__":
    main()
