#!/usr/bin/env python3
"""Rebuild the kvf-pydoc-16m training corpus from installed Debian documentation packages.

Run on a Debian 12 (bookworm) machine after
    apt-get install -y python3.11-doc linux-doc-6.1 perl-doc git-doc
Writes (into --out, default .device-carry/corpus):
    train.jsonl.xz   one JSON object per line: {"source", "path", "text"}
    valid.jsonl.xz   the held-out documents, same format
    manifest.json    packages (name, version, licence), document/byte counts, held-out list
The split is deterministic: a document is held out when sha1(source + ":" + path) % 50 == 0.
Only the Python standard library is needed.
"""

import argparse
import gzip
import hashlib
import json
import lzma
import os
import subprocess
import sys

# (source name, Debian package, licence, root, suffixes, excluded path prefixes (relative to root))
SOURCES = [
    ("python3.11-doc", "python3.11-doc", "PSF-2.0",
     "/usr/share/doc/python3.11/html/_sources", (".rst.txt",), ()),
    ("linux-doc-6.1", "linux-doc-6.1", "GPL-2.0-only (some files dual-licensed, e.g. CC-BY-4.0)",
     "/usr/share/doc/linux-doc-6.1/Documentation", (".rst.gz", ".txt.gz"),
     ("translations/",)),
    ("perl-doc", "perl-doc", "GPL-1.0-or-later OR Artistic-1.0-Perl",
     "/usr/share/perl/5.36.0/pod", (".pod",), ()),
    ("git-doc", "git-doc", "GPL-2.0-only",
     "/usr/share/doc/git-doc", (".txt",), ()),
]

HOLDOUT_MODULUS = 50


def package_version(pkg):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"package {pkg} is not installed: apt-get install -y {pkg}")
    return out.stdout.strip()


def read_text(full):
    if full.endswith(".gz"):
        with gzip.open(full, "rb") as f:
            raw = f.read()
    else:
        with open(full, "rb") as f:
            raw = f.read()
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return text


def iter_docs(root, suffixes, excluded):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(suffixes):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            rel = os.path.relpath(full, root)
            if any(rel.startswith(p) for p in excluded):
                continue
            yield rel, full


def is_heldout(source, rel):
    h = hashlib.sha1(f"{source}:{rel}".encode()).hexdigest()
    return int(h, 16) % HOLDOUT_MODULUS == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".device-carry/corpus")
    ap.add_argument("--min-chars", type=int, default=200)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    manifest = {"holdout_rule": f"sha1(source + ':' + path) % {HOLDOUT_MODULUS} == 0",
                "packages": [], "heldout": []}
    files = {"train": lzma.open(os.path.join(args.out, "train.jsonl.xz"), "wt", encoding="utf-8", preset=6),
             "valid": lzma.open(os.path.join(args.out, "valid.jsonl.xz"), "wt", encoding="utf-8", preset=6)}
    totals = {"train": [0, 0], "valid": [0, 0]}
    for source, pkg, licence, root, suffixes, excluded in SOURCES:
        version = package_version(pkg)
        stats = {"train": [0, 0], "valid": [0, 0]}
        for rel, full in iter_docs(root, suffixes, excluded):
            text = read_text(full)
            if len(text.strip()) < args.min_chars:
                continue
            split = "valid" if is_heldout(source, rel) else "train"
            files[split].write(json.dumps({"source": source, "path": rel, "text": text}, ensure_ascii=False) + "\n")
            n = len(text.encode("utf-8"))
            stats[split][0] += 1
            stats[split][1] += n
            totals[split][0] += 1
            totals[split][1] += n
            if split == "valid":
                manifest["heldout"].append(f"{source}:{rel}")
        manifest["packages"].append({"source": source, "package": pkg, "version": version, "licence": licence,
                                     "root": root, "train_docs": stats["train"][0], "train_bytes": stats["train"][1],
                                     "valid_docs": stats["valid"][0], "valid_bytes": stats["valid"][1]})
        print(f"{source} {version}: train {stats['train'][0]} docs {stats['train'][1]} B, "
              f"valid {stats['valid'][0]} docs {stats['valid'][1]} B", flush=True)
    for f in files.values():
        f.close()
    manifest["totals"] = {k: {"docs": v[0], "bytes": v[1]} for k, v in totals.items()}
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest["totals"]))


if __name__ == "__main__":
    main()
