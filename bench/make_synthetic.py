#!/usr/bin/python3
"""Write a synthetic Llama model directory (BF16, random weights) for benchmarks.

usage: make_synthetic.py OUT_DIR LAYERS [HIDDEN FFN VOCAB [HEADS KV_HEADS [SHARDS]]]

HEADS defaults to HIDDEN / 64 and KV_HEADS to HEADS / 2. With SHARDS > 1 the tensors are split
in name order into that many model-0000i-of-0000N.safetensors files of about equal size,
with a model.safetensors.index.json, as in a Hugging Face download.
"""
import json
import os
import struct
import sys

import numpy as np


def bf16_bytes(rng, shape, scale):
    x = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def write_shard(path, names, shapes, rng):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        n = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "BF16", "shape": list(shapes[name]),
                        "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        for name in names:
            if name.endswith("norm.weight"):
                fh.write(np.full(shapes[name], 0x3f80, dtype=np.uint16).tobytes())
            else:
                fh.write(bf16_bytes(rng, shapes[name], 0.02))


def main():
    out, layers = sys.argv[1], int(sys.argv[2])
    d, f, v = (int(a) for a in (sys.argv[3:6] if len(sys.argv) > 5 else (1024, 2816, 4096)))
    heads, kv = (int(a) for a in (sys.argv[6:8] if len(sys.argv) > 7 else (d // 64, d // 128)))
    head_dim = d // heads
    shards = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,),
              "lm_head.weight": (v, d)}
    for l in range(layers):
        p = "model.layers.%d." % l
        shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        shapes[p + "self_attn.q_proj.weight"] = (d, d)
        shapes[p + "self_attn.k_proj.weight"] = (kv * head_dim, d)
        shapes[p + "self_attn.v_proj.weight"] = (kv * head_dim, d)
        shapes[p + "self_attn.o_proj.weight"] = (d, d)
        shapes[p + "mlp.gate_proj.weight"] = (f, d)
        shapes[p + "mlp.up_proj.weight"] = (f, d)
        shapes[p + "mlp.down_proj.weight"] = (d, f)
    names = sorted(shapes)
    sizes = [int(np.prod(shapes[n])) * 2 for n in names]
    groups, total, acc = [[]], sum(sizes), 0
    for name, size in zip(names, sizes):
        if acc >= total * len(groups) / shards and len(groups) < shards:
            groups.append([])
        groups[-1].append(name)
        acc += size
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(layers)
    weight_map = {}
    for i, group in enumerate(groups):
        fname = ("model.safetensors" if shards == 1 else
                 "model-%05d-of-%05d.safetensors" % (i + 1, len(groups)))
        write_shard(os.path.join(out, fname), group, shapes, rng)
        weight_map.update({name: fname for name in group})
    if shards > 1:
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as fh:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": d, "intermediate_size": f, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": v,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "hidden_act": "silu", "torch_dtype": "bfloat16"}
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(config, fh, indent=1)


main()
