#!/bin/sh
# The calibrated merge undoes a known FFN neuron permutation. Three small synthetic F32
# sources share one base (tool_synth base_seed) with different perturbations: the anchor,
# a source in the base's neuron order, and a source whose FFN neurons tool_synth stored in
# the permuted order recorded in its config.json. Every merged expert must hold its
# source's FFN rows (and down_proj columns) exactly, in the anchor's neuron order.
set -u
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
if ! "$PY" -c "import numpy" 2>/dev/null; then
    echo "skipped: $PY cannot import numpy"
    exit 77
fi
synth="$SYMPHONY_BUILD/tests/tool_synth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-align-synth-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

shape="layers=2 hidden=64 intermediate=192 heads=4 kv_heads=4 vocab=300 dtype=F32"
"$synth" "$tmp/anchor" $shape base_seed=5 seed=1 perturb=4 || exit 1
"$synth" "$tmp/same" $shape base_seed=5 seed=2 perturb=4 || exit 1
"$synth" "$tmp/permuted" $shape base_seed=5 seed=3 perturb=4 permute_ffn=1 || exit 1
for domain in 1 2 3; do
    "$PY" -c 'import random, sys
random.seed(int(sys.argv[1]))
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 9)))
         for _ in range(200)]
print(" ".join(random.choice(words) for _ in range(3000)))' "$domain" >"$tmp/calib$domain.txt"
done
cat >"$tmp/merge.yml" <<YAML
base_model: $tmp/anchor
dtype: float32
experts_per_token: 2
gate_mode: random
experts:
  - source_model: $tmp/anchor
    calibration: $tmp/calib1.txt
  - source_model: $tmp/same
    calibration: $tmp/calib2.txt
  - source_model: $tmp/permuted
    calibration: $tmp/calib3.txt
symphony:
  attention: slerp
  calibration_tokens: 1536
  router:
    steps: 20
YAML
"$SYMPHONY_BIN" merge -q --threads 1 "$tmp/merge.yml" "$tmp/out" ||
    { echo "calibrated merge of the synthetic sources failed"; exit 1; }

"$PY" - "$tmp" <<'PYEOF'
import glob, json, struct, sys
import numpy as np

tmp = sys.argv[1]
failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def load(model_dir):
    """Read every F32 tensor of the checkpoint's safetensors files."""
    tensors = {}
    for path in sorted(glob.glob(model_dir + "/*.safetensors")):
        data = open(path, "rb").read()
        size = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + size])
        for name, info in header.items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "F32", (path, name, info["dtype"])
            start, end = info["data_offsets"]
            raw = data[8 + size + start:8 + size + end]
            tensors[name] = np.frombuffer(raw, dtype=np.float32).reshape(info["shape"])
    return tensors


def base_order(model_dir, d_ff):
    """Return order[i], the position in model_dir's FFN of base neuron i."""
    config = json.load(open(model_dir + "/config.json"))
    perm = config.get("synthetic_ffn_permutation", {"multiplier": 1, "offset": 0})
    stored = [(perm["multiplier"] * i + perm["offset"]) % d_ff for i in range(d_ff)]
    order = np.empty(d_ff, dtype=np.int64)
    order[stored] = np.arange(d_ff)
    return order


out = load(tmp + "/out")
sources = ["anchor", "same", "permuted"]
d_ff = 192
orders = [base_order(tmp + "/" + s, d_ff) for s in sources]
check(not np.array_equal(orders[2], np.arange(d_ff)), "the permuted source is not permuted")
for e, name in enumerate(sources):
    src = load(tmp + "/" + name)
    order = orders[e]
    for layer in range(2):
        p = "model.layers.%d." % layer
        for ours, theirs in (("w1", "gate_proj"), ("w3", "up_proj")):
            got = out[p + "block_sparse_moe.experts.%d.%s.weight" % (e, ours)]
            want = src[p + "mlp.%s.weight" % theirs][order]
            check(np.array_equal(got, want),
                  "%s layer %d %s: rows not in the anchor's neuron order" % (name, layer, ours))
        got = out[p + "block_sparse_moe.experts.%d.w2.weight" % e]
        want = src[p + "mlp.down_proj.weight"][:, order]
        check(np.array_equal(got, want),
              "%s layer %d w2: columns not in the anchor's neuron order" % (name, layer))

report = json.load(open(tmp + "/out/merge-report.json"))
for layer in report["layers"]:
    diags = {d["source"]: d for d in layer["alignment"]}
    check(diags[1]["identity_fraction"] == 1.0,
          "layer %d: unpermuted source identity fraction %s, expected 1"
          % (layer["layer"], diags[1]["identity_fraction"]))
    check(diags[2]["mean_matched_corr"] > 0.9,
          "layer %d: permuted source matched correlation %s, expected above 0.9"
          % (layer["layer"], diags[2]["mean_matched_corr"]))
for f in failures:
    print("FAIL: " + f)
sys.exit(1 if failures else 0)
PYEOF
