"""Batch augmentation with kornia, so it runs wherever the batch is (GPU included)."""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from scan.checks import check_shape

__all__ = ["BatchAugment", "load_size_for"]


def load_size_for(size: int) -> int:
    """CycleGAN's load size for a crop size: 286 for 256, scaled (rounded to even)."""
    return int(round(size * 286 / 256 / 2)) * 2


class BatchAugment(nn.Module):
    """uint8 batch ``(B, 3, L, L)`` to a float batch ``(B, 3, S, S)`` in ``[-1, 1]``.

    Training: random crop to ``size`` (CycleGAN's load 286 -> crop 256 recipe, scaled), horizontal
    flip, optional colour jitter and blur. Evaluation: resize to ``size``, nothing random.

    Args:
        size: output side.
        flip: random horizontal flip.
        color_jitter: strength of brightness/contrast/saturation jitter (0 disables), hue at a quarter.
        blur_prob: probability of a small Gaussian blur per image.
    """

    def __init__(self, size: int, flip: bool = True, color_jitter: float = 0.0, blur_prob: float = 0.0) -> None:
        super().__init__()
        self.size = size
        ops: list[nn.Module] = [K.RandomCrop((size, size))]
        if flip:
            ops.append(K.RandomHorizontalFlip())
        if color_jitter > 0:
            ops.append(K.ColorJitter(color_jitter, color_jitter, color_jitter, color_jitter / 4, p=0.8))
        if blur_prob > 0:
            ops.append(K.RandomGaussianBlur((3, 3), (0.1, 1.5), p=blur_prob))
        self.train_ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        check_shape(images, ("B", 3, "H", "W"), "BatchAugment")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else (images + 1) / 2
        if self.training:
            if min(x.shape[-2:]) < self.size:
                x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
            x = self.train_ops(x)
        elif x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return (x.clamp(0, 1) * 2 - 1).contiguous()
