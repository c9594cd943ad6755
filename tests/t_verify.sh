#!/bin/sh
# verify passes a fresh merge, names the tensor whose byte was flipped, flags non-string
# __metadata__ values and a wrong index total_size, and exits 1 on damage.
set -u
. "$SYMPHONY_TOP/tests/real_fixtures.sh"
skip_without_real
PY=${SYMPHONY_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/symphony-verify-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
sed "s|@F@|$F|g; s|dtype: float32|dtype: bfloat16|" "$SYMPHONY_TOP/fixtures/configs/btx.yml" \
    >"$tmp/m.yml"
"$SYMPHONY_BIN" merge -q --shard-size 700K "$tmp/m.yml" "$tmp/out" || { echo "merge failed"; exit 1; }

"$SYMPHONY_BIN" verify "$tmp/out" >"$tmp/ok.txt"
[ $? -eq 0 ] || { echo "verify rejected a fresh merge:"; cat "$tmp/ok.txt"; fail=1; }
"$SYMPHONY_BIN" verify --json "$tmp/out" | grep -q '"ok": true' || { echo "--json not ok"; fail=1; }

# Flip one byte inside a tensor, located through the manifest.
victim=model.layers.2.self_attn.k_proj.weight
cp -r "$tmp/out" "$tmp/flip"
"$PY" - "$tmp/flip" "$victim" <<'PY'
import json, os, sys
d, name = sys.argv[1], sys.argv[2]
entry = json.load(open(os.path.join(d, "symphony-manifest.json")))["tensors"][name]
with open(os.path.join(d, entry["file"]), "r+b") as f:
    f.seek(entry["offset"] + entry["length"] // 2)
    b = f.read(1)
    f.seek(entry["offset"] + entry["length"] // 2)
    f.write(bytes([b[0] ^ 0x01]))
PY
"$SYMPHONY_BIN" verify "$tmp/flip" >"$tmp/flip.txt"
rc=$?
cat "$tmp/flip.txt"
[ $rc -eq 1 ] || { echo "flipped byte: exit $rc, expected 1"; fail=1; }
grep -q "tensor '$victim': checksum mismatch" "$tmp/flip.txt" || { echo "victim not named"; fail=1; }
[ "$(grep -c '^damaged:' "$tmp/flip.txt")" -eq 1 ] || { echo "expected exactly one problem"; fail=1; }
"$SYMPHONY_BIN" verify --json "$tmp/flip" | grep -q "\"tensor\": \"$victim\"" ||
    { echo "--json does not name the victim"; fail=1; }

# A __metadata__ value that is not a string, same header length: "pt" -> 1234.
cp -r "$tmp/out" "$tmp/meta"
"$PY" - "$(ls "$tmp"/meta/model-00001-of-*.safetensors)" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
i = data.index(b'"format":"pt"')
data[i:i + 13] = b'"format":1234'
open(sys.argv[1], "wb").write(data)
PY
"$SYMPHONY_BIN" verify "$tmp/meta" >"$tmp/meta.txt"
[ $? -eq 1 ] || { echo "non-string metadata: verify passed"; fail=1; }
grep -q "__metadata__ must map strings to strings" "$tmp/meta.txt" || { cat "$tmp/meta.txt"; fail=1; }

# A wrong total_size in the index.
cp -r "$tmp/out" "$tmp/total"
sed -i 's/"total_size": [0-9]*/"total_size": 12/' "$tmp/total/model.safetensors.index.json"
"$SYMPHONY_BIN" verify "$tmp/total" >"$tmp/total.txt"
[ $? -eq 1 ] || { echo "wrong total_size: verify passed"; fail=1; }
grep -q "total_size is 12" "$tmp/total.txt" || { cat "$tmp/total.txt"; fail=1; }

# config.json that disagrees with the tensors.
cp -r "$tmp/out" "$tmp/config"
sed -i 's/"num_local_experts": 4/"num_local_experts": 3/' "$tmp/config/config.json"
"$SYMPHONY_BIN" verify "$tmp/config" >"$tmp/config.txt"
[ $? -eq 1 ] || { echo "wrong num_local_experts: verify passed"; fail=1; }
grep -q "config.json: config and tensors disagree" "$tmp/config.txt" || { cat "$tmp/config.txt"; fail=1; }

"$SYMPHONY_BIN" verify "$tmp/missing" 2>/dev/null
[ $? -eq 1 ] || { echo "missing directory: expected exit 1"; fail=1; }
exit $fail
