"""Networks of one stage: shapes, and weight compatibility with pytorch-CycleGAN-and-pix2pix."""

import functools

import pytest
import torch
from torch import nn

import scan
from scan.stages import (
    MobileGenerator,
    PatchDiscriminator,
    RefinementGenerator,
    ResnetGenerator,
    load_cyclegan_generator,
)


# --- An independent transcription of pytorch-CycleGAN-and-pix2pix's networks.py (ResnetGenerator,
# --- ResnetBlock, NLayerDiscriminator with norm='instance', no dropout), used as the reference.
class RefResnetBlock(nn.Module):
    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        conv_block = []
        conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            conv_block += [nn.Dropout(0.5)]
        conv_block += [nn.ReflectionPad2d(1)]
        conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*conv_block)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, n_blocks=9):
        super().__init__()
        norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
        use_bias = True
        model = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        for _ in range(n_blocks):
            model += [RefResnetBlock(ngf * mult, "reflect", norm_layer, False, use_bias)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            model += [
                nn.ConvTranspose2d(
                    ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1, output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(int(ngf * mult / 2)),
                nn.ReLU(True),
            ]
        model += [nn.ReflectionPad2d(3)]
        model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
        model += [nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input):
        return self.model(input)


class RefNLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3):
        super().__init__()
        norm_layer = nn.InstanceNorm2d
        use_bias = True
        sequence = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev = nf_mult
            nf_mult = min(2**n, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=4, stride=2, padding=1, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev = nf_mult
        nf_mult = min(2**n_layers, 8)
        sequence += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=4, stride=1, padding=1, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
        ]
        sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*sequence)

    def forward(self, input):
        return self.model(input)


@pytest.mark.parametrize("n_blocks", [9, 6])
def test_cyclegan_state_dict_import_is_bit_exact(n_blocks):
    reference = RefResnetGenerator(3, 3, ngf=8, n_blocks=n_blocks).eval()
    state = reference.state_dict()
    last_conv = {9: 26, 6: 23}[n_blocks]  # the documented layout: final conv at 26 for 9 blocks
    assert f"model.{last_conv}.bias" in state
    generator = load_cyclegan_generator(state)
    assert (generator.ngf, generator.n_blocks) == (8, n_blocks)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(generator(x), reference(x))


def test_cyclegan_import_drops_stray_running_stats_and_dataparallel_prefix():
    reference = RefResnetGenerator(3, 3, ngf=4, n_blocks=2).eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    # Checkpoints from old PyTorch carry InstanceNorm running stats; CycleGAN's loader deletes them.
    state["module.model.2.running_mean"] = torch.zeros(4)
    state["module.model.2.running_var"] = torch.ones(4)
    state["module.model.10.conv_block.2.num_batches_tracked"] = torch.tensor(3)
    generator = load_cyclegan_generator(state)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(generator(x), reference(x))


def test_cyclegan_import_rejects_foreign_state_dict():
    with pytest.raises(ValueError, match="model.1.weight"):
        load_cyclegan_generator({"conv.weight": torch.zeros(1)})


def test_discriminator_matches_cyclegan_layout():
    reference = RefNLayerDiscriminator(3, ndf=8, n_layers=3)
    ours = PatchDiscriminator(3, ndf=8, n_layers=3)
    ours.load_state_dict(reference.state_dict())  # strict: same keys and shapes
    x = torch.rand(2, 3, 70, 70)
    assert torch.equal(ours(x), reference(x))
    # The classic 70x70 PatchGAN judges a 256x256 image as a 30x30 grid of patches.
    assert ours(torch.rand(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_spectral_norm_discriminator_has_no_instance_norm_and_runs():
    d = PatchDiscriminator(3, ndf=8, n_layers=2, spectral_norm=True)
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in d.modules())
    assert any("parametrizations" in name for name, _ in d.named_parameters())
    assert d(torch.rand(1, 3, 32, 32)).shape[1] == 1


def test_refinement_generator_takes_input_and_previous():
    g = RefinementGenerator(3, ngf=4, n_blocks=1)
    assert g.in_channels == 6
    out = g(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="one shape"):
        g(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 16, 16))


def test_outer_kernel_sets_the_full_resolution_convolutions():
    cheap = RefinementGenerator(3, ngf=4, n_blocks=1, outer_kernel=3)
    classic = RefinementGenerator(3, ngf=4, n_blocks=1)
    convs = [m for m in cheap.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == convs[-1].kernel_size == (3, 3)
    assert [m.kernel_size for m in classic.modules() if isinstance(m, torch.nn.Conv2d)][-1] == (7, 7)
    x = torch.rand(2, 3, 32, 32)
    assert cheap(x, x).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="odd outer_kernel"):
        RefinementGenerator(3, ngf=4, n_blocks=1, outer_kernel=4)
    with pytest.raises(ValueError, match="outer_kernel must be an odd size"):
        scan.GeneratorConfig(outer_kernel=2)


def test_mobile_generator_shape_range_and_cost():
    g = MobileGenerator(width=16, n_blocks=4)
    out = g(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 3, 64, 64) and out.abs().max() <= 1
    big = ResnetGenerator(ngf=64, n_blocks=9)
    ratio = sum(p.numel() for p in big.parameters()) / sum(p.numel() for p in g.parameters())
    assert ratio > 100  # two orders of magnitude fewer parameters than CycleGAN's generator


@pytest.mark.parametrize(
    "net, shape, match",
    [
        (ResnetGenerator(ngf=4, n_blocks=1), (1, 3, 30, 30), "divisible by 4"),
        (ResnetGenerator(ngf=4, n_blocks=1), (1, 1, 32, 32), r"\(B, 3, H, W\)"),
        (MobileGenerator(width=4, n_blocks=1), (1, 3, 36, 36), "divisible by 8"),
        (PatchDiscriminator(ndf=4), (3, 32, 32), r"\(B, 3, H, W\)"),
    ],
)
def test_networks_reject_bad_input_with_a_clear_message(net, shape, match):
    with pytest.raises(ValueError, match=match):
        net(torch.rand(*shape))


def test_input_skip_lets_the_generator_see_absolute_colour():
    # Instance norm after the first conv removes any global affine change of the input, so the plain
    # CycleGAN generator cannot tell a dark image from a bright one; the input skip can.
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    darker = 0.5 * x - 0.3
    plain = ResnetGenerator(ngf=8, n_blocks=1).eval()
    skip = ResnetGenerator(ngf=8, n_blocks=1, input_skip=True).eval()
    with torch.no_grad():
        skip.model[:-3].load_state_dict(plain.model[:-3].state_dict())
        assert (plain(x) - plain(darker)).abs().max() < 1e-3
        assert (skip(x) - skip(darker)).abs().mean() > 0.01
