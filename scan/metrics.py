"""Image quality against a known answer: PSNR and SSIM of images in ``[-1, 1]``.

Unpaired translation has no ground truth in general; the offline demo set has one (every held-out
photo's true cartoon), so there these scores say how close a translation came.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "score"]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB, averaged over the batch.

    Args:
        x: images in ``[-1, 1]`` (clamped).
        y: reference images in ``[-1, 1]``.

    Returns:
        A scalar tensor.

    Shape:
        - Input: :math:`(B, C, H, W)` both.
    """
    _check_pair(x, y)
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()


def ssim(x: Tensor, y: Tensor, window_size: int = 7) -> Tensor:
    """Structural similarity (kornia's Gaussian-window SSIM), averaged over pixels and batch.

    Args:
        x: images in ``[-1, 1]`` (clamped).
        y: reference images in ``[-1, 1]``.
        window_size: side of the Gaussian window (odd); 7 suits the 32-64 px demo images.

    Returns:
        A scalar tensor in ``[-1, 1]`` (1: identical structure).

    Shape:
        - Input: :math:`(B, C, H, W)` both.
    """
    _check_pair(x, y)
    x, y = ((t.float().clamp(-1, 1) + 1) / 2 for t in (x, y))  # kornia's SSIM wants [0, 1]
    return kornia.metrics.ssim(x, y, window_size).mean()


def score(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """``{"psnr": dB, "ssim": ...}`` of translations against their true answers; outputs of another
    size (a coarse stage) are resized to the targets' size bilinearly first, as a user would."""
    if outputs.shape[-2:] != targets.shape[-2:]:
        outputs = F.interpolate(outputs.float(), size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return {"psnr": psnr(outputs, targets).item(), "ssim": ssim(outputs, targets).item()}
