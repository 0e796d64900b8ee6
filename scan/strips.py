"""Pictures that show what each stage did: image grids, alpha heatmaps, labelled strips, and the
stage strip of a translated portrait (its aligned crop, every stage's output and alpha map).

``infer.py --save-stages`` (photos, and a video's contact sheet), the web page, the demo and the
training logs all draw them here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from scan.imageio import model_to_pil

if TYPE_CHECKING:  # only named in annotations: the grids and heatmaps of training need no portrait code
    from scan.portrait import PortraitResult

__all__ = ["make_grid", "heatmap", "labelled_strip", "stage_rows", "stage_strip", "sheet_frames", "SHEET_FRAMES"]

# The frames a video's contact sheet shows.
SHEET_FRAMES = 4


def make_grid(rows: list[list[Tensor]], pad: int = 2, value: float = 1.0) -> Tensor:
    """Tile equally sized ``(3, H, W)`` images into rows, padded with ``value``.

    Returns:
        A ``(3, H_total, W_total)`` tensor.
    """
    first = rows[0][0]
    h, w = first.shape[-2:]
    n_cols = max(len(r) for r in rows)
    canvas = first.new_full((3, pad + len(rows) * (h + pad), pad + n_cols * (w + pad)), value)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, top : top + h, left : left + w] = image
    return canvas


# A perceptual dark-blue -> teal -> yellow ramp (viridis' anchor colours).
_RAMP = torch.tensor(
    [[0.267, 0.005, 0.329], [0.230, 0.322, 0.546], [0.128, 0.567, 0.551], [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]]
)


def heatmap(alpha: Tensor) -> Tensor:
    """A ``(1, H, W)`` (or ``(C, H, W)``, averaged) map in ``[0, 1]`` as a ``(3, H, W)`` colour image in
    ``[-1, 1]``: dark blue where alpha is 0 (the coarse stage is kept), yellow where 1 (new detail)."""
    # NaN (a diverged model) shows as 0 rather than crashing the image log of the run it happens in.
    a = torch.nan_to_num(alpha.detach().float().mean(0), nan=0.0).clamp(0, 1) * (len(_RAMP) - 1)
    low = a.floor().long().clamp(max=len(_RAMP) - 2)
    t = (a - low).unsqueeze(0)
    ramp = _RAMP.to(alpha.device)
    colour = ramp[low].permute(2, 0, 1) * (1 - t) + ramp[low + 1].permute(2, 0, 1) * t
    return colour * 2 - 1


def labelled_strip(rows: list[list[tuple[str, Tensor]]], tile: int = 192) -> Image.Image:
    """A picture of labelled tiles: each row a list of ``(label, (3, H, W) tensor in [-1, 1])``,
    every tile resized (nearest, so low stages stay visibly coarse) to ``tile`` pixels."""
    label_height, pad = 16, 4
    n_cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (pad + n_cols * (tile + pad), len(rows) * (tile + label_height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        top = pad + i * (tile + label_height + pad)
        for j, (label, image) in enumerate(row):
            left = pad + j * (tile + pad)
            draw.text((left + 2, top + 2), label, fill="black")
            picture = model_to_pil(image.float()).resize((tile, tile), Image.Resampling.NEAREST)
            sheet.paste(picture, (left, top + label_height))
    return sheet


def stage_rows(result: PortraitResult, label: str = "input crop") -> list[list[tuple[str, Tensor]]]:
    """Per face: the aligned crop (labelled ``label``), each stage's output, each stage's alpha map."""
    rows = []
    for face in result.faces:
        row = [(label, face.crop)]
        row += [(f"stage {k}", out) for k, out in enumerate(face.stages, start=1)]
        row += [(f"alpha {k}", heatmap(a)) for k, a in enumerate(face.alphas, start=1) if a is not None]
        rows.append(row)
    return rows


def stage_strip(result: PortraitResult) -> Image.Image:
    """Per face: the aligned crop, each stage's output, each stage's alpha map, labelled."""
    return labelled_strip(stage_rows(result))


def sheet_frames(count: int, picks: int = SHEET_FRAMES, fps: float = 25.0) -> set[int]:
    """The frames a video's contact sheet shows: ``picks`` spread evenly over ``count`` frames (when
    the count is unknown, 0: one a second from the start)."""
    if count <= 0:
        return {round(k * fps) for k in range(picks)}
    return {int(i) for i in np.linspace(0, count - 1, min(picks, count)).round()}
