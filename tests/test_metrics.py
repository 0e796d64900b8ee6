"""PSNR / SSIM against a known answer."""

import pytest
import torch

from scan.metrics import psnr, score, ssim


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 3, 8, 8)
    # A difference of 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01, 20 dB.
    assert psnr(x + 0.2, x).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(x + 2.0, x).item() == pytest.approx(psnr(x + 1.0, x).item())  # values are clamped to [-1, 1]


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    noisy = (x + 0.5 * torch.randn(x.shape, generator=generator)).clamp(-1, 1)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-4)
    assert ssim(noisy, x).item() < 0.8
    assert ssim(x * 0.5, x).item() < ssim(x * 0.9, x).item() < 1.0


def test_score_upsamples_a_coarse_stage_and_checks_shapes():
    target = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    coarse = torch.nn.functional.avg_pool2d(target, 2)  # a 32 px rendering of the same ramp
    scores = score(coarse, target)
    assert scores["psnr"] > 40 and scores["ssim"] > 0.99
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\) and \(1, 3, 64, 64\)"):
        psnr(coarse, target)
