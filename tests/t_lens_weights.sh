#!/bin/sh
# Logit-lens domain weights of the router loss, recomputed with numpy from the merged
# output and its work caches, equal what the merge recorded for every layer. The residual
# after each layer's attention is recovered as the state leaving the layer minus the MoE
# output, so the check shares nothing with the merge's own computation but the rules:
# which tokens are sampled, and the mean of sqrt(KL(lens(h + y_own) || lens(h + mean of y)))
# per domain.
set -u
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
if ! "$PY" -c "import numpy" 2>/dev/null; then
    echo "skipped: $PY cannot import numpy"
    exit 77
fi
BIN=$SYMPHONY_BIN
HC=$SYMPHONY_BUILD/tests/tool_hcache
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-lens-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
experts_per_token: 2
$(real_experts)
symphony:
  anchor: $F/stories
  calibration_tokens: 8192
  seed: 3
  router:
    steps: 20
YAML
"$BIN" merge -q "$tmp/merge.yml" "$tmp/out" || { echo "calibrated merge failed"; exit 1; }
work=$tmp/out/symphony-work
tokens=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens'])" \
    "$work/router-setup.json")
"$HC" "$work/labels.hc" "$tokens" 1 "$tmp/labels.f32" || exit 1
for l in 0 1 2 3 4; do
    "$HC" "$work/x-$l.hc" "$tokens" 64 "$tmp/x-$l.f32" || exit 1
    "$HC" "$work/merged-$((l + 1)).hc" "$tokens" 64 "$tmp/out-$l.f32" || exit 1
done

"$PY" - "$tmp" <<'PYEOF'
import glob, json, os, struct, sys
import numpy as np

tmp = sys.argv[1]
out, work = os.path.join(tmp, 'out'), os.path.join(tmp, 'out', 'symphony-work')
tensors = {}
for path in glob.glob(os.path.join(out, '*.safetensors')):
    data = open(path, 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    for name, t in json.loads(data[8:8 + n]).items():
        if name != '__metadata__':
            b, e = t['data_offsets']
            raw = np.frombuffer(data[8 + n + b:8 + n + e], dtype=np.float32)
            tensors[name] = raw.reshape(t['shape']).astype(np.float64)
config = json.load(open(os.path.join(out, 'config.json')))
eps = config['rms_norm_eps']
experts, top_k = config['num_local_experts'], config['num_experts_per_tok']
lm_head = tensors.get('lm_head.weight', tensors['model.embed_tokens.weight'])
final_norm = tensors['model.norm.weight']
labels = np.fromfile(os.path.join(tmp, 'labels.f32'), dtype=np.float32).astype(int)
T, H, seq_len = len(labels), final_norm.shape[0], 128
per_domain = np.bincount(labels, minlength=experts)

def silu(v):
    return v / (1.0 + np.exp(-v))

def lens_log_probs(v):
    z = v / np.sqrt((v * v).mean(axis=1, keepdims=True) + eps) * final_norm
    logits = z @ lm_head.T
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))

# Up to 1024 tokens per domain, evenly spaced, first position of each sequence left out.
picks = []
for d in range(experts):
    members = [t for t in range(T) if labels[t] == d and t % seq_len != 0]
    want = min(1024, len(members))
    picks += [members[(2 * i + 1) * len(members) // (2 * want)] for i in range(want)]
picks = np.array(picks)

fail = 0
for l in range(5):
    x = np.fromfile(os.path.join(tmp, 'x-%d.f32' % l), dtype=np.float32).reshape(T, H)
    leaving = np.fromfile(os.path.join(tmp, 'out-%d.f32' % l), dtype=np.float32).reshape(T, H)
    x, leaving = x.astype(np.float64), leaving.astype(np.float64)
    p = 'model.layers.%d.block_sparse_moe.' % l
    y = np.stack([silu(x @ tensors[p + 'experts.%d.w1.weight' % e].T) *
                  (x @ tensors[p + 'experts.%d.w3.weight' % e].T) @
                  tensors[p + 'experts.%d.w2.weight' % e].T for e in range(experts)], axis=1)
    logits = x @ tensors[p + 'gate.weight'].T
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1, kind='stable')[:, :top_k]
    moe = np.zeros((T, H))
    for t in range(T):
        w = probs[t, order[t]] / probs[t, order[t]].sum()
        moe[t] = (w[:, None] * y[t, order[t]]).sum(axis=0)
    h = leaving - moe
    own = h[picks] + y[picks, labels[picks]]
    mixed = h[picks] + y[picks].mean(axis=1)
    a, b = lens_log_probs(own), lens_log_probs(mixed)
    kl = (np.exp(a) * (a - b)).sum(axis=1)
    cost = np.sqrt(np.maximum(kl, 0.0))
    mean = np.array([cost[labels[picks] == d].mean() for d in range(experts)])
    want = mean * T / (mean * per_domain).sum()
    got = np.array(json.load(open(os.path.join(work, 'layer-%d.json' % l)))
                   ['router']['domain_weights'])
    if not np.allclose(got, want, rtol=2e-3, atol=0):
        print('layer %d: merge recorded %s, numpy gives %s' % (l, got, want)); fail = 1
    if not got.min() < 0.9 * got.max():
        print('layer %d: weights %s are too close to each other to test' % (l, got)); fail = 1
sys.exit(fail)
PYEOF
[ $? -eq 0 ] || exit 1

# Damaged recorded weights: all zero, or far beyond what the merge writes. Each is an
# error naming the file, and the model stays as it was.
for bad in "[0, 0, 0, 0]" "[1e30, 1, 1, 1]"; do
    rm -rf "$tmp/damaged" && cp -R "$tmp/out" "$tmp/damaged"
    "$PY" - "$tmp/damaged/symphony-work/layer-2.json" "$bad" <<'PYEOF'
import json, sys
report = json.load(open(sys.argv[1]))
report['router']['domain_weights'] = json.loads(sys.argv[2])
json.dump(report, open(sys.argv[1], 'w'))
PYEOF
    "$BIN" retrain-router -q "$tmp/damaged" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 1 ] || { echo "domain weights $bad: exit $rc, expected 1"; exit 1; }
    grep -q "layer-2.json: router.domain_weights" "$tmp/err" ||
        { echo "domain weights $bad: message does not name the file and key:"
          cat "$tmp/err"; exit 1; }
    cmp -s "$tmp/out/model-00001-of-00001.safetensors" \
        "$tmp/damaged/model-00001-of-00001.safetensors" ||
        { echo "domain weights $bad: a failed retraining changed the model"; exit 1; }
done

# Uniform weights: the report records none, and the routers change.
"$BIN" merge -q --router-domain-weights uniform "$tmp/merge.yml" "$tmp/uniform" ||
    { echo "merge with uniform domain weights failed"; exit 1; }
if grep -q domain_weights "$tmp/uniform/symphony-work/layer-0.json"; then
    echo "uniform merge recorded domain weights"; exit 1
fi
if cmp -s "$tmp/out/model-00001-of-00001.safetensors" \
    "$tmp/uniform/model-00001-of-00001.safetensors"; then
    echo "domain weights did not change the output"; exit 1
fi

# Retraining a uniform merge with lens weights has no weights to read: error, no change.
cp "$tmp/uniform/model-00001-of-00001.safetensors" "$tmp/before.safetensors"
"$BIN" retrain-router -q --router-domain-weights lens "$tmp/uniform" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || { echo "lens retraining of a uniform merge: exit $rc, expected 1"; exit 1; }
grep -q "layer-0.json" "$tmp/err" ||
    { echo "lens retraining of a uniform merge: message does not name layer-0.json:"
      cat "$tmp/err"; exit 1; }
cmp -s "$tmp/before.safetensors" "$tmp/uniform/model-00001-of-00001.safetensors" ||
    { echo "a failed retraining changed the model"; exit 1; }
exit 0
