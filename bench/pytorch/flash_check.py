"""Checks and times the engine's attention kernels (src/KvFetcher.Cuda/Gpu/Kernels.cu) outside the engine.

Compiles Kernels.cu with NVRTC through CuPy, as the engine does (same source, same defines), runs `flash_attention`
(tensor cores) and `attention` (CUDA cores) on random data laid out as the engine lays it out (Q fp32 [n, heads, HD],
one layer of the cache [kvHead][capacity][HD] in fp16/bf16), and compares both with a float64 reference computed by
PyTorch from the same inputs: causal mask at any start position, grouped-query heads, sliding windows. Then times
them against torch's SDPA flash backend on the Llama-3-8B attention shape (32 query / 8 KV heads of 128).

Usage (on the GPU machine): python3 bench/pytorch/flash_check.py --json OUT.json
"""
import argparse
import json
import math
import os
import sys

import cupy
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = open(os.path.join(ROOT, "src/KvFetcher.Cuda/Gpu/Kernels.cu"), encoding="utf-8").read()
_modules = {}


def module(hd, kv):
    key = (hd, kv)
    if key not in _modules:
        options = ("--std=c++17", "-default-device", f"-DHEAD_DIM={hd}", f"-DKV={kv}", "-DACT=f32_t", "-DEMB=f32_t", "-DTC_ATTENTION")
        m = cupy.RawModule(code=SOURCE, options=options, backend="nvrtc")
        flash = m.get_function("flash_attention")
        flash.max_dynamic_shared_size_bytes = flash_smem(hd)
        plain = m.get_function("attention")
        smem = (16 * hd + 32 * (hd + 1) + 32 * hd) * 4
        if smem > 48 * 1024:
            plain.max_dynamic_shared_size_bytes = smem
        _modules[key] = (flash, plain, smem, m)
    return _modules[key]


def flash_smem(hd):
    return 2 * 2 * 64 * (hd + 8) * 2


def ptr(t):
    return np.uint64(t.data_ptr())


def run_flash(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window):
    flash, _, _, _ = module(hd, kv)
    kv_heads = heads // group
    tiles = (n * group + 63) // 64
    flash((tiles, kv_heads, 1), (128, 1, 1),
          (ptr(q), ptr(keys), ptr(values), ptr(out), np.uint64(0), np.int32(n), np.int32(start), np.int32(heads),
           np.int32(group), np.int32(capacity), np.int32(window), np.float32(1 / math.sqrt(hd))),
          shared_mem=flash_smem(hd))


def run_plain(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window):
    _, plain, smem, _ = module(hd, kv)
    kv_heads = heads // group
    tiles = (n * group + 15) // 16
    plain((tiles, kv_heads, 1), (128, 1, 1),
          (ptr(q), ptr(keys), ptr(values), ptr(out), np.uint64(0), np.uint64(0), np.int32(n), np.int32(start),
           np.int32(heads), np.int32(group), np.int32(capacity), np.int32(window), np.float32(1 / math.sqrt(hd)), np.int32(1)),
          shared_mem=smem)


def make_inputs(n, start, heads, kv_heads, hd, kv, capacity, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    dtype = torch.bfloat16 if kv == "bf16_t" else torch.float16
    q = torch.randn(n, heads, hd, device="cuda", generator=g, dtype=torch.float32) * 1.5
    keys = (torch.randn(kv_heads, capacity, hd, device="cuda", generator=g) * 1.5).to(dtype)
    values = torch.randn(kv_heads, capacity, hd, device="cuda", generator=g).to(dtype)
    return q, keys, values


def reference(q, keys, values, n, start, heads, kv_heads, hd, window):
    total = start + n
    group = heads // kv_heads
    qd = q.double().permute(1, 0, 2)                                   # [heads, n, hd]
    k = keys[:, :total].double().repeat_interleave(group, dim=0)       # [heads, total, hd]
    v = values[:, :total].double().repeat_interleave(group, dim=0)
    pos = torch.arange(start, total, device="cuda")[:, None]
    key = torch.arange(total, device="cuda")[None, :]
    mask = (key <= pos) & (key > pos - window)
    scores = (qd @ k.transpose(1, 2)) / math.sqrt(hd)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.permute(1, 0, 2).float()                               # [n, heads, hd]


def check(case):
    n, start, heads, kv_heads, hd, kv, window = case
    capacity = start + n + 37
    q, keys, values = make_inputs(n, start, heads, kv_heads, hd, kv, capacity, seed=hash(case) & 0xffff)
    ref = reference(q, keys, values, n, start, heads, kv_heads, hd, window)
    result = {"n": n, "start": start, "heads": heads, "kvHeads": kv_heads, "headDim": hd, "kv": kv,
              "window": None if window >= 2**31 - 1 else window}
    for name, runner in (("flash", run_flash), ("cudaCore", run_plain)):
        out = torch.full((n, heads, hd), float("nan"), device="cuda")
        runner(hd, kv, q, keys, values, out, n, start, heads, heads // kv_heads, capacity, window)
        torch.cuda.synchronize()
        unwritten = int(torch.isnan(out).sum())
        rel = float((out - ref).norm() / ref.norm()) if unwritten == 0 else float("nan")
        result[name] = {"relError": rel, "maxAbs": float((out - ref).abs().max()), "unwritten": unwritten}
    result["passed"] = result["flash"]["unwritten"] == 0 and result["flash"]["relError"] <= 1e-2
    return result


def time_ms(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def timing(n, start, plain):
    heads, kv_heads, hd, kv = 32, 8, 128, "bf16_t"
    capacity = start + n
    q, keys, values = make_inputs(n, start, heads, kv_heads, hd, kv, capacity, seed=7)
    out = torch.empty(n, heads, hd, device="cuda")
    flops = 4.0 * hd * heads * (n * start + n * (n + 1) / 2)   # causal: query i sees start + i + 1 keys
    row = {"n": n, "start": start, "tflop": flops / 1e12}
    row["flashMs"] = time_ms(lambda: run_flash(hd, kv, q, keys, values, out, n, start, heads, 4, capacity, 2**31 - 1))
    if plain:
        row["cudaCoreMs"] = time_ms(lambda: run_plain(hd, kv, q, keys, values, out, n, start, heads, 4, capacity, 2**31 - 1), repeats=1)
    if start == 0:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt = q.to(torch.bfloat16).permute(1, 0, 2).unsqueeze(0).contiguous()
        kt = keys.unsqueeze(0)
        vt = values.unsqueeze(0)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            row["torchFlashMs"] = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True))
    for key in ("flashMs", "cudaCoreMs", "torchFlashMs"):
        if key in row:
            row[key.replace("Ms", "Tflops")] = row["tflop"] / (row[key] / 1000)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    big = 2**31 - 1
    cases = [
        (1000, 0, 32, 8, 128, "bf16_t", big),
        (300, 777, 32, 8, 128, "bf16_t", big),
        (512, 4096, 32, 8, 128, "f16_t", 1024),
        (16, 2000, 32, 8, 128, "bf16_t", big),
        (257, 100, 6, 2, 64, "f16_t", 128),
        (130, 0, 8, 8, 64, "bf16_t", 64),
        (333, 64, 6, 2, 64, "bf16_t", big),
        (70, 5, 4, 2, 16, "bf16_t", 64),
        (70, 5, 4, 2, 16, "f16_t", big),
        (100, 33, 12, 4, 96, "bf16_t", 50),
    ]
    results = {"device": torch.cuda.get_device_name(), "checks": [], "timing": []}
    for case in cases:
        try:
            r = check(case)
        except Exception as e:  # one failing case must not hide the others
            r = {"case": str(case), "passed": False, "error": repr(e)}
        results["checks"].append(r)
        print("CHECK", json.dumps(r), flush=True)
    if not args.no_timing:
        for n, start, plain in ((4096, 0, True), (16384, 0, True), (32768, 0, False), (4096, 12288, False), (512, 32256, False)):
            try:
                r = timing(n, start, plain)
            except Exception as e:
                r = {"n": n, "start": start, "error": repr(e)}
            results["timing"].append(r)
            print("TIME", json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    failed = [c for c in results["checks"] if not c.get("passed")]
    print(f"flash_check: {len(results['checks']) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
