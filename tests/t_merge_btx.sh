#!/bin/sh
# A BTX-like merge of the four real experts (linear attention, everything averaged, zero
# routers, 4 experts per token) equals the moe-btx baseline tensor for tensor. The
# reference oracle and symphony-stream eval both score the baseline's perplexities on it.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import numpy, torch' 2>/dev/null; then
    echo "skipped: $PY lacks numpy or torch (the oracle needs both)"
    exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-btx-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
sed "s|@F@|$F|g" "$SYMPHONY_TOP/fixtures/configs/btx.yml" >"$tmp/btx.yml"
"$SYMPHONY_BIN" merge -q "$tmp/btx.yml" "$tmp/out" || { echo "merge failed"; exit 1; }
"$SYMPHONY_BIN" verify -q "$tmp/out" || { echo "verify failed on a fresh merge"; fail=1; }

"$PY" - "$tmp/out" "$F/moe-btx" "$F" <<'PY' || { echo "tensors differ from moe-btx"; fail=1; }
import os, sys
sys.path.insert(0, os.path.join(os.environ["SYMPHONY_SHARED"], "tools"))
import numpy as np, st_io
cfg, ours, _ = st_io.load_model_dir(sys.argv[1])
ref_cfg, ref, _ = st_io.load_model_dir(sys.argv[2])
assert set(ours) == set(ref), set(ours) ^ set(ref)
experts = [st_io.load_model_dir(os.path.join(sys.argv[3], d))[1]
           for d in ("stories", "legal", "code", "docs")]
for k in ref:
    # moe-btx sums four float32 values in float32, the merge in double: they differ by
    # the float32 rounding error of the sum, a few ulps of the largest input.
    if ".experts." in k or k.endswith(".gate.weight"):
        tol = 0.0
    else:
        tol = 4 * np.spacing(np.max([np.abs(e[k]) for e in experts], axis=0))
    bad = int(np.sum(np.abs(ours[k] - ref[k]) > tol))
    assert bad == 0, "%s: %d elements more than one ulp away" % (k, bad)
for key in ("model_type", "num_local_experts", "num_experts_per_tok", "hidden_size",
            "num_key_value_heads", "rope_theta", "tie_word_embeddings", "vocab_size"):
    assert cfg[key] == ref_cfg[key], (key, cfg[key], ref_cfg[key])
print("tensors and config match moe-btx")
PY

"$PY" "$SYMPHONY_SHARED/tools/oracle.py" ppl --text-root "$F/text" "$tmp/out" >"$tmp/ppl.txt" ||
    { echo "the oracle could not score the merge"; cat "$tmp/ppl.txt"; exit 1; }
cat "$tmp/ppl.txt"
"$PY" - "$tmp/ppl.txt" "$F/reference/ppl.json" <<'PY' || { echo "perplexities differ"; fail=1; }
import json, sys
lines = [l.strip().strip("|").split("|") for l in open(sys.argv[1]) if l.startswith("|")]
domains = [c.strip() for c in lines[0][1:]]
values = [float(c) for c in lines[2][1:]]
ref = json.load(open(sys.argv[2]))["results"]["moe-btx"]
bad = 0
for d, v in zip(domains, values):
    want = ref[d]["ppl"]
    ok = abs(v - want) <= 1e-3 * want
    bad += not ok
    print("%-8s merge %.3f  moe-btx %.3f  %s" % (d, v, want, "ok" if ok else "DIFFERENT"))
sys.exit(1 if bad or len(domains) != 4 else 0)
PY

# symphony-stream's own eval scores the merge like the oracle scores moe-btx.
for d in code docs legal stories; do
    "$SYMPHONY_BIN" eval --json "$tmp/out" --ids "$F/text/$d/eval.ids" >"$tmp/eval-$d.json" \
        2>/dev/null || { echo "eval failed on $d"; fail=1; continue; }
    "$PY" - "$tmp/eval-$d.json" "$F/reference/ppl.json" "$d" <<'PY' || fail=1
import json, sys
got = json.load(open(sys.argv[1]))["ppl"]
want = json.load(open(sys.argv[2]))["results"]["moe-btx"][sys.argv[3]]["ppl"]
print("eval %-8s %.3f  moe-btx %.3f" % (sys.argv[3], got, want))
sys.exit(0 if abs(got - want) <= 1e-3 * want else 1)
PY
done
exit $fail
