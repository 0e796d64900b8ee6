"""Few-shot style: start from a trained model (init_from), choose what trains (freeze), DiffAugment."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import scan
from scan.checkpoint import save_model
from scan.datasets import UnpairedDataModule
from scan.datasets.demo import build_demo_set
from scan.diffaugment import POLICIES, DiffAugment, diff_augment, parse_policy
from scan.training import Phase, SCANModule
from scan.training.cli import main as train_main
from scan.training.finetune import InitFromError, freezable_names, frozen_modules, load_initial_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_set(tmp_path_factory.mktemp("data") / "demo", train=8, test=4, size=72)


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny model file whose weights no fresh module shares (another seed), and its weights."""
    torch.manual_seed(123)
    model = scan.create_model("tiny")
    path = save_model(model, tmp_path_factory.mktemp("models") / "trained.pt")
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def _trainer(max_epochs=1, batches=2, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, limit_train_batches=batches, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, **kwargs)


def _data(root) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), size=64, batch_size=2, num_workers=0)


def _equal_weights(model, weights) -> bool:
    state = model.state_dict()
    return state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in state)


# ------------------------------------------------------------------------------------------ init_from
def test_init_from_a_model_file_copies_every_weight_and_keeps_the_path_as_plain_data(trained_file):
    path, weights = trained_file
    fresh = SCANModule("tiny", schedule=[Phase(1, 1, 0)])
    assert not _equal_weights(fresh.model, weights)
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], init_from=str(path))
    assert _equal_weights(module.model, weights)  # generators, fusion blocks and discriminators
    assert module.hparams["init_from"] == str(path) and isinstance(module.hparams["init_from"], str)
    # A fresh optimiser: no moments carried over.
    assert all(not opt.state for opt in module.configure_optimizers())


def test_a_file_without_discriminators_starts_them_fresh(tmp_path, trained_file):
    _, weights = trained_file
    generators_only = {k: v for k, v in weights.items() if not k.startswith(("D_a.", "D_b."))}
    torch.save({"format": "scan-model", "format_version": 1, "config": scan.create_config("tiny").to_dict(),
                "state_dict": generators_only}, tmp_path / "generators.pt")
    model = scan.create_model("tiny")
    fresh_d = {k: v.clone() for k, v in model.D_a.state_dict().items()}
    assert load_initial_weights(model, tmp_path / "generators.pt") == ["discriminators"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in generators_only.items())
    assert all(torch.equal(model.D_a.state_dict()[k], v) for k, v in fresh_d.items())


def test_another_architecture_or_a_missing_file_is_one_line_naming_what_differs(tmp_path):
    save_model(scan.create_model("tiny", stages=[{"generator": {"ngf": 4}}, None]), tmp_path / "narrow.pt")
    with pytest.raises(InitFromError) as narrow:
        SCANModule("tiny", init_from=str(tmp_path / "narrow.pt"))
    message = str(narrow.value)
    assert "\n" not in message and "narrow.pt" in message and "--model.model" in message
    assert "stages[0].generator.ngf 4 (here 8)" in message
    assert "of another shape (G_ab.stages.0.model.1.weight 4x3x7x7 (here 8x3x7x7)" in message

    # Same weights, another resolution: refused too (the config decides what the networks compute).
    save_model(scan.create_model("tiny", base_size=64), tmp_path / "big.pt")
    with pytest.raises(InitFromError, match=r"base_size 64 \(here 32\); weights of the same names and shapes"):
        SCANModule("tiny", init_from=str(tmp_path / "big.pt"))

    # Another preset: missing and unexpected keys are named, a few of each, and the file's preset.
    save_model(scan.create_model("cyclegan-256", stages=[{"generator": {"ngf": 4, "n_blocks": 1}}]),
               tmp_path / "single.pt")
    with pytest.raises(InitFromError) as single:
        SCANModule("tiny", init_from=str(tmp_path / "single.pt"))
    message = str(single.value)
    assert "\n" not in message and "stages 1 (here 2)" in message and "preset 'cyclegan-256'" in message
    assert "70 missing (G_ab.stages.1." in message and "4 unexpected (D_a.0.model.11." in message
    assert "(+68 more)" in message

    with pytest.raises(InitFromError, match="nowhere.pt: no such checkpoint file"):
        SCANModule("tiny", init_from=str(tmp_path / "nowhere.pt"))


def test_the_loss_settings_may_differ_from_the_files(trained_file):
    path, weights = trained_file
    module = SCANModule("tiny", {"loss": {"lambda_cycle": 3.0}}, init_from=str(path))
    assert _equal_weights(module.model, weights) and module.config.loss.lambda_cycle == 3.0


@pytest.mark.slow
def test_init_from_a_training_checkpoint_and_a_resume_takes_the_checkpoints_weights(tmp_path, demo_root,
                                                                                    trained_file):
    path, file_weights = trained_file
    first = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 0)], image_log_every_n_steps=0)
    trainer = _trainer(max_epochs=1)
    trainer.fit(first, _data(demo_root))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = {k: v.clone() for k, v in first.model.state_dict().items()}
    assert _equal_weights(SCANModule("tiny", init_from=str(tmp_path / "run.ckpt")).model, saved)

    # Resumed from the checkpoint, a module built with init_from trains on from the checkpoint's
    # weights: Lightning restores them after __init__ copied the file's.
    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.setdefault("weights", {k: v.clone() for k, v in module.model.state_dict().items()})

    resumed = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 0)], image_log_every_n_steps=0,
                         init_from=str(path))
    assert _equal_weights(resumed.model, file_weights)
    _trainer(max_epochs=2, callbacks=[Probe()]).fit(resumed, _data(demo_root), ckpt_path=str(tmp_path / "run.ckpt"))
    assert seen["weights"].keys() == saved.keys()
    assert all(torch.equal(seen["weights"][k], saved[k]) for k in saved)


# ---------------------------------------------------------------------------------------------- freeze
def test_freeze_names_a_small_vocabulary_and_refuses_what_leaves_nothing_to_train():
    assert freezable_names(2) == ["generators", "stage1", "stage2", "fusion", "encoders", "discriminators"]
    with pytest.raises(ValueError, match="freeze: unknown 'stage3', 'decoder'; valid: generators, stage1, stage2"):
        SCANModule("tiny", freeze=["stage3", "decoder"])
    with pytest.raises(ValueError, match="leaves phase 0 \\(stage 1\\) nothing to train"):
        SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 0)], freeze=["stage1"])
    model = scan.create_model("tiny")
    encoders = frozen_modules(model, ["encoders"])
    # Each ResNet stage: pad, conv, norm, relu, then two (conv, norm, relu) downsamplings; both directions.
    assert len(encoders) == 2 * 2 * 10
    assert {id(p) for m in encoders for p in m.parameters()} == {
        id(p) for g in (model.G_ab, model.G_ba) for stage in g.stages for p in stage.model[:10].parameters()}
    mobile = scan.create_model("mobile-256")
    assert len(frozen_modules(mobile, ["encoders"])) == 2 * 3  # enc1..enc3


def _gradients_and_changes(module, demo_root, batches=2):
    """Names of the parameters that got a gradient, and the state-dict entries (buffers too) that changed."""
    touched: set[str] = set()
    for name, p in module.model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, name=name: touched.add(name))
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    _trainer(max_epochs=1, batches=batches).fit(module, _data(demo_root))
    after = module.model.state_dict()
    return touched, {k for k in after if not torch.equal(before[k], after[k])}


@pytest.mark.slow
@pytest.mark.parametrize("freeze,phase,frozen_prefixes", [
    # A joint phase trains every stage and discriminator: stage 1 and the (spectral-norm) discriminators
    # stay bit-identical, power-iteration buffers included.
    (["stage1", "discriminators"], "joint", ("G_ab.stages.0.", "G_ba.stages.0.", "D_a.", "D_b.")),
    # Within a stage: only the encoder layers (model.0-9) keep their weights.
    (["encoders"], 1, tuple(f"{g}.stages.0.model.{i}." for g in ("G_ab", "G_ba") for i in range(10))),
])
def test_frozen_parts_get_no_gradient_no_optimiser_and_do_not_change(demo_root, freeze, phase, frozen_prefixes):
    pl.seed_everything(0, verbose=False)
    spectral = {"discriminator": {"spectral_norm": True}}
    module = SCANModule("tiny", {"stages": [spectral, spectral]}, schedule=[Phase(phase, 1, 0)], freeze=freeze,
                        image_log_every_n_steps=0, lr=1e-3)
    touched, changed = _gradients_and_changes(module, demo_root)
    frozen = {n for n, _ in module.model.named_parameters() if n.startswith(frozen_prefixes)}
    assert frozen and not touched & frozen
    assert not any(k.startswith(frozen_prefixes) for k in changed), sorted(changed)
    trained_stage = "stages.1." if phase == "joint" else "stages.0.model.10."
    assert any(trained_stage in k for k in changed)  # the rest learns
    in_optimisers = {id(p) for opt in module.trainer.optimizers for g in opt.param_groups for p in g["params"]}
    assert not in_optimisers & {id(p) for n, p in module.model.named_parameters() if n in frozen}
    assert all(not p.requires_grad for n, p in module.model.named_parameters() if n in frozen)


# ------------------------------------------------------------------------------------------ DiffAugment
def test_each_augmentation_changes_the_image_and_none_is_the_identity():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    for name in POLICIES:
        out = diff_augment(x, name)
        assert out.shape == x.shape and (out - x).abs().mean() > 0.02, name
    assert diff_augment(x, None) is x and diff_augment(x, "") is x
    assert parse_policy(" color, cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown 'zoom'; valid: color, translation, cutout"):
        DiffAugment("color,zoom")
    with pytest.raises(ValueError, match="twice"):
        parse_policy("color,color")


def test_augmentations_have_the_papers_magnitudes_in_model_units():
    torch.manual_seed(0)
    # On a flat grey image saturation and contrast change nothing: colour is brightness + U(-0.5, 0.5)
    # of [0, 1] intensities, +-1 in the model's [-1, 1].
    grey = torch.zeros(256, 3, 8, 8)
    shifts = diff_augment(grey, "color").flatten(1)
    assert torch.allclose(shifts, shifts[:, :1].expand_as(shifts), atol=1e-6)
    assert shifts.min() > -1 and shifts.max() < 1 and shifts.max() - shifts.min() > 1.8
    # Translation by whole pixels, at most 1/8 of the side, black (-1) where nothing was.
    ramp = torch.arange(32.0).expand(1, 3, 32, 32).repeat(64, 1, 1, 1) / 31 * 2 - 1
    moved = diff_augment(ramp, "translation")
    filled = (moved == -1).all(1)  # (B, H, W)
    assert filled.float().mean() < 0.25
    assert ((filled.sum((1, 2)) == 0) | (filled.sum((1, 2)) >= 32)).all()  # whole rows/columns, or no shift
    # Cutout: a black square of half the side (16 px of 32), placed anywhere (maybe partly outside).
    out = diff_augment(torch.ones(64, 3, 32, 32), "cutout")
    cut = (out == -1).all(1).sum((1, 2))
    assert cut.max() == 16 * 16 and cut.min() >= 8 * 8


def test_diff_augment_is_differentiable():
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    diff_augment(x, "color,translation,cutout").square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


class _Spy:
    """An augmentation that records what it returned (so each discriminator input can be traced to it)."""

    def __init__(self, augment):
        self.augment, self.outputs = augment, []

    def __call__(self, images):
        out = self.augment(images)
        self.outputs.append(out)
        return out


def _watch_discriminators(model, inputs):
    for d in [*model.D_a, *model.D_b]:
        d.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))


def test_discriminators_judge_augmented_real_and_fake_images_and_the_generator_learns_through_it():
    torch.manual_seed(0)
    model = scan.create_model("tiny")
    inputs, spy = [], _Spy(DiffAugment("color,translation,cutout"))
    _watch_discriminators(model, inputs)
    real_a, real_b = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    step = model.generator_step(real_a, real_b, 1, augment=spy)
    assert len(inputs) == 2 and all(any(x is y for y in spy.outputs) for x in inputs)  # both fakes
    step.loss.backward()
    grads = [p.grad for p in model.G_ab.stages[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)

    inputs.clear()
    spy.outputs.clear()
    model.discriminator_step(real_a=real_a, real_b=real_b, fake_a=step.fake_a, fake_b=step.fake_b, stage=1,
                             augment=spy)
    assert len(inputs) == 4 and all(any(x is y for y in spy.outputs) for x in inputs)  # 2 real, 2 fake
    # Off (the default): the discriminators see the images themselves.
    inputs.clear()
    model.discriminator_step(real_a=real_a, real_b=real_b, fake_a=step.fake_a, fake_b=step.fake_b, stage=1)
    assert inputs[0] is real_a and inputs[2] is real_b


@pytest.mark.slow
def test_training_with_diff_augment_shows_the_discriminators_only_augmented_images(demo_root):
    module = SCANModule("tiny", schedule=[Phase("joint", 1, 0)], diff_augment="color,translation,cutout",
                        image_log_every_n_steps=0)
    assert module.hparams["diff_augment"] == "color,translation,cutout"
    inputs = []
    module.augment = spy = _Spy(module.augment)
    _watch_discriminators(module.model, inputs)
    _trainer(max_epochs=1, batches=2).fit(module, _data(demo_root))
    # Per step and stage: the generator's 2 calls, the discriminators' 4 (real and fake of each domain).
    assert len(inputs) == 2 * 2 * 6
    assert all(any(x is y for y in spy.outputs) for x in inputs)


# ------------------------------------------------------------------------------------ train.py, the bench
def _train_args(root, *extra) -> list[str]:
    # The config's overrides make the demo model's 64/128 px; these tests fine-tune plain tiny files.
    return ["fit", "--config", str(ROOT / "configs" / "finetune.yaml"), "--data.root", str(root),
            "--model.model_overrides", "{}", "--data.num_workers", "0", "--data.batch_size", "2",
            "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", *extra]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.mark.slow
def test_finetune_config_trains_from_a_model_file(tmp_path, demo_root, trained_file, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI sees only the arguments given here
    start = tmp_path / "start.pt"
    shutil.copy(trained_file[0], start)
    runs = tmp_path / "runs"
    code = train_main(_train_args(demo_root, "--model.init_from", str(start), "--checkpoint.every_n_train_steps", "1",
                                  "--trainer.logger.init_args.save_dir", str(runs)))
    assert code == 0, capsys.readouterr().err[-2000:]
    run = runs / "finetune" / "version_0"
    assert scan.load_model(run / "model.pt").config == scan.create_config("tiny")
    # Resumed with the run's own config (which names init_from): the weights are the checkpoint's, and
    # the file the run started from is not needed any more.
    start.unlink()
    code = train_main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_epochs", "2",
                       "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert (runs / "finetune" / "version_1" / "model.pt").exists()


@pytest.mark.slow
def test_bad_fine_tuning_input_is_one_error_line_and_exit_2(tmp_path, demo_root, capsys, monkeypatch, commands):
    monkeypatch.setattr(sys, "argv", ["train.py"])
    save_model(scan.create_model("cyclegan-256", stages=[{"generator": {"ngf": 4, "n_blocks": 1}}]),
               tmp_path / "other.pt")
    one_style_image = tmp_path / "one"
    shutil.copytree(demo_root, one_style_image)
    for extra in sorted((one_style_image / "trainB").iterdir())[1:]:
        extra.unlink()
    no_style_image = tmp_path / "none"
    shutil.copytree(demo_root, no_style_image)
    shutil.rmtree(no_style_image / "trainB")
    (no_style_image / "trainB").mkdir()
    cases = [
        (demo_root, ["--model.init_from", str(tmp_path / "gone.pt")], "gone.pt: no such checkpoint file"),
        (demo_root, ["--model.init_from", str(tmp_path / "other.pt")], "preset 'cyclegan-256'"),
        (demo_root, ["--model.freeze", "[stage9]"], "freeze: unknown 'stage9'"),
        (demo_root, ["--model.diff_augment", "zoom"], "diff_augment: unknown 'zoom'"),
        (one_style_image, [], "trainB: 1 usable image(s); training needs at least 2 per domain"),
        (no_style_image, [], "trainB: no image files"),
    ]
    for root, extra, message in cases:
        code = train_main(_train_args(root, *extra, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")))
        line = _one_error_line(capsys.readouterr().err)
        assert code == 2 and message in line, line
    # And as a process: the same one line, no traceback.
    result = commands.run([ROOT / "train.py", *_train_args(demo_root, "--model.init_from", tmp_path / "other.pt")],
                          cwd=tmp_path)
    assert result.returncode == 2 and "preset 'cyclegan-256'" in _one_error_line(result.stderr)


@pytest.mark.slow
def test_few_shot_benchmark_quick_run_writes_its_report(tmp_path, commands):
    result = commands.run([ROOT / "benchmarks" / "few_shot.py", "--quick", "--out", tmp_path], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (report,) = tmp_path.glob("few-shot-*.json")
    data = json.loads(report.read_text())
    rows = {(r["row"], r["n"]) for r in data["runs"]}
    for row in ("from scratch", "fine-tuned", "fine-tuned + DiffAugment", "fine-tuned, encoders frozen"):
        assert all((row, n) in rows for n in data["meta"]["sizes"])
    assert ("from scratch", data["meta"]["reference"]) in rows
    for r in data["runs"]:
        assert r["trace"] and {"psnr", "ssim", "detail", "variety"} <= set(r["final"]) and r["final"]["variety"] > 0
    assert {"untranslated photo", "base model as it is (cartoon)"} <= set(data["references"])
    assert report.with_suffix(".md").read_text().count("|") > 20 and report.with_suffix(".png").stat().st_size > 0
