"""Compare tool_dump's f32 output with an independent numpy reader.

usage: reader_compare.py TOOLS_DIR MODEL_DIR DUMP_FILE
TOOLS_DIR holds st_io.py, the reference safetensors reader. Exits 1 on any difference.
"""
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import st_io  # noqa: E402

model_dir, dump_path = sys.argv[2], sys.argv[3]
_, expected, _ = st_io.load_model_dir(model_dir)

seen = set()
with open(dump_path, "rb") as f:
    while True:
        line = f.readline()
        if not line:
            break
        name, count = line.decode().split()
        count = int(count)
        ours = np.frombuffer(f.read(4 * count), dtype="<f4")
        ref = expected.get(name)
        if ref is None:
            sys.exit(f"{name}: not found by the reference reader")
        ref = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
        if ref.shape != ours.shape or not np.array_equal(ref.view(np.uint32), ours.view(np.uint32)):
            sys.exit(f"{name}: values differ from the reference reader")
        seen.add(name)

missing = sorted(set(expected) - seen)
if missing:
    sys.exit(f"{model_dir}: tensors not dumped: {missing[:5]}")
print(f"{model_dir}: {len(seen)} tensors identical")
