"""``train.py``: LightningCLI over :class:`SCANModule` and :class:`UnpairedDataModule`.

    python train.py fit --config configs/selfie2anime.yaml --data.root /path/to/selfie2anime
    python train.py fit --config configs/demo.yaml --trainer.max_epochs 2      # any option overrides
    python train.py fit --config runs/scan/version_0/config.yaml \
        --ckpt_path runs/scan/version_0/checkpoints/last.ckpt                   # resume

The resolved config is saved as ``config.yaml`` in each run's log folder, and at the end of a
completed fit the trained model as ``model.pt`` (for ``infer.py``, ``scan-export``, ``scan.load_model``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from jsonargparse import lazy_instance

from scan.checkpoint import CheckpointError, save_model
from scan.datasets import NoImagesError, UnpairedDataModule
from scan.training.module import NonFiniteLossError, SCANModule

__all__ = ["SCANCLI", "main", "TRAINER_DEFAULTS"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": lazy_instance(TensorBoardLogger, save_dir="runs", name="scan"),
    "log_every_n_steps": 10,
}


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, refreshed every ``every_n_train_steps``: what a killed run resumes from."""


class PeriodicCheckpoint(ModelCheckpoint):
    """Checkpoints that are kept, every ``every_n_epochs`` epochs."""


class SCANCLI(LightningCLI):
    """Links the data's crop size to the model's top resolution and, unless ``trainer.max_epochs``
    is given, runs the whole schedule."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("model.top_size", "data.size", apply_on="instantiate")
        # Checkpoint callbacks that are always present and configurable (--checkpoint.*, --periodic_checkpoint.*).
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                             "checkpoint.every_n_train_steps": 500})
        parser.add_lightning_class_args(PeriodicCheckpoint, "periodic_checkpoint")
        parser.set_defaults({"periodic_checkpoint.save_top_k": -1, "periodic_checkpoint.every_n_epochs": 10,
                             "periodic_checkpoint.filename": "epoch{epoch:03d}",
                             "periodic_checkpoint.auto_insert_metric_name": False})

    def before_fit(self) -> None:
        trainer_config = self.config[self.subcommand]["trainer"]
        if trainer_config.get("max_epochs") is None and trainer_config.get("max_steps", -1) == -1:
            self.trainer.fit_loop.max_epochs = self.model.total_epochs

    def after_fit(self) -> None:
        # The trained model as one safe file in the run's folder: what infer.py and scan-export take.
        trainer = self.trainer
        if trainer.interrupted:
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask, before rank 0 alone writes
        if not trainer.is_global_zero or log_dir is None:
            return
        path = save_model(self.model.model, Path(log_dir) / "model.pt")
        print(f"trained model written to {path}")


def main(args: list[str] | None = None) -> int:
    """Run the CLI; the errors a user can cause end in one line on stderr and exit status 2."""
    # Lightning warns that step-based checkpoints of manually optimised modules hold the state after
    # the optimiser steps: that is the state a resumed run must continue from.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    try:
        SCANCLI(
            SCANModule,
            UnpairedDataModule,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": False},
            args=args,
            auto_configure_optimizers=False,
        )
    except (NoImagesError, CheckpointError, NonFiniteLossError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
