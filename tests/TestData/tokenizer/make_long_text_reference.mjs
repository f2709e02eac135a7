// Records Hugging Face tokenizers' ids for a long text: ordinary prose plus long but ordinary pieces (a 10,000
// letter identifier, a 3,000 character rule, 6,000 spaces, 4,000 digits, 3,000 CJK characters without a space).
// No piece is longer than TextTokenizer.MaxPieceLength, so the C# tokenizer must give exactly these ids.
//
// Run from the repository root with the npm package of Hugging Face tokenizers (the Rust library's binding):
//   npm install --prefix /tmp/hftok tokenizers@0.23.2
//   NODE_PATH=/tmp/hftok/node_modules node tests/TestData/tokenizer/make_long_text_reference.mjs \
//       tests/TestData/tokenizer/long-text-kvf-code-32l.json.gz
import { createRequire } from "node:module";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const require = createRequire(import.meta.url);
const { Tokenizer } = require("tokenizers");
const model = "models/kvf-code-32l";

// mulberry32: a small seeded generator, so the text is the same on every run.
let seed = 12;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (n) => Math.floor(random() * n);
const repeat = (n, f) => Array.from({ length: n }, f).join("");

const files = readdirSync("data/heldout").filter((f) => f.endsWith(".txt")).sort();
const prose = files.map((f) => readFileSync(`data/heldout/${f}`, "utf8")).join("").slice(0, 48_000);
const text =
  prose +
  "\n\nA long identifier: " + repeat(10_000, () => "abcdefghijklmnopqrstuvwxyz"[pick(26)]) + " ends here.\n" +
  "=".repeat(3_000) + "\n" +
  " ".repeat(6_000) + "indented after a long run of spaces\n" +
  "digits " + repeat(4_000, () => String(pick(10))) + "\n" +
  "CJK without spaces: " + repeat(3_000, () => String.fromCodePoint(0x4e00 + pick(0x5000))) + "\u3002\n" +
  "caf\u00e9 na\u00efve \u{1F600} ".repeat(200);

const tokenizer = Tokenizer.fromFile(`${model}/tokenizer.json`);
const encoding = await tokenizer.encode(text, null, { addSpecialTokens: false });
const ids = Array.from(encoding.getIds());
const library = `tokenizers ${require("tokenizers/package.json").version} (npm binding of the Rust library)`;
writeFileSync(process.argv[2], gzipSync(JSON.stringify({ model, library, text, ids }), { level: 9 })); // gzip: the tree stays small
console.log(`${text.length} characters, ${ids.length} ids, ${library}`);
