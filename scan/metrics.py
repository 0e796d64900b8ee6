"""Image quality against a known answer: PSNR, SSIM and a detail score of images in ``[-1, 1]``.

Unpaired translation has no ground truth in general; the offline demo set has one (every held-out
photo's true cartoon), so there these scores say how close a translation came. Each function scores
a batch image by image (``reduction="none"``) or as the batch's mean; the batch mean is the mean of
the per-image scores, so a folder scored in batches gives the same number as scored at once
(:mod:`scan.evaluation` streams folders that way).
"""

from __future__ import annotations

from typing import Literal

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "detail_psnr", "high_band", "score", "to_size", "through_resolution"]

Reduction = Literal["mean", "none"]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two (B, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def _reduce(per_image: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _psnr_of_mse(mse: Tensor) -> Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def psnr(x: Tensor, y: Tensor, reduction: Reduction = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB (on the ``[0, 1]`` scale: peak 1).

    Args:
        x: images in ``[-1, 1]`` (clamped).
        y: reference images in ``[-1, 1]``.
        reduction: ``"mean"`` over the batch, or ``"none"``: one value per image.

    Returns:
        A scalar tensor, or :math:`(B,)` with ``reduction="none"``.

    Shape:
        - Input: :math:`(B, C, H, W)` both.

    Example:
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> round(psnr(x + 0.2, x).item(), 3)  # 0.1 off on the [0, 1] scale: 20 dB
        20.0
    """
    _check_pair(x, y)
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return _reduce(_psnr_of_mse(mse), reduction)


def ssim(x: Tensor, y: Tensor, window_size: int = 7, reduction: Reduction = "mean") -> Tensor:
    """Structural similarity (kornia's Gaussian-window SSIM), averaged over pixels (and the batch).

    Args:
        x: images in ``[-1, 1]`` (clamped).
        y: reference images in ``[-1, 1]``.
        window_size: side of the Gaussian window (odd); 7 suits the 32-64 px demo images.
        reduction: ``"mean"`` over the batch, or ``"none"``: one value per image.

    Returns:
        A scalar tensor in ``[-1, 1]`` (1: identical structure), or :math:`(B,)`.

    Shape:
        - Input: :math:`(B, C, H, W)` both.
    """
    _check_pair(x, y)
    x, y = ((t.float().clamp(-1, 1) + 1) / 2 for t in (x, y))  # kornia's SSIM wants [0, 1]
    return _reduce(kornia.metrics.ssim(x, y, window_size).flatten(1).mean(1), reduction)


def high_band(x: Tensor, sigma: float = 1.0) -> Tensor:
    """The high-frequency band of images: the image minus its Gaussian blur (what a stage at half the
    resolution cannot carry: outlines one pixel wide, stripes, hair strands).

    Args:
        x: images.
        sigma: the blur's standard deviation in pixels (1: detail near the pixel scale).

    Returns:
        ``x - blur(x)``, same shape (borders reflected).

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """
    size = 2 * round(3 * sigma) + 1
    return x - kornia.filters.gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")


def detail_psnr(x: Tensor, y: Tensor, sigma: float = 1.0, reduction: Reduction = "mean") -> Tensor:
    """PSNR of the high-frequency band (:func:`high_band`) against the reference's: a score that sees
    detail only. A blurry translation with the right colours scores well in PSNR and poorly here;
    the reference's band against a flat band (no detail at all) is the floor.

    Args:
        x: images in ``[-1, 1]`` (clamped).
        y: reference images in ``[-1, 1]``.
        sigma: the band's blur (see :func:`high_band`).
        reduction: ``"mean"`` over the batch, or ``"none"``: one value per image.

    Returns:
        A scalar tensor in dB, or :math:`(B,)`.

    Shape:
        - Input: :math:`(B, C, H, W)` both.

    Example:
        >>> y = -torch.ones(1, 1, 16, 16); y[..., ::2] = 1.0    # black and white one-pixel stripes
        >>> flat = torch.zeros_like(y)                          # their mean colour, no detail
        >>> detail_psnr(y, y).item() > 90, detail_psnr(flat, y).item() < 10
        (True, True)
    """
    _check_pair(x, y)
    bands = [high_band((t.float().clamp(-1, 1) + 1) / 2, sigma) for t in (x, y)]
    mse = (bands[0] - bands[1]).pow(2).flatten(1).mean(1)
    return _reduce(_psnr_of_mse(mse), reduction)


def to_size(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """``x`` resized bilinearly to ``size`` (unchanged if it has that size): how a coarse stage's
    output is scored against the top resolution's answer, as a user would see it upscaled."""
    if x.shape[-2:] == tuple(size):
        return x
    return F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False)


def through_resolution(x: Tensor, factor: int) -> Tensor:
    """The *oracle* of a stage ``factor`` times coarser than ``x``: ``x`` area-averaged down by
    ``factor`` (as a stage's input is made) and upsampled back bilinearly (as its output is scored).
    Scored against ``x``, it is the best any stage at that resolution could do.

    Args:
        x: images, sides divisible by ``factor``.
        factor: the downsampling factor (2: a stage at half the resolution).

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """
    if factor == 1:
        return x
    return to_size(F.avg_pool2d(x.float(), factor, factor), x.shape[-2:])


def score(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """``{"psnr": dB, "ssim": ...}`` of translations against their true answers; outputs of another
    size (a coarse stage) are resized to the targets' size bilinearly first, as a user would."""
    outputs = to_size(outputs, targets.shape[-2:])
    return {"psnr": psnr(outputs, targets).item(), "ssim": ssim(outputs, targets).item()}
