"""ResNet generators: the CycleGAN translator of stage 1 and the refiner of stages k > 1.

The layer order of :class:`ResnetGenerator` is exactly that of pytorch-CycleGAN-and-pix2pix's
``ResnetGenerator`` (instance norm without affine parameters, reflect padding, transposed-conv
upsampling, no dropout), held in an ``nn.Sequential`` called ``model``, so that project's saved
``latest_net_G_A.pth`` files load into it unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from scan.checks import check_divisible, check_shape
from scan.components import register_stage

if TYPE_CHECKING:
    from scan.config import GeneratorConfig

__all__ = [
    "ResnetBlock",
    "ResnetGenerator",
    "RefinementGenerator",
    "load_cyclegan_generator",
    "init_weights",
]


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # CycleGAN's `--norm instance`: no affine parameters, no running statistics.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Residual block ``x + conv_block(x)`` with reflect padding and instance norm.

    Args:
        channels: number of input and output channels.

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        # Indices 1 and 5 are the convolutions, as in CycleGAN's `conv_block`.
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=True),
            _instance_norm(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=True),
            _instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual
    blocks, two transposed-conv upsamplings, c7s1-3 and tanh.

    Args:
        in_channels: channels of the input image (3; 6 for a refinement stage).
        out_channels: channels of the output image.
        ngf: filters of the first convolution; the residual blocks use ``4 * ngf``.
        n_blocks: number of residual blocks (CycleGAN: 9 at 256 px, 6 at 128 px).
        input_skip: also feed the input image to the last convolution. Instance norm makes the
            body blind to an image's global brightness and contrast (an affine change of the input is
            normalised away after the first layer), so a plain CycleGAN generator must guess absolute
            colours; the skip hands them to the output layer. Off for CycleGAN weight compatibility.
        outer_kernel: kernel size of the first and last convolution (CycleGAN: 7); they work at the
            full resolution, where 3 costs about a fifth of 7.

    Shape:
        - Input: :math:`(B, C_{in}, H, W)` with ``H`` and ``W`` divisible by 4.
        - Output: :math:`(B, C_{out}, H, W)` in ``[-1, 1]``.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9, input_skip: bool = False,
        outer_kernel: int = 7,
    ) -> None:
        super().__init__()
        if outer_kernel < 1 or outer_kernel % 2 == 0:
            raise ValueError(f"ResnetGenerator needs an odd outer_kernel >= 1, got {outer_kernel}")
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ResnetGenerator needs ngf >= 1 and n_blocks >= 0, got ngf={ngf}, n_blocks={n_blocks}")
        self.in_channels, self.out_channels, self.ngf, self.n_blocks = in_channels, out_channels, ngf, n_blocks
        self.input_skip = input_skip
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(outer_kernel // 2),
            nn.Conv2d(in_channels, ngf, kernel_size=outer_kernel, bias=True),
            _instance_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=True),
                _instance_norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True
                ),
                _instance_norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        head_in = ngf + (in_channels if input_skip else 0)
        layers += [nn.ReflectionPad2d(outer_kernel // 2), nn.Conv2d(head_in, out_channels, kernel_size=outer_kernel),
                   nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor, previous_up: Tensor | None = None) -> Tensor:
        """Translate ``x`` (stage 1: there is no ``previous_up``; see :class:`scan.components.StageGenerator`)."""
        if previous_up is not None:
            raise ValueError("ResnetGenerator translates (stage 1) and takes no previous_up; refine with "
                             "RefinementGenerator")
        return self._generate(x)

    def _generate(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", self.in_channels, "H", "W"), type(self).__name__)
        check_divisible(x, 4, type(self).__name__)
        if not self.input_skip:
            return self.model(x)
        features = self.model[:-3](x)  # everything but the head (pad, conv, tanh)
        return self.model[-3:](torch.cat([features, x], dim=1))


class RefinementGenerator(ResnetGenerator):
    """Generator of a stage k > 1: sees the input at this stage's resolution together with the
    previous stage's output upsampled, and produces a new image (fused later by the stage's
    fusion block). Refining costs less than translating, hence fewer residual blocks by default.

    Args:
        channels: image channels; the network's input has ``2 * channels``.
        ngf: filters of the first convolution.
        n_blocks: number of residual blocks.
        input_skip: feed the network's input to its last layer (see :class:`ResnetGenerator`).
        residual: output ``clamp(previous_up + gain * net(x, previous_up), -1, 1)`` with a learned
            scalar ``gain`` that starts at 0 (as in ReZero): the fresh stage reproduces the stage
            below exactly, and its training moves it away only as far as the losses ask.
        outer_kernel: kernel size of the first and last convolution (see :class:`ResnetGenerator`).
        residual_zero: what starts at zero so that a fresh residual refiner reproduces the stage below:
            ``gain`` (the scalar gain) or ``head`` (the last convolution, with the gain at 1). Adam moves
            a scalar by about one learning rate per step, so under ``gain`` the correction stays faint
            for thousands of steps; a zero head grows as fast as any layer. :meth:`start_at_previous`
            applies it (after any re-initialisation, e.g. :func:`init_weights`).

    Shape:
        - x, previous_up: :math:`(B, C, H, W)`
        - Output: :math:`(B, C, H, W)`
    """

    def __init__(
        self, channels: int = 3, ngf: int = 64, n_blocks: int = 3, input_skip: bool = False, residual: bool = False,
        outer_kernel: int = 7, residual_zero: str = "gain",
    ) -> None:
        super().__init__(2 * channels, channels, ngf=ngf, n_blocks=n_blocks, input_skip=input_skip,
                         outer_kernel=outer_kernel)
        if residual_zero not in ("gain", "head"):
            raise ValueError(f"RefinementGenerator's residual_zero must be 'gain' or 'head', got {residual_zero!r}")
        self.residual, self.residual_zero = residual, residual_zero
        # Present whatever starts at zero, so that model files of both kinds have the same keys.
        self.residual_gain = nn.Parameter(torch.zeros(())) if residual else None
        self.start_at_previous()

    @torch.no_grad()
    def start_at_previous(self) -> None:
        """Zero the gain or the head (``residual_zero``): the refiner then outputs ``previous_up`` exactly.
        A no-op for a plain refiner."""
        if self.residual_gain is None:
            return
        if self.residual_zero == "gain":
            self.residual_gain.zero_()
            return
        self.residual_gain.fill_(1.0)
        head = self.model[-2]
        assert isinstance(head, nn.Conv2d)
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()

    def forward(self, x: Tensor, previous_up: Tensor | None = None) -> Tensor:
        """A new image from ``x`` and the previous stage's upsampled output."""
        if previous_up is None or x.shape != previous_up.shape:
            got = None if previous_up is None else tuple(previous_up.shape)
            raise ValueError(
                f"RefinementGenerator needs x and previous_up of one shape, got {tuple(x.shape)} and {got}"
            )
        new = self._generate(torch.cat([x, previous_up], dim=1))
        if self.residual_gain is None:
            return new
        return (previous_up + self.residual_gain * new).clamp(-1, 1)


@register_stage("resnet", stage="first", options=False)
def _build_translator(config: GeneratorConfig, channels: int) -> ResnetGenerator:
    return ResnetGenerator(channels, channels, config.ngf, config.n_blocks, config.input_skip, config.outer_kernel)


# A "resnet" stage above stage 1 refines: the same body on the input and the previous stage's output.
@register_stage("resnet", stage="refine", options=False)
@register_stage("refine", stage="refine", options=False)
def _build_refiner(config: GeneratorConfig, channels: int) -> RefinementGenerator:
    return RefinementGenerator(channels, config.ngf, config.n_blocks, config.input_skip, config.residual,
                               config.outer_kernel, config.residual_zero)


_RUNNING_STAT = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


def load_cyclegan_generator(state_dict: Mapping[str, Tensor], strict: bool = True) -> ResnetGenerator:
    """Build a :class:`ResnetGenerator` from a pytorch-CycleGAN-and-pix2pix generator state dict.

    The architecture (channels, ``ngf``, ``n_blocks``) is read from the tensors' shapes. InstanceNorm
    running statistics that old checkpoints carry are dropped (CycleGAN's norm tracks none). A
    ``module.`` prefix left by ``DataParallel`` is removed.

    Args:
        state_dict: e.g. ``torch.load("latest_net_G_A.pth", weights_only=True)``.
        strict: passed to ``load_state_dict`` once the running statistics are dropped.

    Returns:
        The generator with the weights loaded, in eval mode.
    """
    cleaned = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not _RUNNING_STAT.search(key):
            cleaned[key] = value
    if "model.1.weight" not in cleaned:
        raise ValueError(
            "not a CycleGAN ResnetGenerator state dict: no 'model.1.weight' "
            f"(first keys: {list(cleaned)[:5]})"
        )
    first = cleaned["model.1.weight"]  # (ngf, in_channels, 7, 7)
    ngf, in_channels = int(first.shape[0]), int(first.shape[1])
    block_ids = {int(m.group(1)) for k in cleaned if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    n_blocks = len(block_ids)
    last_conv = 10 + n_blocks + 6 + 1  # two downs (4-9), blocks, two ups (3 layers each), pad, conv
    last = cleaned.get(f"model.{last_conv}.weight")
    if last is None:
        raise ValueError(f"not a CycleGAN ResnetGenerator state dict: no final conv 'model.{last_conv}.weight'")
    generator = ResnetGenerator(in_channels, int(last.shape[0]), ngf=ngf, n_blocks=n_blocks)
    generator.load_state_dict(cleaned, strict=strict)
    return generator.eval()


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's ``normal`` init: conv weights ~ N(0, gain), biases 0; affine norm weights ~ N(1, gain).

    Args:
        module: network to initialise in place.
        gain: standard deviation of the normal distribution.

    Returns:
        ``module``.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.weight
            if hasattr(m, "parametrizations"):  # spectral norm: initialise the raw weight it normalises
                parametrizations = cast(nn.ModuleDict, m.parametrizations)
                weight = cast(Tensor, parametrizations["weight"].original)
            nn.init.normal_(weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # a residual refiner's zero start survives the re-initialisation above
        if isinstance(m, RefinementGenerator):
            m.start_at_previous()
    return module
