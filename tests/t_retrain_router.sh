#!/bin/sh
# retrain-router on a calibrated merge of the real experts: the merge's own settings
# reproduce its router tensors byte for byte; the other objective changes the router
# tensors and nothing else, and verify accepts the result; a missing or damaged cache file
# is an error naming it that leaves the model files unchanged.
set -u
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
if ! "$PY" -c "import json, struct" 2>/dev/null; then
    echo "skipped: $PY cannot run"
    exit 77
fi
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-retrain-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: bfloat16
experts_per_token: 2
gate_mode: hidden
$(real_experts)
symphony:
  calibration_tokens: 2048
  seed: 5
  router:
    objective: distill
    steps: 60
    learning_rate: 0.01
YAML
"$BIN" merge -q --shard-size 512K "$tmp/merge.yml" "$tmp/ref" || { echo "merge failed"; exit 1; }
cp -R "$tmp/ref" "$tmp/out"

# Model files: shards, index, manifest and config; not the reports or the work folder.
same_model_files() {
    for f in "$tmp/ref"/*.safetensors "$tmp/ref"/*.json; do
        name=$(basename "$f")
        case $name in merge-report.json | symphony-merge.json) continue ;; esac
        cmp -s "$f" "$1/$name" || { echo "$1: $name differs from the merge's"; return 1; }
    done
}

"$BIN" retrain-router -q "$tmp/out" ||
    { echo "retrain-router with the merge's settings failed"; exit 1; }
same_model_files "$tmp/out" || { echo "same settings did not reproduce the routers"; fail=1; }

# Only the routers differ from the merge's output, and the report names objective $1.
routers_only_changed() {
"$PY" - "$tmp/ref" "$tmp/out" "$1" <<'PYEOF'
import glob, json, os, struct, sys

def tensors(d):
    out = {}
    for path in sorted(glob.glob(os.path.join(d, '*.safetensors'))):
        data = open(path, 'rb').read()
        n = struct.unpack('<Q', data[:8])[0]
        header = json.loads(data[8:8 + n])
        header.pop('__metadata__', None)
        for name, t in header.items():
            b, e = t['data_offsets']
            out[name] = data[8 + n + b:8 + n + e]
    return out

ref, new = tensors(sys.argv[1]), tensors(sys.argv[2])
fail = 0
if sorted(ref) != sorted(new):
    print('tensor names differ'); fail = 1
routers = [k for k in ref if k.endswith('block_sparse_moe.gate.weight')]
if len(routers) != 5:
    print('expected 5 router tensors, found %d' % len(routers)); fail = 1
for name in sorted(ref):
    changed = ref[name] != new.get(name)
    if name in routers and not changed:
        print('%s: unchanged by the %s objective' % (name, sys.argv[3])); fail = 1
    if name not in routers and changed:
        print('%s: changed, but only routers may change' % name); fail = 1
rep = json.load(open(os.path.join(sys.argv[2], 'merge-report.json')))
if rep.get('router_retrain', {}).get('objective') != sys.argv[3]:
    print('merge-report.json does not record the %s retraining' % sys.argv[3]); fail = 1
sys.exit(fail)
PYEOF
}

for objective in classify distill-topk; do
    "$BIN" retrain-router -q --router-objective $objective "$tmp/out" ||
        { echo "retrain-router --router-objective $objective failed"; exit 1; }
    "$BIN" verify -q "$tmp/out" ||
        { echo "verify rejected the output retrained with $objective"; fail=1; }
    routers_only_changed $objective || fail=1
done

"$BIN" retrain-router -q --router-objective distill --router-domain-weights uniform \
    "$tmp/out" || { echo "retrain-router --router-domain-weights uniform failed"; exit 1; }
routers_only_changed distill || fail=1
grep -q '"domain_weights": "uniform"' "$tmp/out/merge-report.json" ||
    { echo "merge-report.json does not record the uniform domain weights"; fail=1; }

# Back to the merge's settings: the routers are the merge's again.
"$BIN" retrain-router -q --router-objective distill "$tmp/out" ||
    { echo "retraining back to distill failed"; exit 1; }
same_model_files "$tmp/out" ||
    { echo "retraining back to distill did not restore the routers"; fail=1; }

# A damaged router input: error naming the file, model files untouched.
x2="$tmp/out/symphony-work/x-2.hc"
head -c 200 "$x2" >"$tmp/x2" && cp "$tmp/x2" "$x2"
"$BIN" retrain-router -q --router-objective classify "$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || { echo "truncated x-2.hc: exit $rc, expected 1"; fail=1; }
grep -q "x-2.hc" "$tmp/err" ||
    { echo "truncated x-2.hc: message does not name it:"; cat "$tmp/err"; fail=1; }
same_model_files "$tmp/out" || { echo "a failed retraining changed the model files"; fail=1; }

# A missing label file.
cp "$tmp/ref/symphony-work/x-2.hc" "$x2"
rm "$tmp/out/symphony-work/labels.hc"
"$BIN" retrain-router -q "$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || { echo "missing labels.hc: exit $rc, expected 1"; fail=1; }
grep -q "labels.hc" "$tmp/err" ||
    { echo "missing labels.hc: message does not name it:"; cat "$tmp/err"; fail=1; }

# Not a calibrated merge, and a usage error.
mkdir "$tmp/empty"
"$BIN" retrain-router -q "$tmp/empty" 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] || { echo "directory without work files: exit $rc, expected 1"; fail=1; }
grep -q "router-setup.json" "$tmp/err" ||
    { echo "no work files: message does not name router-setup.json"; fail=1; }
"$BIN" retrain-router --router-objective guess "$tmp/out" 2>/dev/null
rc=$?
[ $rc -eq 2 ] || { echo "--router-objective guess: exit $rc, expected 2"; fail=1; }
exit $fail
