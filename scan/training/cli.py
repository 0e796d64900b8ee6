"""``train.py``: LightningCLI over :class:`SCANModule` and :class:`UnpairedDataModule`.

    python train.py fit --config configs/selfie2anime.yaml --data.root /path/to/selfie2anime
    python train.py fit --config configs/demo.yaml --trainer.max_epochs 2      # any option overrides
    python train.py fit --config runs/scan/version_0/config.yaml \
        --ckpt_path runs/scan/version_0/checkpoints/last.ckpt                   # resume
    python train.py fit --config configs/finetune.yaml --data.root STYLE_DIR \
        --model.init_from demo_output/model.pt                                  # a new style from a trained model

The resolved config is saved as ``config.yaml`` in each run's log folder, and at the end of a
completed fit the trained model as ``model.pt`` (for ``infer.py``, ``scan-export``, ``scan.load_model``).
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from jsonargparse import Namespace, lazy_instance
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from scan.checkpoint import save_model
from scan.datasets import UnpairedDataModule
from scan.datasets.unpaired import resolve_folders
from scan.errors import InputError, run_command
from scan.outputs import atomic_write
from scan.registry import create_config
from scan.training.callbacks import EvaluationCallback
from scan.training.checkpoint_io import check_training_checkpoint
from scan.training.interrupts import InterruptedRun, RunFolder
from scan.training.module import SCANModule

__all__ = ["SCANCLI", "main", "TRAINER_DEFAULTS"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": lazy_instance(TensorBoardLogger, save_dir="runs", name="scan"),
    "log_every_n_steps": 10,
}


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, refreshed every ``every_n_train_steps``: what a killed run resumes from."""


class PeriodicCheckpoint(ModelCheckpoint):
    """Checkpoints that are kept, every ``every_n_epochs`` epochs."""


class AtomicSaveConfig(SaveConfigCallback):
    """Writes the run's resolved ``config.yaml`` atomically (and never over an earlier run's)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if trainer.is_global_zero and log_dir is not None:
            path = Path(log_dir) / self.config_filename
            if path.exists() and not self.overwrite:
                raise InputError(f"{path} exists: that folder holds an earlier run")
            text = self.parser.dump(self.config, skip_none=False)
            atomic_write(path, lambda tmp: tmp.write_text(text))
        self.already_saved = True


# How a run goes, not what it trains: a resumed run takes these from its command, not from the checkpoint.
RUN_OPTIONS = ("compile", "compile_mode", "channels_last", "max_nonfinite_steps", "image_log_every_n_steps")


def _plain(key: str, value: Any) -> Any:
    """A --model.* value as plain data, comparable with a checkpoint's: namespaces as dicts, a preset
    name as its config."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, list):
        return [_plain("", v) for v in value]
    if key == "model" and isinstance(value, str):
        try:
            return create_config(value).to_dict()
        except ValueError:
            return value
    return value


def _launching_process() -> bool:
    """Whether this is the process a user started (rank 0), not a DDP worker that Lightning launched."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _default_model_config() -> dict[str, Any]:
    """``SCANModule``'s default preset, field by field: what ``--help`` and ``--print_config`` show."""
    default = inspect.signature(SCANModule).parameters["model"].default
    return create_config(default).to_dict() if isinstance(default, str) else default.to_dict()


def _no_usage(file: Any = None) -> None:
    """What a parser prints as its usage on an error: nothing (the error line and the tip follow)."""


class SCANCLI(LightningCLI):
    """Links the data's crop size to the model's top resolution, shows the default model config field
    by field, and sets ``trainer.max_epochs`` to the schedule's length when it is not given (the module
    would stop there anyway; set here, the progress bar and Lightning's messages know it from the start)."""

    def init_parser(self, **kwargs: Any) -> Any:
        parser = super().init_parser(**kwargs)
        # A mistake in an option is its one error line and the tip naming --help, not a 100-line usage
        # dump above them (jsonargparse prints the usage on every error).
        parser.print_usage = _no_usage  # type: ignore[method-assign]
        return parser

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("model.top_size", "data.size", apply_on="instantiate")
        # `model.model` takes a preset name or a whole config: the default as a config lists every field
        # (and its value) in --help and --print_config, and lets --model.model.loss.lambda_cycle etc. set one.
        parser.set_defaults({"model.model": _default_model_config()})
        # Checkpoint callbacks that are always present and configurable (--checkpoint.*, --periodic_checkpoint.*).
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                             "checkpoint.every_n_train_steps": 500})
        parser.add_lightning_class_args(PeriodicCheckpoint, "periodic_checkpoint")
        # Held-out evaluation over the whole test split, every N epochs (--evaluation.*; scan.evaluation).
        parser.add_lightning_class_args(EvaluationCallback, "evaluation")
        parser.set_defaults({"periodic_checkpoint.save_top_k": -1, "periodic_checkpoint.every_n_epochs": 10,
                             "periodic_checkpoint.filename": "epoch{epoch:03d}",
                             "periodic_checkpoint.auto_insert_metric_name": False})

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the resume checkpoint here, before any of our code: check it first, with our
        # safe loader, so a wrong or corrupt file is one clear line (and never advice to unpickle it).
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):  # Lightning's named checkpoints
            check_training_checkpoint(ckpt_path)
        command = copy.deepcopy(self.config[subcommand]["model"]) if subcommand else None
        # Lightning replaces every --model.* option with the checkpoint's: a resumed run trains the
        # model it saved, on its schedule. How it runs is this command's to say, though.
        super()._parse_ckpt_path()
        if command is None or not ckpt_path:
            return
        resumed = self.config[subcommand]["model"]
        for key in RUN_OPTIONS:
            if key in command:
                resumed[key] = command[key]
        defaults = {name: p.default for name, p in inspect.signature(SCANModule).parameters.items()}
        defaults["model"] = _default_model_config()
        replaced = [key for key in defaults if key not in RUN_OPTIONS and key in command
                    and _plain(key, command[key]) != _plain(key, resumed[key])
                    and _plain(key, command[key]) != _plain(key, defaults[key])]
        if replaced and _launching_process():
            print(f"note: resuming from {ckpt_path}: the checkpoint's {', '.join(f'--model.{k}' for k in replaced)} "
                  f"replace(s) this command's (a resumed run trains the model it saved, on its schedule; "
                  f"{', '.join(f'--model.{k}' for k in RUN_OPTIONS)} are this command's)", file=sys.stderr)
        # The weights are the checkpoint's: the file a fine-tuning run started from is not read again
        # (it may be gone by now).
        resumed["init_from"] = None

    def before_fit(self) -> None:
        logger = self.trainer.logger
        # An explicit logger version whose folder holds a run: refuse before anything is written into it.
        if isinstance(logger, TensorBoardLogger) and getattr(logger, "_version", None) is not None:
            log_dir = Path(logger.log_dir)
            if _launching_process() and log_dir.is_dir() and any(log_dir.iterdir()):
                raise InputError(
                    f"{log_dir} holds an earlier run; choose another --trainer.logger.init_args.version, or leave "
                    "it out to get the next free one"
                )
        # Find the data and check it before the run writes anything (its log folder, its config).
        self.datamodule.setup("fit")
        self.datamodule.check_batch_size(self.trainer.world_size)
        _check_examples(self.datamodule)
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


MIN_IMAGES_PER_DOMAIN = 2


def _check_examples(datamodule: UnpairedDataModule) -> None:
    """Refuse a domain of a single image: a discriminator shown one real image only learns that image
    (a style needs examples; 10 or more, with ``--model.init_from`` and ``--model.diff_augment``)."""
    train_set = datamodule.train_set
    if train_set is None:
        return
    folders = resolve_folders(datamodule.root, datamodule.dir_a, datamodule.dir_b, "train")
    for folder, files in zip(folders, (train_set.files_a, train_set.files_b)):
        if len(files) < MIN_IMAGES_PER_DOMAIN:
            raise InputError(f"{folder}: {len(files)} usable image(s); training needs at least "
                             f"{MIN_IMAGES_PER_DOMAIN} per domain (for a style: 10 or more, see configs/finetune.yaml)")


def main(args: list[str] | None = None) -> int:
    """Run the CLI; the errors a user can cause end in one line on stderr and exit status 2
    (``--debug`` anywhere on the command line shows the traceback instead)."""
    # Lightning warns that step-based checkpoints of manually optimised modules hold the state after
    # the optimiser steps: that is the state a resumed run must continue from.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # Lightning 2.6 calls a torch.utils._pytree API that torch 2.13 deprecates; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if args is None:  # from the command line: LightningCLI reads sys.argv, which must not hold --debug
        debug = "--debug" in sys.argv
        sys.argv = [a for a in sys.argv if a != "--debug"]
        argv = None
    else:
        debug = "--debug" in args
        argv = [a for a in args if a != "--debug"]

    def run() -> int:
        stopped, folder = InterruptedRun(), RunFolder()
        try:
            SCANCLI(
                SCANModule,
                UnpairedDataModule,
                trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [stopped, folder]},
                save_config_callback=AtomicSaveConfig,
                save_config_kwargs={"overwrite": False},
                args=argv,
                auto_configure_optimizers=False,
            )
        except SystemExit:
            if stopped.code is None:  # --help, a parse error: argparse's own exit
                raise
            folder.drop_if_unused()
        except BaseException:
            folder.drop_if_unused()  # the loggers are closed by now: what they wrote is on disk
            raise
        if stopped.code is not None:  # Lightning exits 0 on SIGTERM and 1 on Ctrl-C: say what happened
            print(stopped.message, file=sys.stderr)
            return stopped.code
        return 0

    # A ValueError here is a config the user wrote (an unknown preset, a bad schedule): theirs to fix.
    # Lightning's MisconfigurationException: an accelerator or strategy this machine cannot give, say.
    return run_command(run, debug, user_errors=(ValueError, FileExistsError, MisconfigurationException))
