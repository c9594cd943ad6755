"""Independent numpy checks of merge output, for tests/t_merge_fusion.sh.

Usage: fusion_check.py make-sources FIXTURES DIR
       fusion_check.py check SPEC.json
The reference safetensors reader is st_io.py from $SYMPHONY_SHARED/tools. Every fusion
rule is recomputed here in float64 from the definitions, not from symphony-stream's code.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ["SYMPHONY_SHARED"], "tools"))
import st_io  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def close(got, want, what, ulps=2):
    """got (float32) equals want (float64) rounded to float32, within a few ulps."""
    want32 = want.astype(np.float32)
    tol = ulps * np.spacing(np.abs(want32)) + 1e-30
    bad = np.abs(got.astype(np.float64) - want32.astype(np.float64)) > tol
    check(not bad.any(), "%s: %d of %d elements differ, max |diff| %.3g" %
          (what, int(bad.sum()), bad.size, float(np.max(np.abs(got - want32)))))


def slerp(t, a, b):
    """mergekit-style SLERP of two flattened tensors (float64)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    dot = float(np.dot(a, b) / (na * nb))
    if dot > 0.9995:
        return (1 - t) * a + t * b
    theta = np.arccos(dot)
    return (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)


def multi_slerp(weights, xs):
    """The fold r_1 = x_1, r_i = slerp(r_{i-1}, x_i, w_i / (w_1 + ... + w_i))."""
    r, cum = xs[0], weights[0]
    for w, x in zip(weights[1:], xs[1:]):
        cum += w
        r = slerp(w / cum, r, x)
    return r


def layer_weights(schedules, layer, n_layers):
    w = []
    for s in schedules:
        s = s if isinstance(s, list) else [s]
        pos = layer / (n_layers - 1) * (len(s) - 1)
        lo = min(int(pos), len(s) - 1)
        hi = min(lo + 1, len(s) - 1)
        w.append(s[lo] * (1 - (pos - lo)) + s[hi] * (pos - lo))
    w = np.array(w, dtype=np.float64)
    return w / w.sum()


def load(path):
    config, tensors, dtypes = st_io.load_model_dir(path)
    return config, {k: v.astype(np.float64) for k, v in tensors.items()}, dtypes


def vocab_rows(sources, name, w, donor=None):
    """Selective linear: each row is the weighted mean over the sources that have it.
    Rows beyond every source are the donor's (the anchor, when it is longer)."""
    rows = max(s[name].shape[0] for s in sources)
    if donor is not None:
        rows = max(rows, donor.shape[0])
    out = np.zeros((rows, sources[0][name].shape[1]))
    for r in range(rows):
        have = [i for i, s in enumerate(sources) if r < s[name].shape[0]]
        if not have:
            out[r] = donor[r]
            continue
        ww = w[have] / w[have].sum()
        out[r] = sum(ww[k] * sources[i][name][r] for k, i in enumerate(have))
    return out


def vocab_rows_task(sources, base, name, w, scale, donor=None):
    """Task arithmetic: a row the base has is base + scale * n * sum w_i (x_i - base) over
    the sources that have it. A row only sources have is their selective linear mean."""
    out = vocab_rows(sources, name, w, donor)
    n = len(sources)
    for r in range(min(base.shape[0], out.shape[0])):
        have = [i for i, s in enumerate(sources) if r < s[name].shape[0]]
        out[r] = base[r] + sum(scale * n * w[i] * (sources[i][name][r] - base[r]) for i in have)
    return out


def task(xs, base, w, scale):
    return base + sum(scale * len(xs) * w[i] * (x - base) for i, x in enumerate(xs))


def lm_head_of(model):
    return model.get("lm_head.weight", model["model.embed_tokens.weight"])


def check_merge(spec):
    out_cfg, out, dtypes = load(spec["output"])
    srcs = [load(p)[1] for p in spec["sources"]]
    n = len(srcs)
    n_layers = out_cfg["num_hidden_layers"]
    schedules = spec.get("weights", [1.0] * n)
    check(out_cfg["model_type"] == "mixtral", "model_type is mixtral")
    check(out_cfg["num_local_experts"] == n, "num_local_experts")
    check("rope_theta" in out_cfg, "rope_theta written")
    # The anchor donates the rows no source has when it is longer than every source.
    donor = load(spec["anchor"])[1] if spec.get("anchor") else None
    vocab = max(s["model.embed_tokens.weight"].shape[0] for s in srcs + [donor] if s)
    check(out_cfg["vocab_size"] == vocab, "vocab_size is the union vocabulary")

    scale = spec.get("task_scale")
    ta = load(spec["base"])[1] if spec.get("base") else None
    task_embed = spec.get("embeddings") == "task-arithmetic"
    task_norms = spec.get("norms") == "task-arithmetic"

    def norm_want(name, w):
        xs = [s[name] for s in srcs]
        if task_norms:
            return task(xs, ta[name], w, scale)
        return sum(w[i] * x for i, x in enumerate(xs))

    w0 = layer_weights(schedules, 0, n_layers)
    name = "model.embed_tokens.weight"
    donor_embed = donor[name] if donor else None
    if task_embed:
        want = vocab_rows_task(srcs, ta[name], name, w0, scale, donor_embed)
    else:
        want = vocab_rows(srcs, name, w0, donor_embed)
    close(out[name], want, "embed_tokens")
    wl = layer_weights(schedules, n_layers - 1, n_layers)
    close(out["model.norm.weight"], norm_want("model.norm.weight", wl), "final norm")
    tied = all("lm_head.weight" not in s for s in srcs)
    check(out_cfg["tie_word_embeddings"] == tied, "tie_word_embeddings")
    check(("lm_head.weight" in out) == (not tied), "lm_head present only when untied")
    if not tied:
        heads = [{"h": lm_head_of(s)} for s in srcs]
        donor_head = lm_head_of(donor) if donor else None
        if task_embed:
            want = vocab_rows_task(heads, lm_head_of(ta), "h", wl, scale, donor_head)
        else:
            want = vocab_rows(heads, "h", wl, donor_head)
        close(out["lm_head.weight"], want, "lm_head")

    base = load(spec["anchor"])[1] if spec.get("anchor") else None
    for l in range(n_layers):
        w = layer_weights(schedules, l, n_layers)
        p = "model.layers.%d." % l
        for norm in ("input_layernorm", "post_attention_layernorm"):
            name = p + norm + ".weight"
            close(out[name], norm_want(name, w), name)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            name = p + "self_attn." + proj + ".weight"
            xs = [s[name].ravel() for s in srcs]
            if spec["attention"] == "slerp":
                want = multi_slerp(list(w), xs)
            elif spec["attention"] == "linear":
                want = sum(w[i] * x for i, x in enumerate(xs))
            elif spec["attention"] == "task-arithmetic":
                want = task(xs, ta[name].ravel(), w, scale)
            else:
                want = base[name].ravel()
            close(out[name].ravel(), want, name)
        for e, s in enumerate(srcs):
            for ours, theirs in (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")):
                name = p + "block_sparse_moe.experts.%d.%s.weight" % (e, ours)
                close(out[name], s[p + "mlp.%s.weight" % theirs], name, ulps=0)
        gate = out[p + "block_sparse_moe.gate.weight"]
        check(gate.shape == (n, srcs[0]["model.embed_tokens.weight"].shape[1]), "router shape")
        if spec.get("router") == "random":
            check(0.5 < gate.std() < 1.5 and abs(gate.mean()) < 0.5,
                  "layer %d router rows look standard normal (std %.3f)" % (l, gate.std()))


def check_bf16(spec):
    """The bf16 merge equals the f32 merge rounded to nearest even, tensor by tensor."""
    _, f32, _ = st_io.load_model_dir(spec["f32"])
    _, bf16, dtypes = st_io.load_model_dir(spec["bf16"])
    check(set(f32) == set(bf16), "same tensor names")
    for name in f32:
        check(dtypes[name] == "BF16", name + " stored as BF16")
        want = st_io.bf16_bits_to_f32(st_io.f32_to_bf16_bits(f32[name]))
        check(np.array_equal(bf16[name], want), name + " is the f32 result rounded to bf16")


def make_sources(fixtures, dest):
    """Sources the fixtures lack: a larger vocabulary, an untied lm_head, a short base."""
    rng = np.random.default_rng(5)
    cfg, t, _ = st_io.load_model_dir(os.path.join(fixtures, "stories"))
    t = dict(t)
    extra = rng.standard_normal((8, t["model.embed_tokens.weight"].shape[1])).astype(np.float32)
    t["model.embed_tokens.weight"] = np.concatenate([t["model.embed_tokens.weight"], extra])
    cfg = dict(cfg, vocab_size=520)
    st_io.save_model_dir(os.path.join(dest, "stories-520"), cfg, t,
                         tokenizer_from=os.path.join(fixtures, "stories"))
    cfg, t, _ = st_io.load_model_dir(os.path.join(fixtures, "docs"))
    t = dict(t)
    noise = rng.standard_normal(t["model.embed_tokens.weight"].shape).astype(np.float32)
    t["lm_head.weight"] = t["model.embed_tokens.weight"] + 0.01 * noise
    cfg = dict(cfg, tie_word_embeddings=False)
    st_io.save_model_dir(os.path.join(dest, "docs-untied"), cfg, t,
                         tokenizer_from=os.path.join(fixtures, "docs"))
    # A base more than one 256-row block of the embeddings shorter than the output.
    cfg, t, _ = st_io.load_model_dir(os.path.join(fixtures, "base"))
    t = dict(t)
    t["model.embed_tokens.weight"] = t["model.embed_tokens.weight"][:200]
    st_io.save_model_dir(os.path.join(dest, "base-200"), dict(cfg, vocab_size=200), t,
                         tokenizer_from=os.path.join(fixtures, "base"))


def main():
    if sys.argv[1] == "make-sources":
        make_sources(sys.argv[2], sys.argv[3])
        return 0
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    if "bf16" in spec:
        check_bf16(spec)
    else:
        check_merge(spec)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
