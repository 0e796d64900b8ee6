"""``infer.py`` on a video: decode, translate (:meth:`Translator.video`), encode, copy the audio.

    python infer.py --checkpoint model.pt --input clip.mp4 --output clip_anime.mp4 --save-stages strips/
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm import tqdm

from scan.errors import InputError
from scan.outputs import atomic_write, save_image
from scan.portrait import PortraitOptions
from scan.strips import labelled_strip, sheet_frames, stage_rows
from scan.translator import Translator
from scan.videoio import probe_video, transcode

__all__ = ["translate_video"]


def translate_video(translator: Translator, options: PortraitOptions, args: argparse.Namespace, source: Path,
                    target: Path, sheet: Path | None) -> None:
    """Translate one clip into ``target`` (written atomically: nothing is left of a failed run), and
    a contact sheet of a few frames into ``sheet``.

    Args:
        translator: the model's translator.
        options: the run's portrait options (the video is always aligned and pasted back).
        args: the command's video settings (``detect_every``, ``temporal_smoothing``, ``allow_no_face``).
        source, target: the clip and its translation.
        sheet: where the contact sheet goes, or ``None``.

    Raises:
        InputError: options that do not apply to a video; an unreadable clip, no frames, or no face in
            any frame (unless ``args.allow_no_face``).
    """
    if options.align == "none":
        raise InputError(f"{source}: --align none is for aligned images; a video's faces are aligned per frame")
    if not options.paste:
        raise InputError(f"{source}: --no-paste-back is for images; a video's faces are always pasted back")
    info = probe_video(source)
    picks = sheet_frames(info.frames, fps=float(info.fps))
    rows: list[list[tuple[str, Tensor]]] = []
    frames_with_face = 0

    def process(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal frames_with_face
        results = translator.video(frames, options, fps=float(info.fps), detect_every=args.detect_every,
                                   temporal=args.temporal_smoothing)
        count = 0
        for index, result in enumerate(results):
            count += 1
            if result.faces:
                frames_with_face += 1
                if sheet is not None and index in picks:
                    rows.extend(stage_rows(result, f"frame {index}"))
            yield np.asarray(result.image)
        if not frames_with_face and not args.allow_no_face:
            # Raised inside the writer: the half-written file is deleted, nothing is left.
            raise InputError(f"{source}: no face found in any of its {count} frames (--allow-no-face writes "
                             "it unchanged)")

    with tqdm(total=info.frames or None, desc=source.name, unit="frame", leave=False) as bar:
        atomic_write(target, lambda tmp: transcode(source, tmp, process, on_frame=bar.update))
    if sheet is not None and rows:
        save_image(labelled_strip(rows), sheet)
