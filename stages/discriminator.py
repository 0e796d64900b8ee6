"""PatchGAN discriminator (CycleGAN's ``NLayerDiscriminator``; 70x70 receptive field at 3 layers)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from scan.checks import check_shape

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """Classifies overlapping patches as real or fake.

    Same layer order as pytorch-CycleGAN-and-pix2pix's ``NLayerDiscriminator`` with instance norm,
    held in an ``nn.Sequential`` called ``model``.

    Args:
        in_channels: channels of the judged image.
        ndf: filters of the first convolution (doubling per layer, capped at ``8 * ndf``).
        n_layers: stride-2 convolutions; 3 gives the 70x70 PatchGAN.
        spectral_norm: wrap every convolution in spectral normalisation (then no instance norm).

    Shape:
        - Input: :math:`(B, C, H, W)`
        - Output: :math:`(B, 1, H', W')`, one logit per patch.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator needs n_layers >= 1, got {n_layers}")
        self.in_channels = in_channels
        sn = _spectral_norm if spectral_norm else (lambda m: m)

        def norm(channels: int) -> nn.Module:
            return nn.Identity() if spectral_norm else nn.InstanceNorm2d(channels, affine=False)

        layers: list[nn.Module] = [sn(nn.Conv2d(in_channels, ndf, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                sn(nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=True)),
                norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(sn(nn.Conv2d(ndf * mult, 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, ("B", self.in_channels, "H", "W"), "PatchDiscriminator")
        return self.model(x)
