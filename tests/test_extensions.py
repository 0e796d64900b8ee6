"""Extension points: a stage kind, a fusion block and a GAN loss of one's own plug in from outside the
package, train, save and load, without editing scan. This module plays the user's module."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

import scan
from scan import components
from scan.checkpoint import CheckpointError
from scan.config import FusionConfig, GeneratorConfig, StageConfig
from scan.datasets import UnpairedDataModule
from scan.datasets.demo import build_demo_set
from scan.training import Phase, SCANModule


class ToyTranslator(nn.Module):
    """A one-conv stage-1 generator; ``width`` comes from the config's ``options``."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 1))

    def forward(self, x: Tensor, previous_up: Tensor | None = None) -> Tensor:
        return torch.tanh(self.net(x) + x)


class ToyBlend(nn.Module):
    """A fusion block with one learned, image-wide alpha."""

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x: Tensor, previous_up: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        alpha = torch.sigmoid(self.logit).expand(new.shape[0], 1, *new.shape[-2:])
        return alpha * new + (1 - alpha) * previous_up, alpha


def _register_once() -> None:
    # A user's module registers at import; pytest may import this module more than once per session.
    if "toy-translator" not in components.stage_kinds():
        components.register_stage("toy-translator", stage="first")(
            lambda config, channels: ToyTranslator(channels, config.options.get("width", 4))
        )
        components.register_fusion("toy-blend")(lambda config, channels: ToyBlend())
        components.register_gan_loss("toy-l1")(
            lambda logits, real, for_discriminator=True: (logits - (1.0 if real else 0.0)).abs().mean()
        )


_register_once()

TOY_OVERRIDES = {
    "stages": [{"generator": {"kind": "toy-translator", "options": {"width": 6}}}, {"fusion": {"kind": "toy-blend"}}],
    "loss": {"gan_mode": "toy-l1"},
}


def test_registered_parts_are_listed_and_named_in_errors():
    assert "toy-translator" in components.stage_kinds("first")
    assert "toy-translator" not in components.stage_kinds("refine")
    assert {"adaptive", "fixed", "toy-blend"} <= set(components.fusion_kinds())
    with pytest.raises(ValueError, match="unknown stage kind 'unet'; registered: .*toy-translator"):
        GeneratorConfig(kind="unet")
    with pytest.raises(ValueError, match="stage 2 refines: its generator kind 'toy-translator' cannot serve it"):
        scan.SCANConfig(stages=[StageConfig(), StageConfig(GeneratorConfig(kind="toy-translator"))])
    with pytest.raises(ValueError, match="stage 1 has nothing to refine"):
        scan.SCANConfig(stages=[StageConfig(GeneratorConfig(kind="refine"))])
    with pytest.raises(ValueError, match="unknown fusion kind 'soft'; registered: adaptive, fixed"):
        FusionConfig(kind="soft")
    with pytest.raises(ValueError, match="unknown gan_mode 'wgan'; registered: hinge, lsgan"):
        scan.gan_loss(torch.zeros(1), True, "wgan")
    with pytest.raises(ValueError, match="already has a 'first' builder"):
        components.register_stage("toy-translator", stage="first")(lambda config, channels: None)


@pytest.mark.slow
def test_own_stage_and_fusion_train_save_and_load(tmp_path):
    root = build_demo_set(tmp_path / "data", train=4, test=2, size=40)
    pl.seed_everything(0, verbose=False)
    module = SCANModule("tiny", model_overrides=TOY_OVERRIDES, schedule=[Phase(1, 1, 0), Phase(2, 1, 0)],
                        image_log_every_n_steps=1)
    model = module.model
    assert isinstance(model.G_ab.stages[0], ToyTranslator) and isinstance(model.G_ba.fusions[0], ToyBlend)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, accelerator="cpu",
                         logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="run"), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, UnpairedDataModule(root=str(root), size=64, batch_size=2, num_workers=0))
    trained = model.state_dict()
    # Both steps trained: stage 1's toy translator, then stage 2's toy fusion block.
    assert not torch.equal(before["G_ab.stages.0.net.0.weight"], trained["G_ab.stages.0.net.0.weight"])
    assert not torch.equal(before["G_ab.fusions.0.logit"], trained["G_ab.fusions.0.logit"])

    path = scan.save_model(model, tmp_path / "toy.pt")
    loaded = scan.load_model(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.translate(x).final, model.eval().translate(x).final)
    assert loaded.config.stages[0].generator.options == {"width": 6}


def test_a_model_whose_kind_is_not_registered_is_a_clear_checkpoint_error(tmp_path, monkeypatch):
    path = scan.save_model(scan.create_model("tiny", **TOY_OVERRIDES), tmp_path / "toy.pt")
    monkeypatch.delitem(components._STAGES, "toy-translator")  # as in a process that never imported it
    with pytest.raises(CheckpointError, match="unknown stage kind 'toy-translator'.*import the module"):
        scan.load_model(path)
