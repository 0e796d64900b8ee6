"""One translation direction of SCAN: N generator stages joined coarse-to-fine by fusion blocks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scan.checks import check_divisible, check_shape
from scan.components import build_fusion, build_stage
from scan.config import SCANConfig

__all__ = ["StackOutput", "StackedGenerator", "downsample", "upsample", "pyramid"]


def downsample(x: Tensor, factor: int = 2) -> Tensor:
    """Antialiased downsampling by an integer factor (area average: exact, cheap, exports to ONNX).

    Shape:
        - Input: :math:`(B, C, H, W)` with ``H`` and ``W`` divisible by ``factor``.
        - Output: :math:`(B, C, H / factor, W / factor)`
    """
    if factor == 1:
        return x
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"downsample: size {tuple(x.shape[-2:])} is not divisible by {factor}")
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


def upsample(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling of a stage's output to the next stage's resolution."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """``x`` and its 2x downsamplings, coarse to fine: ``levels`` images, the last one ``x`` itself."""
    images = [x]
    for _ in range(levels - 1):
        images.append(downsample(images[-1]))
    return images[::-1]


@dataclass
class StackOutput:
    """What a stacked generator produced.

    Attributes:
        outputs: every stage's fused output, coarse to fine (stage k at ``size / 2**(upto - k)``).
        alphas: every stage's fusion weight map; ``None`` for stage 1, which fuses nothing.
        raw: every stage's generator output before fusion (stage 1's equals its output).
    """

    outputs: list[Tensor]
    alphas: list[Tensor | None]
    raw: list[Tensor]

    @property
    def final(self) -> Tensor:
        """The last stage's output."""
        return self.outputs[-1]

    def map(self, fn: Callable[[Tensor], Tensor]) -> StackOutput:
        """``fn`` applied to every image and alpha map, e.g. ``out.map(Tensor.cpu)``."""
        return StackOutput(outputs=[fn(o) for o in self.outputs],
                           alphas=[None if a is None else fn(a) for a in self.alphas], raw=[fn(r) for r in self.raw])

    @staticmethod
    def cat(parts: Sequence[StackOutput]) -> StackOutput:
        """Batches of one stack concatenated along the batch dimension."""
        return StackOutput(
            outputs=[torch.cat(images) for images in zip(*(p.outputs for p in parts))],
            alphas=[None if maps[0] is None else torch.cat(maps) for maps in zip(*(p.alphas for p in parts))],
            raw=[torch.cat(images) for images in zip(*(p.raw for p in parts))],
        )


class StackedGenerator(nn.Module):
    """One direction (A->B or B->A) of SCAN.

    Stage 1 translates the input downsampled to its resolution; each stage k > 1 sees the input at
    twice the previous resolution plus the previous output upsampled, produces a new image, and its
    fusion block mixes the two per pixel: ``y_k = alpha * new + (1 - alpha) * up(y_{k-1})``.

    The stack is fully convolutional: the stage resolutions follow the input's size, so a model
    trained at 256 runs at 512 too. ``upto=k`` runs stages 1..k only and treats the input as stage
    k's image (the training loop uses this for the cycle of stage k).

    Args:
        config: the model config (its stages and channels are used).

    Shape:
        - Input: :math:`(B, C, H, W)`, ``H`` and ``W`` divisible by ``2**(upto - 1) * 8``.
        - Output: :class:`StackOutput`; ``final`` is :math:`(B, C, H, W)`.
    """

    def __init__(self, config: SCANConfig) -> None:
        super().__init__()
        self.channels = config.channels
        self.stages = nn.ModuleList(
            build_stage(s.generator, config.channels, "first" if k == 0 else "refine")
            for k, s in enumerate(config.stages)
        )
        # fusions[k - 1] joins stage k + 1 to stage k (there is nothing to fuse at stage 1).
        self.fusions = nn.ModuleList(build_fusion(s.fusion, config.channels) for s in config.stages[1:])

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def networks(self) -> list[nn.Module]:
        """Every stage generator and fusion block: the units compiled one by one (the stack's loop and
        checks stay Python)."""
        return [*self.stages, *self.fusions]

    def forward(self, x: Tensor, upto: int | None = None) -> StackOutput:
        upto = self.num_stages if upto is None else upto
        if not 1 <= upto <= self.num_stages:
            raise ValueError(f"upto must be in 1..{self.num_stages}, got {upto}")
        check_shape(x, ("B", self.channels, "H", "W"), "StackedGenerator")
        check_divisible(x, 2 ** (upto - 1) * 8, f"StackedGenerator with {upto} stage(s)")
        inputs = pyramid(x, upto)
        first = self.stages[0](inputs[0], None)
        outputs, raw = [first], [first]
        alphas: list[Tensor | None] = [None]
        for k in range(1, upto):
            previous_up = upsample(outputs[-1])
            new = self.stages[k](inputs[k], previous_up)
            fused, alpha = self.fusions[k - 1](inputs[k], previous_up, new)
            outputs.append(fused)
            alphas.append(alpha)
            raw.append(new)
        return StackOutput(outputs=outputs, alphas=alphas, raw=raw)
