"""Few-shot style: a trained model learns a new style from 10-100 images; how well, against starting afresh.

On the offline demo set, where every held-out photo comes with its true answer: the two-stage ``scan``
model of ``quality.py`` (same width and size) is first trained on a base style (``--base cartoon``) for a
fixed CPU budget (or loaded from the results folder, where the first run leaves it), then it learns a
new style (``--style lineart``: a light palette, one-pixel outlines and hatching; or ``reshape``) from
N images of it (``--sizes 10 30 100``; the photos, domain A, stay plentiful). Every row gets the same
training time (``--budget``, each run's CPU time on one thread) and is scored on the new style's
held-out answers after every short epoch (PSNR, SSIM, detail through :mod:`scan.evaluation`):

  from scratch                     fresh weights, the N style images
  fine-tuned                       ``--model.init_from`` the base model, everything trains
  fine-tuned + DiffAugment         the same with ``--model.diff_augment color,translation,cutout`` (the
                                   recipe of ``configs/finetune.yaml``)
  fine-tuned + DiffAugment, no colour   ``--model.diff_augment translation,cutout``: the same without the
                                   colour jitter, which hides a style that is mostly a palette
  fine-tuned, encoders frozen      ``--model.freeze [encoders]``: only the residual bodies, decoders, fusion
                                   blocks and discriminators train
  fine-tuned, stage 1 frozen       ``--model.freeze [stage1]``: stage 2 alone learns the style (its phase
                                   gets the whole budget)
  fine-tuned + DA, encoders frozen both

with reference rows: the untranslated photo, the base model as it is (the old style), a model trained
from scratch on 300 style images for the same time, and the oracles of ``quality.py`` (the answer
through half and a quarter of the resolution). *Variety* tells a collapsed model (every photo
translated alike, as a discriminator that memorised 10 images can drive it) from a working one: the
mean L1 distance between the translations of two different held-out photos, over all pairs, divided
by the same for their true answers (about 1: as varied as the answers; near 0: collapse).

Writes ``few-shot-<style>-<size>.json``, ``.md`` (the table), ``.png`` (quality and variety vs. training
time) and ``-samples.png`` (held-out photos, their answer, and each row's translation at the smallest N)
to ``--out``.

Usage:
    python benchmarks/few_shot.py [--style lineart] [--sizes 10 30 100] [--budget 60] [--seeds 0 1] [--jobs 2]
    python benchmarks/few_shot.py --quick      # well under a minute; checks the script end to end
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import shutil
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

# benchmarks/ is the script's folder, so on sys.path: the training loop, clocks and scoring of quality.py.
from quality import (
    CLOCKS,
    EXACT_MAPPINGS,
    RESULTS,
    Clock,
    QualityTrace,
    Variant,
    _mean_spread,
    _trainer,
    references,
    run_tasks,
    save_sheet,
    seconds_per_step,
    variants,
)

from scan.checkpoint import load_model, save_model
from scan.datasets import UnpairedDataModule
from scan.datasets.demo import MAPPINGS, build_demo_set, load_heldout
from scan.evaluation import PAIRED_METRICS, Evaluator, evaluating
from scan.model import SCAN
from scan.outputs import atomic_write
from scan.training import Phase, SCANModule

POLICY = "color,translation,cutout"


@dataclass(frozen=True)
class Row:
    """One way to learn the new style.

    Attributes:
        name: the row's name in the report.
        init: start from the base model (else from fresh weights).
        diff_augment: DiffAugment policy (None: off).
        freeze: parts kept as the base model had them (``SCANModule``'s ``freeze``).
        split: phases and their budget shares (None: the model's, stage 1 then stage 2).
    """

    name: str
    init: bool
    diff_augment: str | None = None
    freeze: tuple[str, ...] = ()
    split: tuple[tuple[int | str, float], ...] | None = None


ROWS = {row.name: row for row in (
    Row("from scratch", init=False),
    Row("fine-tuned", init=True),
    Row("fine-tuned + DiffAugment", init=True, diff_augment=POLICY),
    # Without its colour jitter: a style that is mostly a palette (lineart's) is what colour jitter hides.
    Row("fine-tuned + DiffAugment, no colour", init=True, diff_augment="translation,cutout"),
    Row("fine-tuned, encoders frozen", init=True, freeze=("encoders",)),
    Row("fine-tuned, stage 1 frozen", init=True, freeze=("stage1",), split=((2, 1.0),)),
    Row("fine-tuned + DA, encoders frozen", init=True, diff_augment=POLICY, freeze=("encoders",)),
)}
QUICK_ROWS = ("from scratch", "fine-tuned", "fine-tuned + DiffAugment", "fine-tuned, encoders frozen")
REFERENCE = "from scratch"  # the reference row trains this way on every style image
QUICK_STEP_S = 0.1  # --quick sizes its schedules from this step time instead of measuring one


def variety(images: torch.Tensor) -> float:
    """Mean L1 distance (per pixel and channel) between two different images of a batch, over all pairs."""
    flat = images.flatten(1).double()
    n = len(flat)
    return float(torch.cdist(flat, flat, p=1).sum() / (n * (n - 1) * flat.shape[1]))


class VarietyTrace(QualityTrace):
    """:class:`quality.QualityTrace`, and the variety of the held-out translations at every point
    (relative to that of the answers at the same resolution; the time it takes counts as evaluation)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, module: SCANModule) -> None:
        super().on_train_epoch_end(trainer, module)
        began = self.clock()
        point = self.trace[-1]
        point["variety"] = relative_variety(module.model, self.photos, self.targets, point["stage"])
        self.eval_s += self.clock() - began


@torch.no_grad()
def translate(model: SCAN, photos: torch.Tensor, stage: int | None = None) -> torch.Tensor:
    """The held-out photos through stages ``1..stage`` (default: all), at that stage's resolution."""
    stage = stage or model.num_stages
    device = next(model.parameters()).device
    with evaluating(model):
        return model.G_ab(model.stage_input(photos.to(device), stage), upto=stage).final.cpu()


def relative_variety(model: SCAN, photos: torch.Tensor, targets: torch.Tensor, stage: int | None = None) -> float:
    stage = stage or model.num_stages
    return variety(translate(model, photos, stage)) / variety(model.stage_input(targets, stage))


def train_run(variant: Variant, data: UnpairedDataModule, photos: torch.Tensor, targets: torch.Tensor,
              budget_s: float, epoch_steps: int, seed: int, clock: Clock, quick: bool) -> tuple[SCANModule, dict]:
    """Train ``variant`` (its ``module`` arguments carry init_from, freeze, diff_augment) for about
    ``budget_s``: each phase its share, as a CycleGAN schedule sized from the phase's measured step time
    (as ``quality.train_with_budget``, which returns no model). ``quick``: a nominal step time instead
    of a measured one, and no stop at 1.1x the budget (every phase is reached on a busy machine too)."""
    if quick:
        per_step = [QUICK_STEP_S] * len(variant.split)
    else:
        per_step = [seconds_per_step(variant, phase, data, clock) for phase, _ in variant.split]
    schedule = []
    for (phase, share), seconds in zip(variant.split, per_step):
        epochs = max(2, round(budget_s * share / seconds / epoch_steps))
        schedule.append(Phase(phase, epochs=math.ceil(epochs / 2), decay_epochs=epochs // 2))
    pl.seed_everything(seed, verbose=False)
    module = SCANModule(variant.preset, variant.overrides, schedule=schedule, image_log_every_n_steps=0,
                        **variant.module)
    trace = VarietyTrace(photos, targets, math.inf if quick else budget_s * 1.1, clock)
    _trainer(module.total_epochs, epoch_steps, [trace]).fit(module, datamodule=data)
    return module, {"seed": seed, "schedule": [vars(p) for p in schedule], "seconds_per_step": per_step,
                    "trace": trace.trace, "final": trace.trace[-1]}


def _quiet(threads: int) -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance.*LeafSpec.*")
    if threads:
        torch.set_num_threads(threads)


def _datamodule(root: Path, size: int, mapping: str) -> UnpairedDataModule:
    exact = mapping in EXACT_MAPPINGS  # stored at the top size, trained without resize-and-crop (quality.py)
    return UnpairedDataModule(root=str(root), size=size, load_size=size if exact else None, batch_size=4,
                              num_workers=0)


def _run(row_name: str, n: int, seed: int, args: argparse.Namespace, pretrained: str) -> dict[str, Any]:
    """One training run, in this process or a worker."""
    _quiet(args.threads)
    row = ROWS[row_name]
    root = args.style_data if n == args.reference else args.style_data.with_name(f"{args.style_data.name}_n{n}")
    photos, targets = load_heldout(args.style_data, args.size)
    base = variants(args.width, args.size)["scan"]
    module_args = {**base.module, "diff_augment": row.diff_augment, "freeze": list(row.freeze),
                   "init_from": pretrained if row.init else None}
    variant = dataclasses.replace(base, module=module_args, split=list(row.split or base.split))
    module, run = train_run(variant, _datamodule(root, args.size, args.style), photos, targets, args.budget,
                            args.epoch_steps, seed, CLOCKS[args.clock], args.quick)
    samples = translate(module.model.cpu(), photos[:args.sample_rows])
    return {"row": row_name, "n": n, **run, "samples": samples}


def pretrain(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None]:
    """The base model: loaded from ``--out`` when an earlier run left it, else trained for
    ``--pretrain-budget`` on the whole base set (and saved there)."""
    path = args.out / (f"few-shot-pretrained-{args.base}-{args.size}-w{args.width}-{args.pretrain_budget:g}s"
                       f"{'-quick' if args.quick else ''}.pt")
    if path.exists():
        load_model(path)  # a model file that fails to load fails here, before any run
        print(f"base model: {path} (delete it to pretrain again)")
        return path, None
    _quiet(args.threads)
    photos, targets = load_heldout(args.base_data, args.size)
    module, run = train_run(variants(args.width, args.size)["scan"], _datamodule(args.base_data, args.size, args.base),
                            photos, targets, args.pretrain_budget, args.epoch_steps, args.seeds[0],
                            CLOCKS[args.clock], args.quick)
    save_model(module.model.cpu(), path)
    f = run["final"]
    print(f"base model ({args.base}) trained for {f['trained_s']:.0f} s: PSNR {f['psnr']:.2f} dB on its own held-out "
          f"answers; saved to {path}")
    return path, run


def make_sets(args: argparse.Namespace, train: int, test: int) -> None:
    """The base and style sets (built once, kept in ``--out``), and one copy of the style set per N
    with only the first N style images in ``trainB/``."""
    for mapping, root in ((args.base, args.base_data), (args.style, args.style_data)):
        if not (root / "trainA").exists():
            stored = args.size if mapping in EXACT_MAPPINGS else args.size + args.size // 8
            build_demo_set(root, train=train, test=test, size=stored, mapping=mapping)
    for n in args.sizes:
        subset = args.style_data.with_name(f"{args.style_data.name}_n{n}")
        if n == args.reference or (subset / "trainB").exists():
            continue
        for folder in ("trainA", "testA", "testA_target", "testB"):
            shutil.copytree(args.style_data / folder, subset / folder, dirs_exist_ok=True)
        (subset / "trainB").mkdir()
        for file in sorted((args.style_data / "trainB").iterdir())[:n]:
            shutil.copy(file, subset / "trainB" / file.name)


def summary(runs: list[dict[str, Any]]) -> dict[str, str]:
    finals = [r["final"] for r in runs]
    return {"psnr": _mean_spread([f["psnr"] for f in finals], 2), "ssim": _mean_spread([f["ssim"] for f in finals], 3),
            "detail": _mean_spread([f["detail"] for f in finals], 2),
            "variety": _mean_spread([f["variety"] for f in finals], 2),
            "trained_s": f"{statistics.mean(f['trained_s'] for f in finals):.0f}",
            "steps": f"{statistics.mean(f['steps'] for f in finals):.0f}",
            "phases": " ".join(f"{p['stage']}:{p['epochs'] + p['decay_epochs']}" for p in runs[0]["schedule"])}


def table(groups: dict[tuple[str, int], list[dict[str, Any]]], refs: dict[str, dict[str, float]],
          meta: dict[str, Any]) -> str:
    lines = [
        f"Demo set: the base model learned `{meta['base']}` for {meta['pretrain_budget_s']:.0f} s, then the new style "
        f"`{meta['style']}` is learned from N of its images, every row for {meta['budget_s']:.0f} s ({meta['clock']} "
        f"clock, {meta['threads']} thread(s) per run), {len(meta['seeds'])} seed(s) each (mean ± half the range), "
        f"width {meta['width']}, top size {meta['size']}, scored on {meta['heldout_images']} held-out photos against "
        "the new style's true answers. Variety: mean L1 distance between the translations of two different photos, "
        "relative to that of their answers (near 0: every photo translated alike, a collapse).",
        "",
        "| N style images | row | PSNR (dB) | SSIM | detail (dB) | variety | phases (epochs) | trained s | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ref in refs.items():
        shown = f"{ref['variety']:.2f}" if "variety" in ref else ""
        lines.append(f"| - | {name} | {ref['psnr']:.2f} | {ref['ssim']:.3f} | {ref['detail']:.2f} | {shown} | | | |")
    for (row, n), runs in groups.items():
        s = summary(runs)
        lines.append(f"| {n} | {row} | {s['psnr']} | {s['ssim']} | {s['detail']} | {s['variety']} | {s['phases']} "
                     f"| {s['trained_s']} | {s['steps']} |")
    return "\n".join(lines) + "\n"


def plot(groups: dict[tuple[str, int], list[dict[str, Any]]], refs: dict[str, dict[str, float]],
         meta: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = meta["sizes"]
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.2 * len(sizes), 7.5), squeeze=False)
    colours = dict(zip(ROWS, plt.get_cmap("tab10").colors))
    for column, n in enumerate(sizes):
        for (row, row_n), runs in groups.items():
            if row_n != n and not (row == REFERENCE and row_n == meta["reference"]):
                continue
            label = f"{row} ({row_n} images)" if row_n != n else row
            style = "--" if row_n != n else "-"
            for i, run in enumerate(runs):
                t = [p["trained_s"] for p in run["trace"]]
                for line, metric in enumerate(("psnr", "variety")):
                    axes[line][column].plot(t, [p[metric] for p in run["trace"]], style, color=colours[row],
                                            alpha=0.85, linewidth=1.3, label=label if i == 0 else None)
        for name, ref in refs.items():
            if name.startswith(("untranslated", "base model")):
                style = ":" if name.startswith("untranslated") else "-."
                axes[0][column].axhline(ref["psnr"], color="black", linestyle=style, linewidth=1, label=name)
        axes[1][column].axhline(1.0, color="black", linestyle=":", linewidth=1, label="as varied as the answers")
        axes[0][column].set_title(f"N = {n} style images")
        for line, unit in enumerate(("held-out PSNR vs. true answer (dB)", "variety (outputs / answers)")):
            axes[line][column].set_xlabel(f"training time on the new style (s, {meta['clock']} clock)")
            axes[line][column].set_ylabel(unit)
            axes[line][column].grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(f"Learning '{meta['style']}' from N images, starting from a '{meta['base']}' model or from scratch "
                 f"({meta['size']} px)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def sample_sheet(photos: torch.Tensor, targets: torch.Tensor, base: torch.Tensor,
                 samples: dict[str, torch.Tensor], path: Path) -> None:
    """One row per held-out photo: the photo, its true answer, the base model's output, each row's."""
    save_sheet([photos, targets, base, *samples.values()], path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=list(MAPPINGS), default="cartoon", help="the style the base model learns")
    parser.add_argument("--style", choices=list(MAPPINGS), default="lineart", help="the new style")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100], help="style images to learn from")
    parser.add_argument("--reference", type=int, default=300, help="style images of the from-scratch reference row")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                        help=f"rows to train (default: all): {'; '.join(ROWS)}")
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per run (every row alike)")
    parser.add_argument("--pretrain-budget", type=float, default=300.0, help="training seconds of the base model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=8, help="ngf/ndf of every network")
    parser.add_argument("--size", type=int, default=64, help="top resolution")
    parser.add_argument("--epoch-steps", type=int, default=25, help="steps per (short) epoch, between scores")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each by default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                        help="what the budget measures: wall-clock, or each run's CPU time")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="toy scale, to check the script end to end")
    args = parser.parse_args()
    if args.base == args.style:
        parser.error("--base and --style must differ: the point is a new style")
    train_count, test_count, args.sample_rows = 300, 64, 6
    if args.quick:  # toy scale: 4 rows, 1 seed, 4 channels, 32 px, 1 s per run
        args.budget, args.pretrain_budget, args.seeds, args.width, args.epoch_steps = 1.0, 1.5, args.seeds[:1], 4, 2
        args.size, args.jobs, args.sizes, args.reference = 32, 1, [8], 16
        args.rows = [r for r in args.rows if r in QUICK_ROWS]
        train_count, test_count, args.sample_rows = 16, 4, 4
    if any(n < 2 for n in args.sizes) or args.reference < max(args.sizes):
        parser.error("--sizes need at least 2 images each, and --reference at least the largest size")
    train_count = max(train_count, args.reference)
    suffix = f"{args.size}" + ("_quick" if args.quick else "")
    args.base_data = args.out / f"few_shot_data_{args.base}_{suffix}"
    args.style_data = args.out / f"few_shot_data_{args.style}_{suffix}"
    make_sets(args, train_count, test_count)
    pretrained, pretrain_run = pretrain(args)
    _quiet(args.threads)

    photos, targets = load_heldout(args.style_data, args.size)
    refs = references(photos, targets, args.size)
    base_model = load_model(pretrained)
    report = Evaluator(PAIRED_METRICS).evaluate_batches(base_model, [(photos, targets)])
    refs = {"untranslated photo": refs["untranslated photo"],
            f"base model as it is ({args.base})": {**report.rows[f"stage{base_model.num_stages}"],
                                                   "variety": relative_variety(base_model, photos, targets)},
            **{name: ref for name, ref in refs.items() if name.startswith("oracle")}}

    tasks = [(row, n, seed) for n in args.sizes for row in args.rows for seed in args.seeds]
    if REFERENCE in args.rows:
        tasks += [(REFERENCE, args.reference, seed) for seed in args.seeds]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {(row, n): [] for row, n, _ in tasks}
    for run in run_tasks(_run, [(*task, args, str(pretrained)) for task in tasks], args.jobs):
        groups[run["row"], run["n"]].append(run)
        f = run["final"]
        print(f"N={run['n']:<4d} {run['row']:34s} seed {run['seed']}: PSNR {f['psnr']:.2f} dB, variety "
              f"{f['variety']:.2f} after {f['trained_s']:.0f} s ({f['steps']} steps)", flush=True)
    for runs in groups.values():
        runs.sort(key=lambda r: r["seed"])

    meta = {"base": args.base, "style": args.style, "sizes": args.sizes, "reference": args.reference,
            "budget_s": args.budget, "pretrain_budget_s": args.pretrain_budget, "clock": args.clock,
            "seeds": args.seeds, "width": args.width, "size": args.size, "heldout_images": len(photos),
            "threads": args.threads or torch.get_num_threads(), "jobs": args.jobs, "diff_augment": POLICY,
            "pretrained": str(pretrained), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine()}
    stem = args.out / f"few-shot-{args.style}-{args.size}"
    shown = photos[:args.sample_rows]
    smallest = {row: group[0]["samples"] for (row, n), group in groups.items() if n == min(args.sizes)}
    sample_sheet(shown, targets[:args.sample_rows], translate(base_model, shown), smallest,
                 stem.with_name(stem.name + "-samples.png"))
    records = [{k: v for k, v in run.items() if k != "samples"} for group in groups.values() for run in group]
    markdown = table(groups, refs, meta)
    print("\n" + markdown)
    atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    plot(groups, refs, meta, stem.with_suffix(".png"))
    data = json.dumps({"meta": meta, "references": refs, "pretraining": pretrain_run, "runs": records}, indent=1)
    atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_text(data))
    print(f"wrote {stem}.md, .png, -samples.png and .json")


if __name__ == "__main__":
    main()
