#!/bin/sh
# merge's config checks and output handling: unknown and unsupported keys, modes that
# need calibration, task arithmetic's base and scale, relative paths, --force, a completed
# rerun, refused resumes (config, thread count, source changed), --restart, the lock,
# --memory-limit, non-finite values and float16 overflow named by tensor.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-config-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
BIN=$SYMPHONY_BIN

# expect STATUS PATTERN ARGS...: runs merge, checks the exit status and stderr.
expect() {
    want=$1 pattern=$2
    shift 2
    "$BIN" merge "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    if [ $rc -ne "$want" ] || ! grep -q -- "$pattern" "$tmp/stderr" "$tmp/stdout"; then
        echo "merge $*: exit $rc (expected $want), output:"
        cat "$tmp/stdout" "$tmp/stderr"
        echo "expected the pattern: $pattern"
        fail=1
    fi
}

# config FILE [EXTRA LINES]: two experts, random router, then the extra lines.
config() {
    file=$1
    shift
    {
        echo "dtype: float32"
        echo "gate_mode: random"
        echo "experts:"
        echo "  - source_model: $F/legal"
        echo "  - source_model: $F/code"
        for line in "$@"; do echo "$line"; done
    } >"$file"
}

config "$tmp/typo.yml" "expert_per_token: 1"
expect 1 "unknown key 'expert_per_token'; did you mean 'experts_per_token'" "$tmp/typo.yml" "$tmp/o"
config "$tmp/sym.yml" "symphony:" "  atention: linear"
expect 1 "did you mean 'attention'" "$tmp/sym.yml" "$tmp/o"
config "$tmp/shared.yml" "shared_experts: []"
expect 1 "'shared_experts' is a mergekit setting that symphony-stream does not support" \
    "$tmp/shared.yml" "$tmp/o"
config "$tmp/noise.yml"
sed -i "s|  - source_model: $F/code|  - source_model: $F/code\n    noise_scale: 0.1|" "$tmp/noise.yml"
expect 1 "'noise_scale' is a mergekit setting" "$tmp/noise.yml" "$tmp/o"
config "$tmp/arch.yml" "architecture: qwen"
expect 1 "'architecture: qwen' is not supported" "$tmp/arch.yml" "$tmp/o"
config "$tmp/hidden.yml"
sed -i 's/gate_mode: random/gate_mode: hidden/' "$tmp/hidden.yml"
expect 1 "gate_mode 'hidden' is not supported without calibration" "$tmp/hidden.yml" "$tmp/o"
sed -i 's/gate_mode: hidden/gate_mode: hidden_avg/' "$tmp/hidden.yml"
expect 1 "gate_mode 'hidden_avg' is not supported without calibration" "$tmp/hidden.yml" "$tmp/o"
config "$tmp/ok.yml" "architecture: mixtral"
expect 1 "calibration_tokens 5: calibration" --calibration-tokens 5 "$tmp/ok.yml" "$tmp/o"
expect 2 "--dtype 'float8'" --dtype float8 "$tmp/ok.yml" "$tmp/o"
config "$tmp/dtype.yml"
sed -i 's/dtype: float32/dtype: int8/' "$tmp/dtype.yml"
expect 1 "'dtype' is 'int8'; expected bfloat16, float16 or float32" "$tmp/dtype.yml" "$tmp/o"
expect 1 "needs about" --memory-limit 1K "$tmp/ok.yml" "$tmp/o"
config "$tmp/topk1.yml" "experts_per_token: 1" "symphony:" "  router:" \
    "    objective: distill-topk"
expect 1 "distill-topk objective needs experts_per_token of 2" "$tmp/topk1.yml" "$tmp/o"
config "$tmp/topk1-cli.yml" "experts_per_token: 1"
expect 2 "distill-topk needs experts_per_token of 2" --router-objective distill-topk \
    "$tmp/topk1-cli.yml" "$tmp/o"
# A YAML "\0" escape puts a NUL character inside a value or a key. printf writes the
# backslash as is; dash's echo would turn it into a NUL byte, which YAML rejects earlier.
config "$tmp/nul.yml" "symphony:" "  router:"
printf '%s\n' '    domain_weights: "uniform\0"' >>"$tmp/nul.yml"
expect 1 "'symphony.router.domain_weights' contains a NUL character (line 8)" \
    "$tmp/nul.yml" "$tmp/o"
config "$tmp/nulkey.yml" "symphony:"
printf '%s\n' '  "seed\0x": 1' >>"$tmp/nulkey.yml"
expect 1 "the key 'seed...' contains a NUL character (line 7)" "$tmp/nulkey.yml" "$tmp/o"
config "$tmp/weights.yml" "symphony:" "  router:" "    domain_weights: LENS"
expect 1 "is 'LENS'; expected one of: lens, uniform" "$tmp/weights.yml" "$tmp/o"
# Task arithmetic needs a base and a scale, and a scale needs task arithmetic.
config "$tmp/ta.yml" "symphony:" "  embeddings: task-arithmetic" "  task_scale: 0.35"
expect 1 "task-arithmetic fusion needs 'base_model'" "$tmp/ta.yml" "$tmp/o"
config "$tmp/ta-scale.yml" "base_model: $F/base" "symphony:" "  norms: task-arithmetic"
expect 1 "needs 'symphony.task_scale'" "$tmp/ta-scale.yml" "$tmp/o"
config "$tmp/ta-unused.yml" "base_model: $F/base" "symphony:" "  task_scale: 0.35"
expect 1 "'symphony.task_scale' is set but no component uses task arithmetic" \
    "$tmp/ta-unused.yml" "$tmp/o"
config "$tmp/ta-zero.yml" "base_model: $F/base" "symphony:" "  attention: task-arithmetic" \
    "  task_scale: 0"
expect 1 "'symphony.task_scale' is '0'; expected a number above 0" "$tmp/ta-zero.yml" "$tmp/o"
# A negative, malformed or too large scale gets the same message with the range.
for bad in -1 0.35abc 101; do
    sed "s/task_scale: 0\$/task_scale: $bad/" "$tmp/ta-zero.yml" >"$tmp/ta-bad.yml"
    expect 1 "'symphony.task_scale' is '$bad'; expected a number above 0 and at most 100" \
        "$tmp/ta-bad.yml" "$tmp/o"
done
config "$tmp/ta-mode.yml" "symphony:" "  norms: mean"
expect 1 "'symphony.norms' is 'mean'; expected one of: linear, task-arithmetic" \
    "$tmp/ta-mode.yml" "$tmp/o"
# The base goes through the architecture check, so one with another hidden size is rejected.
"$SYMPHONY_BUILD/tests/tool_synth" "$tmp/base-128" hidden=128 vocab=512 >/dev/null ||
    { echo "tool_synth failed"; fail=1; }
config "$tmp/ta-shape.yml" "base_model: $tmp/base-128" "symphony:" "  anchor: $F/legal" \
    "  embeddings: task-arithmetic" "  task_scale: 0.5"
expect 1 "the sources cannot be merged: .* in $tmp/base-128" "$tmp/ta-shape.yml" "$tmp/o"
[ -e "$tmp/o" ] || [ -e "$tmp/o.partial" ] && { echo "a rejected merge left output"; fail=1; }

# The documented example config uses every key and is valid.
sed "s|@F@|$F|g" "$SYMPHONY_TOP/fixtures/configs/example.yml" >"$tmp/example.yml"
"$BIN" merge -q "$tmp/example.yml" "$tmp/example" || { echo "example.yml failed"; fail=1; }

# Relative source paths are relative to the config file, not the working directory.
mkdir "$tmp/rel"
ln -s "$F/legal" "$tmp/rel/legal"
ln -s "$F/code" "$tmp/rel/code"
printf 'dtype: float32\ngate_mode: random\nexperts:\n  - source_model: legal\n  - source_model: code\n' \
    >"$tmp/rel/merge.yml"
(cd / && "$BIN" merge -q "$tmp/rel/merge.yml" "$tmp/rel-out") || { echo "relative paths failed"; fail=1; }

# Rerunning a finished merge reports it; another merge into it needs --force.
"$BIN" merge -q "$tmp/ok.yml" "$tmp/out" || fail=1
expect 0 "already complete" "$tmp/ok.yml" "$tmp/out"
expect 1 "already exists.*--force" --seed 5 "$tmp/ok.yml" "$tmp/out"
"$BIN" merge -q --force --seed 5 "$tmp/ok.yml" "$tmp/out" || { echo "--force failed"; fail=1; }
[ -e "$tmp/out.symphony-old" ] && { echo "--force left the old output"; fail=1; }

# Refused resumes, then --restart.
SYMPHONY_TEST_KILL_AT=30 "$BIN" merge -q "$tmp/ok.yml" "$tmp/res" 2>/dev/null
[ -d "$tmp/res.partial" ] || { echo "no partial output after a kill"; fail=1; }
expect 1 "thread count (--threads) changed" --threads 3 "$tmp/ok.yml" "$tmp/res"
# The partial merge above ran on the widest SIMD variant; scalar is another one.
if grep -q avx2 /proc/cpuinfo 2>/dev/null; then
    SYMPHONY_SIMD=scalar expect 1 "SIMD variant changed" "$tmp/ok.yml" "$tmp/res"
fi
cp "$tmp/ok.yml" "$tmp/ok-copy.yml"
echo "experts_per_token: 1" >>"$tmp/ok.yml"
expect 1 "cannot resume the interrupted merge because the config file changed" \
    "$tmp/ok.yml" "$tmp/res"
"$BIN" merge -q --restart "$tmp/ok.yml" "$tmp/res" || { echo "--restart failed"; fail=1; }

cp -r "$F/legal" "$tmp/legal"
chmod -R u+w "$tmp/legal"
config "$tmp/src.yml"
sed -i "s|$F/legal|$tmp/legal|" "$tmp/src.yml"
SYMPHONY_TEST_KILL_AT=30 "$BIN" merge -q "$tmp/src.yml" "$tmp/src" 2>/dev/null
touch -d '2001-01-01' "$tmp/legal/model.safetensors"
expect 1 "a source model changed" "$tmp/src.yml" "$tmp/src"

# The lock: a second merge while one holds OUTPUT.lock.
if command -v flock >/dev/null 2>&1; then
    flock "$tmp/locked.lock" sleep 30 &
    holder=$!
    # Wait until the holder has the lock: a non-blocking attempt fails once it does.
    i=0
    while flock -n "$tmp/locked.lock" true && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    expect 1 "another merge is writing" "$tmp/ok-copy.yml" "$tmp/locked"
    kill "$holder" 2>/dev/null
    wait
fi

# config.json of the output: a Llama config without rope_theta gets 10000.0 written,
# auto_map is dropped and unknown keys pass through.
"$PY" - "$tmp/legal/config.json" "$tmp/legal-cfg" <<'PY'
import json, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(os.path.dirname(src), dst)
cfg = json.load(open(src))
del cfg["rope_theta"]
cfg["auto_map"] = {"AutoModel": "custom.Model"}
cfg["my_custom_key"] = [1, 2]
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"))
PY
config "$tmp/cfg.yml"
sed -i "s|$F/legal|$tmp/legal-cfg|" "$tmp/cfg.yml"
"$BIN" merge -q "$tmp/cfg.yml" "$tmp/cfg" || { echo "merge without rope_theta failed"; fail=1; }
"$PY" - "$tmp/cfg/config.json" <<'PY' || { echo "output config.json is wrong"; fail=1; }
import json, sys
cfg = json.load(open(sys.argv[1]))
assert cfg["rope_theta"] == 10000.0, cfg.get("rope_theta")
assert "auto_map" not in cfg
assert cfg["my_custom_key"] == [1, 2]
assert cfg["model_type"] == "mixtral", cfg["model_type"]
assert cfg["architectures"] == ["MixtralForCausalLM"], cfg["architectures"]
assert cfg["num_local_experts"] == 2, cfg["num_local_experts"]
assert cfg["num_experts_per_tok"] == 2, cfg["num_experts_per_tok"]
for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
            "vocab_size", "tie_word_embeddings", "sliding_window", "rope_scaling"):
    assert key in cfg, key
PY

# Non-finite values and float16 overflow are errors naming the tensor.
"$PY" - "$tmp/legal" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.environ["SYMPHONY_SHARED"], "tools"))
import numpy as np, st_io
d = sys.argv[1]
cfg, t, _ = st_io.load_model_dir(d)
t = dict(t)
t["model.norm.weight"] = t["model.norm.weight"] * 1e6
t["model.layers.1.input_layernorm.weight"] = t["model.layers.1.input_layernorm.weight"].copy()
st_io.save_model_dir(d + "-big", cfg, t)
t["model.layers.1.input_layernorm.weight"][3] = np.nan
st_io.save_model_dir(d + "-nan", cfg, t)
cfg, t, _ = st_io.load_model_dir(os.path.join(os.environ["SYMPHONY_SHARED"], "fixtures/real/base"))
t = dict(t)
t["model.layers.1.self_attn.q_proj.weight"] = t["model.layers.1.self_attn.q_proj.weight"].copy()
t["model.layers.1.self_attn.q_proj.weight"][0, 5] = np.inf
st_io.save_model_dir(d + "-base-inf", cfg, t)
PY
config "$tmp/big.yml"
sed -i "s|$F/legal|$tmp/legal-big|" "$tmp/big.yml"
expect 1 "tensor 'model.norm.weight': .* exceed the float16 range" --dtype float16 \
    "$tmp/big.yml" "$tmp/big"
config "$tmp/nan.yml"
sed -i "s|$F/legal|$tmp/legal-nan|" "$tmp/nan.yml"
expect 1 "tensor 'model.layers.1.input_layernorm.weight': element 3 is nan" "$tmp/nan.yml" "$tmp/nan"
# A non-finite weight of task arithmetic's base is named with its file, also when
# calibration fuses the layer before any router is trained on it.
config "$tmp/base-inf.yml" "base_model: $tmp/legal-base-inf" "symphony:" "  anchor: $F/legal" \
    "  attention: task-arithmetic" "  task_scale: 0.5" "  calibration_tokens: 256" \
    "  sequence_length: 64"
sed -i "s|^gate_mode: random|gate_mode: hidden|; s|  - source_model: $F/legal|&\\n    calibration: $F/text/legal/calib.txt|; s|  - source_model: $F/code|&\\n    calibration: $F/text/code/calib.txt|" "$tmp/base-inf.yml"
expect 1 "$tmp/legal-base-inf/model.safetensors: tensor 'model.layers.1.self_attn.q_proj.weight': element 5 is inf" \
    "$tmp/base-inf.yml" "$tmp/base-inf"
exit $fail
