"""Records Hugging Face tokenizers' ids for a long text of ordinary prose plus long-but-ordinary pieces.

Run from the repository root on a machine with `tokenizers` (the GPU machine):
    python3 tests/TestData/tokenizer/make_long_text_reference.py OUT.json
The C# test (LongTextReferenceTests) checks that TextTokenizer gives the same ids for the same text: no piece
of it is longer than TextTokenizer.MaxPieceLength, so slicing long pieces must not change anything.
"""
import glob
import json
import random
import sys

import tokenizers
from tokenizers import Tokenizer

MODEL = "models/kvf-pydoc-16m"


def build_text():
    parts = []
    for path in sorted(glob.glob("data/heldout/*.txt")):
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    prose = "".join(parts)[:48_000]
    rng = random.Random(12)
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10_000))
    cjk = "".join(chr(0x4E00 + rng.randrange(0x5000)) for _ in range(3_000))
    return (
        prose
        + "\n\nA long identifier: " + word + " ends here.\n"
        + "=" * 3_000 + "\n"
        + " " * 6_000 + "indented after a long run of spaces\n"
        + "digits " + "".join(str(rng.randrange(10)) for _ in range(4_000)) + "\n"
        + "CJK without spaces: " + cjk + "\u3002\n"
        + "caf\u00e9 na\u00efve \U0001F600 " * 200
    )


def main():
    text = build_text()
    tokenizer = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump({"model": MODEL, "library": f"tokenizers {tokenizers.__version__}", "text": text, "ids": ids}, f, ensure_ascii=True)
    print(f"{len(text)} characters, {len(ids)} ids, tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main()
