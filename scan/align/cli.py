"""``scan-align`` (or ``python -m scan.align``): align a folder of raw photos into a training folder.

    scan-align raw_selfies/ selfie2anime/trainA --size 256 --template ffhq

Every face is cut on the template and written as PNG; photos with no face and unreadable files
are reported at the end. The input folder is never written to.

Crop names: ``<photo>.png`` with ``--faces largest`` (one crop per photo), ``<photo>_<i>.png`` for
every face with ``--faces all`` (even a photo's only face), so that no two photos' crops can share a
name (``a.jpg``'s second face and ``a_1.jpg``'s face would otherwise both be ``a_1.png``). Each crop
records the photo and face it was cut from (a PNG text chunk): a rerun keeps an existing crop only
when that record names the same photo and face, and reports one that does not.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

from PIL import Image, PngImagePlugin
from tqdm import tqdm

from scan.align.crop import TEMPLATES, align_faces
from scan.align.landmarks import BACKENDS, FACE_MODES, get_backend
from scan.errors import (
    InputError,
    add_debug_flag,
    each_carrying_on,
    image_side,
    one_line,
    report_failures,
    run_command,
)
from scan.imageio import find_images, load_image, model_to_pil, pil_to_model
from scan.outputs import OutputPlan, check_output_folder, output_stems, save_image

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scan-align", description="Align faces of raw photos into a training folder.")
    p.add_argument("input", type=Path, help="folder of photos (searched recursively)")
    p.add_argument("output", type=Path, help="folder for the aligned crops (must not be the input)")
    p.add_argument("--size", type=image_side, default=256, help="crop side in pixels (8..8192)")
    p.add_argument("--template", choices=TEMPLATES, default="ffhq")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the template's side")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--faces", choices=FACE_MODES, default="largest")
    p.add_argument("--min-score", type=float, default=None, help="detection threshold (default: the backend's)")
    p.add_argument("--overwrite", action="store_true", help="replace crops that already exist in the output")
    add_debug_flag(p)
    return p


# The PNG text chunk naming what a crop was cut from: "<photo relative to the input folder>#<face>".
SOURCE_KEY = "scan-align-source"


def crop_name(stem: Path, face: int, faces: str) -> Path:
    """A crop's name in the output folder, without the folder: one per photo under ``largest``, and
    always numbered under ``all``, which makes names unique (a number never holds an ``_``)."""
    return Path(f"{stem}.png" if faces == "largest" else f"{stem}_{face}.png")


def cut_from(crop: Path) -> str | None:
    """The ``<photo>#<face>`` an earlier run recorded in ``crop``, or None (no record, not a PNG)."""
    try:
        with Image.open(crop) as image:
            return image.info.get(SOURCE_KEY)
    except Exception:  # unreadable, not an image: no record either
        return None


def _align_one(path: Path, stem: Path, args: argparse.Namespace, backend, plan: OutputPlan, counts: Counter) -> None:
    """Align one photo's faces, counting crops ``written`` and ``kept`` (existing)."""
    try:
        photo = pil_to_model(load_image(path))
    except Exception as e:  # PIL raises many types for a bad file
        raise InputError(f"{path}: unreadable ({type(e).__name__}: {one_line(e)})") from None
    faces = align_faces(photo, args.size, args.template, args.scale, backend, args.faces, args.min_score)
    if not faces:
        raise InputError(f"{path}: no face found")
    relative = path.relative_to(args.input).as_posix()
    todo = []
    for i, face in enumerate(faces):  # every name checked before any crop of the photo is written
        target, source = args.output / crop_name(stem, i, args.faces), f"{relative}#{i}"
        # (a pipe or device by that name is not opened, which could block: claim() refuses it)
        if target.is_file() and not args.overwrite and target not in plan:
            recorded = cut_from(target)
            if recorded == source:
                counts["kept"] += 1  # aligned by an earlier run: a rerun only adds the new photos
                continue
            was = f"it was cut from {recorded}" if recorded else "it has no record of its photo (not scan-align's)"
            raise InputError(f"{path} (face {i}): {target} exists but {was}; pass --overwrite to replace it, or "
                             "choose an empty folder")
        todo.append((plan.claim(target, source), source, face))
    for target, source, face in todo:
        record = PngImagePlugin.PngInfo()
        record.add_text(SOURCE_KEY, source)
        save_image(model_to_pil(face.crop), target, pnginfo=record)
        counts["written"] += 1


def _run(args: argparse.Namespace) -> int:
    if not math.isfinite(args.scale) or args.scale <= 0:
        raise InputError(f"--scale {args.scale}: must be a positive number")
    check_output_folder(args.output, args.input)
    skipped: list[str] = []
    files = find_images(args.input, skipped=skipped)
    backend = get_backend(args.landmarks)
    # Existing crops are kept (not an error): a rerun over a grown folder aligns only the new photos.
    plan = OutputPlan(inputs=files, overwrite=True)
    stems = output_stems(files, args.input)
    counts: Counter = Counter()
    problems = each_carrying_on(tqdm(files, desc="aligning", unit="photo"),
                                lambda path: _align_one(path, stems[path], args, backend, plan, counts),
                                lambda path: path, args.debug)
    kept = f", kept {counts['kept']} existing" if counts["kept"] else ""
    print(f"wrote {counts['written']} aligned face(s) to {args.output}{kept}")
    if problems or skipped:
        report_failures(skipped + problems, len(files) + len(skipped), "photo(s)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _run(args), args.debug)
