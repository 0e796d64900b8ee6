"""Conversions between images as people store them and as the networks see them (``[-1, 1]`` floats)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "as_model_input",
    "uint8_to_model", "model_to_uint8", "pil_to_uint8", "pil_to_model", "model_to_pil", "make_grid", "heatmap",
    "labelled_strip",
]


def uint8_to_model(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``uint8`` in ``[0, 255]`` to floats in ``[-1, 1]``."""
    return x.to(dtype) / 127.5 - 1.0


def as_model_input(images: Tensor, channels: int = 3) -> Tensor:
    """Check and convert what a user passes as images to the float ``[-1, 1]`` batch the networks take.

    Accepted: ``uint8`` in ``[0, 255]`` (converted), or any float dtype in ``[-1, 1]`` (cast to
    float32); :math:`(B, C, H, W)` or one image :math:`(C, H, W)`. A float image in ``[0, 1]`` cannot
    be told apart from a dark one in ``[-1, 1]``: convert it with ``x * 2 - 1``.

    Raises:
        TypeError: not a tensor, or an integer / bool dtype other than ``uint8``.
        ValueError: wrong shape, empty, NaN/inf, or floats outside ``[-1, 1]`` (e.g. 0-255 floats).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"expected a tensor of images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"expected images shaped (B, {channels}, H, W) or ({channels}, H, W), "
                         f"got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"expected at least one non-empty image, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return uint8_to_model(images)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 images in [0, 255] or floats in [-1, 1], got dtype {images.dtype}")
    images = images.float()
    low, high = images.aminmax()
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise ValueError("the images contain NaN or inf values")
    if low < -1.001 or high > 1.001:
        hint = " (0-255 floats: pass uint8, or x / 127.5 - 1)" if high > 2 else ""
        raise ValueError(f"expected floats in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}")
    return images


def model_to_uint8(x: Tensor) -> Tensor:
    """Floats in ``[-1, 1]`` to ``uint8`` (rounded, clamped)."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def pil_to_uint8(image: Image.Image) -> Tensor:
    """A PIL image to a ``(3, H, W)`` RGB ``uint8`` tensor."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pil_to_model(image: Image.Image) -> Tensor:
    """A PIL image to a ``(1, 3, H, W)`` RGB float tensor in ``[-1, 1]``."""
    return uint8_to_model(pil_to_uint8(image).unsqueeze(0))


def model_to_pil(x: Tensor) -> Image.Image:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in ``[-1, 1]`` to an RGB PIL image."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"model_to_pil takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    return Image.fromarray(model_to_uint8(x).permute(1, 2, 0).cpu().numpy(), "RGB")


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
    from PIL import ImageDraw

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
