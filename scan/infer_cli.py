"""``infer.py``: translate one portrait or a folder of them with a trained model.

    python infer.py --checkpoint model.pt --input me.jpg --output me_anime.png
    python infer.py --checkpoint model.pt --input photos/ --output out/ --faces all --save-stages strips/
    python infer.py --checkpoint model.pt --input clip.mp4 --output clip_anime.mp4 --save-stages strips/
    python infer.py --checkpoint model.pt --input photos/ --output out/ --device cuda --batch-size 32 --compile

One :class:`scan.portrait.PortraitOptions` is made of the options and goes to every step. A folder's
photos go through :meth:`scan.translator.Translator.portraits`: worker threads decode and align them
while the network translates batches of faces; its videos are translated one by one
(:mod:`scan.video_cli`).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from scan.align.landmarks import BACKENDS, FACE_MODES, MAX_DETECT_SIDE, NoFaceError
from scan.align.paste import blend_kinds
from scan.errors import (
    InputError,
    add_debug_flag,
    command_errors,
    each_carrying_on,
    int_range,
    one_line,
    positive_int,
    report_failures,
)
from scan.imageio import IMAGE_EXTENSIONS, find_images, load_image
from scan.model import DIRECTIONS
from scan.outputs import OutputPlan, check_output_folder, output_stems, save_image
from scan.portrait import CROP_TEMPLATES, PortraitOptions, PortraitResult
from scan.runtime import MAX_THREADS, MAX_WORKERS, budget_threads
from scan.strips import stage_strip
from scan.translator import Translator
from scan.video_cli import translate_video
from scan.videoio import VIDEO_EXTENSIONS, VIDEO_OUTPUT_EXTENSIONS, probe_video

__all__ = ["main", "build_parser", "portrait_options", "check_parsing_model"]

# Decoding and aligning threads: a few keep a GPU fed; more than the cores only add contention.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class Job:
    """One input and the files written from it."""

    source: Path
    target: Path
    strip: Path | None

    @property
    def is_video(self) -> bool:
        return _is_video(self.source)


def _is_video(path: Path) -> bool:
    """Whether ``path`` is a clip: by its extension, as the folder search picks the files."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer.py", description="Translate portraits with a trained scan model.")
    p.add_argument("--checkpoint", required=True, type=Path, help="scan model file or training checkpoint (.pt/.ckpt)")
    p.add_argument("--input", required=True, type=Path,
                   help="an image or video, or a folder of them (searched recursively)")
    p.add_argument("--output", required=True, type=Path,
                   help="output image or video (.mp4/.webm) for a single input, or a folder")
    p.add_argument("--direction", choices=DIRECTIONS, default="a2b")
    p.add_argument("--align", choices=CROP_TEMPLATES, default="ffhq",
                   help="crop template; 'none' for images that are already aligned crops")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--faces", choices=FACE_MODES, default="largest")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=True,
                   help="blend the translated face back into the photo (default) or write the crop")
    kinds = blend_kinds()  # read now: kinds registered by the caller's own modules are offered too
    p.add_argument("--mask", choices=kinds, default="square",
                   help="paste-back mask: a registered blend kind (scan.align.register_blend)")
    p.add_argument("--parsing-model", type=Path, default=None, metavar="FILE",
                   help="the face-parsing network (ONNX, BiSeNet's 19 classes) for --mask parsing "
                        "(default: $SCAN_FACE_PARSING_MODEL)")
    p.add_argument("--save-stages", type=Path, default=None, metavar="DIR",
                   help="write one PNG per input: aligned crop, every stage's output and alpha map")
    video = p.add_argument_group("video (see scan/video_cli.py)")
    video.add_argument("--detect-every", type=positive_int, default=10, metavar="N",
                       help="frames between face detections; landmarks are tracked in between")
    video.add_argument("--temporal-smoothing", type=_fraction, default=0.7, metavar="S",
                       help="weight in [0, 1) of the previous frame's translation where the face did not change: "
                            "less flicker, a short lag on slow changes of light (0: off)")
    video.add_argument("--allow-no-face", action="store_true",
                       help="a clip with no face in any frame is written unchanged instead of refused")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    speed = p.add_argument_group("speed (a folder of photos)")
    speed.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                       help="faces translated per network call, gathered across photos (default 1: the least "
                            "memory). On a GPU raise it, e.g. to 16-64; on a CPU it gains little")
    speed.add_argument("--workers", type=int_range(0, MAX_WORKERS), default=DEFAULT_WORKERS, metavar="N",
                       help="threads that decode, align and paste back photos while the network runs (default "
                            f"{DEFAULT_WORKERS}; 0: all in the main thread)")
    speed.add_argument("--threads", type=int_range(1, MAX_THREADS), default=None, metavar="N",
                       help="CPU threads scan keeps busy at once: the network's and the workers' (default: "
                            "the CPUs this process may use); fewer leave room for other work")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the networks before the first image (tens of seconds; pays on a GPU "
                            "for a large folder); where compiling is not available, one error line")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never an input, nor another output of the run)")
    add_debug_flag(p)
    return p


def _fraction(text: str) -> float:
    """An argparse type: a number in ``[0, 1)``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 1)")
    return value


def check_parsing_model(path: Path | None, mask: str) -> None:
    """Use the face-parsing model ``path`` (``--parsing-model``) for the ``parsing`` mask, and, when
    that mask is chosen, check now that one is given (one line, before any photo is read)."""
    from scan.align.parsing import parsing_model_path, use_parsing_model

    if path is not None:
        use_parsing_model(path)
    if mask == "parsing":
        parsing_model_path()


def portrait_options(args: argparse.Namespace) -> PortraitOptions:
    """The command's portrait options, checked once, for every photo, folder and clip of the run."""
    if args.faces == "all" and not args.paste_back and args.align != "none":
        raise InputError("--faces all with --no-paste-back: one output per photo holds one face's crop, and the "
                         "others would be dropped; scan-align cuts every face, or keep the paste-back")
    return PortraitOptions(align=args.align, paste=args.paste_back, faces=args.faces, landmarks=args.landmarks,
                           mask=args.mask)


def _load_photo(source: Path, options: PortraitOptions) -> Image.Image:
    """Decode one input photo (in a worker thread, for a folder), with a note where it is too large to
    search for faces at full size.

    Raises:
        InputError: not a readable image.
    """
    try:
        photo = load_image(source)
    except Exception as e:  # PIL raises many types for a bad file
        raise InputError(f"{source}: not a readable image ({type(e).__name__}: {one_line(e)})") from None
    if options.align != "none" and max(photo.size) > MAX_DETECT_SIDE:
        tqdm.write(f"note: {source} is {photo.width}x{photo.height}; faces are searched on a copy "
                   f"{MAX_DETECT_SIDE} px long and cut from the full photo", file=sys.stderr)
    return photo


def _no_face(source: Path) -> InputError:
    return InputError(f"{source}: no face found (for an aligned crop use --align none)")


def _write_outputs(job: Job, result: PortraitResult) -> None:
    save_image(result.image, job.target)
    if job.strip is not None:
        save_image(stage_strip(result), job.strip)


def _translate_one(translator: Translator, options: PortraitOptions, args: argparse.Namespace, job: Job) -> None:
    if job.is_video:
        translate_video(translator, options, args, job.source, job.target, job.strip)
        return
    photo = _load_photo(job.source, options)
    try:
        result = translator.portrait(photo, options)
    except NoFaceError:
        raise _no_face(job.source) from None
    _write_outputs(job, result)


def _translate_folder(translator: Translator, options: PortraitOptions, args: argparse.Namespace, jobs: list[Job],
                      batch_size: int, workers: int) -> list[str]:
    """Translate a folder's files, carrying on past the ones that fail: the photos in batches
    (:meth:`Translator.portraits`), then the videos one by one, under one progress bar.

    Returns:
        One line per failed file.
    """
    photos = [job for job in jobs if not job.is_video]
    videos = [job for job in jobs if job.is_video]
    results = translator.portraits((functools.partial(_load_photo, job.source, options) for job in photos), options,
                                   batch_size=batch_size, workers=workers, return_exceptions=True)
    done: Iterable[tuple[Job, PortraitResult | Exception | None]] = itertools.chain(
        zip(photos, results), ((job, None) for job in videos)
    )

    def finish(item: tuple[Job, PortraitResult | Exception | None]) -> None:
        job, result = item
        if result is None:  # a video
            _translate_one(translator, options, args, job)
        elif isinstance(result, NoFaceError):
            raise _no_face(job.source) from None
        elif isinstance(result, Exception):
            raise result  # reported (or, with --debug, shown) by each_carrying_on, as for one file
        else:
            _write_outputs(job, result)

    return each_carrying_on(tqdm(done, total=len(jobs), desc="translating", unit="image"), finish,
                            lambda item: item[0].source, args.debug)


def _batch_size(args: argparse.Namespace, options: PortraitOptions, jobs: list[Job]) -> int:
    """``--batch-size``, but no more than the faces a run has where each photo gives one: compiled
    networks pad every batch to the batch size they were compiled for."""
    if options.faces == "largest" or options.align == "none":
        return max(1, min(args.batch_size, sum(not job.is_video for job in jobs)))
    return args.batch_size


def _plan(args: argparse.Namespace, skipped: list[str]) -> list[Job]:
    """Every file the run will write, checked before any is written (``skipped``: a folder's entries
    that cannot be used, each with its reason)."""
    source, output = args.input, args.output
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    plan = OutputPlan(inputs=[args.checkpoint], overwrite=args.overwrite)
    if source.is_dir():
        # A folder may mix photos and clips: each is handled by its kind.
        files = find_images(source, extensions=IMAGE_EXTENSIONS + VIDEO_EXTENSIONS, what="image files or videos",
                            skipped=skipped)
        check_output_folder(output, source)
        stems = output_stems(files, source)
        jobs = [Job(f, output / f"{stems[f]}{'.mp4' if _is_video(f) else '.png'}",
                    args.save_stages / f"{stems[f]}_stages.png" if args.save_stages else None) for f in files]
    elif _is_video(source):
        target = output / f"{source.stem}.mp4" if output.is_dir() else output
        if target.suffix.lower() not in VIDEO_OUTPUT_EXTENSIONS:
            raise InputError(f"--output {target}: a video is written as {' or '.join(VIDEO_OUTPUT_EXTENSIONS)}")
        strip = args.save_stages / f"{source.stem}_stages.png" if args.save_stages else None
        jobs = [Job(source, target, strip)]
        probe_video(source)  # an unreadable clip fails now, before the model is loaded
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
    options = portrait_options(args)
    check_parsing_model(args.parsing_model, options.mask)
    skipped: list[str] = []
    jobs = _plan(args, skipped)
    budget = budget_threads(args.threads, args.workers)
    translator = Translator.from_checkpoint(args.checkpoint, args.direction, args.device, args.precision)
    if options.align != "none":
        translator.landmark_backend(options.landmarks)  # fail now, not once per photo
    batch_size = _batch_size(args, options, jobs)
    if args.compile:
        # Compiled once, here, before the first image: for the photos' batches, and for the single
        # faces of a clip's frames.
        print(f"compiling the networks for batches of {batch_size} (once, before the first image)", flush=True)
        translator.compile(batch_size)
        if any(job.is_video for job in jobs):
            translator.warm_up(1)
    if len(jobs) == 1:
        _translate_one(translator, options, args, jobs[0])
        print(f"wrote {jobs[0].target}")
        return 0
    failures = _translate_folder(translator, options, args, jobs, batch_size, budget.workers)
    written = len(jobs) - len(failures)
    print(f"wrote {written} file(s) to {args.output}")
    if failures or skipped:
        report_failures(skipped + failures, len(jobs) + len(skipped))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with command_errors(args.debug) as status:
        status.code = _run(args)
    return status.code
