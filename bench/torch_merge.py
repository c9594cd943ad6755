#!/usr/bin/python3
"""The in-memory merge a user would write in PyTorch, as a baseline for b_scale.sh.

usage: torch_merge.py SOURCE_A SOURCE_B OUTPUT_DIR

Loads every tensor of both BF16 Llama checkpoints (model.safetensors or an index with
shards) into memory, averages the non-FFN tensors in float32, stacks the two FFNs as
Mixtral experts (w1 = gate_proj, w2 = down_proj, w3 = up_proj), adds random router rows,
and writes one BF16 safetensors file. It reads safetensors with the standard library so
that it runs with Debian's python3-torch alone (python3-safetensors is not packaged);
the memory profile is that of safetensors.torch.load_file, which also copies every
tensor into process memory.
"""
import json
import os
import struct
import sys

import torch


def load_file(path):
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
        data = bytearray(fh.read())
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "BF16", "%s: expected BF16, got %s" % (name, entry["dtype"])
        begin, end = entry["data_offsets"]
        flat = torch.frombuffer(data, dtype=torch.bfloat16, offset=begin,
                                count=(end - begin) // 2)
        out[name] = flat.reshape(entry["shape"])
    return out


def load_model(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return load_file(os.path.join(model_dir, "model.safetensors"))
    with open(index) as fh:
        shards = sorted(set(json.load(fh)["weight_map"].values()))
    tensors = {}
    for shard in shards:
        tensors.update(load_file(os.path.join(model_dir, shard)))
    return tensors


FFN = {"mlp.gate_proj.weight": "w1", "mlp.down_proj.weight": "w2", "mlp.up_proj.weight": "w3"}


def merge(a, b, hidden):
    out = {}
    layers = set()
    for name in a:
        parts = name.split(".")
        if len(parts) > 3 and parts[1] == "layers":
            layer, rest = parts[2], ".".join(parts[3:])
            layers.add(layer)
            if rest in FFN:
                for e, src in enumerate((a, b)):
                    key = "model.layers.%s.block_sparse_moe.experts.%d.%s.weight" % (
                        layer, e, FFN[rest])
                    out[key] = src[name]
                continue
        out[name] = ((a[name].float() + b[name].float()) / 2).bfloat16()
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        out["model.layers.%s.block_sparse_moe.gate.weight" % layer] = (
            torch.randn(2, hidden, generator=gen) * 0.02).bfloat16()
    return out


def save_file(tensors, path):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    names = sorted(tensors)
    for name in names:
        n = tensors[name].numel() * 2
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for name in names:
            fh.write(tensors[name].contiguous().view(torch.int16).numpy().tobytes())
        fh.flush()
        os.fsync(fh.fileno())


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    a, b = load_model(sys.argv[1]), load_model(sys.argv[2])
    with open(os.path.join(sys.argv[1], "config.json")) as fh:
        hidden = json.load(fh)["hidden_size"]
    out = merge(a, b, hidden)
    os.makedirs(sys.argv[3], exist_ok=True)
    save_file(out, os.path.join(sys.argv[3], "model.safetensors"))
    print("wrote %d tensors to %s" % (len(out), sys.argv[3]))


if __name__ == "__main__":
    main()
