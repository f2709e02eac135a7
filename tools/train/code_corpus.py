#!/usr/bin/env python3
"""Collects real source code and documentation from the Python installation this script runs under.

Used by build_data.py on the GPU machine, whose image holds the site-packages of PyTorch, transformers, JAX,
NumPy, SciPy and ~200 more packages, plus the Python standard library. Only the Python standard library is needed,
so the collection can be tried on any machine:

    python3 tools/train/code_corpus.py --out /tmp/code-corpus        # writes docs.jsonl + manifest.json, prints totals

What is collected: *.py, *.pyi, *.md, *.rst, *.txt files and each distribution's METADATA (its long description),
under every site-packages directory and the standard library (without its test suite). A file is kept when it is
UTF-8, 200 B to 400 KB, and looks written by a person (no minified or generated blobs: see `looks_written`).
Exact duplicates (after line-ending normalisation) are kept once. Every file is attributed to the distribution whose
RECORD lists it (its name, version and licence come from that distribution's METADATA).

Held out: every file of a distribution `d` with sha1("kvf-heldout:" + normalised name of d) % 20 == 0 (whole
packages, so that held-out code perplexity measures code the model has not seen in any copy), and a held-out file
that also occurs in a training package is dropped from the held-out set.
"""

import argparse
import email.parser
import hashlib
import json
import multiprocessing
import os
import re
import sys
import sysconfig
import time

SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt")
CODE_SUFFIXES = (".py", ".pyi")
SKIP_NAMES = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|AUTHORS|CONTRIBUTORS|RECORD|INSTALLER|REQUESTED|WHEEL|"
                        r"top_level|entry_points|dependency_links|namespace_packages|SOURCES|requires|"
                        r"not-zip-safe|api_tests)([._-].*)?$", re.IGNORECASE)
SKIP_DIRS = {"__pycache__", ".git", "node_modules"}
# Large packages of binaries whose few text files are licences and changelogs.
SKIP_TOP = {"nvidia", "cuda", "triton_kernels_bin"}
HELDOUT_SALT = "kvf-heldout:"
HELDOUT_MODULUS = 20
MIN_CHARS = 200
MAX_BYTES = 400_000
STDLIB_NAME = "cpython-stdlib"


def normalise_name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def is_heldout_dist(name):
    h = hashlib.sha1((HELDOUT_SALT + normalise_name(name)).encode()).hexdigest()
    return int(h, 16) % HELDOUT_MODULUS == 0


def looks_written(text, is_code):
    """False for generated or data-like files: long lines, little text, base64 or number tables."""
    lines = text.split("\n")
    n = len(lines)
    if n < 3:
        return False
    long_chars = sum(len(l) for l in lines if len(l) > 300)
    if long_chars > 0.1 * len(text):
        return False
    if len(text) / n > (100 if is_code else 200):
        return False
    letters = sum(1 for c in text[:20000] if c.isalpha())
    if letters < 0.35 * min(len(text), 20000):
        return False
    return True


def licence_of(meta):
    expr = meta.get("License-Expression")
    if expr:
        return expr.strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    lic = (meta.get("License") or "").strip()
    first = lic.splitlines()[0].strip() if lic else ""
    if first and len(first) <= 80 and first.upper() not in ("UNKNOWN", "NONE"):
        return first + (f" ({'; '.join(classifiers)})" if classifiers and first not in classifiers else "")
    if classifiers:
        return "; ".join(classifiers)
    if first:
        return first[:80] + "..."
    return "unknown"


def read_dists(root):
    """{top-level entry name: (dist name, version, licence)} and the list of distributions under `root`."""
    owner, dists = {}, []
    parser = email.parser.Parser()
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return owner, dists
    for entry in entries:
        if not entry.endswith(".dist-info"):
            continue
        d = os.path.join(root, entry)
        try:
            with open(os.path.join(d, "METADATA"), encoding="utf-8", errors="replace") as f:
                meta = parser.parse(f)
        except OSError:
            continue
        name = meta.get("Name") or entry.split("-")[0]
        info = {"name": name, "version": meta.get("Version") or "?", "licence": licence_of(meta),
                "dist_info": entry, "description": meta.get_payload() if isinstance(meta.get_payload(), str) else ""}
        dists.append(info)
        try:
            with open(os.path.join(d, "RECORD"), encoding="utf-8", errors="replace") as f:
                for line in f:
                    path = line.split(",", 1)[0].strip().strip('"')
                    if not path or path.startswith(".."):
                        continue
                    top = path.split("/", 1)[0]
                    if top.endswith(".dist-info") or top == "__pycache__":
                        continue
                    owner.setdefault(top, info)
        except OSError:
            pass
    return owner, dists


def roots():
    """site-packages directories (existing, unique) and the standard library directory."""
    import site
    cands = []
    try:
        cands += site.getsitepackages()
    except AttributeError:
        pass
    paths = sysconfig.get_paths()
    cands += [paths.get("purelib"), paths.get("platlib")]
    cands += [p for p in sys.path if p and p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    seen, sites = set(), []
    for c in cands:
        if c and os.path.isdir(c):
            r = os.path.realpath(c)
            if r not in seen:
                seen.add(r)
                sites.append(r)
    stdlib = os.path.realpath(paths["stdlib"])
    return sites, stdlib


def list_files(sites, stdlib):
    """[(unit name, version, licence, root, relative path)] in a fixed order."""
    out = []
    dists_all = []
    for root in sites:
        owner, dists = read_dists(root)
        dists_all += dists
        for entry in sorted(os.listdir(root)):
            full = os.path.join(root, entry)
            if entry.endswith((".dist-info", ".egg-info", ".pth")) or entry in SKIP_DIRS or entry in SKIP_TOP:
                continue
            info = owner.get(entry)
            unit = info["name"] if info else re.sub(r"\.py$", "", entry)
            ver = info["version"] if info else "?"
            lic = info["licence"] if info else "unknown"
            if os.path.isfile(full):
                if entry.endswith(SUFFIXES) and not SKIP_NAMES.match(entry):
                    out.append((unit, ver, lic, root, entry))
                continue
            for dirpath, dirnames, filenames in os.walk(full):
                dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".dist-info"))
                for fn in sorted(filenames):
                    if fn.endswith(SUFFIXES) and not SKIP_NAMES.match(fn):
                        out.append((unit, ver, lic, root, os.path.relpath(os.path.join(dirpath, fn), root)))
    # the standard library, without its test suite, site-packages and idle/tkinter tests
    ver = "%d.%d.%d" % sys.version_info[:3]
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel_dir = os.path.relpath(dirpath, stdlib)
        if rel_dir == ".":
            dirnames[:] = sorted(d for d in dirnames if d not in ("test", "site-packages", "dist-packages", "idlelib",
                                                                  "lib2to3", "ensurepip", "config-3")
                                 and not d.startswith(("config-", "python")) and d not in SKIP_DIRS)
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d not in ("tests", "test"))
        for fn in sorted(filenames):
            if fn.endswith(CODE_SUFFIXES) and not SKIP_NAMES.match(fn):
                out.append((STDLIB_NAME, ver, "PSF-2.0", stdlib, os.path.normpath(os.path.join(rel_dir, fn))))
    return out, dists_all


def _read_one(item):
    unit, ver, lic, root, rel = item
    full = os.path.join(root, rel)
    try:
        if os.path.islink(full):
            return None
        size = os.path.getsize(full)
        if size < MIN_CHARS or size > MAX_BYTES:
            return None
        with open(full, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text or len(text.strip()) < MIN_CHARS:
        return None
    is_code = rel.endswith(CODE_SUFFIXES)
    if not looks_written(text, is_code):
        return None
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return (unit, ver, lic, rel, text, digest, "code" if is_code else "doc")


def _read_chunk(items):
    return [r for r in map(_read_one, items) if r is not None]


_HELDOUT_LINES = None


def _contaminated(text):
    """True when a training file shares many long lines with the held-out files (a copy or near-copy)."""
    long_lines = [l.strip() for l in text.split("\n") if len(l.strip()) >= 40]
    if not long_lines:
        return False
    hits = sum(1 for l in long_lines if l in _HELDOUT_LINES)
    return hits >= 10 and hits >= 0.3 * len(long_lines)


def _contaminated_chunk(texts):
    return [_contaminated(t) for t in texts]


def build(workers=None, max_train_bytes=None, extra_heldout_texts=(), log=print):
    """Returns (train_docs, heldout_docs, manifest). A doc is {"source", "path", "kind", "text"}."""
    t0 = time.time()
    sites, stdlib = roots()
    files, dists = list_files(sites, stdlib)
    log(f"code corpus: {len(files)} candidate files under {sites} and {stdlib} ({time.time() - t0:.1f}s)")
    workers = workers or max(1, min(16, (os.cpu_count() or 2) - 1))
    ctx = multiprocessing.get_context("fork")
    chunk = 256
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    with ctx.Pool(workers) as pool:
        results = [r for part in pool.imap(_read_chunk, chunks) for r in part]
    log(f"code corpus: read {len(results)} files ({time.time() - t0:.1f}s)")

    # distributions' long descriptions (README text of each package) as documents
    for d in dists:
        desc = (d.get("description") or "").replace("\r\n", "\n").strip()
        if len(desc) >= MIN_CHARS and len(desc.encode("utf-8")) <= MAX_BYTES and looks_written(desc, False):
            results.append((d["name"], d["version"], d["licence"], d["dist_info"] + "/METADATA", desc,
                            hashlib.sha1(desc.encode("utf-8")).hexdigest(), "doc"))

    # exact duplicates: kept once; a held-out copy of a file a training package also has is dropped
    train_digests = {r[5] for r in results if not is_heldout_dist(r[0])}
    seen, train, heldout = set(), [], []
    dup_files = dup_bytes = leak_files = 0
    for r in results:
        unit, ver, lic, rel, text, digest, kind = r
        if digest in seen:
            dup_files += 1
            dup_bytes += len(text)
            continue
        seen.add(digest)
        if is_heldout_dist(unit):
            if digest in train_digests:
                leak_files += 1
                continue
            heldout.append(r)
        else:
            train.append(r)

    # near-copies of held-out text in training files (vendored copies with a changed header, say)
    global _HELDOUT_LINES
    _HELDOUT_LINES = set()
    for text in [r[4] for r in heldout] + list(extra_heldout_texts):
        _HELDOUT_LINES.update(l.strip() for l in text.split("\n") if len(l.strip()) >= 40)
    texts = [r[4] for r in train]
    with ctx.Pool(workers) as pool:
        flags = [f for part in pool.imap(_contaminated_chunk, [texts[i:i + 512] for i in range(0, len(texts), 512)])
                 for f in part]
    _HELDOUT_LINES = None
    contaminated = [r for r, f in zip(train, flags) if f]
    train = [r for r, f in zip(train, flags) if not f]
    log(f"code corpus: {dup_files} duplicate files ({dup_bytes / 1e6:.1f} MB), {leak_files} held-out files also in "
        f"training packages, {len(contaminated)} training files near-copying held-out text, dropped "
        f"({time.time() - t0:.1f}s)")

    if max_train_bytes and sum(len(r[4]) for r in train) > max_train_bytes:
        # a deterministic subset: files in order of their content hash
        ordered = sorted(train, key=lambda r: r[5])
        keep, total = set(), 0
        for r in ordered:
            if total >= max_train_bytes:
                break
            keep.add(r[5])
            total += len(r[4])
        train = [r for r in train if r[5] in keep]
        log(f"code corpus: capped training files at {max_train_bytes / 1e6:.0f} MB")

    units = {}
    for split, rows in (("train", train), ("heldout", heldout)):
        for unit, ver, lic, rel, text, digest, kind in rows:
            u = units.setdefault(unit, {"name": unit, "version": ver, "licence": lic, "heldout": is_heldout_dist(unit),
                                        "files": 0, "bytes": 0, "code_files": 0, "doc_files": 0})
            u["files"] += 1
            u["bytes"] += len(text.encode("utf-8"))
            u[kind + "_files"] += 1

    def as_doc(r):
        return {"source": f"pypi:{r[0]}" if r[0] != STDLIB_NAME else STDLIB_NAME, "version": r[1], "licence": r[2],
                "path": r[3], "kind": r[6], "text": r[4]}

    train_docs = [as_doc(r) for r in train]
    heldout_docs = [as_doc(r) for r in heldout]
    manifest = {
        "roots": sites + [stdlib],
        "python": sys.version.split()[0],
        "suffixes": list(SUFFIXES) + ["<dist>.dist-info/METADATA (long description)"],
        "filters": f"UTF-8, {MIN_CHARS} B to {MAX_BYTES} B, no NUL, at most 10% of characters in lines over 300, "
                   f"mean line length at most 100 (code) / 200 (docs), at least 35% letters; exact duplicates kept once",
        "heldout_rule": f"whole distributions with sha1('{HELDOUT_SALT}' + normalised name) % {HELDOUT_MODULUS} == 0; "
                        f"held-out files also present in a training distribution dropped; training files sharing "
                        f">= 10 and >= 30% of their long lines (>= 40 chars) with held-out text dropped",
        "duplicates_dropped": {"files": dup_files, "bytes": dup_bytes},
        "heldout_copies_dropped": leak_files,
        "near_copies_dropped": [f"{r[0]}:{r[3]}" for r in contaminated][:200],
        "near_copies_dropped_count": len(contaminated),
        "totals": {
            "train": {"docs": len(train_docs), "bytes": sum(u["bytes"] for u in units.values() if not u["heldout"]),
                      "code_docs": sum(1 for d in train_docs if d["kind"] == "code")},
            "heldout": {"docs": len(heldout_docs), "bytes": sum(u["bytes"] for u in units.values() if u["heldout"]),
                        "code_docs": sum(1 for d in heldout_docs if d["kind"] == "code")},
        },
        "units": sorted(units.values(), key=lambda u: -u["bytes"]),
        "seconds": round(time.time() - t0, 1),
    }
    log(f"code corpus: train {len(train_docs)} docs {manifest['totals']['train']['bytes'] / 1e6:.1f} MB, held out "
        f"{len(heldout_docs)} docs {manifest['totals']['heldout']['bytes'] / 1e6:.1f} MB from "
        f"{sum(1 for u in units.values() if u['heldout'])} distributions ({time.time() - t0:.1f}s)")
    return train_docs, heldout_docs, manifest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/code-corpus")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    train, heldout, manifest = build(args.workers)
    os.makedirs(args.out, exist_ok=True)
    for name, docs in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(json.dumps(manifest["totals"]))


if __name__ == "__main__":
    main()
