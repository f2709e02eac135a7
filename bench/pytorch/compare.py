"""Joins our GPU engine's Llama-3-8B-shape run (kvf-gpu-check --llama) and the PyTorch reference's
(llama_reference.py), measured in one call on one card, into one JSON and one Markdown table with the ratios and
issue 13's targets.

Usage: python3 bench/pytorch/compare.py OURS.json PYTORCH.json --json OUT.json --table OUT.md
"""
import argparse
import json
import sys

VOCAB, HIDDEN = 128256, 4096
KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2   # layers x (K, V) x KV heads x head dim x bf16


def rows(section):
    return {r["context"]: r for r in section}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ours")
    parser.add_argument("pytorch")
    parser.add_argument("--json", required=True)
    parser.add_argument("--table", required=True)
    args = parser.parse_args()
    ours = json.load(open(args.ours, encoding="utf-8"))
    torch_ = json.load(open(args.pytorch, encoding="utf-8"))
    engine = ours["engine13"]
    copy = torch_.get("copyBytesPerSecond")
    # A decode step reads every weight but the embedding table (one row of it) and the whole KV cache once.
    weights_read = engine["weightBytes"] - VOCAB * HIDDEN * 2

    table = []
    summary = []

    def add(measure, reference, mine, target_ratio, note=""):
        ratio = mine / reference if reference and mine else None
        met = None if target_ratio is None or ratio is None else ratio >= target_ratio
        table.append((measure, reference, mine, ratio, target_ratio, met, note))
        summary.append({"measure": measure, "pytorch": reference, "ours": mine, "ratio": ratio,
                        "target": target_ratio, "met": met, "note": note})

    ref_prefill, my_prefill = rows(torch_["prefill"]), rows(engine["prefill"])
    base_prefill = rows(ours.get("baseline", {}).get("prefill", []))
    for n in sorted(my_prefill):
        ref = ref_prefill.get(n, {}).get("tokensPerSecond")
        note = f"PyTorch {ref_prefill[n]['seconds'] * 1000:.0f} ms, ours {my_prefill[n]['seconds'] * 1000:.0f} ms" if n in ref_prefill else ""
        if n in base_prefill:
            note += f"; before (CUDA-core attention) {base_prefill[n]['seconds'] * 1000:.0f} ms"
        add(f"prefill {n} tok/s", ref, my_prefill[n]["tokensPerSecond"], 0.9, note)
    ref_chunked, my_chunked = rows(torch_["chunked"]), rows(engine["chunked"])
    for n in sorted(my_chunked):
        ref = ref_chunked.get(n, {}).get("tokensPerSecond")
        note = f"PyTorch {ref_chunked[n]['seconds'] * 1000:.0f} ms, ours {my_chunked[n]['seconds'] * 1000:.0f} ms" if n in ref_chunked else ""
        add(f"chunked prefill {n} (512-token chunks) tok/s", ref, my_chunked[n]["tokensPerSecond"], 1.0, note)
    ref_decode, my_decode = rows(torch_["decode"]), rows(engine["decode"])
    for n in sorted(my_decode):
        ref = ref_decode.get(n, {}).get("tokensPerSecond")
        roofline = copy / (weights_read + KV_BYTES_PER_TOKEN * n) if copy else None
        mine = my_decode[n]["tokensPerSecond"]
        note = f"HBM roofline {roofline:.0f} tok/s: ours {mine / roofline:.0%}, PyTorch {ref / roofline:.0%} (target ours >= 70%)" if roofline and ref else ""
        add(f"decode @ {n} tok/s", ref, mine, None, note)
        summary[-1]["roofline"] = roofline
        summary[-1]["met"] = None if roofline is None else mine / roofline >= 0.7
        table[-1] = table[-1][:5] + (summary[-1]["met"],) + table[-1][6:]
    peak = max((r.get("peakBytes", 0) for r in torch_["prefill"] + torch_["chunked"] + torch_["decode"]), default=0)
    memory = {"oursHeldBytes": engine["heldBytes"], "pytorchPeakBytes": {str(r["context"]): r.get("peakBytes") for r in torch_["prefill"]},
              "pytorchPeakBytesAll": peak}

    lines = [
        f"Card: {ours.get('device')} (PyTorch saw: {torch_.get('device')}); PyTorch {torch_.get('torch')}, transformers {torch_.get('transformers')}; "
        f"copy bandwidth {copy / 1e12:.2f} TB/s (read + write); bf16 matrix product {torch_.get('gemmTflops', 0):.0f} TFLOP/s." if copy else "",
        "",
        "| measure | PyTorch (SDPA flash, cuBLAS) | ours | ours / PyTorch | target | met | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for measure, ref, mine, ratio, target, met, note in table:
        fmt = lambda v: "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
        target_text = "decode >= 70% of roofline" if measure.startswith("decode") else (f">= {target}x" if target else "-")
        lines.append(f"| {measure} | {fmt(ref)} | {fmt(mine)} | {'-' if ratio is None else f'{ratio:.2f}x'} | {target_text} | "
                     f"{'-' if met is None else ('met' if met else 'missed')} | {note} |")
    lines.append("")
    lines.append(f"Device memory: ours holds {engine['heldBytes'] / 2**30:.1f} GiB (weights, a 32K-token bf16 cache, 4K-token step scratch) "
                 f"for every context; PyTorch's peak allocation: " +
                 ", ".join(f"{r['context']}: {r['peakBytes'] / 2**30:.1f} GiB" for r in torch_["prefill"]) + ".")
    open(args.table, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    json.dump({"ours": ours, "pytorch": torch_, "comparison": summary, "memory": memory}, open(args.json, "w", encoding="utf-8"), indent=2)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
