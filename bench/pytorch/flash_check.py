"""Checks and times the engine's attention and decode kernels (src/KvFetcher.Cuda/Gpu/Kernels/) outside the engine.

Compiles Kernels/Kernels.cu (and the parts it includes) with NVRTC through CuPy, as the engine does (same source, same defines), runs `flash_attention`
(tensor cores, 128-row blocks), `flash_attention_narrow` (64-row blocks), `attention` (CUDA cores) and, for decode
steps, `decode_attention_4`/`_8` (split-K, + `attention_combine`) on random data laid out as the engine lays it out (Q fp32
[n, heads, HD], one layer of the cache [kvHead][capacity][HD] in fp16/bf16), and compares them with a float64
reference computed by PyTorch from the same inputs: causal mask at any start position, grouped-query heads, sliding
windows. `gemv` (decode-sized products) is checked against torch's fp32 product of the same bf16 inputs. Then times
them against torch (SDPA flash backend, cuBLAS) on the Llama-3-8B shapes (32 query / 8 KV heads of 128; hidden
4096, ffn 14336, vocabulary 128256).

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
KERNELS = os.path.join(ROOT, "src/KvFetcher.Cuda/Gpu/Kernels")
SOURCE = open(os.path.join(KERNELS, "Kernels.cu"), encoding="utf-8").read()
_modules = {}


def module(hd, kv):
    key = (hd, kv)
    if key not in _modules:
        options = ("--std=c++17", "-default-device", f"-I{KERNELS}", f"-DHEAD_DIM={hd}", f"-DKV={kv}", "-DACT=f32_t", "-DEMB=f32_t", "-DTC_ATTENTION",
                   "-DDECODE_ATTENTION")
        m = cupy.RawModule(code=SOURCE, options=options, backend="nvrtc")
        flash = m.get_function("flash_attention")
        flash.max_dynamic_shared_size_bytes = flash_smem(hd, 128)
        narrow = m.get_function("flash_attention_narrow")
        narrow.max_dynamic_shared_size_bytes = flash_smem(hd, 64)
        plain = m.get_function("attention")
        smem = (16 * hd + 32 * (hd + 1) + 32 * hd) * 4
        if smem > 48 * 1024:
            plain.max_dynamic_shared_size_bytes = smem
        _modules[key] = {"flash": flash, "narrow": narrow, "plain": plain, "smem": smem, "module": m,
                         "decode4": m.get_function("decode_attention_4"), "decode8": m.get_function("decode_attention_8"), "combine": m.get_function("attention_combine")}
    return _modules[key]


def flash_smem(hd, rows):
    return (rows + 2 * 2 * 64) * (hd + 8) * 2


def ptr(t):
    return np.uint64(t.data_ptr())


def run_flash(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window, rows=128):
    m = module(hd, kv)
    kv_heads = heads // group
    tiles = (n * group + rows - 1) // rows
    (m["flash"] if rows == 128 else m["narrow"])(
        (tiles, kv_heads, 1), (128, 1, 1),
        (ptr(q), ptr(keys), ptr(values), ptr(out), np.uint64(0), np.int32(n), np.int32(start), np.int32(heads),
         np.int32(group), np.int32(capacity), np.int32(window), np.float32(1 / math.sqrt(hd))),
        shared_mem=flash_smem(hd, rows))


def run_narrow(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window):
    run_flash(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window, rows=64)


def decode_splits(n, start, window, kv_heads, sms=132):
    """The engine's rule (CudaTransformer.Attention): key ranges of at least 128 keys, at most 3 blocks per SM."""
    span = min(window, start + n)
    return max(1, min((span + 127) // 128, max(1, 3 * sms // kv_heads)))


def run_decode(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window, splits=None, partial=None):
    m = module(hd, kv)
    kv_heads = heads // group
    splits = splits or decode_splits(n, start, window, kv_heads)
    if partial is None:
        partial = torch.empty(splits * n * heads * (hd + 2), device="cuda")
    m["decode4" if n * group <= 4 else "decode8"]((splits, kv_heads, 1), (128, 1, 1),
                (ptr(q), ptr(keys), ptr(values), ptr(out), np.uint64(0), ptr(partial), np.int32(n), np.int32(start),
                 np.int32(heads), np.int32(group), np.int32(capacity), np.int32(window), np.float32(1 / math.sqrt(hd)),
                 np.int32(splits)))
    if splits > 1:
        m["combine"]((n, heads, 1), (32, 1, 1),
                     (ptr(partial), ptr(out), np.uint64(0), np.int32(n), np.int32(heads), np.int32(splits)))


def run_decode_one_split(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window):
    run_decode(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window, splits=1)


def run_plain(hd, kv, q, keys, values, out, n, start, heads, group, capacity, window):
    m = module(hd, kv)
    plain, smem = m["plain"], m["smem"]
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


def check(case, runners=None):
    n, start, heads, kv_heads, hd, kv, window = case
    capacity = start + n + 37
    q, keys, values = make_inputs(n, start, heads, kv_heads, hd, kv, capacity, seed=hash(case) & 0xffff)
    ref = reference(q, keys, values, n, start, heads, kv_heads, hd, window)
    result = {"n": n, "start": start, "heads": heads, "kvHeads": kv_heads, "headDim": hd, "kv": kv,
              "window": None if window >= 2**31 - 1 else window}
    runners = runners or (("flash", run_flash), ("narrow", run_narrow), ("cudaCore", run_plain))
    for name, runner in runners:
        out = torch.full((n, heads, hd), float("nan"), device="cuda")
        runner(hd, kv, q, keys, values, out, n, start, heads, heads // kv_heads, capacity, window)
        torch.cuda.synchronize()
        unwritten = int(torch.isnan(out).sum())
        rel = float((out - ref).norm() / ref.norm()) if unwritten == 0 else float("nan")
        result[name] = {"relError": rel, "maxAbs": float((out - ref).abs().max()), "unwritten": unwritten}
    tested = [name for name, _ in runners if name != "cudaCore"]
    # 16-bit Q and P in the tensor-core kernels; fp32 everywhere in the decode kernel (its bound is the CUDA-core one).
    bound = {"flash": 1e-2, "narrow": 1e-2}
    result["passed"] = all(result[t]["unwritten"] == 0 and result[t]["relError"] <= bound.get(t, 1e-5) for t in tested)
    return result


def gemv_module():
    if "gemv" not in _modules:
        options = ("--std=c++17", "-default-device", f"-I{KERNELS}", "-DHEAD_DIM=128", "-DKV=bf16_t", "-DACT=bf16_t", "-DEMB=bf16_t", "-DGEMV")
        m = cupy.RawModule(code=SOURCE, options=options, backend="nvrtc")
        _modules["gemv"] = ({"gemv": m.get_function("gemv"), "gemv_u4": m.get_function("gemv_u4")}, m)
    return _modules["gemv"][0]


def run_gemv(x, w, y, rows, inf, outf, name="gemv"):
    gemv_module()[name](((outf + 15) // 16, 1, 1), (256, 1, 1), (ptr(x), ptr(w), ptr(y), np.int32(rows), np.int32(inf), np.int32(outf)))


def gemv_case(rows, inf, outf, timing):
    g = torch.Generator(device="cuda").manual_seed(rows * 7 + inf)
    x = torch.randn(rows, inf, device="cuda", generator=g).to(torch.bfloat16)
    w = (torch.randn(outf, inf, device="cuda", generator=g) / math.sqrt(inf)).to(torch.bfloat16)
    y = torch.full((rows, outf), float("nan"), device="cuda")
    run_gemv(x, w, y, rows, inf, outf)
    torch.cuda.synchronize()
    ref = x.double() @ w.double().t()
    row = {"rows": rows, "in": inf, "out": outf, "unwritten": int(torch.isnan(y).sum()),
           "relError": float((y.double() - ref).norm() / ref.norm())}
    row["passed"] = row["unwritten"] == 0 and row["relError"] <= 1e-5
    if timing:
        nbytes = w.numel() * 2
        row["gemvMs"] = time_ms(lambda: run_gemv(x, w, y, rows, inf, outf), repeats=20)
        row["gemvU4Ms"] = time_ms(lambda: run_gemv(x, w, y, rows, inf, outf, "gemv_u4"), repeats=20)
        row["gemvU4GBps"] = nbytes / row["gemvU4Ms"] / 1e6
        row["torchMs"] = time_ms(lambda: x @ w.t(), repeats=20)
        row["gemvGBps"] = nbytes / row["gemvMs"] / 1e6
        row["torchGBps"] = nbytes / row["torchMs"] / 1e6
    return row


def decode_timing(context):
    heads, kv_heads, hd, kv = 32, 8, 128, "bf16_t"
    q, keys, values = make_inputs(1, context - 1, heads, kv_heads, hd, kv, context, seed=11)
    out = torch.empty(1, heads, hd, device="cuda")
    splits = decode_splits(1, context - 1, 2**31 - 1, kv_heads)
    partial = torch.empty(splits * heads * (hd + 2), device="cuda")
    nbytes = 2 * kv_heads * context * hd * 2
    row = {"context": context, "splits": splits, "kvBytes": nbytes}
    row["decodeUs"] = 1000 * time_ms(lambda: run_decode(hd, kv, q, keys, values, out, 1, context - 1, heads, 4, context, 2**31 - 1, splits, partial), repeats=20)
    row["cudaCoreUs"] = 1000 * time_ms(lambda: run_plain(hd, kv, q, keys, values, out, 1, context - 1, heads, 4, context, 2**31 - 1), repeats=5)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    qt = q.to(torch.bfloat16).permute(1, 0, 2).unsqueeze(0).contiguous()
    kt, vt = keys.unsqueeze(0), values.unsqueeze(0)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        row["torchUs"] = 1000 * time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True), repeats=20)
    for k in ("decodeUs", "cudaCoreUs", "torchUs"):
        row[k.replace("Us", "GBps")] = nbytes / (row[k] * 1e-6) / 1e9
    return row


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
    row["narrowMs"] = time_ms(lambda: run_narrow(hd, kv, q, keys, values, out, n, start, heads, 4, capacity, 2**31 - 1))
    if plain:
        row["cudaCoreMs"] = time_ms(lambda: run_plain(hd, kv, q, keys, values, out, n, start, heads, 4, capacity, 2**31 - 1), repeats=1)
    if start == 0:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        qt = q.to(torch.bfloat16).permute(1, 0, 2).unsqueeze(0).contiguous()
        kt = keys.unsqueeze(0)
        vt = values.unsqueeze(0)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            row["torchFlashMs"] = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True))
    for key in ("flashMs", "narrowMs", "cudaCoreMs", "torchFlashMs"):
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
    decode_cases = [
        (1, 4095, 32, 8, 128, "bf16_t", big),
        (1, 32767, 32, 8, 128, "bf16_t", big),
        (2, 1000, 32, 8, 128, "f16_t", 300),
        (1, 0, 32, 8, 128, "bf16_t", big),
        (1, 100, 8, 8, 64, "bf16_t", big),
        (1, 5000, 6, 2, 64, "bf16_t", 128),
        (8, 3000, 4, 4, 256, "f16_t", big),
        (1, 777, 4, 2, 16, "bf16_t", big),
    ]
    results = {"device": torch.cuda.get_device_name(), "checks": [], "timing": [], "decode": [], "gemv": []}
    for case in cases:
        try:
            r = check(case)
        except Exception as e:  # one failing case must not hide the others
            r = {"case": str(case), "passed": False, "error": repr(e)}
        results["checks"].append(r)
        print("CHECK", json.dumps(r), flush=True)
    for case in decode_cases:
        try:
            r = check(case, (("decode", run_decode), ("decodeOneSplit", run_decode_one_split), ("cudaCore", run_plain)))
        except Exception as e:
            r = {"case": str(case), "passed": False, "error": repr(e)}
        results["checks"].append(r)
        print("CHECK decode", json.dumps(r), flush=True)
    for rows, inf, outf in ((1, 4096, 6144), (1, 14336, 4096), (1, 4096, 128256), (3, 4096, 28672), (4, 136, 24)):
        try:
            r = gemv_case(rows, inf, outf, timing=not args.no_timing and rows == 1)
        except Exception as e:
            r = {"rows": rows, "in": inf, "out": outf, "passed": False, "error": repr(e)}
        results["checks"].append(r)
        print("CHECK gemv", json.dumps(r), flush=True)
    if not args.no_timing:
        for n, start, plain in ((4096, 0, True), (16384, 0, True), (32768, 0, False), (4096, 12288, False), (512, 32256, False)):
            try:
                r = timing(n, start, plain)
            except Exception as e:
                r = {"n": n, "start": start, "error": repr(e)}
            results["timing"].append(r)
            print("TIME", json.dumps(r), flush=True)
        for context in (4096, 16384, 32768):
            try:
                r = decode_timing(context)
            except Exception as e:
                r = {"context": context, "error": repr(e)}
            results["decode"].append(r)
            print("DECODE", json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    failed = [c for c in results["checks"] if not c.get("passed")]
    print(f"flash_check: {len(results['checks']) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
