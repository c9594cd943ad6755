#!/bin/sh
# merge --check on the real fixtures: a compatible calibrated merge (exit 0, nothing
# written, bytes to read equal the sources' tensor bytes from their headers, output bytes
# equal the shard files the merge then writes, caches bound the work directory), and
# configs with several problems at once (every one listed, exit 1), and usage errors.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-check-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
BIN=$SYMPHONY_BIN

cat >"$tmp/merge.yml" <<YAML
base_model: $F/base
dtype: bfloat16
gate_mode: hidden
experts:
  - source_model: $F/stories
    calibration: [$F/text/stories/calib.txt]
  - source_model: $F/legal-bf16
    calibration: [$F/text/legal/calib.txt]
  - source_model: $F/code-permuted
    calibration: [$F/text/code/calib.txt]
symphony:
  calibration_tokens: 3072
  router:
    steps: 20
YAML

"$BIN" merge --check "$tmp/merge.yml" "$tmp/out" >"$tmp/plan.txt" 2>"$tmp/err.txt"
rc=$?
[ $rc -eq 0 ] || { echo "--check of a valid merge: exit $rc"; cat "$tmp/err.txt"; fail=1; }
grep -q "the merge can run" "$tmp/plan.txt" || { echo "no verdict"; cat "$tmp/plan.txt"; fail=1; }
grep -q "estimated time" "$tmp/plan.txt" || { echo "no time estimate"; fail=1; }
ls "$tmp" | grep -q "^out" && { echo "--check wrote into the output's parent"; fail=1; }

"$BIN" merge --check --json --shard-size 1M "$tmp/merge.yml" "$tmp/out" >"$tmp/plan.json" ||
    { echo "--check --json failed"; fail=1; }
"$BIN" merge -q --shard-size 1M "$tmp/merge.yml" "$tmp/out" || { echo "merge failed"; fail=1; }

# Independent figures: tensor bytes from each source's safetensors headers, output shard
# sizes and work directory size from the file system, free space from os.statvfs.
"$PY" - "$tmp/plan.json" "$tmp/out" "$F" <<'PYEOF' || fail=1
import json, os, struct, sys
plan = json.load(open(sys.argv[1]))
out, F = sys.argv[2], sys.argv[3]
bad = []
def check(cond, what):
    if not cond:
        bad.append(what)

def tensor_bytes(model):
    total = 0
    for name in os.listdir(model):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        for key, entry in header.items():
            if key != "__metadata__":
                total += entry["data_offsets"][1] - entry["data_offsets"][0]
    return total

sources = ["base", "stories", "legal-bf16", "code-permuted"]
want_read = sum(tensor_bytes(os.path.join(F, s)) for s in sources)
check(plan["ok"] is True and plan["problems"] == [], "plan not ok: %s" % plan["problems"])
check(plan["read_bytes"] == want_read, "read_bytes %d, headers %d" % (plan["read_bytes"], want_read))
check(plan["sources"] == 4, "sources %d, expected 4" % plan["sources"])
check(plan["layers"] == 5, "layers %d" % plan["layers"])

index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
shards = sorted(set(index["weight_map"].values()))
written = sum(os.path.getsize(os.path.join(out, s)) for s in shards)
check(plan["output_bytes"] == written, "output_bytes %d, shards %d" % (plan["output_bytes"], written))
check(plan["shards"] == len(shards), "shards %d, written %d" % (plan["shards"], len(shards)))
check(plan["tensors"] == len(index["weight_map"]), "tensors %d, index %d"
      % (plan["tensors"], len(index["weight_map"])))
work = os.path.join(out, "symphony-work")
cache = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work))
check(cache <= plan["cache_bytes"], "work directory %d above the bound %d" % (cache, plan["cache_bytes"]))
check(plan["cache_bytes"] < 4 * cache, "cache bound %d far above %d" % (plan["cache_bytes"], cache))
report = json.load(open(os.path.join(out, "merge-report.json")))
check(plan["calibration_tokens"] == report["calibration_tokens"], "calibration tokens %d, merge %d"
      % (plan["calibration_tokens"], report["calibration_tokens"]))
check(plan["disk_needed"] >= written + cache, "disk_needed below what was written")
vfs = os.statvfs(os.path.dirname(out))
free = vfs.f_bavail * vfs.f_frsize
check(abs(plan["disk_free"] - free) <= max(free // 20, 64 << 20), "disk_free %d, statvfs %d"
      % (plan["disk_free"], free))

# FLOPs of the correlation GEMMs: layers x aligned experts x 2 T f^2.
T, f = report["calibration_tokens"], 172
check(plan["flops"]["correlation"] == 5 * 2 * 2 * T * f * f, "correlation FLOPs %g"
      % plan["flops"]["correlation"])
for key in ("total", "source_forward", "merged_forward", "router"):
    check(plan["flops"][key] > 0, "flops.%s is %s" % (key, plan["flops"][key]))
check(plan["gemm_flops_per_s"] > 1e6, "gemm rate %s" % plan["gemm_flops_per_s"])
check(plan["disk_read_bytes_per_s"] > 0, "disk rate %s" % plan["disk_read_bytes_per_s"])
check(plan["estimated_seconds"]["total"] > 0, "no time estimate")
check(plan["memory_bytes"] > plan["memory_tensor_bytes"] > 0, "memory figures")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PYEOF

# The finished merge: --check of the same command still passes (the merge would find it
# complete); a different output that exists needs --force.
"$BIN" merge --check --shard-size 1M "$tmp/merge.yml" "$tmp/out" >/dev/null 2>&1 ||
    { echo "--check after the merge failed"; fail=1; }
mkdir "$tmp/other"
"$BIN" merge --check "$tmp/merge.yml" "$tmp/other" >/dev/null 2>"$tmp/err.txt" &&
    { echo "--check accepted an existing directory"; fail=1; }
grep -q "already exists" "$tmp/err.txt" || { echo "no message for an existing output"; fail=1; }

# Every problem at once: a missing source, an unreadable one, and a bad output path.
cat >"$tmp/bad.yml" <<YAML
dtype: float32
gate_mode: random
experts:
  - source_model: $F/legal
  - source_model: $tmp/missing
  - source_model: $tmp/not-a-model
YAML
mkdir "$tmp/not-a-model"
echo '{' >"$tmp/not-a-model/config.json"
"$BIN" merge --check "$tmp/bad.yml" "$F/legal" >"$tmp/plan.txt" 2>"$tmp/err.txt"
rc=$?
[ $rc -eq 1 ] || { echo "--check of a bad config: exit $rc, expected 1"; fail=1; }
grep -q "3 problem(s) found" "$tmp/err.txt" || { echo "expected 3 problems:"; cat "$tmp/err.txt"; fail=1; }
grep -q "overlaps source_model" "$tmp/err.txt" || { echo "output overlap not listed"; fail=1; }
grep -q "not-a-model" "$tmp/err.txt" || { echo "unreadable source not listed"; fail=1; }
grep -q "missing" "$tmp/err.txt" || { echo "missing source not listed"; fail=1; }

# Incompatible sources: a different rope_theta, a different layer count and a MoE, all
# listed.
cp -r "$F/code" "$tmp/code-rope"
sed -i 's/"rope_theta": [0-9.e+]*/"rope_theta": 1000000.0/' "$tmp/code-rope/config.json"
"$PY" - "$F/docs" "$tmp/docs-4" <<'PYEOF' || fail=1
import json, os, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
cfg = json.load(open(os.path.join(dst, "config.json")))
cfg["num_hidden_layers"] = 4
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
path = os.path.join(dst, "model.safetensors")
data = open(path, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
body = data[8 + n:]
keep = {k: v for k, v in header.items() if k == "__metadata__" or ".layers.4." not in k}
out, blob = {}, b""
for k in sorted(keep):
    if k == "__metadata__":
        out[k] = keep[k]
        continue
    b, e = keep[k]["data_offsets"]
    out[k] = dict(keep[k], data_offsets=[len(blob), len(blob) + e - b])
    blob += body[b:e]
text = json.dumps(out).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + blob)
PYEOF
cat >"$tmp/incompat.yml" <<YAML
dtype: float32
gate_mode: random
experts:
  - source_model: $F/legal
  - source_model: $tmp/code-rope
  - source_model: $tmp/docs-4
  - source_model: $F/moe-btx
YAML
"$BIN" merge --check --json "$tmp/incompat.yml" >"$tmp/incompat.json" 2>"$tmp/err.txt"
rc=$?
[ $rc -eq 1 ] || { echo "--check of incompatible sources: exit $rc, expected 1"; fail=1; }
grep -q "rope_theta" "$tmp/err.txt" || { echo "rope_theta not listed:"; cat "$tmp/err.txt"; fail=1; }
grep -q "num_hidden_layers\|layers" "$tmp/err.txt" || { echo "layer count not listed"; fail=1; }
grep -q "moe-btx" "$tmp/err.txt" || { echo "MoE source not listed"; fail=1; }
"$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])); sys.exit(0 if not p["ok"] and len(p["problems"]) >= 3 else 1)' \
    "$tmp/incompat.json" || { echo "JSON plan does not list the three problems"; fail=1; }

# Memory above --memory-limit is a problem, listed with the plan.
"$BIN" merge --check --memory-limit 1M "$tmp/merge.yml" >"$tmp/plan.txt" 2>"$tmp/err.txt"
rc=$?
[ $rc -eq 1 ] || { echo "--check over the memory limit: exit $rc"; fail=1; }
grep -q "more than --memory-limit (1.00 MiB)" "$tmp/err.txt" ||
    { echo "memory problem not listed:"; cat "$tmp/err.txt"; fail=1; }
grep -q "^  memory" "$tmp/plan.txt" || { echo "plan not printed with the problem"; fail=1; }

# What is already at OUTPUT_DIR: an interrupted merge would be resumed, a directory kept.
mkdir -p "$tmp/out.partial"
"$BIN" merge --check "$tmp/merge.yml" "$tmp/out" >"$tmp/plan.txt" 2>&1
grep -q "out.partial exists, so the merge would resume it" "$tmp/plan.txt" ||
    { echo "--check does not mention the partial output:"; cat "$tmp/plan.txt"; fail=1; }
"$BIN" merge --check --json "$tmp/merge.yml" "$tmp/out" >"$tmp/plan.json" 2>&1
grep -q '"output_state": "partial"' "$tmp/plan.json" ||
    { echo "JSON plan has no partial output_state"; fail=1; }
rmdir "$tmp/out.partial"
mkdir -p "$tmp/out"
"$BIN" merge --check "$tmp/merge.yml" "$tmp/out" >"$tmp/plan.txt" 2>&1
grep -q "out exists: the merge does nothing if it holds this merge" "$tmp/plan.txt" ||
    { echo "--check does not mention the existing output:"; cat "$tmp/plan.txt"; fail=1; }
rmdir "$tmp/out"

# Usage errors.
"$BIN" merge --check >/dev/null 2>&1; [ $? -eq 2 ] || { echo "--check without CONFIG: not 2"; fail=1; }
"$BIN" merge --check a b c >/dev/null 2>&1; [ $? -eq 2 ] || { echo "--check a b c: not 2"; fail=1; }
"$BIN" merge --json "$tmp/merge.yml" "$tmp/x" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "--json without --check: not 2"; fail=1; }
exit $fail
