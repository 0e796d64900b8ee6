"""A lightweight generator for real-time use (phones, CPUs).

Camera apps that ship "comic face" effects run their translators at a tiny fraction of desktop
compute. :class:`MobileGenerator` keeps CycleGAN's encoder / residual body / decoder plan but moves
the body to 1/8 resolution, builds it from depthwise-separable inverted-residual blocks, and
upsamples with nearest-neighbour + separable convs (no transposed convs, which export poorly and
checkerboard). At 256x256 it costs ~0.3% of CycleGAN's ResNet-9 (see ``benchmarks/model_cost.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from scan.checks import check_divisible, check_shape
from scan.components import register_stage

if TYPE_CHECKING:
    from scan.config import GeneratorConfig

__all__ = ["MobileGenerator", "SeparableConv", "InvertedResidual"]


def _norm_act(channels: int, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.InstanceNorm2d(channels, affine=True)]
    if act:
        layers.append(nn.ReLU(True))
    return layers


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (optionally strided) then pointwise 1x1, each followed by norm and ReLU.

    Shape:
        - Input: :math:`(B, C_{in}, H, W)`
        - Output: :math:`(B, C_{out}, H / s, W / s)` for stride ``s``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            *_norm_act(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            *_norm_act(out_channels),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block ``x + project(depthwise(expand(x)))``.

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.block = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            *_norm_act(hidden),
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False),
            *_norm_act(hidden),
            nn.Conv2d(hidden, channels, 1, bias=False),
            *_norm_act(channels, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class MobileGenerator(nn.Module):
    """Real-time generator: three stride-2 stages, separable residual body at 1/8 resolution,
    three upsampling stages with additive skips from the encoder, 3x3 conv and tanh.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        width: channels after the first convolution; the body uses ``4 * width``.
        n_blocks: inverted-residual blocks in the body.
        expansion: expansion factor of those blocks.

    Shape:
        - Input: :math:`(B, C_{in}, H, W)` with ``H`` and ``W`` divisible by 8.
        - Output: :math:`(B, C_{out}, H, W)` in ``[-1, 1]``.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, width: int = 16, n_blocks: int = 4, expansion: int = 2
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        w = width
        self.enc1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, 2, 1, bias=False), *_norm_act(w))  # 1/2
        self.enc2 = SeparableConv(w, 2 * w, stride=2)  # 1/4
        self.enc3 = SeparableConv(2 * w, 4 * w, stride=2)  # 1/8
        self.body = nn.Sequential(*[InvertedResidual(4 * w, expansion) for _ in range(n_blocks)])
        self.dec3 = SeparableConv(4 * w, 2 * w)  # -> 1/4, added to enc2
        self.dec2 = SeparableConv(2 * w, w)  # -> 1/2, added to enc1
        self.dec1 = SeparableConv(w, w)  # -> 1/1
        self.head = nn.Sequential(nn.Conv2d(w, out_channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: Tensor, previous_up: Tensor | None = None) -> Tensor:
        """Translate ``x`` (stage 1 only: there is no ``previous_up``)."""
        if previous_up is not None:
            raise ValueError("MobileGenerator translates (stage 1) and takes no previous_up")
        check_shape(x, ("B", self.in_channels, "H", "W"), "MobileGenerator")
        check_divisible(x, 8, "MobileGenerator")
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        h = self.body(self.enc3(e2))
        h = self.dec3(F.interpolate(h, scale_factor=2.0, mode="nearest")) + e2
        h = self.dec2(F.interpolate(h, scale_factor=2.0, mode="nearest")) + e1
        h = self.dec1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)


@register_stage("mobile", stage="first", options=False)
def _build_mobile(config: GeneratorConfig, channels: int) -> MobileGenerator:
    # Stage 1 only: it has no refining variant (refine a mobile stage 1 with kind "refine").
    return MobileGenerator(channels, channels, width=config.ngf, n_blocks=config.n_blocks)
