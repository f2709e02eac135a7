#!/usr/bin/env bash
# Trains the bundled model and writes every fixture in ONE call of the GPU machine (at most 600 s), from the
# repository root, with the Debian corpus carried along (tools/train/README.md):
#
#   device run: command "bash tools/train/device-train.sh", carry [".device-carry"], timeout_s 600
#
# Extra arguments go to train.py (e.g. --layers 24 --hidden 256 --heads 4 --ffn 512). Output in $OUT:
#   log.txt                 train.py's log (build_data.py's lines start with "[data")
#   bundle.tar.part-*       tar of the stage: models/<name>/, tests/TestData/{models,fixtures,tokenizer}/,
#                           data/heldout-code/, tools/train/{metrics.json,samples.txt,corpus_manifest.json}
# Whatever happens, the stage is packed: a run that is cut short still returns its partial output and log.
#
# Back here (the call's files_at folder as $F), from the repository root:
#   cat $F/bundle.tar.part-* | tar xf - && cp $F/log.txt tools/train/train_log.txt
set -u
OUT=${OUT:-/tmp/out}
STAGE=${STAGE:-/tmp/stage}
export PYTHONUNBUFFERED=1
start=$(date +%s)
mkdir -p "$OUT" "$STAGE"
log="$OUT/log.txt"
{
  echo "device-train.sh at $(date -u +%FT%TZ), $(nproc) cores"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python3 -c 'import sys, torch, transformers, tokenizers, numpy, safetensors; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__, "numpy", numpy.__version__, "safetensors", safetensors.__version__)' 2>&1
  python3 -c 'import site; print("site-packages:", site.getsitepackages())' 2>&1
} | tee "$log"
if [ ! -f .device-carry/corpus/train.jsonl.xz ]; then
  echo "ERROR: .device-carry/corpus is missing: run python3 tools/train/prepare_corpus.py here and carry .device-carry" | tee -a "$log"
  exit 2
fi
# train.py keeps to 555 s by itself (--total-seconds); the hard limit leaves time to pack the stage
timeout -k 5 565 python3 tools/train/train.py --stage "$STAGE" "$@" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
echo "train.py exit code $rc after $(( $(date +%s) - start )) s" | tee -a "$log"
(cd "$STAGE" && find . -type f | sort | xargs -r ls -l) >> "$log" 2>&1
(cd "$STAGE" && tar cf - .) | split -b 15m - "$OUT/bundle.tar.part-"
ls -l "$OUT"
echo "device-train.sh done after $(( $(date +%s) - start )) s"
exit "$rc"
