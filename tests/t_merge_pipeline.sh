#!/bin/sh
# The calibrated merge of the four real experts (alignment, hidden-state caches, router
# training by distillation): the oracle's perplexities of the output agree with ours, the
# merge beats the BTX baseline on every domain and both baselines on the geometric mean,
# and the report holds a permutation diagnostic and a router report for every layer.
set -u
ORACLE=${SYMPHONY_SHARED:-}/tools/oracle.py
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
if [ ! -f "$ORACLE" ]; then
    echo "skipped: $ORACLE is not available"
    exit 77
fi
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
    echo "skipped: $PY cannot import torch and numpy"
    exit 77
fi
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-pipe-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: float32
experts_per_token: 2
gate_mode: hidden
$(real_experts)
symphony:
  anchor: $F/stories
  calibration_tokens: 16384
  attention: slerp
  seed: 1
  router:
    objective: distill
    steps: 300
    learning_rate: 0.01
YAML
"$BIN" merge -q "$tmp/merge.yml" "$tmp/out" || { echo "calibrated merge failed"; exit 1; }

: >"$tmp/ours.txt"
for d in code docs legal stories; do
    ppl=$("$BIN" eval "$tmp/out" --text "$F/text/$d/eval.txt" | awk '/^perplexity/ {print $2}')
    [ -n "$ppl" ] || { echo "eval on $d printed no perplexity"; exit 1; }
    echo "$d $ppl" >>"$tmp/ours.txt"
done
"$PY" "$ORACLE" ppl --text-root "$F/text" "$tmp/out" >"$tmp/oracle.txt" ||
    { echo "oracle.py ppl failed"; exit 1; }

"$PY" - "$tmp/ours.txt" "$tmp/oracle.txt" "$tmp/out/merge-report.json" <<'PYEOF'
import json, math, sys
ours = dict((l.split()[0], float(l.split()[1])) for l in open(sys.argv[1]))
rows = [l.strip().strip('|').split('|') for l in open(sys.argv[2]) if l.startswith('|')]
head = [c.strip() for c in rows[0]]
oracle = dict(zip(head[1:], (float(c) for c in rows[2][1:])))
btx = {'code': 352.907, 'docs': 50.594, 'legal': 21.842, 'stories': 6.737}
hidden = {'code': 767.978, 'docs': 73.400, 'legal': 27.628, 'stories': 5.845}
fail = 0
for d, p in sorted(ours.items()):
    # The oracle prints 3 decimals: allow 1e-4 relative plus its rounding.
    if abs(p - oracle[d]) > 1e-4 * p + 5e-4:
        print(f'{d}: ours {p:.6f}, oracle {oracle[d]:.3f}'); fail = 1
    if not p < btx[d]:
        print(f'{d}: perplexity {p:.3f} does not beat BTX {btx[d]}'); fail = 1
geo = lambda t: math.exp(sum(math.log(v) for v in t.values()) / len(t))
print('ours', {d: round(p, 3) for d, p in sorted(ours.items())}, 'geomean %.3f' % geo(ours))
if not geo(ours) < min(geo(btx), geo(hidden)):
    print('geometric mean %.3f does not beat the baselines (%.3f, %.3f)'
          % (geo(ours), geo(btx), geo(hidden))); fail = 1
rep = json.load(open(sys.argv[3]))
if len(rep['layers']) != 5:
    print('report: %d layers, expected 5' % len(rep['layers'])); fail = 1
for l in rep['layers']:
    if len(l['alignment']) != 3 or 'router' not in l:
        print('report: layer %s lacks alignment or router entries' % l['layer']); fail = 1
        continue
    r = l['router']
    if not r['train_loss'] < r['initial_train_loss']:
        print('layer %s: router loss did not fall' % l['layer']); fail = 1
    if abs(sum(r['expert_load']) - 1) > 1e-6:
        print('layer %s: expert load does not sum to 1' % l['layer']); fail = 1
sys.exit(fail)
PYEOF
[ $? -eq 0 ] || exit 1
for f in symphony-work/h-0-5.hc symphony-work/merged-5.hc symphony-work/x-4.hc \
    symphony-work/stats-4-1.sta; do
    [ -s "$tmp/out/$f" ] || { echo "missing work file $f"; exit 1; }
done
"$BIN" verify -q "$tmp/out" || { echo "verify rejected the calibrated merge"; exit 1; }
exit 0
