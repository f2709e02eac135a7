#!/usr/bin/env bash
# Builds what runs on the GPU machine (which has no .NET) and stages it for the `run` tool's carry list:
# tests/KvFetcher.Cuda.DeviceTests published NativeAOT for linux-x64 as .device-carry/cuda/kvf-gpu-check. On the
# device it runs the CUDA engine's checks (the same GpuChecks the xunit suite asserts on: logits and greedy parity with
# the Hugging Face fixtures, KV against the CPU engine, chunked prefill, KV import/export, reuse) and the prefill/decode
# benchmark, reading the models and fixtures from the working tree that the run tool sends along.
#
# Usage: tools/gpu-run.sh            build, then print the run tool invocation
# Needs: the .NET SDK, clang (or gcc) and zlib1g-dev for NativeAOT's native link.
set -euo pipefail
cd "$(dirname "$0")/.."

out=.device-carry/cuda
artifacts=${KVF_GPU_ARTIFACTS:-/tmp/kvf-gpu-publish}
rm -rf "$out"
mkdir -p "$out"
dotnet publish tests/KvFetcher.Cuda.DeviceTests -r linux-x64 -c Release -p:PublishAot=true \
  --artifacts-path "$artifacts" -o "$out" --nologo -v quiet >&2
rm -f "$out"/*.dbg "$out"/*.pdb "$out"/*.xml   # debug symbols and API docs: not needed to run
# Without a GPU here, NVRTC alone (when installed) checks that the native build finds and drives it.
"$out"/kvf-gpu-check --nvrtc-smoke >&2 || echo "gpu-run: no NVRTC here to smoke-test the build (fine: the device has it)" >&2

cat <<TXT
Staged $out ($(du -sh "$out" | cut -f1)). Run on the device with the run tool:
  command: .device-carry/cuda/kvf-gpu-check --json \$OUT/cuda-results.json 2>&1 | tee \$OUT/cuda-results.txt
  carry:   [".device-carry/cuda"]
Only checks: add --checks; only the benchmark: add --bench.
TXT
