"""``infer.py`` on a video: decode, translate (:meth:`Translator.video`), encode, copy the audio.

    python infer.py --checkpoint model.pt --input clip.mp4 --output clip_anime.mp4 --save-stages strips/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from scan.errors import InputError
from scan.imageops import labelled_strip
from scan.infer_cli import stage_rows
from scan.outputs import atomic_write, save_image
from scan.translator import Translator
from scan.video import probe_video, transcode

__all__ = ["translate_video", "sheet_frames"]

SHEET_FRAMES = 4


def sheet_frames(count: int, picks: int = SHEET_FRAMES, fps: float = 25.0) -> set[int]:
    """The frames a contact sheet shows: ``picks`` spread evenly over ``count`` frames (when the
    count is unknown, 0: one a second from the start)."""
    if count <= 0:
        return {round(k * fps) for k in range(picks)}
    return {int(i) for i in np.linspace(0, count - 1, min(picks, count)).round()}


def translate_video(translator: Translator, args: argparse.Namespace, source: Path, target: Path,
                    sheet: Path | None) -> None:
    """Translate one clip into ``target`` (written atomically: nothing is left of a failed run), and
    a contact sheet of a few frames into ``sheet``.

    Raises:
        InputError: options that do not apply to a video; an unreadable clip, no frames, or no face in
            any frame (unless ``args.allow_no_face``).
    """
    if args.align == "none":
        raise InputError(f"{source}: --align none is for aligned images; a video's faces are aligned per frame")
    if not args.paste_back:
        raise InputError(f"{source}: --no-paste-back is for images; a video's faces are always pasted back")
    info = probe_video(source)
    picks = sheet_frames(info.frames, fps=float(info.fps))
    rows: list = []
    frames_with_face = 0

    def process(frames):
        nonlocal frames_with_face
        results = translator.video(frames, align=args.align, faces=args.faces, landmarks=args.landmarks,
                                   mask=args.mask, fps=float(info.fps), detect_every=args.detect_every,
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

