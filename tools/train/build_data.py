#!/usr/bin/env python3
"""Builds the training data of the bundled model: corpus, tokenizers, token streams (see tools/train/README.md).

train.py starts this script as a separate process at its very beginning, so that reading ~100k files, training the
tokenizer and encoding a few hundred million tokens run while the GPU compiles the model. Needs numpy and
Hugging Face tokenizers (the GPU machine's image has both). Writes into --work:

    tokenizer/        tokenizer.json, vocab.json, merges.txt, tokenizer_config.json (byte-level BPE, --vocab)
    tokenizer-tiny/   the same with --tiny-vocab entries, for the tiny random test models
    train.npy         int32 token stream: shuffled documents, each <|bos|> text <|eos|>
    valid_prose.npy   the held-out Debian documents (same layout)
    valid_code.npy    held-out code (whole held-out distributions), shuffled, capped at --valid-code-tokens
    heldout_code.jsonl   the held-out code documents
    data_manifest.json   sources, licences, counts, bytes, tokens
    status.json       {"ok": true, ...} once everything above is written
"""

import argparse
import json
import lzma
import os
import random
import sys
import time
import traceback

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

T0 = time.time()
SPLIT_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2


def log(*a):
    print(f"[data {time.time() - T0:6.1f}s]", *a, flush=True)


def load_jsonl_xz(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_tokenizer_config(out_dir):
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 4096, "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def train_tokenizer(texts, out_dir, vocab):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert tok.token_to_id(BOS) == BOS_ID and tok.token_to_id(EOS) == EOS_ID and tok.token_to_id(PAD) == PAD_ID
    assert tok.get_vocab_size() == vocab, tok.get_vocab_size()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok.model.save(out_dir)  # vocab.json + merges.txt (classic "a b" merges format)
    write_tokenizer_config(out_dir)
    probe = "Hello world!  The  `json` module\n\tdef f(x):\n        return 42"
    assert tok.decode(tok.encode(probe).ids) == probe
    return tok


def encode_each(tok, texts, chunk=2048):
    """One int32 array per text (no BOS/EOS)."""
    import numpy as np
    fast = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    out = []
    for i in range(0, len(texts), chunk):
        for e in fast(texts[i:i + chunk], add_special_tokens=False):
            out.append(np.asarray(e.ids, dtype=np.int32))
    return out


def join_docs(arrays):
    import numpy as np
    bos = np.array([BOS_ID], dtype=np.int32)
    eos = np.array([EOS_ID], dtype=np.int32)
    parts = []
    for a in arrays:
        parts += [bos, a, eos]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def sample_by_bytes(docs, limit, rng):
    idx = list(range(len(docs)))
    rng.shuffle(idx)
    out, total = [], 0
    for i in idx:
        if total >= limit:
            break
        out.append(docs[i])
        total += len(docs[i])
    return out


def run(args):
    import numpy as np
    work = args.work
    os.makedirs(work, exist_ok=True)
    rng = random.Random(args.seed)
    manifest = {}

    # 1. Debian documentation (prepare_corpus.py), the held-out split is kept out of training
    deb_train = load_jsonl_xz(os.path.join(args.corpus, "train.jsonl.xz"))
    deb_valid = load_jsonl_xz(os.path.join(args.corpus, "valid.jsonl.xz"))
    with open(os.path.join(args.corpus, "manifest.json")) as f:
        manifest["debian"] = json.load(f)
    log(f"Debian docs: {len(deb_train)} train, {len(deb_valid)} held out")

    # 2. code and package documentation from this machine's Python installation
    code_train, code_heldout = [], []
    if not args.no_code:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import code_corpus
        # data/heldout (the codec/TTFT evaluation set) and the Debian held-out split: no near-copies in training
        extra = [d["text"] for d in deb_valid]
        code_train, code_heldout, manifest["code"] = code_corpus.build(
            max_train_bytes=args.max_code_bytes, extra_heldout_texts=extra, log=log)
        with open(os.path.join(work, "heldout_code.jsonl"), "w", encoding="utf-8") as f:
            for d in code_heldout:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")

    # 3. tokenizers
    if args.tokenizer_from:
        from tokenizers import Tokenizer
        import shutil
        os.makedirs(os.path.join(work, "tokenizer"), exist_ok=True)
        for n in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy(os.path.join(args.tokenizer_from, n), os.path.join(work, "tokenizer", n))
        tok = Tokenizer.from_file(os.path.join(work, "tokenizer", "tokenizer.json"))
        log(f"tokenizer copied from {args.tokenizer_from}")
    else:
        deb_texts = [d["text"] for d in deb_train]
        code_texts = [d["text"] for d in code_train]
        deb_share = 0.4 if code_texts else 1.0
        sample = sample_by_bytes(deb_texts, args.tok_sample_bytes * deb_share, rng) + \
            sample_by_bytes(code_texts, args.tok_sample_bytes * (1 - deb_share), rng)
        t = time.time()
        tok = train_tokenizer(sample, os.path.join(work, "tokenizer"), args.vocab)
        log(f"tokenizer: vocab {args.vocab} trained on {len(sample)} docs, "
            f"{sum(len(s) for s in sample) / 1e6:.1f} MB, {time.time() - t:.1f}s")
    t = time.time()
    tiny_sample = sample_by_bytes([d["text"] for d in deb_train], 4e6, random.Random(args.seed + 1))
    train_tokenizer(tiny_sample, os.path.join(work, "tokenizer-tiny"), args.tiny_vocab)
    log(f"tiny tokenizer: vocab {args.tiny_vocab}, {time.time() - t:.1f}s")

    # 4. token streams
    t = time.time()
    deb_arrays = encode_each(tok, [d["text"] for d in deb_train])
    deb_tokens = int(sum(a.size + 2 for a in deb_arrays))
    deb_bytes = sum(len(d["text"].encode("utf-8")) for d in deb_train)
    log(f"encoded Debian train: {deb_tokens} tokens, {deb_bytes / deb_tokens:.2f} bytes/token ({time.time() - t:.1f}s)")
    t = time.time()
    code_arrays = encode_each(tok, [d["text"] for d in code_train])
    code_tokens = int(sum(a.size + 2 for a in code_arrays))
    code_bytes = sum(len(d["text"].encode("utf-8")) for d in code_train)
    if code_arrays:
        log(f"encoded code train: {code_tokens} tokens, {code_bytes / max(code_tokens, 1):.2f} bytes/token "
            f"({time.time() - t:.1f}s)")
    order = [(0, i) for _ in range(args.prose_repeat) for i in range(len(deb_arrays))] + \
        [(1, j) for j in range(len(code_arrays))]
    rng.shuffle(order)
    stream = join_docs([(deb_arrays if s == 0 else code_arrays)[i] for s, i in order])
    np.save(os.path.join(work, "train.npy"), stream)
    del stream

    vprose = encode_each(tok, [d["text"] for d in deb_valid])
    valid_prose = join_docs(vprose)
    np.save(os.path.join(work, "valid_prose.npy"), valid_prose)
    vprose_bytes = sum(len(d["text"].encode("utf-8")) for d in deb_valid)
    code_eval = [d for d in code_heldout if d["kind"] == "code"]
    random.Random(args.seed + 2).shuffle(code_eval)
    vcode_arrays, vcode_bytes, n_tok = [], 0, 0
    for d, a in zip(code_eval, encode_each(tok, [d["text"] for d in code_eval])):
        if n_tok >= args.valid_code_tokens:
            break
        vcode_arrays.append(a)
        vcode_bytes += len(d["text"].encode("utf-8"))
        n_tok += a.size + 2
    valid_code = join_docs(vcode_arrays)
    np.save(os.path.join(work, "valid_code.npy"), valid_code)
    log(f"held out: prose {valid_prose.size} tokens, code {valid_code.size} tokens from {len(vcode_arrays)} files")

    manifest["tokens"] = {
        "debian_train_tokens": deb_tokens, "debian_train_bytes": deb_bytes, "prose_repeat": args.prose_repeat,
        "code_train_tokens": code_tokens, "code_train_bytes": code_bytes,
        "train_stream_tokens": deb_tokens * args.prose_repeat + code_tokens,
        "valid_prose_tokens": int(valid_prose.size), "valid_prose_bytes": vprose_bytes,
        "valid_code_tokens": int(valid_code.size), "valid_code_bytes": vcode_bytes, "valid_code_files": len(vcode_arrays),
        "vocab": args.vocab, "tiny_vocab": args.tiny_vocab,
        "tokenizer": f"copied from {args.tokenizer_from}" if args.tokenizer_from else
        f"trained on a {args.tok_sample_bytes / 1e6:.0f} MB sample (40% Debian docs, 60% code)",
    }
    with open(os.path.join(work, "data_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(work, "status.json"), "w") as f:
        json.dump({"ok": True, "seconds": time.time() - T0, "code": not args.no_code}, f)
    log("done")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".device-carry/corpus")
    ap.add_argument("--work", default="/tmp/kvf-data")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tiny-vocab", type=int, default=512)
    ap.add_argument("--prose-repeat", type=int, default=2, help="copies of the Debian training documents")
    ap.add_argument("--max-code-bytes", type=float, default=8e8)
    ap.add_argument("--tok-sample-bytes", type=float, default=80e6)
    ap.add_argument("--valid-code-tokens", type=int, default=600_000)
    ap.add_argument("--tokenizer-from", default=None, help="reuse this directory's tokenizer instead of training one")
    ap.add_argument("--no-code", action="store_true", help="Debian documentation only")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    try:
        run(args)
    except Exception:
        log("FAILED\n" + traceback.format_exc())
        with open(os.path.join(args.work, "status.json"), "w") as f:
            json.dump({"ok": False, "error": traceback.format_exc()}, f)
        sys.exit(1)


if __name__ == "__main__":
    main()
