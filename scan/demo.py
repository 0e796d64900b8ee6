"""``make demo`` (``python -m scan.demo``): the whole system on a fresh machine, offline, in minutes.

1. builds the offline demo set (photos -> cartoons; every held-out photo comes with its true cartoon);
2. trains the ``tiny`` two-stage model, widened to 64 and 128 px, on it with ``train.py`` and
   ``configs/demo.yaml`` (a progress bar; the GPU when there is one);
3. translates scikit-image's astronaut portrait with ``infer.py``: FFHQ alignment, both stages,
   paste-back into the photo with the ``DEMO_MASK`` blend kind (the best of ``benchmarks/seams.py``);
4. draws the held-out photos' translations, stage by stage, next to their true cartoons.

Everything lands in one folder (``--out``, default ``demo_output``)::

    astronaut.png            the input photo
    astronaut_cartoon.png    the result: the translated face pasted back into the photo
    astronaut_stages.png     the aligned crop, every stage's output and the fusion alpha map
    heldout.png              held-out photos: stage 1, stage 2, alpha, true cartoon, with PSNR
    scores.json              held-out PSNR / SSIM against the true cartoons, per stage
    model.pt                 the trained model (infer.py, scan-export, scan.load_model)
    data/                    the demo set
    tensorboard/             the training run (losses, image grids, held-out scores of every stage), checkpoints

``--quick`` (or ``SCAN_DEMO_QUICK=1``) shrinks data and training to seconds; CI runs it that way.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from scan.errors import EXIT_FAILED, add_debug_flag, run_command
from scan.model import SCAN
from scan.outputs import atomic_write, save_image

__all__ = ["main", "heldout_sheet", "QUICK_TRAIN_ARGS", "DEMO_MASK", "DATA_SIZE"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "demo.yaml"

# Quick mode: one short epoch per stage on a handful of images, still through both stages.
# The demo set's stored side: the loader resizes to CycleGAN's 286/256 of the model's 128 px (143) and
# crops 128, so the stored squares must be at least that large or the training crops are upsampled.
DATA_SIZE = 144

# The paste-back of the demo's portrait: the blend kind with the least seam in benchmarks/seams.py on the
# demo model (README, "Paste-back").
DEMO_MASK = "hull-seamless"

QUICK_TRAIN_ARGS = [
    "--model.schedule", '[{"stage": 1, "epochs": 1, "decay_epochs": 0}, {"stage": 2, "epochs": 1, "decay_epochs": 0}]',
    "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1", "--data.num_workers", "0",
]


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which."""


def _relative(path: Path) -> str:
    """``path`` as the user would type it from the current folder."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _announce(step: int, total: int, text: str) -> None:
    print(f"\n[{step}/{total}] {text}", flush=True)


def _run(program: str, main: Callable[[list[str]], int], args: list[str]) -> None:
    """Run a command-line entry point in-process, printing the command a user would type."""
    print(f"$ python {program} {shlex.join(args)}", flush=True)
    saved_argv, sys.argv = sys.argv, [program]  # the entry point sees its own arguments only
    try:
        status = main(args)
    finally:
        sys.argv = saved_argv
    if status != 0:
        raise DemoError(f"`python {program}` failed (exit status {status}); see the message above")


def heldout_sheet(model: SCAN, root: Path, rows: int = 8) -> tuple[Image.Image, dict[str, dict[str, float]]]:
    """Translate the demo set's held-out photos and compare them with their true cartoons.

    Args:
        model: a trained :class:`scan.SCAN` on the demo set.
        root: the demo set (``testA/``, ``testA_target/``).
        rows: photos shown in the sheet (all are scored).

    Returns:
        The sheet (per row: photo, every stage's output with its PSNR, the last alpha map, the true
        cartoon) and ``{"photo" | "stage1" | ...: {"psnr", "ssim"}}`` over every held-out photo; a
        coarse stage is upsampled bilinearly to the top size for scoring.
    """
    from scan.datasets.demo import load_heldout
    from scan.evaluation import EvalFolders, Evaluator
    from scan.metrics import score
    from scan.strips import heatmap, labelled_strip

    report = Evaluator(metrics=("psnr", "ssim")).evaluate(model, EvalFolders.from_root(root, "a2b"))
    # scores.json's names: the untranslated photo, then every stage
    scores = {("photo" if row == "input" else row): values for row, values in report.rows.items()
              if not row.startswith("oracle")}
    size = model.config.top_size
    photos, targets = load_heldout(root, size)
    with torch.inference_mode():
        out = model.eval().translate(photos[:rows])
    sheet_rows = []
    for i in range(min(rows, len(photos))):
        row = [(f"photo {score(photos[i : i + 1], targets[i : i + 1])['psnr']:.1f} dB", photos[i])]
        for k, o in enumerate(out.outputs, start=1):
            row.append((f"stage {k} {score(o[i : i + 1], targets[i : i + 1])['psnr']:.1f} dB", o[i]))
        if out.alphas[-1] is not None:
            row.append((f"alpha {len(out.outputs)}", heatmap(out.alphas[-1][i])))
        row.append(("true cartoon", targets[i]))
        sheet_rows.append(row)
    return labelled_strip(sheet_rows, tile=160), scores


def run_demo(out: Path, config: Path, quick: bool) -> dict[str, dict[str, float]]:
    """The four steps of the demo into ``out``; returns the held-out scores."""
    from skimage import data as skdata

    import scan
    from scan.datasets.demo import build_demo_set
    from scan.infer_cli import main as infer_main
    from scan.training.cli import main as train_main

    total = 4
    _announce(1, total, "building the offline demo set (photos -> cartoons)")
    data = out / "data"
    counts = {"train": 16, "test": 4} if quick else {"train": 300, "test": 16}
    build_demo_set(data, train=counts["train"], test=counts["test"], size=DATA_SIZE)
    print(f"{_relative(data)}: trainA/ and trainB/ ({counts['train']} unpaired images each), testA/ with its "
          f"true cartoons in testA_target/, testB/")

    _announce(2, total, "training the tiny two-stage model (stage 1 at 64 px, then stage 2 at 128 px)")
    logs = out / "tensorboard"
    train_args = ["fit", "--config", _relative(config), "--data.root", _relative(data),
                  "--trainer.logger.init_args.save_dir", _relative(logs)]
    _run("train.py", train_main, train_args + (QUICK_TRAIN_ARGS if quick else []))
    trained = sorted(logs.glob("*/version_*/model.pt"))
    if not trained:
        raise DemoError(f"training finished without writing a model.pt under {_relative(logs)}")
    model_path = out / "model.pt"
    atomic_write(model_path, lambda tmp: shutil.copyfile(trained[-1], tmp))

    _announce(3, total, "translating a portrait: detect, align (FFHQ), translate, paste back")
    photo = out / "astronaut.png"
    save_image(Image.fromarray(skdata.astronaut()), photo)
    result = out / "astronaut_cartoon.png"
    _run("infer.py", infer_main, ["--checkpoint", _relative(model_path), "--input", _relative(photo),
                                  "--output", _relative(result), "--align", "ffhq", "--mask", DEMO_MASK,
                                  "--save-stages", _relative(out)])

    _announce(4, total, "scoring the held-out photos against their true cartoons")
    sheet, scores = heldout_sheet(scan.load_model(model_path), data)
    save_image(sheet, out / "heldout.png")
    atomic_write(out / "scores.json", lambda tmp: tmp.write_text(json.dumps(scores, indent=1)))
    for name, s in scores.items():
        print(f"  {name:7s} PSNR {s['psnr']:5.2f} dB   SSIM {s['ssim']:.3f}")
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scan.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="the output folder (must not exist)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the training config")
    parser.add_argument("--quick", action="store_true", default=os.environ.get("SCAN_DEMO_QUICK", "") not in ("", "0"),
                        help="seconds instead of minutes (also SCAN_DEMO_QUICK=1)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists (an earlier demo?); remove it or choose another folder with --out "
              "(make demo DEMO_OUT=...)", file=sys.stderr)
        return 2
    if not args.config.is_file():
        print(f"error: {args.config}: no such config; run the demo from a clone of the repository (make demo)",
              file=sys.stderr)
        return 2
    began = time.perf_counter()

    def run() -> int:
        try:
            run_demo(args.out, args.config, args.quick)
        except DemoError as e:  # a step failed and said why above: not the user's mistake
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        return 0

    status = run_command(run, args.debug)
    if status:
        return status
    minutes, seconds = divmod(round(time.perf_counter() - began), 60)
    out = _relative(args.out)
    tensorboard = Path(sys.executable).with_name("tensorboard")
    tensorboard_cmd = _relative(tensorboard) if tensorboard.exists() else "tensorboard"
    print(f"\nDone in {minutes}m{seconds:02d}s. In {out}/:")
    print("  astronaut_cartoon.png  the portrait, its face translated and pasted back (astronaut.png: the input)")
    print("  astronaut_stages.png   the aligned crop, stage 1, stage 2 and where the fusion block added detail")
    print("  heldout.png            held-out photos translated, stage by stage, next to their true cartoons")
    print("  model.pt               the trained model, for infer.py and scan-export")
    print(f"To watch the training run:  {tensorboard_cmd} --logdir {out}/tensorboard")
    web = Path(sys.executable).with_name("scan-web")  # the web extra, which make installs
    print(f"To try the model in a web page (http://127.0.0.1:7860):  {_relative(web) if web.exists() else 'scan-web'} "
          f"--checkpoint {out}/model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
