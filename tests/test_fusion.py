"""The adaptive fusion block: endpoints, gradients, and input checks."""

import pytest
import torch

from scan.fusion import AdaptiveFusion, FixedAlphaFusion, fuse


def _images(shape=(2, 3, 16, 16), dtype=torch.float32):
    return [torch.rand(*shape, dtype=dtype) * 2 - 1 for _ in range(3)]


def test_fuse_endpoints_are_exact():
    _, previous_up, new = _images()
    ones = torch.ones(2, 1, 16, 16)
    assert torch.equal(fuse(new, previous_up, ones), new)
    assert torch.equal(fuse(new, previous_up, torch.zeros_like(ones)), previous_up)


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("bias, expect", [(100.0, "new"), (-100.0, "previous_up")])
def test_adaptive_fusion_forced_alpha_gives_endpoint(bias, expect, scale):
    block = AdaptiveFusion(3, hidden_channels=8, scale=scale)
    torch.nn.init.zeros_(block.net[-1].weight)
    torch.nn.init.constant_(block.net[-1].bias, bias)
    x, previous_up, new = _images()
    fused, alpha = block(x, previous_up, new)
    assert alpha.shape == (2, 1, 16, 16)
    assert torch.allclose(fused, new if expect == "new" else previous_up, atol=1e-6)


def test_adaptive_fusion_alpha_depends_on_inputs_and_stays_in_unit_interval():
    block = AdaptiveFusion(3, hidden_channels=8, per_channel=True)
    x, previous_up, new = _images()
    fused, alpha = block(x, previous_up, new)
    assert alpha.shape == (2, 3, 16, 16)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert alpha.std() > 0  # not a constant map
    # fused lies between the two inputs at every pixel
    low, high = torch.minimum(new, previous_up), torch.maximum(new, previous_up)
    assert bool(((fused >= low - 1e-6) & (fused <= high + 1e-6)).all())


@pytest.mark.parametrize("scale", [1, 2])
def test_adaptive_fusion_gradcheck_float64(scale):
    block = AdaptiveFusion(3, hidden_channels=4, scale=scale).double()
    x, previous_up, new = (t.requires_grad_() for t in _images((1, 3, 8, 8), torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, c: block(a, b, c)[0], (x, previous_up, new))


def test_fixed_alpha_fusion_is_constant_mix():
    x, previous_up, new = _images()
    fused, alpha = FixedAlphaFusion(0.25)(x, previous_up, new)
    assert torch.allclose(fused, 0.25 * new + 0.75 * previous_up)
    assert torch.all(alpha == 0.25)
    with pytest.raises(ValueError, match=r"alpha in \[0, 1\]"):
        FixedAlphaFusion(1.5)


def test_fusion_rejects_mismatched_inputs():
    x, previous_up, new = _images()
    with pytest.raises(ValueError, match="one shape"):
        AdaptiveFusion(3)(x, previous_up, new[:, :, :8])
    with pytest.raises(ValueError, match="does not broadcast"):
        fuse(new, previous_up, torch.ones(2, 2, 16, 16))


def test_half_resolution_alpha_is_the_full_resolution_map_of_the_downsampled_inputs_upsampled():
    """``scale=2``: the same network on the inputs area-downsampled, its logits upsampled bilinearly;
    a quarter of the full-resolution work, a smooth map of the full size."""
    full, half = AdaptiveFusion(3, hidden_channels=8), AdaptiveFusion(3, hidden_channels=8, scale=2)
    half.load_state_dict(full.state_dict())
    x, previous_up, new = _images((2, 3, 32, 32))
    alpha = half.alpha(x, previous_up, new)
    assert alpha.shape == (2, 1, 32, 32)
    small = [torch.nn.functional.avg_pool2d(t, 2) for t in (x, previous_up, new)]
    logits = torch.logit(full.alpha(*small).double()).float()
    expected = torch.sigmoid(torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear"))
    torch.testing.assert_close(alpha, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(alpha, full.alpha(x, previous_up, new), atol=1e-3)  # not the full-resolution map
    with pytest.raises(ValueError, match="divisible by it"):
        half(*_images((1, 3, 15, 16)))
