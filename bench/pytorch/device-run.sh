#!/usr/bin/env bash
# One device call for issue 13 (run from the folder that holds this checkout's bench/, src/ and the published
# kvf-gpu-check in cuda/): the tensor-core attention kernel against PyTorch in isolation, the engine's checks and its
# Llama-3-8B-shape benchmark (with the CUDA-core baseline), the PyTorch reference, and the joined table. Each part is
# guarded: one failing leaves the others' output in $OUT.
#   bench/pytorch/device-run.sh [--no-checks | --flash-checks | --checks-matching 'A|B'] [--no-baseline] [--no-kernel]
set -u
export PYTHONUNBUFFERED=1
log=$OUT/log.txt
part() { echo "=== $1 ($(date -u +%T))" | tee -a "$log"; }
part device
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
if [[ " $* " != *" --no-kernel "* ]]; then
  part "flash kernel vs SDPA"
  timeout 120 python3 bench/pytorch/flash_check.py --json "$OUT/flash.json" 2>&1 | tee -a "$log"
fi
part "our engine"
flags=(--llama "$OUT/ours.json" --json "$OUT/checks.json")
[[ " $* " != *" --no-checks "* ]] && flags+=(--checks)
[[ " $* " == *" --flash-checks "* ]] && flags+=(--check-filter flash)
args=("$@")
for i in "${!args[@]}"; do [[ "${args[$i]}" == --checks-matching ]] && flags+=(--check-filter "${args[$((i + 1))]}"); done
[[ " $* " != *" --no-baseline "* ]] && flags+=(--baseline)
timeout 240 cuda/kvf-gpu-check "${flags[@]}" 2>&1 | tee -a "$log"
part "pytorch reference"
timeout 200 python3 bench/pytorch/llama_reference.py --json "$OUT/pytorch.json" 2>&1 | tee -a "$log"
part compare
python3 bench/pytorch/compare.py "$OUT/ours.json" "$OUT/pytorch.json" --json "$OUT/comparison.json" --table "$OUT/comparison.md" 2>&1 | tee -a "$log"
part done
