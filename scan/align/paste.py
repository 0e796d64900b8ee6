"""Paste translated crops back into the photo through feathered masks."""

from __future__ import annotations

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from PIL import Image, ImageDraw
from torch import Tensor

from scan.align.crop import warp_from_crops

__all__ = ["MASKS", "rounded_square_mask", "landmark_hull_mask", "paste_back"]

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


def paste_back(photo: Tensor, crops: Tensor, matrices: np.ndarray | Tensor, masks: Tensor) -> Tensor:
    """Blend translated crops into the photo, each through its mask warped into the photo's frame.

    Where every mask is zero the photo's pixels are returned unchanged, bit for bit.

    Args:
        photo: :math:`(1, C, H, W)` or :math:`(C, H, W)`.
        crops: :math:`(N, C, S, S)` translated crops, same value range as ``photo``.
        matrices: :math:`(N, 2, 3)` original-to-crop matrices the crops were cut with.
        masks: :math:`(N, 1, S, S)` or :math:`(1, S, S)` crop-space masks in ``[0, 1]``.

    Returns:
        The blended photo, shaped like ``photo``.
    """
    squeeze = photo.ndim == 3
    out = photo[None] if squeeze else photo
    if len(crops) == 0:
        return photo
    height, width = out.shape[-2:]
    masks = masks.expand(len(crops), 1, *crops.shape[-2:]) if masks.ndim == 3 else masks
    warped = warp_from_crops(crops.to(out.dtype), matrices, height, width)
    warped_masks = warp_from_crops(masks.to(device=out.device, dtype=out.dtype), matrices, height, width).clamp(0, 1)
    for face, mask in zip(warped, warped_masks):  # one face after the other: later faces on top
        out = torch.where(mask > 0, mask * face + (1 - mask) * out, out)
    return out[0] if squeeze else out
