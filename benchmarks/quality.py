"""What stacking buys, measured: translation quality against the true answer at equal training time.

On the offline demo set (photo -> domain B, where every held-out photo comes with its true answer;
``--mapping cartoon`` is a local change of palette and outlines, ``--mapping reshape`` the same after
a global change of shape, ``--mapping lineart`` one-pixel outlines and hatching that only the top
resolution holds) it trains, each for the same time budget and at the same width:

  cyclegan       the single-stage ``cyclegan-256`` recipe (ResNet-9, no input skip) at the top size
  cyclegan+skip  the same generator with scan's input skip (separates the skip's effect from stacking's)
  scan           the two-stage ``scan-128-256`` recipe: ResNet-6 at half size, then a residual
                 ResNet-3 refiner of half the width at the top size with the adaptive fusion block;
                 70% of the budget on stage 1
  scan+joint     ``scan`` with a joint phase: 60% stage 1, 20% stage 2, 20% both stages at once
  scan-fixed     ``scan`` with the fusion block replaced by a fixed alpha of 0.5

and scores the held-out translations through :mod:`scan.evaluation` (PSNR, SSIM and the detail score,
PSNR of the high-frequency band; every stage, lower ones upsampled bilinearly to the top size) after
every short epoch, so quality can be read against training time. Beside the models, the report has
reference rows: the untranslated photo, and the *oracles*, the true answer itself through half and a
quarter of the top resolution, the best a stage of that size could score: a run whose models sit far
below the half-resolution oracle measures learning speed, not what resolution buys. Each model's
inference cost at the top size is measured too. ``--variants`` also takes models with design knobs
turned (``KNOBS``), e.g. ``'scan[split=0.5/0.5,alpha0=0.5]'``: the design search of the README.

Widths and sizes are scaled down from the presets (``--width``, ``--size``) so the run fits a CPU; the
block counts, input skips and fusion blocks are the presets'. By default each run has one thread and
a budget of its own CPU time (``--clock cpu``: other work on the machine barely changes a result),
and two runs go at a time (``--jobs``). Writes ``quality-<mapping>-<size>.json``, ``.md``
(the table), ``.png`` (quality vs. training time) and ``-samples.png`` (three held-out photos, their
answers, and every model's stages, coarse to fine, first seed) to ``--out``.

Usage:
    python benchmarks/quality.py [--mapping reshape] [--size 128] [--budget 120] [--seeds 0 1] [--jobs 2] [--out DIR]
    python benchmarks/quality.py --quick      # seconds; checks the script end to end
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import multiprocessing
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
import torch
from model_cost import gflops, latency  # benchmarks/ is the script's folder, so on sys.path

import scan
from scan.datasets import UnpairedDataModule
from scan.datasets.demo import MAPPINGS, build_demo_set, load_heldout
from scan.evaluation import PAIRED_METRICS, Evaluator
from scan.imageops import make_grid
from scan.metrics import through_resolution, to_size
from scan.outputs import atomic_write
from scan.stages import init_weights
from scan.training import Phase, SCANModule

RESULTS = Path(__file__).parent / "results"
SAMPLE_ROWS = 3  # held-out photos in the samples picture
# Mappings whose answer holds one-pixel detail: their sets are stored at the top size and trained without
# the resize-and-crop augmentation (only flips), so no resampling blurs the answer a network must learn.
EXACT_MAPPINGS = ("lineart", "reshape-lineart")
Clock = Callable[[], float]
T = TypeVar("T")
CLOCKS: dict[str, Clock] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Variant:
    """One model of the comparison: a preset's structure, and how the training budget is spent.

    Attributes:
        preset: the preset whose structure (block counts, skips, fusion) the model keeps.
        overrides: config fields replaced (width, sizes, fusion, discriminators).
        split: the schedule's phases in order, each with its share of the budget: a stage number or
            ``"joint"`` (every stage at once, the lower ones at ``joint_lr_scale``).
        module: further :class:`SCANModule` arguments (``joint_lr_scale``, ``stage_weights``).
        stage1_epochs: stage 1's epochs, fixed instead of sized from the budget: models that differ
            above stage 1 then share the very same stage 1 (same seed, same schedule), and their
            difference is what the stages above make of it.
    """

    preset: str
    overrides: dict[str, Any]
    split: list[tuple[int | str, float]]
    module: dict[str, Any] = field(default_factory=dict)
    stage1_epochs: int | None = None

    @property
    def num_stages(self) -> int:
        return len(self.overrides["stages"])


def variants(width: int, size: int) -> dict[str, Variant]:
    """The reported models: the presets' structure at ``width`` channels and top size ``size``."""
    disc = {"ndf": width, "n_layers": 2}  # 34 px patches: a 70 px PatchGAN would see all of a 64 px image
    single = {"base_size": size, "stages": [{"generator": {"ngf": width}, "discriminator": disc}]}
    skip = {"base_size": size, "stages": [{"generator": {"ngf": width, "input_skip": True}, "discriminator": disc}]}

    def stacked(fusion: dict[str, Any]) -> dict[str, Any]:
        # Each stage as wide, relative to stage 1, as in the preset (scan-128-256's refiner: half).
        preset = scan.create_config("scan-128-256").stages
        ngf = [max(1, width * s.generator.ngf // preset[0].generator.ngf) for s in preset]
        return {"base_size": size // 2, "stages": [{"generator": {"ngf": ngf[0]}, "discriminator": disc},
                                                   {"generator": {"ngf": ngf[1]}, "discriminator": disc,
                                                    "fusion": fusion}]}

    # The split the design search settled on (README, "What stacking buys"): stage 1 learns the most
    # per second, and a joint phase cost more than it gave at these budgets.
    split, with_joint = [(1, 0.7), (2, 0.3)], [(1, 0.6), (2, 0.2), ("joint", 0.2)]
    return {
        "cyclegan": Variant("cyclegan-256", single, [(1, 1.0)]),
        "cyclegan+skip": Variant("cyclegan-256", skip, [(1, 1.0)]),
        "scan": Variant("scan-128-256", stacked({"hidden_channels": width}), split),
        "scan+joint": Variant("scan-128-256", stacked({"hidden_channels": width}), with_joint),
        "scan-fixed": Variant("scan-128-256", stacked({"kind": "fixed", "alpha": 0.5}), split),
    }


# The knobs of the design search: ``scan[split=0.6/0.2/0.2,alpha0=0.5]`` is ``scan`` with its budget
# split 60/20/20 over stage 1, stage 2 and a joint phase, and a fusion block starting at alpha 0.5.
KNOBS = {
    "split": "the budget's shares, one per stage in order, plus one for a joint phase (e.g. 0.6/0.4, 0.4/0.4/0.2)",
    "alpha0": "the adaptive fusion block's initial alpha",
    "alpha": "a fixed fusion alpha (replaces the adaptive block)",
    "hidden": "the adaptive fusion block's hidden channels",
    "blocksK": "residual blocks of stage K's generator",
    "ngfK": "width of stage K's generator",
    "kK": "kernel size of the first and last convolution of stage K's generator (outer_kernel)",
    "fscale": "the adaptive fusion block's scale: its alpha map computed at 1/scale of the resolution",
    "dK": "layers of stage K's discriminators (2: 34 px patches, 3: 70 px)",
    "ndfK": "width of stage K's discriminators",
    "jlr": "joint_lr_scale: the lower stages' learning-rate factor in the joint phase",
    "weights": "stage_weights of the joint phase (e.g. 1/1)",
    "residual": "1: the refiner outputs the stage below's image plus a correction whose gain starts at 0",
    "rzero": "what starts at zero in the residual refiner: gain (a scalar gain) or head (its last convolution)",
    "cycle": "refiner_cycle: where a refiner's cycle loss is measured, full (its own resolution) or coarse (the "
             "stage below's)",
    "coarse": "lambda_coarse: how strongly a refining stage keeps the stage below's result at its resolution",
    "epochs1": "stage 1's epochs, fixed (not sized from the budget), its networks initialised from the seed alone: "
               "models that differ above stage 1 then train the very same stage 1",
}


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split("/")]


def parse_variant(spec: str, width: int, size: int) -> Variant:
    """A reported model by name, or one with knobs turned: ``name[knob=value,...]`` (see ``KNOBS``)."""
    base = variants(width, size)
    name, _, knobs = spec.partition("[")
    if name not in base or (knobs and not knobs.endswith("]")):
        raise ValueError(f"unknown variant {spec!r}; valid: {', '.join(base)}, each optionally with "
                         f"[knob=value,...], knobs: {', '.join(KNOBS)}")
    variant = copy.deepcopy(base[name])
    for item in filter(None, knobs[:-1].split(",")):
        try:
            _turn_knob(spec, variant, item)
        except ValueError as error:
            message = str(error) if str(error).startswith(spec) else f"{spec}: {item!r}: {error}"
            raise ValueError(message) from None
    try:  # a knob value the model refuses (fscale=3, k2=4) is reported now, not by a worker mid-run
        scan.create_config(variant.preset, **variant.overrides)
    except ValueError as error:
        raise ValueError(f"{spec}: {error}") from None
    return variant


def _turn_knob(spec: str, variant: Variant, item: str) -> None:
    """Apply one ``knob=value`` of ``spec`` to ``variant`` in place."""
    stages = variant.overrides["stages"]
    key, _, value = item.partition("=")
    match = re.fullmatch(r"(blocks|ngf|k|d|ndf)(\d)", key)
    if key == "split":
        shares = _floats(value)
        if len(shares) not in (variant.num_stages, variant.num_stages + 1):
            raise ValueError(f"{spec}: split needs {variant.num_stages} shares, or one more for a joint phase")
        phases: list[int | str] = [*range(1, variant.num_stages + 1), "joint"]
        variant.split = list(zip(phases, shares))
    elif key in ("alpha0", "hidden", "alpha", "fscale") and variant.num_stages > 1:
        fusion = stages[-1]["fusion"]
        if key == "alpha":
            stages[-1]["fusion"] = {"kind": "fixed", "alpha": float(value)}
        else:
            fusion[{"alpha0": "initial_alpha", "hidden": "hidden_channels", "fscale": "scale"}[key]] = (
                float(value) if key == "alpha0" else int(value))
    elif match and 1 <= int(match.group(2)) <= variant.num_stages:
        field_name, stage = match.group(1), stages[int(match.group(2)) - 1]
        part = "generator" if field_name in ("blocks", "ngf", "k") else "discriminator"
        stage[part] = {**stage.get(part, {}),
                       {"blocks": "n_blocks", "d": "n_layers", "k": "outer_kernel"}.get(field_name, field_name):
                       int(value)}
    elif key == "residual" and variant.num_stages > 1:
        stages[-1]["generator"] = {**stages[-1]["generator"], "residual": bool(int(value))}
    elif key == "rzero" and variant.num_stages > 1:
        stages[-1]["generator"] = {**stages[-1]["generator"], "residual_zero": value}
    elif key == "cycle":
        variant.overrides["loss"] = {**variant.overrides.get("loss", {}), "refiner_cycle": value}
    elif key == "coarse":
        variant.overrides["loss"] = {**variant.overrides.get("loss", {}), "lambda_coarse": float(value)}
    elif key == "epochs1":
        variant.stage1_epochs = int(value)
        if variant.stage1_epochs < 1:
            raise ValueError("epochs1 needs at least 1 epoch")
    elif key == "jlr":
        variant.module["joint_lr_scale"] = float(value)
    elif key == "weights":
        variant.module["stage_weights"] = _floats(value)
    else:
        raise ValueError(f"{spec}: unknown knob {key!r} for this model; knobs: {', '.join(KNOBS)}")


class QualityTrace(pl.Callback):
    """Scores the held-out set after every epoch through :mod:`scan.evaluation` (every stage trained so
    far, each upsampled to the top size), stops when the training budget is spent, and keeps the time
    spent evaluating out of the training time."""

    def __init__(self, photos: torch.Tensor, targets: torch.Tensor, budget_s: float, clock: Clock) -> None:
        self.photos, self.targets, self.budget_s, self.clock = photos, targets, budget_s, clock
        self.trace: list[dict[str, Any]] = []
        self.start = self.eval_s = 0.0

    @property
    def trained_s(self) -> float:
        return self.clock() - self.start - self.eval_s

    def on_train_start(self, trainer: pl.Trainer, module: SCANModule) -> None:
        self.start = self.clock()
        self.evaluator = Evaluator(PAIRED_METRICS, batch_size=len(self.photos), device=module.device)

    def on_train_batch_end(self, trainer: pl.Trainer, module: SCANModule, *args: Any) -> None:
        if self.trained_s >= self.budget_s:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SCANModule) -> None:
        began = self.clock()
        index, _ = module.phase_at(trainer.current_epoch)
        phase = module.phases[index]
        stage = module.trained_stage(phase)
        report = self.evaluator.evaluate_batches(module.model, [(self.photos, self.targets)], upto=stage)
        stages = [report.rows[f"stage{k}"] for k in range(1, stage + 1)]
        point = {"trained_s": self.trained_s, "epoch": trainer.current_epoch, "phase": str(phase.stage),
                 "stage": stage, "steps": trainer.global_step // 2}
        self.trace.append({**point, **stages[-1], **{f"stage_{m}": [s[m] for s in stages] for m in PAIRED_METRICS}})
        self.eval_s += self.clock() - began


class StepTimer(pl.Callback):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.durations: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.began = self.clock()

    def on_train_batch_end(self, *args: Any) -> None:
        self.durations.append(self.clock() - self.began)


def _trainer(max_epochs: int, limit_batches: int, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, limit_train_batches=limit_batches, limit_val_batches=0, num_sanity_val_steps=0,
        accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks,
    )


def seconds_per_step(variant: Variant, phase: int | str, data: UnpairedDataModule, clock: Clock) -> float:
    """The median time of one training step (generator + discriminator) of ``phase``, after warm-up."""
    timer = StepTimer(clock)
    module = SCANModule(variant.preset, variant.overrides, schedule=[Phase(phase, epochs=1, decay_epochs=0)],
                        image_log_every_n_steps=0, **variant.module)
    _trainer(1, 6, [timer]).fit(module, datamodule=data)
    return statistics.median(timer.durations[2:])


def train_with_budget(
    variant: Variant, data: UnpairedDataModule, photos: torch.Tensor, targets: torch.Tensor,
    budget_s: float, epoch_steps: int, seed: int, clock: Clock = time.perf_counter, hard_cap: bool = True,
) -> dict[str, Any]:
    """Train ``variant`` for about ``budget_s`` seconds, each phase for its share of the budget, as a
    CycleGAN schedule (half constant, half linear decay) sized from the phase's measured step time.
    ``hard_cap`` stops the run at 1.1x the budget should the step time drift (off in ``--quick``
    mode, whose few steps must reach every phase even on a busy machine). ``clock`` measures the budget:
    wall-clock, or the process's CPU time (which other work on the machine does not eat into)."""
    per_step = [seconds_per_step(variant, phase, data, clock) for phase, _ in variant.split]
    schedule = []
    for (phase, share), seconds in zip(variant.split, per_step):
        if share <= 0:
            continue
        epochs = max(2, round(budget_s * share / seconds / epoch_steps))
        if phase == 1 and variant.stage1_epochs is not None:
            epochs = variant.stage1_epochs
        schedule.append(Phase(phase, epochs=math.ceil(epochs / 2), decay_epochs=epochs // 2))
    pl.seed_everything(seed, verbose=False)
    module = SCANModule(variant.preset, variant.overrides, schedule=schedule, image_log_every_n_steps=0,
                        **variant.module)
    if variant.stage1_epochs is not None:
        # Paired: stage 1's networks drawn from a seed of their own (the stages above draw more or fewer
        # random numbers), and training starts from one random state, so models that differ above
        # stage 1 train the very same stage 1.
        torch.manual_seed(seed)
        model = module.model
        for network in (model.G_ab.stages[0], model.G_ba.stages[0], model.D_a[0], model.D_b[0]):
            init_weights(network)
        pl.seed_everything(seed, verbose=False)
    trace = QualityTrace(photos, targets, budget_s * 1.1 if hard_cap else math.inf, clock)
    _trainer(module.total_epochs, epoch_steps, [trace]).fit(module, datamodule=data)
    generator = module.model.G_ab.eval().cpu()
    with torch.no_grad():  # what each stage draws, for the samples picture (not stored in the JSON)
        stack = generator(photos[:SAMPLE_ROWS], upto=trace.trace[-1]["stage"])
        samples = torch.stack([to_size(out, photos.shape[-2:]) for out in stack.outputs])
    x = torch.rand(1, 3, module.top_size, module.top_size) * 2 - 1
    with torch.no_grad():
        for _ in range(3):
            latency(generator, x, bf16=False)
        ms = statistics.median(latency(generator, x, bf16=False) for _ in range(20)) * 1e3
        cost = gflops(generator, x)
    return {
        "seed": seed, "stages": variant.num_stages, "schedule": [vars(p) for p in schedule],
        "seconds_per_step": per_step, "trace": trace.trace, "final": trace.trace[-1], "gflops": cost,
        "latency_ms": ms, "params_m": sum(p.numel() for p in generator.parameters()) / 1e6, "samples": samples,
    }


def run_tasks(work: Callable[..., T], tasks: list[tuple[Any, ...]], jobs: int) -> Iterator[T]:
    """``work(*task)`` for every task, in this process or in ``jobs`` worker processes (spawned fresh:
    no forked torch thread pools), yielding each result as it finishes."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=spawn) if jobs > 1 else nullcontext() as pool:
        if pool is None:
            yield from (work(*task) for task in tasks)
        else:
            yield from (f.result() for f in as_completed([pool.submit(work, *task) for task in tasks]))


def _run(spec: str, seed: int, args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """One training run, in this process or a worker (which sets its own thread count)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)  # one line per run is enough
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    photos, targets = load_heldout(args.data, args.size)
    exact = args.mapping in EXACT_MAPPINGS
    data = UnpairedDataModule(root=str(args.data), size=args.size, load_size=args.size if exact else None,
                              batch_size=4, num_workers=0)
    variant = parse_variant(spec, args.width, args.size)
    run = train_with_budget(variant, data, photos, targets, args.budget, args.epoch_steps, seed,
                            clock=CLOCKS[args.clock], hard_cap=not args.quick)
    return spec, run


def _mean_spread(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def _split_text(run: dict[str, Any]) -> str:
    """The schedule's phases and their epochs, e.g. ``1:12 2:8 joint:4``."""
    return " ".join(f"{p['stage']}:{p['epochs'] + p['decay_epochs']}" for p in run["schedule"])


def references(photos: torch.Tensor, targets: torch.Tensor, size: int) -> dict[str, dict[str, float]]:
    """The rows every model is read against: the untranslated photo, and the *oracles*: the true answer
    itself passed through half and a quarter of the top resolution (down, then up, as a stage at that
    size is scored). A model that scores far below the half-resolution oracle is limited by learning,
    not by resolution, and the comparison cannot show what a full-resolution stage adds."""
    evaluator = Evaluator(PAIRED_METRICS)
    rows = {"untranslated photo": evaluator.score_pairs(photos, targets)}
    for factor in (2, 4):
        rows[f"oracle: answer through {size // factor} px"] = evaluator.score_pairs(
            through_resolution(targets, factor), targets)
    return rows


def table(results: dict[str, list[dict[str, Any]]], refs: dict[str, dict[str, float]], meta: dict[str, Any]) -> str:
    lines = [
        f"Demo set, mapping `{meta['mapping']}`, {len(meta['seeds'])} seed(s) each, {meta['budget_s']:.0f} s "
        f"({meta['clock']} clock) training per run ({meta['threads']} thread(s) per run, {meta['jobs']} run(s) at "
        f"a time), width {meta['width']}, top size {meta['size']}; mean ± half the range over seeds. Stage 1 is "
        "scored upsampled to the top size; detail is the PSNR of the high-frequency band (image minus its "
        "1 px Gaussian blur). The oracle rows are the true answer itself through a lower resolution: the best "
        "a stage of that size could score.",
        "",
        "| model | stages | phases (epochs) | PSNR (dB) | SSIM | detail (dB) | stage-1 PSNR | stage 2 - stage 1 (dB) "
        f"| stage 2 - stage 1 detail (dB) | trained s | steps | params (M) | GFLOPs @{meta['size']} "
        f"| ms/image @{meta['size']} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ref in refs.items():
        lines.append(f"| {name} | - | - | {ref['psnr']:.2f} | {ref['ssim']:.3f} | {ref['detail']:.2f} "
                     "| | | | | | | | |")
    for name, runs in results.items():
        finals = [r["final"] for r in runs]
        stacked = runs[0]["stages"] > 1
        stage1 = [f["stage_psnr"][0] for f in finals]
        gain = [f["stage_psnr"][-1] - f["stage_psnr"][0] for f in finals]
        detail_gain = [f["stage_detail"][-1] - f["stage_detail"][0] for f in finals]
        lines.append(
            f"| {name} | {runs[0]['stages']} | {_split_text(runs[0])} | {_mean_spread([f['psnr'] for f in finals], 2)} "
            f"| {_mean_spread([f['ssim'] for f in finals], 3)} | {_mean_spread([f['detail'] for f in finals], 2)} "
            f"| {_mean_spread(stage1, 2) if stacked else '-'} | {_mean_spread(gain, 2) if stacked else '-'} "
            f"| {_mean_spread(detail_gain, 2) if stacked else '-'} "
            f"| {statistics.mean(f['trained_s'] for f in finals):.0f} "
            f"| {statistics.mean(f['steps'] for f in finals):.0f} | {runs[0]['params_m']:.3f} "
            f"| {runs[0]['gflops']:.3f} | {statistics.mean(r['latency_ms'] for r in runs):.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict[str, Any]]], refs: dict[str, dict[str, float]], meta: dict[str, Any],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("detail", "detail: high-band PSNR (dB)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(16, 4.4))
    colours = plt.get_cmap("tab10").colors
    for (name, runs), colour in zip(results.items(), colours):
        for i, run in enumerate(runs):
            t = [p["trained_s"] for p in run["trace"]]
            for ax, (metric, _) in zip(axes, metrics):
                ax.plot(t, [p[metric] for p in run["trace"]], color=colour, alpha=0.85, linewidth=1.4,
                        label=name if i == 0 else None)
                stage1 = [(p["trained_s"], p[metric]) for p in run["trace"] if p["stage"] == 1]
                if run["stages"] > 1 and stage1:  # mark the stacked model's stage-1 part
                    ax.plot(*zip(*stage1), linestyle="none", marker="o", markersize=3, color=colour)
    styles = ["--", ":", "-."]
    for ax, (metric, unit) in zip(axes, metrics):
        for (name, ref), style in zip(refs.items(), styles):
            ax.axhline(ref[metric], color="black", linestyle=style, linewidth=1, label=name)
        ax.set_xlabel(f"training time (s, {meta['clock']} clock)")
        ax.set_ylabel(f"held-out {unit} vs. true answer")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Quality vs. training time, mapping '{meta['mapping']}' at {meta['size']} px "
                 "(dots: the stacked models' stage 1, upsampled; black lines: the photo and the oracles)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def save_sheet(columns: list[torch.Tensor], path: Path) -> None:
    """A picture of images in ``[-1, 1]``: one row per index, one column per batch (shown at 2x)."""
    from PIL import Image

    count = min(len(c) for c in columns)
    grid = make_grid([[c[i].float() for c in columns] for i in range(count)])
    array = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    picture = picture.resize((picture.width * 2, picture.height * 2), Image.Resampling.NEAREST)
    atomic_write(path, lambda tmp: picture.save(tmp, format="png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=8, help="ngf/ndf of every network")
    parser.add_argument("--size", type=int, default=128, help="top resolution")
    parser.add_argument("--epoch-steps", type=int, default=25, help="steps per (short) epoch, between scores")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="models to train (default: the reported five); a design-search model is a name with "
                             f"knobs, e.g. 'scan[split=0.6/0.2/0.2,alpha0=0.5]'; knobs: {', '.join(KNOBS)}")
    parser.add_argument("--mapping", choices=list(MAPPINGS), default="cartoon",
                        help="the demo set's domain B: cartoon (local), reshape (a global change of shape too), "
                             "lineart (one-pixel outlines and hatching: detail only the top resolution holds), "
                             "reshape-lineart")
    parser.add_argument("--data", type=Path, default=None,
                        help="demo set (built if missing; default: results/quality_data_<mapping>_<size>)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs at a time (with one thread each, 2 jobs do ~1.5-2x the work of one on 2 cores)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                        help="what the budget measures: wall-clock, or each run's CPU time (use with --threads 1; "
                             "other work on the machine then barely changes the result)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a few seconds per run, to check the script")
    args = parser.parse_args()
    train_count, test_count = 300, 64
    if args.quick:  # toy scale: one seed, 4 channels, at most 64 px, 0.75 s per run
        args.budget, args.seeds, args.width, args.epoch_steps = 0.75, args.seeds[:1], 4, 2
        args.size, args.jobs = min(args.size, 64), 1
        train_count, test_count = 16, 4
    chosen = args.variants or list(variants(args.width, args.size))
    for spec in chosen:
        try:
            parse_variant(spec, args.width, args.size)
        except ValueError as error:
            parser.error(str(error))
    args.data = args.data or RESULTS / f"quality_data_{args.mapping}_{args.size}"
    if not (args.data / "trainA").exists():
        stored = args.size if args.mapping in EXACT_MAPPINGS else args.size + args.size // 8
        build_demo_set(args.data, train=train_count, test=test_count, size=stored, mapping=args.mapping)
    photos, targets = load_heldout(args.data, args.size)
    refs = references(photos, targets, args.size)

    results: dict[str, list[dict[str, Any]]] = {spec: [] for spec in chosen}
    for spec, run in run_tasks(_run, [(spec, seed, args) for spec in chosen for seed in args.seeds], args.jobs):
        results[spec].append(run)
        f = run["final"]
        print(f"{spec:14s} seed {run['seed']}: PSNR {f['psnr']:.2f} dB, SSIM {f['ssim']:.3f} after "
              f"{f['trained_s']:.0f} s ({f['steps']} steps)", flush=True)
    for runs in results.values():
        runs.sort(key=lambda r: r["seed"])

    meta = {"mapping": args.mapping, "budget_s": args.budget, "clock": args.clock, "seeds": args.seeds,
            "width": args.width, "size": args.size, "heldout_images": len(photos), "jobs": args.jobs,
            "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "device": "cuda" if torch.cuda.is_available() else "cpu"}
    stem = args.out / f"quality-{args.mapping}-{args.size}"
    # Columns: the photo, its answer, then every model's stages (first seed), coarse to fine.
    drawn = [stage for runs in results.values() for stage in runs[0].pop("samples")]
    for runs in results.values():
        for run in runs:
            run.pop("samples", None)
    save_sheet([photos[:SAMPLE_ROWS], targets[:SAMPLE_ROWS], *drawn], stem.with_name(stem.name + "-samples.png"))
    markdown = table(results, refs, meta)
    print("\n" + markdown)
    atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    plot(results, refs, meta, stem.with_suffix(".png"))
    report = json.dumps({"meta": meta, "references": refs, "results": results}, indent=1)
    atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_text(report))
    print(f"wrote {stem}.md, .png, -samples.png and .json")


if __name__ == "__main__":
    main()
