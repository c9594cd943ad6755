#!/bin/sh
# The output's model card (README.md) on the real fixtures: a calibrated merge states its
# calibration tokens and domains, alignment summary, router objective, steps and held-out
# accuracies (recomputed here from merge-report.json), attention fusion mode and licences
# (one source given a README.md front matter licence); an uncalibrated merge states that
# nothing was calibrated, aligned or trained, and its task-arithmetic embeddings and scale.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
BIN=$SYMPHONY_BIN
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-card-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

cp -r "$F/legal" "$tmp/legal"
printf -- '---\nlicense: apache-2.0\nlanguage: en\n---\n# legal expert\n' >"$tmp/legal/README.md"

cat >"$tmp/calibrated.yml" <<YAML
base_model: $F/base
dtype: float32
gate_mode: hidden
experts:
  - source_model: $F/stories
    calibration: [$F/text/stories/calib.txt]
  - source_model: $tmp/legal
    calibration: [$F/text/legal/calib.txt]
symphony:
  calibration_tokens: 4096
  attention: linear
  router:
    objective: classify
    steps: 12
YAML
cat >"$tmp/plain.yml" <<YAML
base_model: $F/base
dtype: float32
gate_mode: random
experts:
  - source_model: $F/stories
  - source_model: $tmp/legal
symphony:
  calibration_tokens: 0
  embeddings: task-arithmetic
  task_scale: 0.5
YAML

"$BIN" merge -q "$tmp/calibrated.yml" "$tmp/cal" || { echo "calibrated merge failed"; exit 1; }
"$BIN" merge -q "$tmp/plain.yml" "$tmp/plain" || { echo "uncalibrated merge failed"; exit 1; }

"$PY" - "$tmp" "$F" <<'PYEOF' || fail=1
import json, os, sys
tmp, F = sys.argv[1], sys.argv[2]
bad = []
def has(card, text, what):
    if text not in card:
        bad.append("%s: '%s' missing" % (what, text))

card = open(os.path.join(tmp, "cal", "README.md")).read()
report = json.load(open(os.path.join(tmp, "cal", "merge-report.json")))
has(card, "- calibration: %d tokens" % report["calibration_tokens"], "calibrated")
for e, domain in enumerate(report["domains"]):
    has(card, "expert %d: %d tokens" % (e, domain["tokens"]), "calibrated domain %d" % e)
has(card, "%s/text/legal/calib.txt" % F, "calibrated domain text")
pairs = [a for layer in report["layers"] for a in layer["alignment"]]
identity = sum(a["identity_fraction"] for a in pairs) / len(pairs)
corr = sum(a["mean_matched_corr"] for a in pairs) / len(pairs)
has(card, "identity fraction mean %.3f" % identity, "calibrated alignment")
has(card, "mean matched correlation mean %.3f" % corr, "calibrated alignment")
has(card, "objective classify", "calibrated router")
has(card, "12 steps", "calibrated router")
accs = [layer["router"]["holdout_accuracy"] for layer in report["layers"]]
has(card, "held-out accuracy per layer: " + ", ".join("%.3f" % a for a in accs), "router")
has(card, "(mean %.3f)" % (sum(accs) / len(accs)), "router mean")
has(card, "attention fusion: linear", "calibrated attention")
has(card, "licence: apache-2.0", "README front matter licence")
has(card, "see the source", "source without a licence")
for stale in ("none (calibration_tokens 0)", "cheap_embed"):
    if stale in card:
        bad.append("calibrated card says '%s'" % stale)

plain = open(os.path.join(tmp, "plain", "README.md")).read()
has(plain, "- calibration: none (calibration_tokens 0)", "uncalibrated")
has(plain, "- expert alignment: none", "uncalibrated")
has(plain, "router: not trained; rows from gate_mode random", "uncalibrated router")
has(plain, "licence: apache-2.0", "uncalibrated licence")
has(plain, "embeddings (tied output layer): task arithmetic over", "task-arithmetic embeddings")
has(plain, "norms: weighted mean", "linear norms")
has(plain, "task arithmetic: base_model (`%s/base`) plus 0.5 times" % F, "task scale")
if "task arithmetic" in card:
    bad.append("the calibrated card mentions task arithmetic")
if "held-out" in plain:
    bad.append("uncalibrated card mentions held-out accuracy")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PYEOF
exit $fail
