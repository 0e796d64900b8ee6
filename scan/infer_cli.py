"""``infer.py``: translate one portrait or a folder of them with a trained model.

    python infer.py --checkpoint model.pt --input me.jpg --output me_anime.png
    python infer.py --checkpoint model.pt --input photos/ --output out/ --faces all --save-stages strips/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from scan.align import AlignmentError, NoFaceError
from scan.align.crop import TEMPLATES
from scan.align.landmarks import BACKENDS
from scan.checkpoint import CheckpointError
from scan.datasets.images import IMAGE_EXTENSIONS, find_images, load_image
from scan.imageops import heatmap, labelled_strip
from scan.translator import PortraitResult, Translator

__all__ = ["main", "build_parser", "stage_strip"]


class InputError(ValueError):
    """A problem with one input or output path; reported in one line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer.py", description="Translate portraits with a trained scan model.")
    p.add_argument("--checkpoint", required=True, type=Path, help="scan model file or training checkpoint (.pt/.ckpt)")
    p.add_argument("--input", required=True, type=Path, help="an image, or a folder of images (searched recursively)")
    p.add_argument("--output", required=True, type=Path, help="output image (single input) or folder")
    p.add_argument("--direction", choices=("a2b", "b2a"), default="a2b")
    p.add_argument("--align", choices=(*TEMPLATES, "none"), default="ffhq",
                   help="crop template; 'none' for images that are already aligned crops")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--faces", choices=("largest", "all"), default="largest")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="blend the translated face back into the photo (default) or write the crop")
    p.add_argument("--mask", choices=("square", "hull"), default="square", help="paste-back mask")
    p.add_argument("--save-stages", type=Path, default=None, metavar="DIR",
                   help="write one PNG per input: aligned crop, every stage's output and alpha map")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
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


def _translate_one(translator: Translator, args: argparse.Namespace, source: Path, target: Path, strip: Path | None):
    try:
        photo = load_image(source)
    except Exception as e:
        raise InputError(f"{source}: not a readable image ({type(e).__name__}: {e})") from None
    if args.align == "none":
        result = translator.aligned(photo)
    else:
        try:
            result = translator.portrait(
                photo, align=args.align, paste=args.paste_back, faces=args.faces, landmarks=args.landmarks,
                mask=args.mask,
            )
        except NoFaceError:
            raise InputError(f"{source}: no face found (for an aligned crop use --align none)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(target)
    if strip is not None:
        strip.parent.mkdir(parents=True, exist_ok=True)
        stage_strip(result).save(strip)


def _check_output(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source, output = args.input, args.output
        if not source.exists():
            raise InputError(f"{source}: no such file or folder")
        if output.resolve() == source.resolve():
            raise InputError(f"--output {output} is the input; choose another path")
        if source.is_dir():
            files = find_images(source)
            if output.exists() and not output.is_dir():
                raise InputError(f"--output {output} is a file; a folder input needs an output folder")
            if output.resolve().is_relative_to(source.resolve()):
                raise InputError(f"--output {output} is inside the input folder; choose another folder")
            jobs = [(f, output / f.relative_to(source).with_suffix(".png")) for f in files]
        else:
            target = output / f"{source.stem}.png" if output.is_dir() else output
            if target.suffix.lower() not in IMAGE_EXTENSIONS:
                raise InputError(f"--output {target}: unknown image extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
            jobs = [(source, target)]
        for _, target in jobs:
            _check_output(target, args.overwrite)
        translator = Translator.from_checkpoint(args.checkpoint, args.direction, args.device, args.precision)
        if args.align != "none":
            translator.landmark_backend(args.landmarks)  # fail now, not once per photo
    except (InputError, CheckpointError, AlignmentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    failures: list[str] = []
    for path, target in tqdm(jobs, desc="translating", unit="image", disable=len(jobs) == 1):
        strip = args.save_stages / f"{path.stem}_stages.png" if args.save_stages else None
        try:
            _translate_one(translator, args, path, target, strip)
        except (InputError, AlignmentError) as e:
            if len(jobs) == 1:
                print(f"error: {e}", file=sys.stderr)
                return 2
            failures.append(str(e))
    if failures:
        print(f"{len(failures)} of {len(jobs)} input(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"wrote {len(jobs)} image(s) to {output if source.is_dir() else jobs[0][1]}")
    return 0
