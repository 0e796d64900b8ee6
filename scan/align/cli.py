"""``scan-align`` (or ``python -m scan.align``): align a folder of raw photos into a training folder.

    scan-align raw_selfies/ selfie2anime/trainA --size 256 --template ffhq

Every face is cut on the template and written as PNG; photos with no face and unreadable files
are reported at the end. The input folder is never written to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from scan.align.align import align_faces
from scan.align.crop import TEMPLATES
from scan.align.landmarks import BACKENDS, AlignmentError, get_backend
from scan.datasets.images import NoImagesError, find_images, load_image
from scan.imageops import model_to_pil, pil_to_model

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scan-align", description="Align faces of raw photos into a training folder.")
    p.add_argument("input", type=Path, help="folder of photos (searched recursively)")
    p.add_argument("output", type=Path, help="folder for the aligned crops (must not be the input)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--template", choices=TEMPLATES, default="ffhq")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the template's side")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--faces", choices=("largest", "all"), default="largest")
    p.add_argument("--min-score", type=float, default=None, help="detection threshold (default: the backend's)")
    p.add_argument("--overwrite", action="store_true", help="replace crops that already exist in the output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.output.resolve() == args.input.resolve() or args.output.resolve().is_relative_to(args.input.resolve()):
            raise NoImagesError(f"output {args.output} is the input folder or inside it; choose another folder")
        files = find_images(args.input)
        backend = get_backend(args.landmarks)
    except (NoImagesError, AlignmentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    problems: list[str] = []
    written = skipped = 0
    for path in tqdm(files, desc="aligning", unit="photo"):
        try:
            photo = pil_to_model(load_image(path))
        except Exception as e:
            problems.append(f"{path}: unreadable ({type(e).__name__}: {e})")
            continue
        faces = align_faces(photo, args.size, args.template, args.scale, backend, args.faces, args.min_score)
        if not faces:
            problems.append(f"{path}: no face found")
            continue
        stem = args.output / path.relative_to(args.input).parent / path.stem
        for i, face in enumerate(faces):
            target = stem.with_name(f"{stem.name}.png" if len(faces) == 1 else f"{stem.name}_{i}.png")
            if target.exists() and not args.overwrite:
                skipped += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            model_to_pil(face.crop).save(target)
            written += 1
    print(f"wrote {written} aligned face(s) to {args.output}" + (f", kept {skipped} existing" if skipped else ""))
    if problems:
        print(f"{len(problems)} of {len(files)} photo(s) gave no crop:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
    return 0
