#!/usr/bin/env python3
"""Writes data/heldout/: 20 held-out documents (never trained on) of at least ~2,500 tokens, for codec accuracy,
perplexity and TTFT benchmarks. Input: the corpus that prepare_corpus.py builds (.device-carry/corpus/valid.jsonl.xz).
Deterministic: the documents over 9,000 characters in (source, path) order, each cut at a paragraph break at or
before 12,000 characters (about 3,500 tokens, inside the bundled model's 4,096-token context)."""
import json, lzma, os, re, sys

root = os.path.join(os.path.dirname(__file__), "..", "..")
src = os.path.join(root, ".device-carry", "corpus", "valid.jsonl.xz")
out = os.path.join(root, "data", "heldout")
docs = [json.loads(line) for line in lzma.open(src, "rt", encoding="utf-8")]
docs = sorted((d for d in docs if len(d["text"]) > 9000), key=lambda d: (d["source"], d["path"]))[:20]
if len(docs) < 20:
    sys.exit(f"only {len(docs)} long held-out documents")
os.makedirs(out, exist_ok=True)
index = []
for i, d in enumerate(docs):
    text = d["text"][:12000]
    cut = text.rfind("\n\n")
    text = text[:cut] if cut > 8000 else text
    name = f"{i:02d}-{d['source']}-{re.sub(r'[^A-Za-z0-9]+', '_', d['path']).strip('_')}.txt"
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        f.write(text.rstrip() + "\n")
    index.append((name, d["source"], d["path"], len(text)))
licences = {"python3.11-doc": "PSF-2.0", "linux-doc-6.1": "GPL-2.0-only", "perl-doc": "GPL-1.0-or-later or Artistic-1.0", "git-doc": "GPL-2.0-only"}
with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
    f.write("# Held-out documents\n\n20 documents of the bundled model's held-out split (see `tools/train/heldout.txt`; the model never\n"
            "trained on them), cut to at most 12,000 characters at a paragraph break. Written by\n"
            "`tools/train/make_eval_set.py`. Used for codec accuracy, perplexity and TTFT benchmarks and the demo.\n\n"
            "| file | Debian package | path in the package's documentation | characters | licence |\n| --- | --- | --- | --- | --- |\n")
    for name, source, path, n in index:
        f.write(f"| `{name}` | {source} | `{path}` | {n} | {licences.get(source, 'see package')} |\n")
print(f"wrote {len(index)} documents to {out}")
