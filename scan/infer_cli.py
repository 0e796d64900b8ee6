"""``infer.py``: translate one portrait or a folder of them with a trained model.

    python infer.py --checkpoint model.pt --input me.jpg --output me_anime.png
    python infer.py --checkpoint model.pt --input photos/ --output out/ --faces all --save-stages strips/
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from scan.align import MASKS, MAX_DETECT_SIDE, NoFaceError
from scan.align.crop import TEMPLATES
from scan.align.landmarks import BACKENDS, FACE_MODES
from scan.datasets.images import IMAGE_EXTENSIONS, find_images, load_image
from scan.errors import InputError, add_debug_flag, each_carrying_on, one_line, report_failures, run_command
from scan.imageops import heatmap, labelled_strip
from scan.model import DIRECTIONS
from scan.outputs import OutputPlan, check_output_folder, output_stems, save_image
from scan.translator import PortraitResult, Translator

__all__ = ["main", "build_parser", "stage_strip"]


@dataclass
class Job:
    """One input and the files written from it."""

    source: Path
    target: Path
    strip: Path | None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer.py", description="Translate portraits with a trained scan model.")
    p.add_argument("--checkpoint", required=True, type=Path, help="scan model file or training checkpoint (.pt/.ckpt)")
    p.add_argument("--input", required=True, type=Path, help="an image, or a folder of images (searched recursively)")
    p.add_argument("--output", required=True, type=Path, help="output image (single input) or folder")
    p.add_argument("--direction", choices=DIRECTIONS, default="a2b")
    p.add_argument("--align", choices=(*TEMPLATES, "none"), default="ffhq",
                   help="crop template; 'none' for images that are already aligned crops")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--faces", choices=FACE_MODES, default="largest")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="blend the translated face back into the photo (default) or write the crop")
    p.add_argument("--mask", choices=MASKS, default="square", help="paste-back mask")
    p.add_argument("--save-stages", type=Path, default=None, metavar="DIR",
                   help="write one PNG per input: aligned crop, every stage's output and alpha map")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never an input, nor another output of the run)")
    add_debug_flag(p)
    return p


def stage_strip(result: PortraitResult) -> Image.Image:
    """Per face: the aligned crop, each stage's output, each stage's alpha map, labelled."""
    rows = []
    for face in result.faces:
        row = [("input crop", face.crop)]
        row += [(f"stage {k}", out) for k, out in enumerate(face.stages, start=1)]
        row += [(f"alpha {k}", heatmap(a)) for k, a in enumerate(face.alphas, start=1) if a is not None]
        rows.append(row)
    return labelled_strip(rows)


def _translate_one(translator: Translator, args: argparse.Namespace, job: Job) -> None:
    try:
        photo = load_image(job.source)
    except Exception as e:  # PIL raises many types for a bad file
        raise InputError(f"{job.source}: not a readable image ({type(e).__name__}: {one_line(e)})") from None
    if args.align == "none":
        result = translator.aligned(photo)
    else:
        if max(photo.size) > MAX_DETECT_SIDE:
            tqdm.write(f"note: {job.source} is {photo.width}x{photo.height}; faces are searched on a copy "
                       f"{MAX_DETECT_SIDE} px long and cut from the full photo", file=sys.stderr)
        try:
            result = translator.portrait(
                photo, align=args.align, paste=args.paste_back, faces=args.faces, landmarks=args.landmarks,
                mask=args.mask,
            )
        except NoFaceError:
            raise InputError(f"{job.source}: no face found (for an aligned crop use --align none)") from None
    save_image(result.image, job.target)
    if job.strip is not None:
        save_image(stage_strip(result), job.strip)


def _plan(args: argparse.Namespace) -> list[Job]:
    """Every file the run will write, checked before any is written."""
    source, output = args.input, args.output
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    plan = OutputPlan(inputs=[args.checkpoint], overwrite=args.overwrite)
    if source.is_dir():
        files = find_images(source)
        check_output_folder(output, source)
        stems = output_stems(files, source)
        jobs = [Job(f, output / f"{stems[f]}.png",
                    args.save_stages / f"{stems[f]}_stages.png" if args.save_stages else None) for f in files]
    else:
        target = output / f"{source.stem}.png" if output.is_dir() else output
        if target.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(f"--output {target}: unknown image extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
        strip = args.save_stages / f"{source.stem}_stages.png" if args.save_stages else None
        jobs = [Job(source, target, strip)]
    for job in jobs:
        plan.protect(job.source)
    for job in jobs:
        plan.claim(job.target, job.source)
        if job.strip is not None:
            plan.claim(job.strip, job.source)
    return jobs


def _run(args: argparse.Namespace) -> int:
    jobs = _plan(args)
    translator = Translator.from_checkpoint(args.checkpoint, args.direction, args.device, args.precision)
    if args.align != "none":
        translator.landmark_backend(args.landmarks)  # fail now, not once per photo
    if len(jobs) == 1:
        _translate_one(translator, args, jobs[0])
        print(f"wrote {jobs[0].target}")
        return 0
    failures = each_carrying_on(tqdm(jobs, desc="translating", unit="image"),
                                lambda job: _translate_one(translator, args, job), lambda job: job.source, args.debug)
    written = len(jobs) - len(failures)
    print(f"wrote {written} image(s) to {args.output}")
    if failures:
        report_failures(failures, len(jobs))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args), args.debug)
