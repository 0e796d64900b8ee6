"""Cost of one translation direction per preset: parameters, GFLOPs, activation traffic (the memory a
GPU moves beside the arithmetic), CPU latency (fp32, bf16).

The single-stage ``cyclegan-256`` is the reference column: every ratio is measured in the same run,
presets interleaved round-robin, so machine noise hits all of them alike.

Targets (reported, not asserted):
  - the default two-stage preset (scan-128-256) costs at most 0.8x cyclegan-256 at the same size;
  - mobile-256 runs at 30+ images/s at 256x256 on a 2-core CPU.

Usage:
    python benchmarks/model_cost.py [--sizes 256 512] [--presets ...] [--repeats 5] [--out FILE]
    python benchmarks/model_cost.py --quick    # seconds; checks the script end to end (64 px, 1 repeat)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import scan
from scan.errors import image_side, int_range

REFERENCE = "cyclegan-256"
DEFAULT_TWO_STAGE = "scan-128-256"


def gflops(generator: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        generator(x)
    return counter.get_total_flops() / 1e9


def activation_traffic_mb(generator: torch.nn.Module, x: torch.Tensor, bytes_per_value: int = 2) -> float:
    """Megabytes an eager forward pass reads and writes as activations (every layer's inputs and output,
    bf16 by default): what bounds a layer that does little arithmetic per value (norms, activations,
    padding, concatenations, thin convolutions), the time a GPU spends beside the big convolutions."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        nonlocal total
        outputs = output if isinstance(output, tuple) else (output,)
        total += sum(t.numel() for t in (*inputs, *outputs) if isinstance(t, torch.Tensor))

    leaves = [m for m in generator.modules() if not any(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        generator(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total * bytes_per_value / 2**20


def latency(generator: torch.nn.Module, x: torch.Tensor, bf16: bool) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        generator(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Typed and bounded: a bad value is argparse's one line, not a traceback from deep inside a run.
    parser.add_argument("--sizes", type=image_side, nargs="+", default=[256, 512])
    parser.add_argument("--presets", nargs="+", choices=scan.list_models(),
                        default=[p for p in scan.list_models() if p != "tiny"])
    parser.add_argument("--repeats", type=int_range(1, 1000), default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "model_cost.json")
    parser.add_argument("--quick", action="store_true", help="64 px and one repeat, to check the script")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = [64], 1
    presets = list(dict.fromkeys([REFERENCE, *args.presets])) if REFERENCE in scan.list_models() else args.presets
    torch.set_grad_enabled(False)
    generators = {name: scan.create_model(name).G_ab.eval() for name in presets}

    rows = []
    for size in args.sizes:
        x = torch.rand(1, 3, size, size) * 2 - 1
        times: dict[tuple[str, bool], list[float]] = {(n, b): [] for n in presets for b in (False, True)}
        for g in generators.values():  # warm-up
            latency(g, x, False), latency(g, x, True)
        for _ in range(args.repeats):  # round-robin: noise hits every preset alike
            for name, g in generators.items():
                for bf16 in (False, True):
                    times[(name, bf16)].append(latency(g, x, bf16))
        batch = torch.rand(8, 3, size, size) * 2 - 1
        for name, g in generators.items():
            fp32 = statistics.median(times[(name, False)])
            bf16 = statistics.median(times[(name, True)])
            throughput = 8 / min(latency(g, batch, False) for _ in range(2)) if "mobile" in name else None
            rows.append(
                {
                    "preset": name,
                    "size": size,
                    "stages": len(g.stages),
                    "params_m": sum(p.numel() for p in g.parameters()) / 1e6,
                    "gflops": gflops(g, x),
                    "activation_traffic_mb": activation_traffic_mb(g, x),
                    "latency_fp32_s": fp32,
                    "latency_bf16_s": bf16,
                    "images_per_s_fp32": 1 / fp32,
                    "images_per_s_fp32_batch8": throughput,
                }
            )
        ref = next(r for r in rows if r["preset"] == presets[0] and r["size"] == size)
        for r in rows:
            if r["size"] == size:
                r["gflops_vs_ref"] = r["gflops"] / ref["gflops"]
                r["traffic_vs_ref"] = r["activation_traffic_mb"] / ref["activation_traffic_mb"]
                r["latency_vs_ref"] = r["latency_fp32_s"] / ref["latency_fp32_s"]

    header = (
        f"{'preset':16} {'size':>5} {'params(M)':>10} {'GFLOPs':>8} {'xREF':>6} {'traffic MB':>10} {'xREF':>6} "
        f"{'fp32 ms':>9} {'bf16 ms':>9} {'xREF':>6} {'img/s':>7}"
    )
    print(f"one direction (G_ab), batch 1, {torch.get_num_threads()} threads; xREF = ratio to {presets[0]}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['preset']:16} {r['size']:>5} {r['params_m']:>10.2f} {r['gflops']:>8.2f} {r['gflops_vs_ref']:>6.2f} "
            f"{r['activation_traffic_mb']:>10.0f} {r['traffic_vs_ref']:>6.2f} "
            f"{1e3 * r['latency_fp32_s']:>9.1f} {1e3 * r['latency_bf16_s']:>9.1f} {r['latency_vs_ref']:>6.2f} "
            f"{r['images_per_s_fp32']:>7.1f}"
        )

    targets = {}
    for r in rows:
        if r["preset"] == DEFAULT_TWO_STAGE:
            targets[f"{DEFAULT_TWO_STAGE}@{r['size']} <= 0.8x {REFERENCE} (GFLOPs)"] = r["gflops_vs_ref"] <= 0.8
            targets[f"{DEFAULT_TWO_STAGE}@{r['size']} <= 0.8x {REFERENCE} (latency)"] = r["latency_vs_ref"] <= 0.8
        if r["preset"] == "mobile-256" and r["size"] == 256:
            targets["mobile-256@256 >= 30 images/s (batch 1)"] = r["images_per_s_fp32"] >= 30
    print()
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, "targets": targets}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
