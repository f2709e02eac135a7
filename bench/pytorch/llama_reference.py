"""The PyTorch reference for the GPU engine (issue 13): a Llama-3-8B-shaped model with random bf16 weights in
transformers, SDPA flash attention, timed the way docs/PERFORMANCE.md times ours.

- prefill: model(input_ids, use_cache=True, logits_to_keep=1), one warm-up, median of 3, at each --contexts length;
- chunked: --chunked tokens as --chunk-size chunks through one DynamicCache (median of 2 after a warm-up), on the
  best fused SDPA backend that takes a mask (cuDNN or memory-efficient; flash refuses masks);
- decode: greedy steps (logits_to_keep=1, argmax) on a cache filled by a prefill of each context;
- peak GPU memory (torch.cuda.max_memory_allocated) per measurement.

Usage (on the GPU machine): python3 bench/pytorch/llama_reference.py --json OUT.json
"""
import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--contexts", default="4096,16384,32768")
    parser.add_argument("--decode-contexts", default="4096,16384,32768")
    parser.add_argument("--chunked", type=int, default=32768)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--decode-steps", type=int, default=16)
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()

    config = LlamaConfig(hidden_size=4096, num_hidden_layers=args.layers, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model = model.to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"reference model ready in {time.perf_counter() - start:.1f} s, {weights / 2**30:.2f} GiB of weights", flush=True)

    results = {"engine": "pytorch", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "transformers": transformers.__version__, "weightBytes": weights, "prefill": [], "chunked": [], "decode": []}
    generator = torch.Generator(device="cuda").manual_seed(1)
    longest = max([int(c) for c in args.contexts.split(",")] + [int(c) for c in args.decode_contexts.split(",")] + [args.chunked])
    tokens = torch.randint(3, config.vocab_size, (1, longest + args.decode_steps), device="cuda", generator=generator)

    # One-shot prefill on the flash backend (transformers passes no mask there); chunked prefill and decode pass a mask
    # over the cache, which the flash backend refuses, so those may take any of PyTorch's fused backends.
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with torch.inference_mode(), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for n in (int(c) for c in args.contexts.split(",")):
            ids = tokens[:, :n]
            model(ids, use_cache=True, logits_to_keep=1)   # warm-up
            torch.cuda.reset_peak_memory_stats()
            samples = [timed(lambda: model(ids, use_cache=True, logits_to_keep=1))[0] for _ in range(3)]
            seconds = statistics.median(samples)
            row = {"context": n, "seconds": seconds, "tokensPerSecond": n / seconds, "samples": samples,
                   "peakBytes": torch.cuda.max_memory_allocated()}
            results["prefill"].append(row)
            print("PREFILL", json.dumps(row), flush=True)

    with torch.inference_mode(), sdpa_kernel(fused):
        if args.chunked:
            def chunked():
                cache = DynamicCache()
                for at in range(0, args.chunked, args.chunk_size):
                    model(tokens[:, at:at + args.chunk_size], past_key_values=cache, use_cache=True, logits_to_keep=1)
                return cache

            timed(chunked)
            torch.cuda.reset_peak_memory_stats()
            samples = [timed(chunked)[0] for _ in range(2)]
            seconds = statistics.median(samples)
            row = {"context": args.chunked, "chunk": args.chunk_size, "seconds": seconds,
                   "tokensPerSecond": args.chunked / seconds, "samples": samples, "peakBytes": torch.cuda.max_memory_allocated()}
            results["chunked"].append(row)
            print("CHUNKED", json.dumps(row), flush=True)

        for n in (int(c) for c in args.decode_contexts.split(",")):
            torch.cuda.reset_peak_memory_stats()
            cache = DynamicCache()
            out = model(tokens[:, :n], past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1:].argmax(-1)
            for _ in range(3):   # warm-up steps
                nxt = model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)

            def steps():
                token = nxt
                for _ in range(args.decode_steps):
                    token = model(token, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
                return token

            seconds, _ = timed(steps)
            row = {"context": n, "steps": args.decode_steps, "seconds": seconds,
                   "tokensPerSecond": args.decode_steps / seconds, "peakBytes": torch.cuda.max_memory_allocated()}
            results["decode"].append(row)
            print("DECODE", json.dumps(row), flush=True)
            del cache, out
            torch.cuda.empty_cache()

    # The copy bandwidth of this card (bytes read + written per second), for the decode roofline.
    buffer = torch.empty(2**31, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(buffer)
    target.copy_(buffer)
    seconds = min(timed(lambda: target.copy_(buffer))[0] for _ in range(5))
    results["copyBytesPerSecond"] = 2 * buffer.numel() / seconds
    print(f"copy bandwidth {results['copyBytesPerSecond'] / 1e12:.2f} TB/s", flush=True)

    del buffer, target
    # The matrix-product ceiling: one bf16 product of the MLP's shape through cuBLAS (4096 tokens).
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(14336 * 2, 4096, device="cuda", dtype=torch.bfloat16)
    a @ w.t()
    seconds = statistics.median(timed(lambda: a @ w.t())[0] for _ in range(10))
    results["gemmTflops"] = 2 * 4096 * 4096 * 14336 * 2 / seconds / 1e12
    print(f"bf16 matrix product 4096x4096x28672: {results['gemmTflops']:.0f} TFLOP/s", flush=True)

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
