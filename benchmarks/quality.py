"""What stacking buys, measured: translation quality against the true answer at equal training time.

On the offline demo set (photo -> cartoon; every held-out photo comes with its true cartoon) it
trains, each for the same wall-clock budget and at the same width:

  cyclegan       the single-stage ``cyclegan-256`` recipe (ResNet-9, no input skip) at the top size
  cyclegan+skip  the same generator with scan's input skip (separates the skip's effect from stacking's)
  scan           the two-stage ``scan-128-256`` recipe: ResNet-6 at half size, then a ResNet-3
                 refiner at the top size with the adaptive fusion block (half the budget per stage)
  scan-fixed     ``scan`` with the fusion block replaced by a fixed alpha of 0.5

and scores the held-out translations (PSNR, SSIM against the true cartoons; a stage-1 output is
upsampled bilinearly to the top size) after every short epoch, so quality can be read against
training time. Each model's inference cost at the top size is measured too.

Widths and sizes are scaled down from the presets (``--width``, ``--size``) so the run fits a CPU; the
block counts, input skips and fusion blocks are the presets'. Writes ``quality.json``, ``quality.md``
(the table) and ``quality.png`` (quality vs. training time) to ``--out``.

Usage:
    python benchmarks/quality.py [--budget 120] [--seeds 0 1] [--width 8] [--size 64] [--out DIR]
    python benchmarks/quality.py --quick      # seconds; checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from model_cost import gflops, latency  # benchmarks/ is the script's folder, so on sys.path

from scan.datasets import UnpairedDataModule
from scan.datasets.demo import MAPPINGS, build_demo_set, load_heldout

from scan.metrics import score
from scan.training import Phase, SCANModule

RESULTS = Path(__file__).parent / "results"


def variants(width: int, size: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """``name -> (preset, overrides)``: the presets' structure at ``width`` channels, top size ``size``."""
    disc = {"ndf": width, "n_layers": 2}  # 34 px patches: a 70 px PatchGAN would see all of a 64 px image
    single = {"base_size": size, "stages": [{"generator": {"ngf": width}, "discriminator": disc}]}
    skip = {"base_size": size, "stages": [{"generator": {"ngf": width, "input_skip": True}, "discriminator": disc}]}

    def stacked(fusion: dict[str, Any]) -> dict[str, Any]:
        stage = {"generator": {"ngf": width}, "discriminator": disc}
        return {"base_size": size // 2, "stages": [stage, {**stage, "fusion": fusion}]}

    return {
        "cyclegan": ("cyclegan-256", single),
        "cyclegan+skip": ("cyclegan-256", skip),
        "scan": ("scan-128-256", stacked({"hidden_channels": width})),
        "scan-fixed": ("scan-128-256", stacked({"kind": "fixed", "alpha": 0.5})),
    }


class QualityTrace(pl.Callback):
    """Scores the held-out set after every epoch, stops when the training budget is spent, and keeps
    the time spent evaluating out of the training time."""

    def __init__(self, photos: torch.Tensor, targets: torch.Tensor, budget_s: float) -> None:
        self.photos, self.targets, self.budget_s = photos, targets, budget_s
        self.trace: list[dict[str, float]] = []
        self.start = self.eval_s = 0.0

    @property
    def trained_s(self) -> float:
        return time.perf_counter() - self.start - self.eval_s

    def on_train_start(self, trainer: pl.Trainer, module: SCANModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: SCANModule, *args: Any) -> None:
        if self.trained_s >= self.budget_s:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SCANModule) -> None:
        began = time.perf_counter()
        index, _ = module.phase_at(trainer.current_epoch)
        stage = module.trained_stage(module.phases[index])
        with torch.no_grad():
            x = module.model.stage_input(self.photos.to(module.device), stage)
            out = module.model.translate(x, "a2b", upto=stage).final.cpu()
        point = {"trained_s": self.trained_s, "epoch": trainer.current_epoch, "stage": stage, "steps": trainer.global_step // 2}
        self.trace.append({**point, **score(out, self.targets)})
        self.eval_s += time.perf_counter() - began


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.durations: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.began = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.durations.append(time.perf_counter() - self.began)


def _trainer(max_epochs: int, limit_batches: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, limit_train_batches=limit_batches, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks,
    )


def seconds_per_step(preset: str, overrides: dict[str, Any], stage: int, data: UnpairedDataModule) -> float:
    """The median time of one training step (generator + discriminator) of ``stage``, after warm-up."""
    timer = StepTimer()
    module = SCANModule(preset, overrides, schedule=[Phase(stage, epochs=1, decay_epochs=0)], image_log_every_n_steps=0)
    _trainer(1, 6, [timer]).fit(module, datamodule=data)
    return statistics.median(timer.durations[2:])


def train_with_budget(
    preset: str, overrides: dict[str, Any], data: UnpairedDataModule, photos: torch.Tensor, targets: torch.Tensor,
    budget_s: float, epoch_steps: int, seed: int, hard_cap: bool = True,
) -> dict[str, Any]:
    """Train ``preset`` + ``overrides`` for about ``budget_s`` seconds: every stage gets an equal share,
    as a CycleGAN schedule (half constant, half linear decay) sized from the measured step time.
    ``hard_cap`` stops the run at 1.1x the budget should the step time drift (off in ``--quick``
    mode, whose few steps must reach every stage even on a busy machine)."""
    num_stages = len(overrides["stages"])
    per_step = [seconds_per_step(preset, overrides, k, data) for k in range(1, num_stages + 1)]
    schedule = []
    for k, seconds in enumerate(per_step, start=1):
        epochs = max(2, round(budget_s / num_stages / seconds / epoch_steps))
        schedule.append(Phase(k, epochs=math.ceil(epochs / 2), decay_epochs=epochs // 2))
    pl.seed_everything(seed, verbose=False)
    module = SCANModule(preset, overrides, schedule=schedule, image_log_every_n_steps=0)
    trace = QualityTrace(photos, targets, budget_s * 1.1 if hard_cap else math.inf)
    _trainer(module.total_epochs, epoch_steps, [trace]).fit(module, datamodule=data)
    generator = module.model.G_ab.eval().cpu()
    x = torch.rand(1, 3, module.top_size, module.top_size) * 2 - 1
    with torch.no_grad():
        for _ in range(3):
            latency(generator, x, bf16=False)
        ms = statistics.median(latency(generator, x, bf16=False) for _ in range(20)) * 1e3
        cost = gflops(generator, x)
    return {
        "seed": seed, "schedule": [vars(p) for p in schedule], "seconds_per_step": per_step, "trace": trace.trace,
        "final": trace.trace[-1], "gflops": cost, "latency_ms": ms,
        "params_m": sum(p.numel() for p in generator.parameters()) / 1e6,
    }


def _mean_spread(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def table(results: dict[str, list[dict[str, Any]]], identity: dict[str, float], args: argparse.Namespace) -> str:
    lines = [
        f"Demo set, {len(args.seeds)} seed(s) each, {args.budget:.0f} s training per run, width {args.width}, "
        f"top size {args.size}; mean ± half the range over seeds.",
        "",
        "| model | stages | PSNR (dB) | SSIM | best PSNR in run | stage-1 PSNR | trained s | steps | params (M) "
        f"| GFLOPs @{args.size} | ms/image @{args.size} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| untranslated photo | - | {identity['psnr']:.2f} | {identity['ssim']:.3f} | | | | | | | |",
    ]
    for name, runs in results.items():
        finals = [r["final"] for r in runs]
        stage1 = [max((p for p in r["trace"] if p["stage"] == 1), key=lambda p: p["trained_s"])["psnr"] for r in runs]
        lines.append(
            f"| {name} | {len(runs[0]['seconds_per_step'])} | {_mean_spread([f['psnr'] for f in finals], 2)} "
            f"| {_mean_spread([f['ssim'] for f in finals], 3)} "
            f"| {_mean_spread([max(p['psnr'] for p in r['trace']) for r in runs], 2)} "
            f"| {_mean_spread(stage1, 2) if len(runs[0]['seconds_per_step']) > 1 else '-'} "
            f"| {statistics.mean(f['trained_s'] for f in finals):.0f} | {statistics.mean(f['steps'] for f in finals):.0f} "
            f"| {runs[0]['params_m']:.3f} | {runs[0]['gflops']:.3f} | {statistics.mean(r['latency_ms'] for r in runs):.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], identity: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (name, runs), colour in zip(results.items(), ("tab:gray", "tab:blue", "tab:red", "tab:orange")):
        for i, run in enumerate(runs):
            t = [p["trained_s"] for p in run["trace"]]
            for ax, metric in zip(axes, ("psnr", "ssim")):
                ax.plot(t, [p[metric] for p in run["trace"]], color=colour, alpha=0.85, linewidth=1.4,
                        label=name if i == 0 else None)
                stage1 = [(p["trained_s"], p[metric]) for p in run["trace"] if p["stage"] == 1]
                if len(run["seconds_per_step"]) > 1 and stage1:  # mark the stacked model's stage-1 part
                    ax.plot(*zip(*stage1), linestyle="none", marker="o", markersize=3, color=colour)
    for ax, metric, unit in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        ax.axhline(identity[metric], color="black", linestyle="--", linewidth=1, label="untranslated photo")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel(f"held-out {unit} vs. true cartoon")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Quality vs. training time on the demo set (dots: the stacked models' stage 1, upsampled)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=8, help="ngf/ndf of every network")
    parser.add_argument("--size", type=int, default=64, help="top resolution")
    parser.add_argument("--epoch-steps", type=int, default=25, help="steps per (short) epoch, between scores")
    parser.add_argument("--variants", nargs="+", default=None, help="a subset of the models (default: all)")
    parser.add_argument("--mapping", choices=list(MAPPINGS), default="cartoon",
                        help="the demo set's domain B: cartoon (local) or reshape (a global change of shape too)")
    parser.add_argument("--data", type=Path, default=None,
                        help="demo set (built if missing; default: results/quality_data_<mapping>)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a few seconds per run, to check the script")
    args = parser.parse_args()
    train_count, test_count = 300, 64
    if args.quick:
        args.budget, args.seeds, args.width, args.epoch_steps = 1.5, args.seeds[:1], 4, 2
        train_count, test_count = 16, 4
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # one line per run is enough
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
    args.data = args.data or RESULTS / f"quality_data_{args.mapping}"
    if not (args.data / "trainA").exists():
        build_demo_set(args.data, train=train_count, test=test_count, size=args.size + args.size // 8,
                       mapping=args.mapping)
    photos, targets = load_heldout(args.data, args.size)
    identity = score(photos, targets)
    data = UnpairedDataModule(root=str(args.data), size=args.size, batch_size=4, num_workers=0)

    models = variants(args.width, args.size)
    chosen = args.variants or list(models)
    unknown = set(chosen) - set(models)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; valid: {', '.join(models)}")
    results: dict[str, list[dict[str, Any]]] = {}
    for name in chosen:
        preset, overrides = models[name]
        for seed in args.seeds:
            run = train_with_budget(preset, overrides, data, photos, targets, args.budget, args.epoch_steps, seed,
                                    hard_cap=not args.quick)
            results.setdefault(name, []).append(run)
            f = run["final"]
            print(f"{name:14s} seed {seed}: PSNR {f['psnr']:.2f} dB, SSIM {f['ssim']:.3f} after "
                  f"{f['trained_s']:.0f} s ({f['steps']} steps)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    markdown = table(results, identity, args)
    print("\n" + markdown)
    (args.out / "quality.md").write_text(markdown)
    plot(results, identity, args.out / "quality.png")
    meta = {"mapping": args.mapping, "budget_s": args.budget, "seeds": args.seeds, "width": args.width, "size": args.size,
            "heldout_images": len(photos), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    (args.out / "quality.json").write_text(json.dumps({"meta": meta, "identity": identity, "results": results}, indent=1))
    print(f"wrote {args.out / 'quality.md'}, {args.out / 'quality.png'} and {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
