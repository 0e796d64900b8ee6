"""Paste translated crops back into the photo through feathered masks."""

from __future__ import annotations

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from PIL import Image, ImageDraw
from torch import Tensor

from scan.align.crop import crop_corners, shift_matrices, warp_from_crops
from scan.imageops import model_to_uint8, uint8_to_model

__all__ = ["MASKS", "rounded_square_mask", "landmark_hull_mask", "paste_back", "footprint_box"]

MASKS = ("square", "hull")


def rounded_square_mask(size: int, feather: float = 0.08, radius: float = 0.15) -> Tensor:
    """A crop-sized mask: 1 inside a rounded square, ramping smoothly to exactly 0 at the border.

    Args:
        size: crop side.
        feather: width of the soft edge, as a fraction of ``size``.
        radius: corner radius, as a fraction of ``size``.

    Returns:
        :math:`(1, size, size)` in ``[0, 1]``.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    px, py = torch.meshgrid(coords, coords, indexing="xy")
    half, r = size / 2 - 1.0, radius * size
    qx, qy = (px - size / 2).abs() - (half - r), (py - size / 2).abs() - (half - r)
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0) - r  # SDF
    t = (-outside / max(feather * size, 1e-6)).clamp(0, 1)
    return (t * t * (3 - 2 * t))[None]  # smoothstep: no visible seam where the ramp starts


def _convex_hull(points: np.ndarray) -> np.ndarray:
    pts = sorted(map(tuple, points))

    def turn(o, a, b) -> float:  # z of the cross product (a - o) x (b - o): > 0 for a left turn
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def landmark_hull_mask(landmarks_in_crop: np.ndarray, size: int, feather: float = 0.06) -> Tensor:
    """The face region: convex hull of the landmarks with the brows raised to cover the forehead.

    Args:
        landmarks_in_crop: ``(68, 2)`` landmarks in crop pixels.
        size: crop side.
        feather: blur of the edge, as a fraction of ``size``.

    Returns:
        :math:`(1, size, size)` in ``[0, 1]``.
    """
    lm = np.asarray(landmarks_in_crop, np.float64)
    eye_to_mouth = (lm[48] + lm[54]) / 2 - (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    forehead = lm[17:27] - 0.9 * eye_to_mouth
    hull = _convex_hull(np.concatenate([lm, forehead]))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=255)
    mask = torch.from_numpy(np.asarray(canvas, np.float32) / 255.0)[None, None]
    sigma = max(feather * size / 2, 0.5)
    kernel = int(2 * round(3 * sigma) + 1)
    mask = gaussian_blur2d(mask, (kernel, kernel), (sigma, sigma))
    return mask[0] * rounded_square_mask(size, feather=0.02, radius=0.0)  # zero on the crop border


def footprint_box(matrices: np.ndarray | Tensor, size: int, height: int, width: int,
                  margin: int = 2) -> tuple[int, int, int, int] | None:
    """The part of the photo that crops cut with ``matrices`` can touch when pasted back.

    Args:
        matrices: :math:`(N, 2, 3)` original-to-crop matrices.
        size: crop side.
        height, width: the photo's size.
        margin: pixels added on every side (bilinear sampling reaches one pixel further).

    Returns:
        ``(x0, y0, x1, y1)`` clipped to the photo (``x1``, ``y1`` exclusive), or ``None`` when no crop
        overlaps it.
    """
    points = crop_corners(matrices, size).reshape(-1, 2)
    x0, y0 = np.floor(points.min(0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_back(photo: Tensor, crops: Tensor, matrices: np.ndarray | Tensor, masks: Tensor) -> Tensor:
    """Blend translated crops into the photo, each through its mask warped into the photo's frame.

    Only the part of the photo the crops cover is warped and blended (see :func:`footprint_box`),
    so a huge photo costs no more than a small one. Where every mask is zero the photo's pixels are
    returned unchanged, bit for bit.

    Args:
        photo: :math:`(1, C, H, W)` or :math:`(C, H, W)`: floats, or ``uint8`` in ``[0, 255]``.
        crops: :math:`(N, C, S, S)` translated crops, in the photo's value range (``[-1, 1]`` for a
            ``uint8`` photo).
        matrices: :math:`(N, 2, 3)` original-to-crop matrices the crops were cut with.
        masks: :math:`(N, 1, S, S)` or :math:`(1, S, S)` crop-space masks in ``[0, 1]``.

    Returns:
        The blended photo, shaped like ``photo`` and of its dtype (rounded for ``uint8``).
    """
    squeeze = photo.ndim == 3
    out = photo[None] if squeeze else photo
    box = footprint_box(matrices, crops.shape[-1], *out.shape[-2:]) if len(crops) else None
    if box is None:
        return photo
    x0, y0, x1, y1 = box
    m = shift_matrices(matrices, x0, y0)
    region = out[..., y0:y1, x0:x1]
    region = uint8_to_model(region) if photo.dtype == torch.uint8 else region
    masks = masks.expand(len(crops), 1, *crops.shape[-2:]) if masks.ndim == 3 else masks
    warped = warp_from_crops(crops.to(region.dtype), m, y1 - y0, x1 - x0)
    warped_masks = warp_from_crops(masks.to(device=region.device, dtype=region.dtype), m, y1 - y0, x1 - x0).clamp(0, 1)
    for face, mask in zip(warped, warped_masks):  # one face after the other: later faces on top
        region = torch.where(mask > 0, mask * face + (1 - mask) * region, region)
    if photo.dtype == torch.uint8:  # untouched pixels round back to exactly their old value
        region = model_to_uint8(region)
    out = out.clone()
    out[..., y0:y1, x0:x1] = region
    return out[0] if squeeze else out
