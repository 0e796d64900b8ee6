"""Throughput where users train: inference and training images/s on a GPU (or any device).

Inference: one direction (``G_ab``) per preset x precision x memory format x eager/compiled x batch,
images/s, peak device memory, achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode) and its
share of the device's dense peak.

Training: our ``SCANModule`` step (Lightning, manual optimisation) against a plain PyTorch loop of the
very same networks (pytorch-CycleGAN-and-pix2pix's ``optimize_parameters`` written out: Adam, LSGAN,
cycle + identity L1, image pools; the frozen stages frozen in both; Adam's fused kernel in both where
the device has it) per phase, batch, precision (and compiled, with ``--train-compile``); images/s
(one A and one B image per sample), the ratio of step times, peak device memory. Ours and the plain
loop alternate, in one process, so the machine's drifts hit both alike.

Targets (issue 12; reported, not asserted):
  - scan-128-256 inference >= 1.2x cyclegan-256's images/s (bf16, batch 64, eager and compiled);
  - cyclegan-256 compiled bf16 inference reaches >= 40% of the device's bf16 peak;
  - our training step <= 1.05x the plain loop's time in every row; bf16 >= fp32 speed in every row.

Usage:
    python benchmarks/gpu_throughput.py                 # the GPU run (the machine's first CUDA device)
    python benchmarks/gpu_throughput.py --quick         # seconds, on any machine: checks the script end to end
    python benchmarks/gpu_throughput.py --presets scan-128-256 --batches 64 --precisions bf16 --no-train

``--quick`` measures the ``tiny`` preset at 64 px, few repeats, compiled rows with the ``aot_eager``
backend (graph capture without code generation) unless ``SCAN_COMPILE_BACKEND`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

import scan
from scan.compiling import COMPILE_BACKEND_ENV, compile_backend, compile_modules
from scan.outputs import atomic_write
from scan.training import Phase, SCANModule

warnings.filterwarnings("ignore")

# Dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, TFLOP/s: (bf16, tf32). fp32 convs
# run on TF32 tensor cores under torch's default (torch.backends.cudnn.allow_tf32).
PEAK_TFLOPS = [
    ("H200", (989.4, 494.7)),
    ("H100 PCIe", (756.0, 378.0)),
    ("H100 NVL", (835.0, 417.5)),
    ("H100", (989.4, 494.7)),
    ("A100", (312.0, 156.0)),
    ("L40S", (362.1, 183.0)),
    ("L4", (121.0, 60.0)),
]


def device_peak_tflops(device: torch.device, override: float | None) -> dict[str, float] | None:
    """The device's dense peak per precision, or ``None`` where it is not known (CPUs, unlisted GPUs)."""
    if override is not None:
        return {"fp32": override, "bf16": override}
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, tf32) in PEAK_TFLOPS:
        if key in name:
            return {"bf16": bf16, "fp32": tf32 if torch.backends.cudnn.allow_tf32 else tf32 / 7.4}
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ------------------------------------------------------------------------------------------ inference
def inference_rows(args: argparse.Namespace, device: torch.device, peak: dict[str, float] | None) -> Iterator[dict]:
    for preset in args.presets:
        flops_per_image = None
        for compiled in args.compile:
            torch.manual_seed(0)
            model = scan.create_model(preset).to(device).eval()
            if flops_per_image is None:
                with FlopCounterMode(display=False) as counter, torch.inference_mode():
                    model.G_ab(torch.zeros(1, 3, args.size, args.size, device=device))
                flops_per_image = counter.get_total_flops()
            if compiled:
                compile_modules(model.G_ab.networks())
            for memory_format in args.formats:
                layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
                model.to(memory_format=layout)  # type: ignore[call-overload]
                for precision in args.precisions:
                    for batch in args.batches:
                        x = (torch.rand(batch, 3, args.size, args.size, device=device) * 2 - 1).contiguous(
                            memory_format=layout)
                        reset_peak_memory(device)
                        with torch.inference_mode(), autocast(device, precision):
                            for _ in range(args.warmup):  # compiles, autotunes, warms the allocator
                                model.G_ab(x)
                            times = []
                            for _ in range(args.repeats):
                                synchronize(device)
                                start = time.perf_counter()
                                for _ in range(args.calls):
                                    model.G_ab(x)
                                synchronize(device)
                                times.append((time.perf_counter() - start) / args.calls)
                        images_s = batch / statistics.median(times)
                        tflops = flops_per_image * images_s / 1e12
                        yield {
                            "preset": preset, "size": args.size, "batch": batch, "precision": precision,
                            "memory_format": memory_format, "compiled": compiled,
                            "images_s": images_s, "gflops_per_image": flops_per_image / 1e9, "tflops": tflops,
                            "peak_fraction": tflops / peak[precision] if peak else None,
                            "peak_memory_gb": peak_memory_gb(device),
                        }
            del model


# ------------------------------------------------------------------------------------------- training
class RandomPairs(Dataset):
    """A few fixed random images, served over and over: the step is timed, not the decoding."""

    def __init__(self, size: int, length: int, distinct: int = 16) -> None:
        self.images = torch.rand(2, distinct, 3, size, size) * 2 - 1
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = i % self.images.shape[1]
        return {"a": self.images[0, k], "b": self.images[1, k]}


def loader(size: int, batch: int, steps: int, device: torch.device) -> DataLoader:
    return DataLoader(RandomPairs(size, batch * steps), batch_size=batch, pin_memory=device.type == "cuda")


class Stopwatch(pl.Callback):
    """Wall time of the batches after ``warmup``, the device synchronised at both ends."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            synchronize(self.device)
            self.end = time.perf_counter()


def ours_step_s(preset: str, phase: Phase, data: DataLoader, device: torch.device, precision: str, warmup: int,
                compiled: bool) -> float:
    """Seconds per step of ``trainer.fit`` on ``SCANModule``, after ``warmup`` steps."""
    torch.manual_seed(0)
    module = SCANModule(preset, schedule=[phase], image_log_every_n_steps=0, compile=compiled)
    watch = Stopwatch(warmup, device)
    trainer = pl.Trainer(
        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator=device.type, devices=1, callbacks=[watch],
        precision="bf16-mixed" if precision == "bf16" else "32-true",
    )
    trainer.fit(module, data)
    return (watch.end - watch.start) / (len(data) - warmup)


def _fused_adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


class PlainLoop:
    """pytorch-CycleGAN-and-pix2pix's ``optimize_parameters``, written out over a SCAN model's networks
    for one phase: the stages the phase trains (all, in a joint phase, each judged at its own size),
    the lower stages frozen and in eval mode as in ``SCANModule``; Adam (fused where the device has
    it), LSGAN, cycle and identity L1, image pools."""

    def __init__(self, model: scan.SCAN, phase: Phase) -> None:
        self.model = model
        top = model.num_stages
        self.stages = list(range(1, top + 1)) if phase.stage == "joint" else [int(phase.stage)]
        gens = [m for s in self.stages for m in model.stage_modules(s)[0]]
        discs = [m for s in self.stages for m in model.stage_modules(s)[1]]
        if phase.stage != "joint":
            for k in range(int(phase.stage) - 1):
                model.G_ab.stages[k].eval(), model.G_ba.stages[k].eval()
                if k:
                    model.G_ab.fusions[k - 1].eval(), model.G_ba.fusions[k - 1].eval()
        model.requires_grad_(False)
        self.g_params = [p for m in gens for p in m.parameters()]
        self.d_params = [p for m in discs for p in m.parameters()]
        self.opt_g, self.opt_d = _fused_adam(self.g_params), _fused_adam(self.d_params)
        self.pools = {(s, d): scan.ImagePool(50) for s in self.stages for d in "ab"}

    def step(self, real_a_top: torch.Tensor, real_b_top: torch.Tensor, device: torch.device, precision: str) -> None:
        """One generator and one discriminator update on a batch at the top stage's size."""
        model, cfg = self.model, self.model.config.loss
        lam, lam_idt = cfg.lambda_cycle, cfg.lambda_identity
        for p in self.g_params:
            p.requires_grad_(True)
        loss_g, fakes = 0.0, {}
        with autocast(device, precision):
            for s in self.stages:
                real_a, real_b = model.stage_input(real_a_top, s), model.stage_input(real_b_top, s)
                fake_b, fake_a = model.G_ab(real_a, upto=s).final, model.G_ba(real_b, upto=s).final
                rec_a, rec_b = model.G_ba(fake_b, upto=s).final, model.G_ab(fake_a, upto=s).final
                idt_b, idt_a = model.G_ab(real_b, upto=s).final, model.G_ba(real_a, upto=s).final
                pred_b, pred_a = model.D_b[s - 1](fake_b), model.D_a[s - 1](fake_a)
                loss_g = loss_g + (
                    F.mse_loss(pred_b, torch.ones_like(pred_b)) + F.mse_loss(pred_a, torch.ones_like(pred_a))
                    + lam * (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b))
                    + lam * lam_idt * (F.l1_loss(idt_a, real_a) + F.l1_loss(idt_b, real_b))
                )
                fakes[s] = (real_a, real_b, fake_a.detach(), fake_b.detach())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        for p in self.g_params:
            p.requires_grad_(False)
        for p in self.d_params:
            p.requires_grad_(True)
        loss_d = 0.0
        with autocast(device, precision):
            for s, (real_a, real_b, fake_a, fake_b) in fakes.items():
                for d, real_x, fake in ((model.D_a[s - 1], real_a, self.pools[s, "a"].query(fake_a)),
                                        (model.D_b[s - 1], real_b, self.pools[s, "b"].query(fake_b))):
                    pr, pf = d(real_x), d(fake)
                    loss_d = loss_d + 0.5 * (F.mse_loss(pr, torch.ones_like(pr)) + F.mse_loss(pf, torch.zeros_like(pf)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        for p in self.d_params:
            p.requires_grad_(False)


def plain_step_s(preset: str, phase: Phase, data: DataLoader, device: torch.device, precision: str, warmup: int,
                 compiled: bool) -> tuple[float, float]:
    """Seconds per step of :class:`PlainLoop` over the same networks, and the FLOPs of one step (forward
    and backward, counted on the first)."""
    torch.manual_seed(0)
    model = scan.create_model(preset).to(device)
    if compiled:
        compile_modules(model.networks())
    loop = PlainLoop(model, phase)
    flops, start = 0.0, 0.0
    for i, batch in enumerate(data):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        real_a, real_b = (batch[d].to(device, non_blocking=True) for d in "ab")
        if i == 0:
            with FlopCounterMode(display=False) as counter:
                loop.step(real_a, real_b, device, precision)
            flops = float(counter.get_total_flops())
        else:
            loop.step(real_a, real_b, device, precision)
    synchronize(device)
    return (time.perf_counter() - start) / (len(data) - warmup), flops


def training_rows(args: argparse.Namespace, device: torch.device, peak: dict[str, float] | None) -> Iterator[dict]:
    for preset in args.train_presets:
        config = scan.create_config(preset)
        phases: list[int | str] = list(range(1, config.num_stages + 1)) + (["joint"] if config.num_stages > 1 else [])
        for stage in phases:
            if str(stage) not in args.phases:
                continue
            phase = Phase(stage, 1, 0)  # type: ignore[arg-type]
            stage_size = args.size // 2 ** (config.num_stages - (config.num_stages if stage == "joint" else stage))
            for compiled in args.train_compile:
                for batch in args.train_batches:
                    for precision in args.precisions:
                        data = loader(args.size, batch, args.train_warmup + args.steps, device)
                        reset_peak_memory(device)
                        ours = ours_step_s(preset, phase, data, device, precision, args.train_warmup, compiled)
                        ours_memory = peak_memory_gb(device)
                        reset_peak_memory(device)
                        plain, flops = plain_step_s(preset, phase, data, device, precision, args.train_warmup,
                                                    compiled)
                        tflops = flops / plain / 1e12
                        yield {
                            "preset": preset, "phase": f"stage {stage}" if stage != "joint" else "joint",
                            "size": args.size, "stage_size": stage_size, "batch": batch, "precision": precision,
                            "compiled": compiled,
                            "ours_images_s": 2 * batch / ours, "plain_images_s": 2 * batch / plain,
                            "ours_vs_plain_time": ours / plain,
                            "tflops_plain": tflops, "peak_fraction_plain": tflops / peak[precision] if peak else None,
                            "ours_peak_memory_gb": ours_memory, "plain_peak_memory_gb": peak_memory_gb(device),
                        }


# ------------------------------------------------------------------------------------ recipe projection
# selfie2anime (U-GAT-IT's data set): 3,400 selfies and 3,400 anime faces; an epoch is 3,400 samples.
RECIPE_SAMPLES_PER_EPOCH = 3400
# Epochs per phase: CycleGAN's 100 + 100 for one stage; configs/selfie2anime.yaml for the stack.
RECIPE_EPOCHS = {"cyclegan-256": {"stage 1": 200}, "scan-128-256": {"stage 1": 200, "stage 2": 100, "joint": 20}}


def projection(training: list[dict]) -> list[dict]:
    """Hours of the selfie2anime recipe per preset, batch, precision and mode, from our measured step
    rates (``None`` where a phase of the recipe was not measured)."""
    rows = []
    keys = {(r["preset"], r["batch"], r["precision"], r["compiled"]) for r in training}
    for preset, batch, precision, compiled in sorted(keys, key=str):
        epochs = RECIPE_EPOCHS.get(preset)
        if epochs is None:
            continue
        rates = {r["phase"]: r["ours_images_s"] / 2 for r in training  # samples/s: one A and one B image each
                 if (r["preset"], r["batch"], r["precision"], r["compiled"]) == (preset, batch, precision, compiled)}
        hours = {phase: n * RECIPE_SAMPLES_PER_EPOCH / rates[phase] / 3600 if phase in rates else None
                 for phase, n in epochs.items()}
        total = None if None in hours.values() else sum(h for h in hours.values() if h is not None)
        rows.append({"preset": preset, "batch": batch, "precision": precision, "compiled": compiled,
                     "hours": hours, "total_hours": total})
    return rows


# --------------------------------------------------------------------------------------------- report
def _fmt(value: Any, spec: str = ".0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "compiled" if value else "eager"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown(meta: dict, inference: list[dict], training: list[dict], recipe: list[dict]) -> str:
    lines = [f"Device: {meta['device_name']} ({meta['device']}), torch {meta['torch']}, compile backend "
             f"{meta['compile_backend']}; peak TFLOP/s: {meta['peak_tflops'] or 'unknown'}.", ""]
    if inference:
        lines += ["| preset | size | batch | precision | memory format | mode | img/s | GFLOPs/img | TFLOP/s | "
                  "of peak | peak mem (GB) |", "|" + "---|" * 11]
        for r in inference:
            lines.append(
                f"| {r['preset']} | {r['size']} | {r['batch']} | {r['precision']} | {r['memory_format']} | "
                f"{_fmt(r['compiled'])} | {_fmt(r['images_s'])} | {_fmt(r['gflops_per_image'], '.1f')} | "
                f"{_fmt(r['tflops'], '.2f')} | {_fmt(r['peak_fraction'], '.1%')} | {_fmt(r['peak_memory_gb'], '.2f')} |"
            )
        lines.append("")
    if training:
        lines += ["| preset | phase | stage size | batch | precision | mode | ours img/s | plain img/s | "
                  "ours / plain time | plain TFLOP/s | of peak | peak mem ours / plain (GB) |", "|" + "---|" * 12]
        for r in training:
            lines.append(
                f"| {r['preset']} | {r['phase']} | {r['stage_size']} | {r['batch']} | {r['precision']} | "
                f"{_fmt(r['compiled'])} | {_fmt(r['ours_images_s'], '.1f')} | {_fmt(r['plain_images_s'], '.1f')} | "
                f"{_fmt(r['ours_vs_plain_time'], '.2f')} | {_fmt(r['tflops_plain'], '.2f')} | "
                f"{_fmt(r['peak_fraction_plain'], '.1%')} | {_fmt(r['ours_peak_memory_gb'], '.2f')} / "
                f"{_fmt(r['plain_peak_memory_gb'], '.2f')} |"
            )
        lines.append("")
    if recipe:
        lines += ["| selfie2anime recipe | batch | precision | mode | hours per phase | total hours |",
                  "|" + "---|" * 6]
        for r in recipe:
            phases = ", ".join(f"{phase} {_fmt(h, '.1f')}" for phase, h in r["hours"].items())
            lines.append(f"| {r['preset']} | {r['batch']} | {r['precision']} | {_fmt(r['compiled'])} | {phases} | "
                         f"{_fmt(r['total_hours'], '.1f')} |")
        lines.append("")
    return "\n".join(lines)


def targets(inference: list[dict], training: list[dict]) -> dict[str, bool | None]:
    """Issue 12's targets, where this run measured what they compare (``None``: not measured)."""
    found: dict[str, bool | None] = {}

    def images_s(preset: str, compiled: bool) -> float | None:
        rows = [r for r in inference if r["preset"] == preset and r["compiled"] == compiled and r["batch"] == 64
                and r["precision"] == "bf16" and r["memory_format"] == "contiguous"]
        return rows[0]["images_s"] if rows else None

    for compiled in (False, True):
        scan_rate, cyclegan_rate = images_s("scan-128-256", compiled), images_s("cyclegan-256", compiled)
        if scan_rate and cyclegan_rate:
            found[f"scan-128-256 >= 1.2x cyclegan-256 img/s ({_fmt(compiled)}, bf16, batch 64): "
                  f"{scan_rate / cyclegan_rate:.2f}x"] = scan_rate / cyclegan_rate >= 1.2
    peak_rows = [r for r in inference if r["preset"] == "cyclegan-256" and r["compiled"] and r["precision"] == "bf16"
                 and r["peak_fraction"] is not None]
    if peak_rows:
        best = max(r["peak_fraction"] for r in peak_rows)
        found[f"cyclegan-256 compiled bf16 >= 40% of peak: {best:.1%}"] = best >= 0.4
    if training:
        worst = max(training, key=lambda r: r["ours_vs_plain_time"])
        found[f"our step <= 1.05x the plain loop in every row: worst {worst['ours_vs_plain_time']:.2f}x "
              f"({worst['preset']} {worst['phase']} batch {worst['batch']} {worst['precision']})"] = (
            worst["ours_vs_plain_time"] <= 1.05)
        pairs = {}
        for r in training:
            pairs.setdefault((r["preset"], r["phase"], r["batch"], r["compiled"]), {})[r["precision"]] = r
        slower = [key for key, p in pairs.items() if {"fp32", "bf16"} <= set(p)
                  and p["bf16"]["ours_images_s"] < p["fp32"]["ours_images_s"]]
        if any({"fp32", "bf16"} <= set(p) for p in pairs.values()):
            found[f"bf16 >= fp32 in every training row: {len(slower)} row(s) slower"] = not slower
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (the first CUDA GPU, else the CPU), cuda:1, cpu")
    parser.add_argument("--presets", nargs="+", default=["cyclegan-256", "scan-128-256", "mobile-256"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64], help="inference batch sizes")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--formats", nargs="+", choices=("contiguous", "channels_last"),
                        default=["contiguous", "channels_last"])
    parser.add_argument("--compile", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"])
    parser.add_argument("--warmup", type=int, default=3, help="inference calls before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference repeats (the median is kept)")
    parser.add_argument("--calls", type=int, default=10, help="inference calls per timed repeat")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--no-inference", action="store_true", help="training only")
    parser.add_argument("--train-presets", nargs="+", default=["cyclegan-256", "scan-128-256"])
    parser.add_argument("--phases", nargs="+", default=["1", "2", "joint"])
    parser.add_argument("--train-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--train-compile", action="store_true", help="also time compiled training (both loops)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--train-warmup", type=int, default=5, help="training steps before timing")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, where it is not listed")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report, a .md table beside it (default: results/gpu_throughput-<device>.json)")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 64 px, few repeats: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.presets, args.train_presets, args.size = ["tiny"], ["tiny"], 64
        args.batches, args.train_batches = [2], [2]
        args.warmup, args.repeats, args.calls, args.steps, args.train_warmup = 1, 2, 1, 2, 1
        args.phases = ["joint"]
        os.environ.setdefault(COMPILE_BACKEND_ENV, "aot_eager")
    if args.quick:
        print("--quick: the tiny preset at 64 px, batch 2, the joint phase (other size, preset, batch and phase "
              "options are not used)", flush=True)
    if min(args.batches + args.train_batches) < 1 or args.steps < 1:
        parser.error("batch sizes and --steps must be at least 1")
    args.compile = [mode == "compiled" for mode in args.compile]
    args.train_compile = [False, True] if args.train_compile else [False]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this torch has no CUDA device")
    out = args.out or Path(__file__).parent / "results" / f"gpu_throughput-{device.type}.json"
    try:  # an unwritable place fails now, not after the run
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {out}: {e.strerror}")
    if not os.access(out.parent, os.W_OK):
        parser.error(f"--out {out}: cannot write to {out.parent}")
    peak = device_peak_tflops(device, args.peak_tflops)
    meta = {
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU",
        "threads": torch.get_num_threads(), "compile_backend": compile_backend(), "peak_tflops": peak,
        "quick": args.quick,
    }
    print(f"{meta['device_name']}: inference of {', '.join(args.presets)} at {args.size} px", flush=True)
    inference = []
    for row in [] if args.no_inference else inference_rows(args, device, peak):
        inference.append(row)
        print(f"  {row['preset']:14} batch {row['batch']:>3} {row['precision']} {row['memory_format']:13} "
              f"{_fmt(row['compiled']):8} {row['images_s']:9.1f} img/s {row['tflops']:7.2f} TFLOP/s", flush=True)
    training = []
    if not args.no_train:
        print(f"training: {', '.join(args.train_presets)}, ours vs plain", flush=True)
        for row in training_rows(args, device, peak):
            training.append(row)
            print(f"  {row['preset']:14} {row['phase']:8} batch {row['batch']:>2} {row['precision']} "
                  f"{_fmt(row['compiled']):8} ours {row['ours_images_s']:7.1f} plain {row['plain_images_s']:7.1f} "
                  f"img/s  x{row['ours_vs_plain_time']:.2f}", flush=True)
    found = targets(inference, training)
    recipe = projection(training)
    table = markdown(meta, inference, training, recipe)
    print("\n" + table)
    for name, met in found.items():
        print(f"target {name}: {'met' if met else 'NOT met'}")
    report = {"meta": meta, "inference": inference, "training": training, "rows": inference + training,
              "recipe_hours": recipe, "targets": found}
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    atomic_write(out.with_suffix(".md"), lambda tmp: tmp.write_text(table))
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
