#!/usr/bin/env python3
"""Train the bundled model (a deep, narrow Llama) and write the Hugging Face reference fixtures, in one GPU call.

Runs on a CUDA machine with PyTorch 2.11, transformers 5.x, tokenizers 0.23, safetensors and numpy (see
tools/train/README.md and tools/train/device-train.sh for the exact command). Everything is written below --stage,
laid out like the repository:

    models/<name>/                            the trained model (bf16 safetensors shards), tokenizer, model card
    tests/TestData/fixtures/<model>/          fixture.json + fixture.safetensors (fp32 HF reference)
    tests/TestData/models/tiny-*/             four tiny random models (Qwen2, Mistral, Llama-3 RoPE, GQA 4:1)
    tests/TestData/tokenizer/long-text-<name>.json.gz   HF tokenizers' ids of a long text (LongInputTests)
    data/heldout-code/                        20 held-out source files (never trained on) for accuracy benchmarks
    tools/train/{metrics.json,samples.txt,corpus_manifest.json}

The data (corpus, tokenizers, token streams) is built by build_data.py in a separate process started first, while
this process compiles the model on random tokens. The script keeps to --total-seconds: training gets whatever time
is left after the data is ready minus --post-reserve for evaluation, saving and fixtures.

kvf-pydoc-16m (8 layers, Debian documentation only) was made by this file as of commit d3df03c.
"""

import argparse
import contextlib
import gzip
import inspect
import json
import lzma
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback

T_START = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2

# Held-out Debian documents used as fixture prompts: (name, source, path, target tokens incl. BOS).
FIXTURE_PROMPTS = [
    ("short", "python3.11-doc", "tutorial/stdlib.rst.txt", 10),
    ("kv-200", "linux-doc-6.1", "networking/packet_mmap.rst.gz", 200),
    ("medium-500", "git-doc", "howto/revert-a-faulty-merge.txt", 500),
    ("long-1000", "python3.11-doc", "howto/argparse.rst.txt", 1000),
    ("very-long-3000", "linux-doc-6.1", "RCU/Design/Requirements/Requirements.rst.gz", 3000),
]
KV_PROMPT = 1
# Held-out code prompts (from distinct held-out distributions): (name, target tokens incl. BOS).
CODE_PROMPTS = [("code-300", 300), ("code-1500", 1500)]
TINY_PROMPTS = [
    ("t50", "python3.11-doc", "library/http.rst.txt", 50),
    ("t300", "perl-doc", "perldocstyle.pod", 300),
]
SAMPLE_PROMPTS = [
    "The :mod:`json` module provides",
    "To enable this driver, the kernel must be",
    "In Perl, a hash is",
    "def read_config(path):\n    \"\"\"",
    "import torch\nimport torch.nn as nn\n\n\nclass MLP(nn.Module):\n    def __init__(self",
    "    def forward(self, x):\n",
]


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s]", *a, flush=True)


def left(args):
    return args.total_seconds - (time.time() - T_START)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="kvf-code-32l")
    ap.add_argument("--corpus", default=".device-carry/corpus")
    ap.add_argument("--stage", default="/tmp/stage")
    ap.add_argument("--work", default="/tmp/kvf-data")
    # architecture
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--max-positions", type=int, default=4096)
    # data
    ap.add_argument("--prose-repeat", type=int, default=2)
    ap.add_argument("--max-code-bytes", type=float, default=8e8)
    ap.add_argument("--tok-sample-bytes", type=float, default=80e6)
    ap.add_argument("--tokenizer-from", default=None, help="reuse a tokenizer directory instead of training one")
    ap.add_argument("--no-code", action="store_true")
    ap.add_argument("--data-timeout", type=float, default=240, help="seconds after start to wait for build_data.py")
    # schedule
    ap.add_argument("--train-seconds", type=float, default=430)
    ap.add_argument("--total-seconds", type=float, default=555, help="wall-clock limit for the whole script")
    ap.add_argument("--post-reserve", type=float, default=85, help="seconds kept for evaluation/saving/fixtures")
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-frac", type=float, default=0.03)
    ap.add_argument("--long-frac", type=float, default=0.15, help="final fraction of the run at seq 4096")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--max-epochs", type=float, default=6.0, help="cap on passes over the training stream; 0 = none")
    ap.add_argument("--compile", choices=["regional", "full", "off"], default="regional")
    ap.add_argument("--bench-eager", action="store_true", help="also time a few eager steps")
    ap.add_argument("--compare-model", default="models/kvf-pydoc-16m",
                    help="an older model evaluated on the same held-out text (bits per byte), if present")
    ap.add_argument("--seed", type=int, default=1234)
    return ap.parse_args()


def start_data_process(args):
    cmd = [sys.executable, os.path.join(HERE, "build_data.py"), "--corpus", args.corpus, "--work", args.work,
           "--vocab", str(args.vocab), "--prose-repeat", str(args.prose_repeat),
           "--max-code-bytes", str(args.max_code_bytes), "--tok-sample-bytes", str(args.tok_sample_bytes),
           "--seed", str(args.seed)]
    if args.tokenizer_from:
        cmd += ["--tokenizer-from", args.tokenizer_from]
    if args.no_code:
        cmd += ["--no-code"]
    if os.path.exists(os.path.join(args.work, "status.json")):
        os.remove(os.path.join(args.work, "status.json"))
    log("starting", " ".join(cmd))
    return subprocess.Popen(cmd)


if __name__ == "__main__":  # before torch is imported: the data build runs while CUDA compiles
    ARGS = parse_args()
    DATA_PROC = start_data_process(ARGS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
import transformers  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig,  # noqa: E402
                          MistralConfig, Qwen2Config)


def load_jsonl_xz(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


def copy_tokenizer(src_dir, dst_dir):
    os.makedirs(dst_dir, exist_ok=True)
    for n in TOKENIZER_FILES:
        shutil.copy(os.path.join(src_dir, n), os.path.join(dst_dir, n))


@contextlib.contextmanager
def eager():
    """Compiled regions run eagerly inside (evaluation, generation): no recompiles for eval mode or no_grad."""
    stance = getattr(torch.compiler, "set_stance", None)
    try:
        stance("force_eager")
    except Exception:  # no set_stance: compiled regions may recompile for eval, which is slower but correct
        stance = None
    try:
        yield
    finally:
        if stance is not None:
            stance("default")


# ----------------------------------------------------------------------------------------------
# configs / models

def make_config(cls, rope, **kw):
    params = inspect.signature(cls.__init__).parameters
    if "rope_parameters" in params:
        kw["rope_parameters"] = dict(rope)
    else:
        kw["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            kw["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    kw.setdefault("bos_token_id", BOS_ID)
    kw.setdefault("eos_token_id", EOS_ID)
    kw.setdefault("pad_token_id", PAD_ID)
    return cls(**kw)


def main_config(args):
    return make_config(
        LlamaConfig, {"rope_type": "default", "rope_theta": args.rope_theta},
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
        max_position_embeddings=args.max_positions, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
        initializer_range=0.02, attention_bias=False, mlp_bias=False)


def count_params(args):
    h, f, L, v = args.hidden, args.ffn, args.layers, args.vocab
    q, kv = args.heads * args.head_dim, args.kv_heads * args.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h
    return v * h + L * per_layer + h


def generation_config():
    return GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)


def save_model(model, out_dir, shard):
    os.makedirs(out_dir, exist_ok=True)
    model.generation_config = generation_config()
    kw = {"max_shard_size": shard}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True
    model.save_pretrained(out_dir, **kw)
    # make sure config.json carries bos/eos ids whatever the transformers version writes
    cpath = os.path.join(out_dir, "config.json")
    with open(cpath) as f:
        cfg = json.load(f)
    changed = False
    for k, v in (("bos_token_id", BOS_ID), ("eos_token_id", EOS_ID), ("pad_token_id", PAD_ID)):
        if cfg.get(k) is None:
            cfg[k] = v
            changed = True
    if changed:
        with open(cpath, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    log(f"saved {out_dir}: " + ", ".join(f"{n} {os.path.getsize(os.path.join(out_dir, n))}"
                                         for n in sorted(os.listdir(out_dir))))


def load_fp32(model_dir):
    try:
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    m = m.to("cuda").eval()
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


def cache_kv(cache, layer):
    if hasattr(cache, "layers"):
        l = cache.layers[layer]
        return l.keys, l.values
    return cache.key_cache[layer], cache.value_cache[layer]


def weight_bytes(d):
    return sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".safetensors"))


# ----------------------------------------------------------------------------------------------
# fixtures

def pick_excerpt(tok, text, target):
    m = re.search(r"\n\n(?=[A-Z][a-z]+ [a-z])", text)
    start = m.end() if m and m.end() < len(text) // 2 else 0
    return cut_tokens(tok, text[start:], target)


def pick_code_excerpt(tok, text, target):
    m = re.search(r"^(import |from |def |class |@)", text, re.MULTILINE)
    start = m.start() if m and m.start() < len(text) // 2 else 0
    return cut_tokens(tok, text[start:], target)


def cut_tokens(tok, text, target):
    enc = tok.encode(text, add_special_tokens=False)
    n = min(target - 1, len(enc.ids))
    return text[:enc.offsets[n - 1][1]]


@torch.no_grad()
def greedy(model, ids, steps):
    x = torch.tensor([ids], device="cuda")
    out = model(input_ids=x, use_cache=True)
    past = out.past_key_values
    logits = out.logits[0, -1].float()
    toks, gaps, step_logits = [], [], []
    for s in range(steps):
        t = int(torch.argmax(logits))
        top2 = torch.topk(logits, 2).values
        toks.append(t)
        gaps.append(float(top2[0] - top2[1]))
        step_logits.append(logits)
        if s == steps - 1:
            break
        out = model(input_ids=torch.tensor([[t]], device="cuda"), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
    # cross-check against one full forward without cache
    full = model(input_ids=torch.tensor([ids + toks[:-1]], device="cuda"), use_cache=False).logits[0].float()
    full_last = full[len(ids) - 1:]
    diff = float((full_last - torch.stack(step_logits)).abs().max())
    mism = sum(a != b for a, b in zip(full_last.argmax(-1).tolist(), toks))
    return toks, gaps, diff, mism


@torch.no_grad()
def write_fixture(model_dir, name, tok, prompts, n_greedy, kv_index, out_dir, extra):
    """prompts: [(name, source, text, licence or None)]"""
    model = load_fp32(model_dir)
    cfg = model.config
    os.makedirs(out_dir, exist_ok=True)
    tensors, plist = {}, []
    for i, (pname, source, text, licence) in enumerate(prompts):
        ids = tok.encode(text).ids
        assert ids[0] == BOS_ID
        n = len(ids)
        positions = sorted(set(int(round(v)) for v in np.linspace(0, n - 1, 8)))
        out = model(input_ids=torch.tensor([ids], device="cuda"), use_cache=True)
        tensors[f"p{i}.logits"] = out.logits[0, positions].float().contiguous().cpu()
        if i == kv_index:
            for l in range(cfg.num_hidden_layers):
                k, v = cache_kv(out.past_key_values, l)
                assert k.shape[-2] == n, (k.shape, n)
                tensors[f"kv.{l}.key"] = k[0].float().contiguous().cpu()
                tensors[f"kv.{l}.value"] = v[0].float().contiguous().cpu()
        toks, gaps, diff, mism = greedy(model, ids, n_greedy)
        log(f"  {name} p{i} {pname}: {n} tokens, greedy cache-vs-full max|dlogit| {diff:.2e}, "
            f"argmax mismatches {mism}, min top2 gap {min(gaps):.4f}")
        entry = {
            "name": pname, "source": source, "text": text, "input_ids": ids,
            "logit_positions": positions, "logits_tensor": f"p{i}.logits",
            "greedy_ids": toks, "greedy_text": tok.decode(toks, skip_special_tokens=False),
            "greedy_top2_gap": gaps,
        }
        if licence:
            entry["licence"] = licence
        plist.append(entry)
    fixture = {"model": name, "prompts": plist, "kv_prompt": kv_index,
               "reference": {"library": f"transformers {transformers.__version__}, torch {torch.__version__}",
                             "dtype": "float32", "attn_implementation": "eager", "tf32": False,
                             "device": torch.cuda.get_device_name()}}
    if kv_index is not None:
        fixture["kv_layout"] = ("kv.{layer}.key / kv.{layer}.value: [num_key_value_heads, seq_len, head_dim], "
                                "keys after RoPE, as transformers' DynamicCache holds them")
    fixture.update(extra)
    with open(os.path.join(out_dir, "fixture.json"), "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    save_file(tensors, os.path.join(out_dir, "fixture.safetensors"), metadata={"format": "pt"})
    del model
    torch.cuda.empty_cache()
    return fixture


# ----------------------------------------------------------------------------------------------
# tiny random models

def tiny_models(vocab):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                  rms_norm_eps=1e-6, hidden_act="silu", initializer_range=0.02)
    q = make_config(Qwen2Config, {"rope_type": "default", "rope_theta": 1000000.0}, **common,
                    tie_word_embeddings=False, use_sliding_window=False)
    m = make_config(MistralConfig, {"rope_type": "default", "rope_theta": 1000000.0}, **common,
                    tie_word_embeddings=False, sliding_window=64)
    l3 = make_config(LlamaConfig, {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 256},
                     **common, tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    gqa = dict(common, num_attention_heads=4, num_key_value_heads=1, head_dim=64)
    g4 = make_config(LlamaConfig, {"rope_type": "default", "rope_theta": 500000.0}, **gqa,
                     tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    return [("tiny-qwen2", q, torch.float32, "320KB", 11),
            ("tiny-mistral", m, torch.float16, "3MB", 12),
            ("tiny-llama3-rope", l3, torch.bfloat16, "3MB", 13),
            ("tiny-llama-gqa4", g4, torch.bfloat16, "3MB", 14)]


@torch.no_grad()
def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    for n, p in model.named_parameters():
        if "norm" in n:
            v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        elif n.endswith("bias"):
            v = 0.2 * torch.randn(p.shape, generator=g)
        elif "lm_head" in n or ("embed_tokens" in n and model.config.tie_word_embeddings):
            v = 0.3 * torch.randn(p.shape, generator=g)
        else:
            v = 0.1 * torch.randn(p.shape, generator=g)
        p.copy_(v.to(p.dtype))


def build_tiny(stage, tok_dir, tok, tiny_prompts, vocab):
    results = {}
    for name, cfg, dtype, shard, seed in tiny_models(vocab):
        try:
            model = AutoModelForCausalLM.from_config(cfg)
            randomize(model, seed)
            model = model.to(dtype)
            out = os.path.join(stage, "tests/TestData/models", name)
            save_model(model, out, shard)
            copy_tokenizer(tok_dir, out)
            extra = {"weights_dtype": str(dtype).replace("torch.", "")}
            if name == "tiny-mistral":
                extra["sliding_window_semantics"] = (
                    "query position i attends key positions j with i - sliding_window < j <= i "
                    "(transformers masking_utils sliding-window causal mask)")
            write_fixture(out, name, tok, tiny_prompts, 16, None,
                          os.path.join(stage, "tests/TestData/fixtures", name), extra)
            if name == "tiny-mistral":
                check_window(out, tok, tiny_prompts[1][2])
            results[name] = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
        except Exception:
            log(f"ERROR: tiny model {name} failed\n" + traceback.format_exc())
            results[name] = "failed"
    return results


def check_window(model_dir, tok, text):
    """Shows that the window matters for the 300-token prompt (diagnostic only)."""
    m_full = load_fp32(model_dir)
    ids = torch.tensor([tok.encode(text).ids], device="cuda")
    with torch.no_grad():
        a = m_full(input_ids=ids).logits[0, -1]
    m_full.config.sliding_window = None
    for layer in m_full.model.layers:
        if hasattr(layer.self_attn, "sliding_window"):
            layer.self_attn.sliding_window = None
    try:
        with torch.no_grad():
            b = m_full(input_ids=ids).logits[0, -1]
        log(f"  tiny-mistral: last-position logits with vs without window differ by "
            f"{float((a - b).abs().max()):.3e} (must be > 0)")
    except Exception as e:
        log(f"  tiny-mistral window check skipped: {e!r}")


# ----------------------------------------------------------------------------------------------
# data products that need only the tokenizer

def mulberry32(seed):
    """The generator of tests/TestData/tokenizer/make_long_text_reference.mjs (32-bit arithmetic as in JS)."""
    state = [seed & 0xFFFFFFFF]

    def rnd():
        state[0] = (state[0] + 0x6D2B79F5) & 0xFFFFFFFF
        s = state[0]
        t = ((s ^ (s >> 15)) * (1 | s)) & 0xFFFFFFFF
        t = (((t + (((t ^ (t >> 7)) * (61 | t)) & 0xFFFFFFFF)) & 0xFFFFFFFF) ^ t) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296
    return rnd


def write_long_text_reference(tok, name, out_path):
    """The recipe of make_long_text_reference.mjs, with the Python binding of the same Rust tokenizers library."""
    import tokenizers
    rnd = mulberry32(12)

    def pick(n):
        return int(rnd() * n)

    def repeat(n, f):
        return "".join(f() for _ in range(n))
    files = sorted(f for f in os.listdir("data/heldout") if f.endswith(".txt"))
    prose = "".join(open(os.path.join("data/heldout", f), encoding="utf-8").read() for f in files)[:48_000]
    text = (prose + "\n\nA long identifier: " + repeat(10_000, lambda: "abcdefghijklmnopqrstuvwxyz"[pick(26)]) +
            " ends here.\n" + "=" * 3_000 + "\n" + " " * 6_000 + "indented after a long run of spaces\n" +
            "digits " + repeat(4_000, lambda: str(pick(10))) + "\n" +
            "CJK without spaces: " + repeat(3_000, lambda: chr(0x4E00 + pick(0x5000))) + "\u3002\n" +
            "caf\u00e9 na\u00efve \U0001F600 " * 200)
    ids = tok.encode(text, add_special_tokens=False).ids
    library = f"tokenizers {tokenizers.__version__} (Python binding of the Rust library)"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "wb") as f:
        f.write(gzip.compress(json.dumps({"model": f"models/{name}", "library": library, "text": text, "ids": ids},
                                         ensure_ascii=False).encode("utf-8"), 9, mtime=0))
    log(f"long-text reference: {len(text)} characters, {len(ids)} ids -> {out_path}")


def export_heldout_code(code_docs, out_dir, count=20):
    """20 held-out source files of at least ~9,000 characters, round-robin over distributions, cut at a blank line
    at or before 12,000 characters (the recipe of make_eval_set.py)."""
    long_docs = sorted((d for d in code_docs if d["kind"] == "code" and d["path"].endswith(".py")
                        and len(d["text"]) > 9000), key=lambda d: (d["source"], d["path"]))
    by_source = {}
    for d in long_docs:
        by_source.setdefault(d["source"], []).append(d)
    picked = []
    while len(picked) < count and any(by_source.values()):
        for s in sorted(by_source):
            if by_source[s] and len(picked) < count:
                picked.append(by_source[s].pop(0))
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, d in enumerate(picked):
        text = d["text"][:12000]
        cut = text.rfind("\n\n")
        text = text[:cut] if cut > 8000 else text
        dist = d["source"].split(":", 1)[-1]
        fname = f"{i:02d}-{re.sub(r'[^A-Za-z0-9]+', '_', dist)}-{re.sub(r'[^A-Za-z0-9]+', '_', d['path']).strip('_')}.txt"
        with open(os.path.join(out_dir, fname), "w", encoding="utf-8") as f:
            f.write(text.rstrip() + "\n")
        rows.append((fname, dist, d.get("version", "?"), d["path"], len(text), d.get("licence", "?")))
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write("# Held-out source code\n\n"
                f"{len(rows)} Python source files from the distributions that the bundled model's training held out "
                "whole (see\n`tools/train/corpus_manifest.json`, `code.heldout_rule`; the model never trained on "
                "them or on a copy of them),\ncut to at most 12,000 characters at a blank line. Written by "
                "`tools/train/train.py` from the GPU machine's\nPython site-packages. Used, next to `data/heldout`, "
                "for accuracy and perplexity benchmarks on code.\n\n"
                "| file | distribution | version | path | characters | licence |\n| --- | --- | --- | --- | --- | --- |\n")
        for r in rows:
            f.write(f"| `{r[0]}` | {r[1]} | {r[2]} | `{r[3]}` | {r[4]} | {r[5]} |\n")
    log(f"held-out code: {len(rows)} files -> {out_dir}")
    return rows


# ----------------------------------------------------------------------------------------------
# training

def param_groups(model, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def batch(stream, bsz, seqlen, gen):
    n = stream.numel()
    starts = torch.randint(0, n - seqlen, (bsz, 1), device=stream.device, generator=gen)
    w = stream[starts + torch.arange(seqlen, device=stream.device)].long()
    x = torch.cat([torch.full((bsz, 1), BOS_ID, device=stream.device, dtype=w.dtype), w[:, :-1]], dim=1)
    return x, w


def head_loss_impl(h, w, y):
    logits = F.linear(h, w)
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))


def hidden_states(model, x):
    return model.model(input_ids=x, use_cache=False).last_hidden_state


@torch.no_grad()
def evaluate(model, stream, seqlen, max_windows=None):
    """Mean next-token loss over consecutive windows of the held-out stream (each window starts with <|bos|>)."""
    model.eval()
    n = stream.numel() // seqlen
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        model.train()
        return float("nan")
    w = stream[: n * seqlen].view(n, seqlen).long()
    total, count = 0.0, 0
    with eager():
        for i in range(0, n, 16):
            y = w[i:i + 16]
            x = torch.cat([torch.full((y.shape[0], 1), BOS_ID, device=y.device, dtype=y.dtype), y[:, :-1]], 1)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                h = hidden_states(model, x)
                logits = F.linear(h, model.lm_head.weight)
            total += float(F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
    model.train()
    return total / count


def bits_per_byte(loss, tokens, nbytes):
    return loss * tokens / nbytes / math.log(2) if nbytes else float("nan")


@torch.no_grad()
def evaluate_other_model(model_dir, prose_docs, code_docs, seqlen=2048):
    """Loss and bits per byte of another model (its own tokenizer) on the same held-out text."""
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    try:
        m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    except TypeError:
        m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    m = m.cuda().eval()
    out = {}
    for kind, docs in (("prose", prose_docs), ("code", code_docs)):
        arrays = [np.concatenate([[BOS_ID], e.ids, [EOS_ID]]).astype(np.int64)
                  for e in tok.encode_batch([d for d in docs], add_special_tokens=False)]
        if not arrays:
            continue
        stream = torch.from_numpy(np.concatenate(arrays)).cuda()
        n = stream.numel() // seqlen
        w = stream[: n * seqlen].view(n, seqlen)
        total, count = 0.0, 0
        for i in range(0, n, 16):
            y = w[i:i + 16]
            x = torch.cat([torch.full((y.shape[0], 1), BOS_ID, device=y.device, dtype=y.dtype), y[:, :-1]], 1)
            logits = m(input_ids=x, use_cache=False).logits
            total += float(F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
        loss = total / max(count, 1)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        out[kind] = {"loss": loss, "ppl": math.exp(loss), "tokens": int(stream.numel()), "bytes": nbytes,
                     "bits_per_byte": bits_per_byte(loss, stream.numel(), nbytes)}
    del m
    torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------------------------
# model card

def md_table(rows):
    return "\n".join(f"| {a} | {b} |" for a, b in rows)


def write_model_card(path, args, m, config, dm, samples, fixture_prompts):
    name = args.name
    nparams = m.get("params", count_params(args))
    emb = args.vocab * args.hidden
    kv_bytes = args.layers * 2 * args.kv_heads * args.head_dim * 2
    ev = m.get("eval", {})

    def ev_row(kind, L):
        e = ev.get(f"{kind}_{L}")
        if not e:
            return "not measured"
        return f"loss {e['loss']:.3f}, perplexity **{e['ppl']:.2f}**, {e['bits_per_byte']:.3f} bits per byte"

    deb = dm.get("debian", {})
    code = dm.get("code", {})
    tk = dm.get("tokens", {})
    lines = [f"# {name}", "",
             "A small, deep Llama-architecture causal language model trained from scratch for KvFetcher's tests, "
             "benchmarks and demos, on technical documentation and real Python source code. It has the shape of "
             "the large models KvFetcher serves scaled down in width only: " f"{args.layers} layers (Llama-3-8B has 32), grouped-query "
             "attention, head_dim 64, RoPE, tied embeddings, bf16 weights in sharded safetensors. It is meant to "
             "produce a realistic KV cache (deep, contextual layers) and recognisable documentation and code; it is "
             "not meant to be useful for anything else.", "",
             "## Files", "", "| file | what |", "| --- | --- |",
             f"| `config.json` | `LlamaForCausalLM` config as written by transformers {transformers.__version__} |",
             "| `generation_config.json` | `bos_token_id` 0, `eos_token_id` 1, `pad_token_id` 2 |",
             "| `model-*.safetensors`, `model.safetensors.index.json` | weights, bf16, sharded at 12 MB; no "
             "`lm_head.weight` (tied to `model.embed_tokens.weight`) |",
             "| `tokenizer.json`, `tokenizer_config.json` | Hugging Face `tokenizers` byte-level BPE (see below) |",
             "| `vocab.json`, `merges.txt` | the same BPE model in the classic GPT-2 file layout |", "",
             "## Architecture", "", "| | |", "| --- | --- |",
             md_table([
                 ("type", "`LlamaForCausalLM` (pre-norm RMSNorm, SwiGLU MLP, RoPE, grouped-query attention)"),
                 ("hidden_size", args.hidden), ("num_hidden_layers", args.layers),
                 ("num_attention_heads", f"{args.heads} (head_dim {args.head_dim})"),
                 ("num_key_value_heads", f"{args.kv_heads} (GQA, {args.heads // args.kv_heads} query heads per KV head)"),
                 ("intermediate_size", args.ffn), ("vocab_size", args.vocab),
                 ("max_position_embeddings", args.max_positions),
                 ("RoPE", f"default (no scaling), rope_theta {args.rope_theta:g}"),
                 ("rms_norm_eps", "1e-5"), ("tie_word_embeddings", "true"), ("hidden_act", "silu"),
                 ("attention/MLP biases", "none"),
                 ("parameters", f"{nparams:,} ({emb:,} in the tied embedding, {nparams - emb:,} in the blocks and final norm)"),
                 ("weights on disk", f"bf16, {m.get('weight_bytes', 2 * nparams) / 1e6:.1f} MB"),
             ]), "",
             f"KV cache per token: {args.layers} layers x 2 (K, V) x {args.kv_heads} head(s) x {args.head_dim} x 2 "
             f"bytes (bf16) = {kv_bytes:,} bytes ({kv_bytes / 1024:g} KiB).", "",
             "Initialisation: normal(0, 0.02), with the residual-branch outputs (`o_proj`, `down_proj`) scaled by "
             f"1/sqrt(2 x {args.layers}) as in GPT-2.", "",
             "## Tokenizer", "",
             f"Byte-level BPE, vocab {args.vocab}, {tk.get('tokenizer', '')}, with Hugging Face `tokenizers` "
             f"{__import__('tokenizers').__version__} (min frequency 2).", "",
             "- special tokens: `<|bos|>` = 0, `<|eos|>` = 1, `<|pad|>` = 2",
             "- pre-tokenizer: `Sequence[Split(Regex(P), behavior=Isolated), ByteLevel(add_prefix_space=false, "
             "use_regex=false)]` with the GPT-2 pattern `P` = `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| "
             "?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`",
             "- decoder: ByteLevel; post-processor: `TemplateProcessing` that prepends `<|bos|>` (no EOS is appended)",
             "- `tokenizer_config.json`: `add_bos_token: true`, `add_eos_token: false`",
             f"- bytes per token: {tk.get('debian_train_bytes', 0) / max(tk.get('debian_train_tokens', 1), 1):.2f} on "
             f"the Debian documentation, {tk.get('code_train_bytes', 0) / max(tk.get('code_train_tokens', 1), 1):.2f} "
             "on the code", "",
             "## Training data", "",
             "Two parts, both read from installed files; every document is `<|bos|> text <|eos|>` in one shuffled "
             f"stream, the Debian documentation {args.prose_repeat} times.", "",
             "### Debian 12 documentation (`tools/train/prepare_corpus.py`)", "",
             "| package | version | licence | train docs / bytes | held-out docs / bytes |",
             "| --- | --- | --- | --- | --- |"]
    for p in deb.get("packages", []):
        lines.append(f"| {p['source']} | {p['version']} | {p['licence']} | {p['train_docs']:,} / {p['train_bytes']:,} "
                     f"| {p['valid_docs']:,} / {p['valid_bytes']:,} |")
    lines += ["", f"Held out: {deb.get('holdout_rule', '')} (the list is in `tools/train/heldout.txt`; "
              "`data/heldout` is cut from it).", ""]
    if code:
        ct, ch = code.get("totals", {}).get("train", {}), code.get("totals", {}).get("heldout", {})
        units = code.get("units", [])
        lines += ["### Python source code and package documentation (`tools/train/code_corpus.py`)", "",
                  f"From the GPU machine's Python {code.get('python', '')} installation (`{', '.join(code.get('roots', []))}`): "
                  f"{', '.join(code.get('suffixes', []))} of {len(units)} distributions and the standard library. "
                  f"Filters: {code.get('filters', '')}. Training: {ct.get('docs', 0):,} files, {ct.get('bytes', 0):,} "
                  f"bytes ({ct.get('code_docs', 0):,} of them code), {tk.get('code_train_tokens', 0):,} tokens. "
                  f"Held out: {code.get('heldout_rule', '')}: {ch.get('docs', 0):,} files, {ch.get('bytes', 0):,} bytes.",
                  "", "The 30 largest distributions in the training set (all of them, with versions and licences, "
                  "are in `tools/train/corpus_manifest.json`):", "",
                  "| distribution | version | licence | files | bytes |", "| --- | --- | --- | --- | --- |"]
        for u in [u for u in units if not u["heldout"]][:30]:
            lines.append(f"| {u['name']} | {u['version']} | {u['licence']} | {u['files']:,} | {u['bytes']:,} |")
        lines += ["", "Held-out distributions: " + ", ".join(
            f"{u['name']} {u['version']} ({u['licence']}, {u['files']} files)" for u in units if u["heldout"]) + ".", ""]
        licences = sorted({u["licence"] for u in units})
        lines += [f"Licences seen in the code part ({len(licences)} distinct strings): mostly BSD, MIT, Apache-2.0 "
                  "and PSF-2.0; see the manifest for each distribution's own words.", ""]
    lines += ["The weights are derived from this text; if you redistribute them, treat them as you would the union "
              "of the licences above (GPL-2.0-only, from the Linux and Git documentation, being the most "
              "restrictive).", "",
              "## Training", "",
              f"`tools/train/train.py` via `tools/train/device-train.sh` (see `tools/train/README.md`), on one "
              f"{m.get('device', 'GPU')}, PyTorch {torch.__version__}, transformers {transformers.__version__}.", "",
              "| | |", "| --- | --- |",
              md_table([
                  ("objective", "next-token cross-entropy on random windows of the training stream, each window "
                                "starting with `<|bos|>`"),
                  ("sequence length", f"2048, then 4096 for the last {args.long_frac:.0%} of the run"),
                  ("batch", f"{args.tokens_per_step:,} tokens a step"),
                  ("optimizer", f"AdamW (beta 0.9/0.95, eps 1e-8, weight decay {args.wd} on matrices), gradient clip 1.0"),
                  ("schedule", f"peak LR {args.lr:g}, {args.warmup_frac:.0%} linear warm-up, cosine decay to "
                               f"{args.lr * args.min_lr_frac:g}, following wall time"),
                  ("precision", f"fp32 master weights, bf16 autocast, SDPA (flash) attention, torch.compile ({args.compile})"),
                  ("length", f"{m.get('steps', 0):,} steps, {m.get('tokens_seen', 0) / 1e6:.1f} M tokens = "
                             f"{m.get('epochs', 0):.2f} passes over the training stream, {m.get('train_time_s', 0):.0f} s "
                             f"(about {m.get('tokens_per_s', 0) / 1e6:.2f} M tokens/s); the whole script "
                             f"{m.get('total_script_s', 0):.0f} s"),
                  ("final train loss", f"{m.get('final_train_loss', float('nan')):.3f} (mean of the last five logged batch losses)"),
                  ("held-out prose (Debian), 2048", ev_row("prose", 2048)),
                  ("held-out prose (Debian), 4096", ev_row("prose", 4096)),
                  ("held-out code (unseen distributions), 2048", ev_row("code", 2048)),
                  ("held-out code (unseen distributions), 4096", ev_row("code", 4096)),
              ]), ""]
    other = m.get("compare_model")
    if other:
        lines += [f"For comparison, `{args.compare_model}` on the same held-out text (its own tokenizer, 2048-token "
                  "windows): " + ", ".join(f"{k} {v['bits_per_byte']:.3f} bits per byte (perplexity {v['ppl']:.2f})"
                                           for k, v in other.items()) + ".", ""]
    if m.get("evals"):
        lines += ["Held-out loss during training (prose / code, 2048 windows, first 64 windows each): " +
                  ", ".join(f"{e[2]:.2f}/{e[3]:.2f} ({e[1]:.0%})" for e in m["evals"]) + ".", ""]
    lines += ["## Sample outputs", "", "From `tools/train/samples.txt` (bf16, 96 new tokens; T=0.8 is plain "
              "temperature sampling, seed 0):", "", "```"]
    for s in samples:
        lines.append(s.rstrip())
    lines += ["```", "", "## Limitations", "",
              f"- {nparams / 1e6:.0f} M parameters and a few hundred million tokens: the model knows the form of "
              "reStructuredText, POD, kernel documentation and Python, and writes locally fluent text and code, but "
              "what it says is made up.",
              "- No chat/instruction format.",
              "- Training is not bit-reproducible (random windows on the GPU, `torch.compile`, atomics): rerunning "
              "the script gives a similar but different model, and the fixtures belong to this exact set of weights. "
              "Regenerate both together.", "",
              "## Reference fixtures", "",
              f"`tests/TestData/fixtures/{name}/` holds Hugging Face reference outputs for these weights (fp32, eager "
              "attention, TF32 off): logits at 8 positions and 64 greedy tokens for each prompt below, and the KV "
              "cache of `kv-200`. See `tools/train/README.md` for the format.", "",
              "| # | name | tokens | source |", "| --- | --- | --- | --- |"]
    for i, (pn, src, ntok) in enumerate(fixture_prompts):
        lines.append(f"| {i} | {pn} | {ntok} | `{src}` |")
    lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(str(x) for x in lines))


# ----------------------------------------------------------------------------------------------

def wait_for_data(args):
    deadline = T_START + args.data_timeout
    try:
        rc = DATA_PROC.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        log(f"WARNING: build_data.py still running after {args.data_timeout:.0f}s; stopping it")
        DATA_PROC.kill()
        DATA_PROC.wait()
        rc = -1
    status = {}
    try:
        with open(os.path.join(args.work, "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        pass
    if rc == 0 and status.get("ok"):
        return status
    log(f"WARNING: build_data.py failed (rc {rc}); building Debian-only data in this process")
    sys.path.insert(0, HERE)
    import build_data
    ns = argparse.Namespace(corpus=args.corpus, work=args.work, vocab=args.vocab, tiny_vocab=512,
                            prose_repeat=args.prose_repeat, max_code_bytes=args.max_code_bytes,
                            tok_sample_bytes=args.tok_sample_bytes, valid_code_tokens=600_000,
                            tokenizer_from=args.tokenizer_from, no_code=True, seed=args.seed)
    build_data.run(ns)
    with open(os.path.join(args.work, "status.json")) as f:
        return json.load(f)


def main():
    args = ARGS
    log("args", vars(args))
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {__import__('tokenizers').__version__}, device {torch.cuda.get_device_name()}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)

    stage = args.stage
    mdir = os.path.join(stage, "models", args.name)
    tdir = os.path.join(stage, "tools/train")
    os.makedirs(mdir, exist_ok=True)
    os.makedirs(tdir, exist_ok=True)
    metrics = {"name": args.name, "device": torch.cuda.get_device_name(), "args": vars(args)}

    def dump_metrics():
        metrics["total_script_s"] = time.time() - T_START
        with open(os.path.join(tdir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)

    # ---- model + compile on random tokens while build_data.py works
    config = main_config(args)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").cuda()
    with torch.no_grad():
        std = 0.02 / math.sqrt(2 * args.layers)
        for n, p in model.named_parameters():
            if n.endswith(("o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    if nparams != count_params(args):
        log(f"WARNING: {nparams} parameters, count_params says {count_params(args)}")
    metrics["params"] = nparams
    log(f"model: {args.layers} layers, hidden {args.hidden}, heads {args.heads}/{args.kv_heads} x {args.head_dim}, "
        f"ffn {args.ffn}: {nparams:,} params, bf16 {2 * nparams / 1e6:.1f} MB, attn {model.config._attn_implementation}")
    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    def loss_eager(x, y):
        return head_loss_impl(hidden_states(model, x), model.lm_head.weight, y)

    if args.compile == "regional":
        for layer in model.model.layers:
            layer.compile(dynamic=False)
        head = torch.compile(head_loss_impl, dynamic=False)

        def step_fn(x, y):
            return head(hidden_states(model, x), model.lm_head.weight, y)
    elif args.compile == "full":
        step_fn = torch.compile(loss_eager, dynamic=False)
    else:
        step_fn = loss_eager
    shapes = {2048: args.tokens_per_step // 2048, 4096: args.tokens_per_step // 4096}
    gen = torch.Generator(device="cuda").manual_seed(args.seed)

    def run_step(fn, x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(x, y)
        loss.backward()
        return loss

    def random_batch(L):
        x = torch.randint(3, args.vocab, (shapes[L], L), device="cuda")
        return x, torch.randint(3, args.vocab, (shapes[L], L), device="cuda")

    for L in (2048, 4096):
        t0 = time.time()
        try:
            run_step(step_fn, *random_batch(L))
        except Exception:
            log("WARNING: compiled step failed, falling back to eager\n" + traceback.format_exc())
            opt.zero_grad(set_to_none=True)
            if args.compile == "regional":
                for layer in model.model.layers:
                    layer._compiled_call_impl = None
            step_fn = loss_eager
            args.compile = "off (compile failed)"
            run_step(step_fn, *random_batch(L))
        torch.cuda.synchronize()
        opt.zero_grad(set_to_none=True)
        log(f"warm-up seq {L}: {time.time() - t0:.1f}s, peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.bench_eager:
        for bname, fn in (("eager", loss_eager), ("compiled", step_fn)):
            with eager() if bname == "eager" else contextlib.nullcontext():
                for L in (2048, 4096):
                    run_step(fn, *random_batch(L))
                    torch.cuda.synchronize()
                    t0 = time.time()
                    for _ in range(4):
                        run_step(fn, *random_batch(L))
                    torch.cuda.synchronize()
                    opt.zero_grad(set_to_none=True)
                    log(f"bench {bname} seq {L}: {4 * args.tokens_per_step / (time.time() - t0):,.0f} tok/s")

    # ---- data
    status = wait_for_data(args)
    log(f"data ready: {status}")
    work = args.work
    with open(os.path.join(work, "data_manifest.json")) as f:
        dm = json.load(f)
    metrics["data"] = dm.get("tokens", {})
    shutil.copy(os.path.join(work, "data_manifest.json"), os.path.join(tdir, "corpus_manifest.json"))
    tok_dir = os.path.join(work, "tokenizer")
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    tok_tiny = Tokenizer.from_file(os.path.join(work, "tokenizer-tiny", "tokenizer.json"))
    copy_tokenizer(tok_dir, mdir)
    probe = "Hello world!  The  `json` module\n\tdef f(x):\n        return 42"
    try:
        hf_ids = AutoTokenizer.from_pretrained(mdir)(probe)["input_ids"]
        log(f"tokenizer check: raw {tok.encode(probe).ids[:12]} hf {hf_ids[:12]} "
            f"{'SAME' if hf_ids == tok.encode(probe).ids else 'WARNING: DIFFERENT'}")
    except Exception:
        log("WARNING: AutoTokenizer check failed\n" + traceback.format_exc())

    valid_docs = load_jsonl_xz(os.path.join(args.corpus, "valid.jsonl.xz"))
    docs_by_key = {(d["source"], d["path"]): d["text"] for d in valid_docs}
    code_heldout = load_jsonl(os.path.join(work, "heldout_code.jsonl"))
    fixture_prompts = [(n, f"{s}:{p}", pick_excerpt(tok, docs_by_key[(s, p)], t), None)
                       for n, s, p, t in FIXTURE_PROMPTS if (s, p) in docs_by_key]
    if len(fixture_prompts) != len(FIXTURE_PROMPTS):
        log("WARNING: some fixture documents are not in the held-out split; KV prompt index may be off")
    used_sources = set()
    for cname, target in CODE_PROMPTS:
        for d in sorted((d for d in code_heldout if d["kind"] == "code" and d["path"].endswith(".py")),
                        key=lambda d: (d["source"], d["path"])):
            if d["source"] in used_sources or len(d["text"]) < target * 5:
                continue
            if len(tok.encode(d["text"], add_special_tokens=False).ids) < target + 50:
                continue
            used_sources.add(d["source"])
            fixture_prompts.append((cname, f"{d['source']} {d['version']}:{d['path']}",
                                    pick_code_excerpt(tok, d["text"], target), d["licence"]))
            break
    tiny_prompts = [(n, f"{s}:{p}", pick_excerpt(tok_tiny, docs_by_key[(s, p)], t), None)
                    for n, s, p, t in TINY_PROMPTS if (s, p) in docs_by_key]

    for what, fn in (("tiny models", lambda: metrics.__setitem__(
                         "tiny_model_bytes", build_tiny(stage, os.path.join(work, "tokenizer-tiny"), tok_tiny,
                                                        tiny_prompts, 512))),
                     ("long-text reference", lambda: write_long_text_reference(
                         tok, args.name, os.path.join(stage, "tests/TestData/tokenizer", f"long-text-{args.name}.json.gz"))),
                     ("held-out code export", lambda: metrics.__setitem__(
                         "heldout_code_files", len(export_heldout_code(code_heldout, os.path.join(stage, "data/heldout-code")))))):
        try:
            fn()
        except Exception:
            log(f"ERROR: {what} failed\n" + traceback.format_exc())
    dump_metrics()

    stream = torch.from_numpy(np.load(os.path.join(work, "train.npy"))).cuda()
    vprose = torch.from_numpy(np.load(os.path.join(work, "valid_prose.npy"))).cuda()
    vcode = torch.from_numpy(np.load(os.path.join(work, "valid_code.npy"))).cuda()
    tk = dm.get("tokens", {})
    log(f"streams: train {stream.numel():,} tokens, valid prose {vprose.numel():,}, valid code {vcode.numel():,}")

    # ---- training
    budget = min(args.train_seconds, left(args) - args.post_reserve)
    log(f"training budget {budget:.0f}s")
    metrics["train_seconds_budget"] = budget
    t_train = time.time()
    step, tokens, losses, evals, skipped = 0, 0, [], [], 0
    next_eval = 0.1
    max_tokens = args.max_epochs * stream.numel() if args.max_epochs > 0 else float("inf")
    while budget > 0:
        p = max((time.time() - t_train) / budget, tokens / max_tokens)
        if p >= 1.0:
            break
        if p < args.warmup_frac:
            lr = args.lr * max(p / args.warmup_frac, 0.01)
        else:
            q = (p - args.warmup_frac) / (1 - args.warmup_frac)
            lr = args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * q)))
        for g in opt.param_groups:
            g["lr"] = lr
        L = 4096 if p >= 1.0 - args.long_frac else 2048
        x, y = batch(stream, shapes[L], L, gen)
        loss = run_step(step_fn, x, y)
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        if math.isfinite(gnorm):
            opt.step()
        else:
            skipped += 1
            if skipped > 50:
                log("ERROR: more than 50 steps with non-finite gradients; stopping training, saving what there is")
                break
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += args.tokens_per_step
        if step % 50 == 0:
            lv = float(loss)
            losses.append((step, lv))
            dt = time.time() - t_train
            log(f"step {step} p {p:.3f} seq {L} lr {lr:.2e} loss {lv:.4f} gnorm {gnorm:.3f} "
                f"tok/s {tokens / dt:,.0f} epochs {tokens / stream.numel():.2f}")
        if p >= next_eval:
            vp = evaluate(model, vprose, 2048, 64)
            vc = evaluate(model, vcode, 2048, 64)
            evals.append((step, round(p, 3), vp, vc))
            log(f"eval step {step}: held-out loss prose {vp:.4f} (ppl {math.exp(vp):.2f}), "
                f"code {vc:.4f} (ppl {math.exp(vc) if math.isfinite(vc) else float('nan'):.2f})")
            next_eval += 0.1
    torch.cuda.synchronize()
    train_time = time.time() - t_train
    final_train = float(np.mean([l for _, l in losses[-5:]])) if losses else float("nan")
    metrics.update(steps=step, tokens_seen=tokens, epochs=tokens / stream.numel(), train_time_s=train_time,
                   tokens_per_s=tokens / max(train_time, 1e-9), final_train_loss=final_train, evals=evals,
                   skipped_steps=skipped, tokens_per_step=args.tokens_per_step, lr=args.lr, compile=args.compile,
                   peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)
    log(f"trained: {step} steps, {tokens:,} tokens, {train_time:.0f}s ({tokens / max(train_time, 1e-9):,.0f} tok/s), "
        f"train loss {final_train:.4f}, {skipped} skipped steps")

    # ---- evaluation
    ev = {}
    for kind, s, nbytes in (("prose", vprose, tk.get("valid_prose_bytes", 0)), ("code", vcode, tk.get("valid_code_bytes", 0))):
        for L in (2048, 4096):
            try:
                lv = evaluate(model, s, L)
                ev[f"{kind}_{L}"] = {"loss": lv, "ppl": math.exp(lv), "bits_per_byte": bits_per_byte(lv, s.numel(), nbytes)}
                log(f"held-out {kind} @{L}: loss {lv:.4f} ppl {math.exp(lv):.2f} "
                    f"bpb {ev[f'{kind}_{L}']['bits_per_byte']:.3f}")
            except Exception:
                log(f"ERROR: eval {kind} {L}\n" + traceback.format_exc())
    metrics["eval"] = ev
    dump_metrics()

    # ---- save, fixture, samples (most important first)
    model.eval()
    model = model.to(torch.bfloat16)
    save_model(model, mdir, "12MB")
    metrics["weight_bytes"] = weight_bytes(mdir)
    with open(os.path.join(mdir, "config.json")) as f:
        log("config.json: " + f.read())
    fixture_rows = []
    try:
        fx = write_fixture(mdir, args.name, tok, fixture_prompts, 64, KV_PROMPT,
                           os.path.join(stage, "tests/TestData/fixtures", args.name), {"weights_dtype": "bfloat16"})
        for pr in fx["prompts"]:
            fixture_rows.append((pr["name"], pr["source"], len(pr["input_ids"])))
            log(f"fixture greedy [{pr['name']}] (min gap {min(pr['greedy_top2_gap']):.4f}): {pr['greedy_text']!r}")
    except Exception:
        log("ERROR: fixture failed\n" + traceback.format_exc())
    dump_metrics()

    def card(samples):
        try:
            write_model_card(os.path.join(mdir, "README.md"), args, metrics, config, dm, samples, fixture_rows)
        except Exception:
            log("ERROR: model card failed\n" + traceback.format_exc())
    card([])  # a first version, in case the samples below run out of time

    sample_lines = []
    try:
        model.generation_config = generation_config()
        torch.manual_seed(0)
        with eager():
            for prompt in SAMPLE_PROMPTS:
                ids = torch.tensor([tok.encode(prompt).ids], device="cuda")
                for mode, kw in (("greedy", dict(do_sample=False)),
                                 ("T=0.8", dict(do_sample=True, temperature=0.8, top_k=0, top_p=1.0))):
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=96, **kw)
                    text = tok.decode(out[0].tolist(), skip_special_tokens=True)
                    sample_lines.append(f"=== {mode} | prompt: {prompt!r}\n{text}\n")
                    log(f"sample {mode}: {text!r}")
        with open(os.path.join(tdir, "samples.txt"), "w") as f:
            f.write("\n".join(sample_lines))
    except Exception:
        log("ERROR: samples failed\n" + traceback.format_exc())

    if args.compare_model and os.path.isdir(args.compare_model) and left(args) > 25:
        try:
            t0 = time.time()
            code_eval = [d["text"] for d in code_heldout if d["kind"] == "code"]
            random.Random(args.seed + 2).shuffle(code_eval)
            budget_bytes, picked, total = 2_000_000, [], 0
            for t in code_eval:
                if total >= budget_bytes:
                    break
                picked.append(t)
                total += len(t)
            metrics["compare_model"] = evaluate_other_model(args.compare_model, [d["text"] for d in valid_docs], picked)
            log(f"{args.compare_model} on the same held-out text: {metrics['compare_model']} ({time.time() - t0:.1f}s)")
        except Exception:
            log("WARNING: comparison failed\n" + traceback.format_exc())

    dump_metrics()
    card(sample_lines)
    log("all done", json.dumps({k: v for k, v in metrics.items() if k not in ("args", "data", "evals")}))


if __name__ == "__main__":
    try:
        main()
    finally:
        if DATA_PROC.poll() is None:
            DATA_PROC.kill()
