"""The assembled model: presets, stacking, losses, gradients."""

import pytest
import torch
import torch.nn.functional as F

import scan
from scan.generator import downsample

# Small input sizes per preset: the networks are fully convolutional, so the presets' real
# architectures are exercised without their real (slow on CPU) resolutions.
SMALL_SIZE = {"cyclegan-256": 32, "mobile-256": 32, "scan-128-256": 64, "scan-256-512": 64, "scan-64-128-256": 128,
              "tiny": 64}


def test_every_preset_is_covered_here():
    assert sorted(SMALL_SIZE) == scan.list_models()


def move_residual_gains(model: torch.nn.Module, value: float = 0.5) -> torch.nn.Module:
    """Set every residual refiner's gain off its initial 0, as training does: a fresh residual stage
    reproduces the stage below exactly, which would hide what these tests look at."""
    for module in model.modules():
        if getattr(module, "residual_gain", None) is not None:
            with torch.no_grad():
                module.residual_gain.fill_(value)
    return model


@pytest.mark.parametrize("name", sorted(SMALL_SIZE))
def test_preset_output_shapes_and_fusion(name):
    model = move_residual_gains(scan.create_model(name)).eval()
    size = SMALL_SIZE[name]
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        for direction in ("a2b", "b2a"):
            out = model.translate(x, direction)
            n = model.num_stages
            assert len(out.outputs) == len(out.alphas) == len(out.raw) == n
            for k, (y, alpha) in enumerate(zip(out.outputs, out.alphas)):
                side = size // 2 ** (n - 1 - k)
                assert y.shape == out.raw[k].shape == (2, 3, side, side)
                assert (alpha is None) == (k == 0)
                if alpha is None:
                    assert torch.equal(y, out.raw[0])  # stage 1 fuses nothing
                else:
                    # Each later stage's output is its own image and the previous output, mixed per
                    # pixel by the alpha map it reports (written out here, not through scan.fuse).
                    assert alpha.shape == (2, 1, side, side)
                    previous_up = F.interpolate(out.outputs[k - 1], scale_factor=2.0, mode="bilinear")
                    assert torch.allclose(y, alpha * out.raw[k] + (1 - alpha) * previous_up, atol=1e-6)
                    assert not torch.allclose(y, out.raw[k], atol=1e-3)  # the mix is not a pass-through
            assert out.final is out.outputs[-1]


def test_preset_sizes_follow_the_names():
    assert scan.create_config("scan-128-256").sizes == [128, 256]
    assert scan.create_config("scan-256-512").sizes == [256, 512]
    assert scan.create_config("scan-64-128-256").sizes == [64, 128, 256]
    assert scan.create_config("cyclegan-256").sizes == [256]
    assert scan.create_config("tiny").sizes == [32, 64]


# The three-stage preset takes seconds: `slow`.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "scan-64-128-256" else n
                                  for n in sorted(SMALL_SIZE)])
def test_every_parameter_receives_a_gradient(name):
    model = scan.create_model(name)
    size = SMALL_SIZE[name]
    gains = {n for n, _ in model.named_parameters() if n.endswith("residual_gain")}
    if gains:  # a fresh residual refiner learns its gain first: only the gain sees a gradient then
        stage = model.num_stages
        real_a, real_b = torch.rand(2, 2, 3, size, size) * 2 - 1
        model.generator_step(real_a, real_b, stage).loss.backward()
        assert all(p.grad is not None and p.grad.abs() > 0 for n, p in model.named_parameters()
                   if n.endswith(f"stages.{stage - 1}.residual_gain"))
        move_residual_gains(model)
    touched: set[str] = set()
    for stage in range(1, model.num_stages + 1):
        side = size // 2 ** (model.num_stages - stage)
        real_a, real_b = torch.rand(2, 2, 3, side, side) * 2 - 1
        model.zero_grad(set_to_none=True)
        step = model.generator_step(real_a, real_b, stage)
        d_loss, _ = model.discriminator_step(
            real_a=real_a, real_b=real_b, fake_a=step.fake_a, fake_b=step.fake_b, stage=stage
        )
        (step.loss + d_loss).backward()
        gens, discs = model.stage_modules(stage)
        for module in gens + discs:
            for p in module.parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0
        touched |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {n for n, _ in model.named_parameters()}


def test_upto_runs_the_lower_stages_at_the_input_resolution():
    model = scan.create_model("scan-64-128-256", stages=[{"generator": {"ngf": 4}}] * 3).eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        full = model.translate(x)
        assert full.final.shape[-1] == 128 and full.outputs[0].shape[-1] == 32
        for k in (1, 2):
            partial = model.translate(downsample(x, 2 ** (3 - k)), upto=k)
            assert len(partial.outputs) == k
            assert partial.final.shape[-1] == 128 // 2 ** (3 - k)
            assert torch.allclose(partial.final, full.outputs[k - 1], atol=1e-6)
    with pytest.raises(ValueError, match="upto must be in 1..3"):
        model.translate(x, upto=4)
    with pytest.raises(ValueError, match="divisible by 32"):
        model.translate(torch.rand(1, 3, 48, 48))


def test_losses_respect_config():
    torch.manual_seed(1)
    model = scan.create_model("tiny", loss={"lambda_identity": 0.0, "gan_mode": "hinge"})
    x, y = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    step = model.generator_step(x, y, 1)
    assert "idt_a" not in step.terms
    t = step.terms
    expected = t["G_ab_gan"] + t["G_ba_gan"] + 10.0 * (t["cycle_a"] + t["cycle_b"])
    assert torch.allclose(step.loss, expected)
    assert step.loss.requires_grad and not step.fake_a.requires_grad


def test_generator_loss_weights_cycle_and_identity_as_documented():
    """The total generator loss, computed by hand on a tiny fixed example: GAN (LSGAN) +
    lambda_cycle x cycle L1 + lambda_cycle x lambda_identity x identity L1. The weights are chosen so
    that every wrong weighting (identity by lambda_identity alone, by lambda_cycle alone, unweighted
    cycle) gives a different total."""
    torch.manual_seed(3)
    lambda_cycle, lambda_identity = 3.0, 0.5
    model = scan.create_model("tiny", loss={"lambda_cycle": lambda_cycle, "lambda_identity": lambda_identity})
    a, b = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    step = model.generator_step(a, b, stage=1)

    with torch.no_grad():
        G_ab = lambda x: model.G_ab(x, upto=1).final  # noqa: E731
        G_ba = lambda x: model.G_ba(x, upto=1).final  # noqa: E731
        l1 = lambda x, y: (x - y).abs().mean()  # noqa: E731
        fake_b, fake_a = G_ab(a), G_ba(b)
        gan = ((model.D_b[0](fake_b) - 1) ** 2).mean() + ((model.D_a[0](fake_a) - 1) ** 2).mean()
        cycle = l1(G_ba(fake_b), a) + l1(G_ab(fake_a), b)
        identity = l1(G_ab(b), b) + l1(G_ba(a), a)  # each generator should leave its own domain alone
    assert identity > 0.1 and cycle > 0.1  # an untrained model: both terms matter
    expected = gan + lambda_cycle * cycle + lambda_cycle * lambda_identity * identity
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert step.terms["idt_a"] + step.terms["idt_b"] == pytest.approx(identity.item(), rel=1e-5)
    wrong = [gan + lambda_cycle * cycle + w * identity for w in (lambda_identity, lambda_cycle, 0.0)]
    wrong.append(gan + cycle + lambda_cycle * lambda_identity * identity)
    assert all(abs(step.loss.item() - w.item()) > 1e-2 for w in wrong)


def test_coarse_consistency_ties_a_refining_stage_to_the_stage_below():
    """lambda_coarse adds L1(downsample(stage-2 output), stage-1 output) per direction at stage 2, and
    nothing at stage 1."""
    torch.manual_seed(4)
    lambda_coarse = 2.5
    model = scan.create_model("tiny", loss={"lambda_identity": 0.0, "lambda_coarse": lambda_coarse})
    a, b = torch.rand(2, 1, 3, 64, 64) * 2 - 1
    assert "coarse_ab" not in model.generator_step(downsample(a), downsample(b), stage=1).terms
    step = model.generator_step(a, b, stage=2)
    with torch.no_grad():
        ab, ba = model.G_ab(a), model.G_ba(b)
        coarse_ab = (downsample(ab.final) - ab.outputs[0]).abs().mean()
        coarse_ba = (downsample(ba.final) - ba.outputs[0]).abs().mean()
    assert coarse_ab > 0.01 and coarse_ba > 0.01  # untrained: the stages disagree
    assert step.terms["coarse_ab"].item() == pytest.approx(coarse_ab.item(), rel=1e-5)
    t = step.terms
    without = t["G_ab_gan"] + t["G_ba_gan"] + 10.0 * (t["cycle_a"] + t["cycle_b"])
    assert step.loss.item() == pytest.approx((without + lambda_coarse * (coarse_ab + coarse_ba)).item(), rel=1e-5)

    # Switching the term on changes what stage 2 learns.
    def stage2_gradients(weight: float) -> list[torch.Tensor]:
        model.config.loss.lambda_coarse = weight
        model.zero_grad()
        model.generator_step(a, b, stage=2).loss.backward()
        return [p.grad.clone() for p in model.G_ab.stages[1].parameters()]

    off, on = stage2_gradients(0.0), stage2_gradients(lambda_coarse)
    assert not all(torch.allclose(g_off, g_on, atol=1e-7) for g_off, g_on in zip(off, on))


def test_a_residual_refiner_starts_at_the_stage_below_and_learns_its_gain():
    torch.manual_seed(5)
    model = scan.create_model("tiny", stages=[{}, {"generator": {"residual": True}}])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = model.G_ab(x)
    previous_up = F.interpolate(out.outputs[0], scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(out.final, previous_up, atol=1e-6)  # a fresh stage 2 changes nothing...
    refiner = model.G_ab.stages[1]
    (out.final - x).abs().mean().backward()
    assert refiner.residual_gain.grad is not None and refiner.residual_gain.grad.abs() > 0  # ...but learns to
    with torch.no_grad():
        refiner.residual_gain.fill_(0.5)
    moved = model.G_ab(x)
    assert (moved.final - previous_up).abs().mean() > 1e-3 and moved.final.abs().max() <= 1
    with pytest.raises(ValueError, match="stage 1's generator cannot be residual"):
        scan.create_model("tiny", stages=[{"generator": {"residual": True}}, {}])


def test_a_residual_refiner_with_a_zero_head_starts_at_the_stage_below_and_learns_at_full_gain():
    torch.manual_seed(5)
    model = scan.create_model("tiny", stages=[{}, {"generator": {"residual": True, "residual_zero": "head"}}])
    refiner = model.G_ab.stages[1]
    head = refiner.model[-2]
    assert float(refiner.residual_gain) == 1.0 and not head.weight.any() and not head.bias.any()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = model.G_ab(x)
    previous_up = F.interpolate(out.outputs[0], scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.equal(out.raw[1], previous_up)  # a fresh stage 2 changes nothing...
    assert torch.allclose(out.final, previous_up, atol=1e-6)
    (out.final - x).abs().mean().backward()
    # ...and its head, not a scalar gain, takes the first step: one Adam step moves every head weight by
    # about the learning rate, so the correction grows as fast as the stage's own layers learn.
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    assert refiner.residual_gain.grad.abs() == 0
    optimiser = torch.optim.Adam(refiner.parameters(), lr=2e-4)
    optimiser.step()
    moved = model.G_ab(x)
    assert (moved.final - previous_up).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"residual_zero must be one of \['gain', 'head'\], got 'bias'"):
        scan.create_config("tiny", stages=[{}, {"generator": {"residual": True, "residual_zero": "bias"}}])


def test_init_weights_keeps_a_residual_refiners_zero_start():
    from scan.stages import init_weights

    for where in ("gain", "head"):
        model = scan.create_model("tiny", stages=[{}, {"generator": {"residual": True, "residual_zero": where}}])
        init_weights(model)  # e.g. re-initialising a loaded model's networks
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        out = model.G_ab(x)
        previous_up = F.interpolate(out.outputs[0], scale_factor=2.0, mode="bilinear", align_corners=False)
        assert torch.equal(out.raw[1], previous_up), where


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge"])
def test_gan_loss_prefers_the_right_answer(mode):
    high, low = torch.full((4,), 0.9), torch.full((4,), 0.1)
    assert scan.gan_loss(high, True, mode) < scan.gan_loss(low, True, mode)
    assert scan.gan_loss(low, False, mode) < scan.gan_loss(high, False, mode)
    assert scan.gan_loss(high, True, mode, for_discriminator=False) < scan.gan_loss(low, True, mode, False)


def test_image_pool_returns_old_fakes_and_round_trips_its_state():
    pool = scan.ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returns what it got
    seen_old = False
    for i in range(20):
        out = pool.query(torch.full((1, 1, 1, 1), 100.0 + i))
        seen_old |= bool(out.item() < 100 + i)
    assert seen_old and len(pool) == 4
    clone = scan.ImagePool(1)
    clone.load_state_dict(pool.state_dict())
    assert clone.size == 4 and all(torch.equal(a, b) for a, b in zip(clone.images, pool.images))
    assert torch.equal(scan.ImagePool(0).query(first), first)


def test_registry_errors_list_valid_names_and_fields():
    with pytest.raises(ValueError, match="valid names: cyclegan-256, mobile-256"):
        scan.create_model("pix2pix")
    with pytest.raises(ValueError, match="no field 'lambda_cycle'.*valid"):
        scan.create_model("tiny", lambda_cycle=5)
    cfg = scan.create_config("tiny", loss={"lambda_cycle": 5.0}, base_size=16)
    assert cfg.loss.lambda_cycle == 5.0 and cfg.sizes == [16, 32]
    assert scan.create_config("tiny").loss.lambda_cycle == 10.0  # presets are not mutated
    with pytest.raises(ValueError, match="nothing to refine"):
        scan.create_config("tiny", stages=[{"generator": {"kind": "refine"}}, None])


def test_register_model_adds_a_preset():
    @scan.register_model("test-only-one-stage")
    def _preset():
        return scan.SCANConfig(name="x", base_size=16, stages=[scan.StageConfig(scan.GeneratorConfig("resnet", 4, 1))])

    try:
        assert scan.create_model("test-only-one-stage").num_stages == 1
        with pytest.raises(ValueError, match="already registered"):
            scan.register_model("test-only-one-stage")(_preset)
    finally:
        from scan.registry import _PRESETS

        _PRESETS.pop("test-only-one-stage")


def test_a_coarse_refiner_cycle_is_blind_to_detail_finer_than_the_stage_below():
    torch.manual_seed(3)
    real_a, real_b = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    full = scan.create_model("tiny")
    coarse = scan.create_model("tiny", loss={"refiner_cycle": "coarse"})
    coarse.load_state_dict(full.state_dict())
    torch.manual_seed(0)
    step_full = full.generator_step(real_a, real_b, stage=2)
    torch.manual_seed(0)
    step_coarse = coarse.generator_step(real_a, real_b, stage=2)
    assert torch.equal(step_full.rec_a, step_coarse.rec_a)  # the same networks, the same reconstruction...
    assert torch.allclose(step_full.terms["cycle_a"], F.l1_loss(step_full.rec_a, real_a))
    # ...scored at the stage below's resolution, where a checkerboard finer than 2 px is invisible
    assert torch.allclose(step_coarse.terms["cycle_a"], F.l1_loss(downsample(step_coarse.rec_a), downsample(real_a)))
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 0.2 - 0.1
    assert F.l1_loss(downsample(real_a + checker), downsample(real_a)) < 1e-6
    torch.manual_seed(0)
    stage1 = coarse.generator_step(real_a[..., ::2, ::2], real_b[..., ::2, ::2], stage=1)
    assert torch.allclose(stage1.terms["cycle_a"], F.l1_loss(stage1.rec_a, real_a[..., ::2, ::2]))  # stage 1 as before
    with pytest.raises(ValueError, match=r"refiner_cycle must be one of \['full', 'coarse'\], got 'half'"):
        scan.create_config("tiny", loss={"refiner_cycle": "half"})
