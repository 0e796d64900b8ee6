"""Adaptive fusion of a stage's new image with the previous stage's upsampled output (SCAN, Sec. 3.2)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scan.checks import check_shape
from scan.components import register_fusion

if TYPE_CHECKING:
    from scan.config import FusionConfig

__all__ = ["fuse", "AdaptiveFusion", "FixedAlphaFusion"]


def fuse(new: Tensor, previous_up: Tensor, alpha: Tensor) -> Tensor:
    """Per-pixel convex mix ``alpha * new + (1 - alpha) * previous_up``.

    Args:
        new: the current stage's raw output.
        previous_up: the previous stage's output, upsampled to this stage's resolution.
        alpha: weights in ``[0, 1]``, broadcastable to ``new`` (one channel or one per channel).

    Returns:
        The fused image.

    Shape:
        - new, previous_up: :math:`(B, C, H, W)`
        - alpha: :math:`(B, 1, H, W)` or :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """
    if new.shape != previous_up.shape:
        raise ValueError(f"fuse: new {tuple(new.shape)} and previous_up {tuple(previous_up.shape)} differ in shape")
    if alpha.ndim != 4 or alpha.shape[1] not in (1, new.shape[1]) or alpha.shape[-2:] != new.shape[-2:]:
        raise ValueError(f"fuse: alpha {tuple(alpha.shape)} does not broadcast to {tuple(new.shape)}")
    return alpha * new + (1.0 - alpha) * previous_up


class AdaptiveFusion(nn.Module):
    """Learned per-pixel fusion weight ``alpha = sigmoid(h(x, previous_up, new))``.

    ``h`` is two conv3x3 + InstanceNorm + ReLU layers and a final conv3x3 to one channel (three with
    ``per_channel=True``). A fixed offset ``logit(initial_alpha)`` is added before the sigmoid, so
    under CycleGAN's N(0, 0.02) init a fresh block outputs alpha ~ ``initial_alpha`` everywhere: a
    newly added stage starts close to the trained coarse result and learns where to add detail.

    Args:
        channels: image channels.
        hidden_channels: width of the two hidden layers.
        per_channel: one alpha per colour channel instead of one per pixel.
        initial_alpha: alpha of a freshly initialised block, in ``(0, 1)``.
        scale: compute the map from the inputs area-downsampled by this factor, then upsample it
            bilinearly: ``scale**2`` times cheaper at full resolution, where the block is memory-bound.

    Shape:
        - x, previous_up, new: :math:`(B, C, H, W)`
        - Output: ``(fused, alpha)`` with fused :math:`(B, C, H, W)` and alpha :math:`(B, 1 | C, H, W)`.
    """

    logit_offset: Tensor

    def __init__(
        self, channels: int = 3, hidden_channels: int = 32, per_channel: bool = False, initial_alpha: float = 0.5,
        scale: int = 1,
    ) -> None:
        super().__init__()
        if not 0.0 < initial_alpha < 1.0:
            raise ValueError(f"AdaptiveFusion needs initial_alpha in (0, 1), got {initial_alpha}")
        if scale < 1:
            raise ValueError(f"AdaptiveFusion needs scale >= 1, got {scale}")
        self.channels, self.scale = channels, scale
        self.net = nn.Sequential(
            nn.Conv2d(3 * channels, hidden_channels, 3, 1, 1),
            nn.InstanceNorm2d(hidden_channels, affine=True),
            nn.ReLU(True),
            nn.Conv2d(hidden_channels, hidden_channels, 3, 1, 1),
            nn.InstanceNorm2d(hidden_channels, affine=True),
            nn.ReLU(True),
            nn.Conv2d(hidden_channels, channels if per_channel else 1, 3, 1, 1),
        )
        self.register_buffer("logit_offset", torch.tensor(math.log(initial_alpha / (1.0 - initial_alpha))))

    def alpha(self, x: Tensor, previous_up: Tensor, new: Tensor) -> Tensor:
        """The fusion weight map in ``[0, 1]``."""
        for name, image in (("x", x), ("previous_up", previous_up), ("new", new)):
            check_shape(image, ("B", self.channels, "H", "W"), f"AdaptiveFusion's {name}")
        if not x.shape == previous_up.shape == new.shape:
            raise ValueError(f"AdaptiveFusion needs x, previous_up, new of one shape, got {tuple(x.shape)}, "
                             f"{tuple(previous_up.shape)}, {tuple(new.shape)}")
        inputs = torch.cat([x, previous_up, new], dim=1)
        if self.scale == 1:
            return torch.sigmoid(self.net(inputs) + self.logit_offset)
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"AdaptiveFusion with scale {self.scale} needs sides divisible by it, got "
                             f"{tuple(x.shape[-2:])}")
        logits = self.net(F.avg_pool2d(inputs, self.scale))
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(logits + self.logit_offset)

    def forward(self, x: Tensor, previous_up: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        alpha = self.alpha(x, previous_up, new)
        return fuse(new, previous_up, alpha), alpha


class FixedAlphaFusion(nn.Module):
    """Ablation of :class:`AdaptiveFusion`: the same constant alpha at every pixel.

    Args:
        alpha: the constant weight of the new image, in ``[0, 1]``.

    Shape:
        Same as :class:`AdaptiveFusion`.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"FixedAlphaFusion needs alpha in [0, 1], got {alpha}")
        self.value = float(alpha)

    def forward(self, x: Tensor, previous_up: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        alpha = new.new_full((new.shape[0], 1, *new.shape[-2:]), self.value)
        return fuse(new, previous_up, alpha), alpha


@register_fusion("adaptive")
def _build_adaptive(config: FusionConfig, channels: int) -> AdaptiveFusion:
    return AdaptiveFusion(channels, config.hidden_channels, config.per_channel, initial_alpha=config.initial_alpha,
                          scale=config.scale)


@register_fusion("fixed")
def _build_fixed(config: FusionConfig, channels: int) -> FixedAlphaFusion:
    return FixedAlphaFusion(config.alpha)
