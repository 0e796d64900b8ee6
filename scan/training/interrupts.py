"""A training run stopped from outside, ended honestly: a non-zero exit status and a resumable checkpoint.

Lightning turns SIGTERM (what schedulers and ``kill`` send) into a stop at the next batch's end and
then exits with status 0, as if the run had finished; Ctrl-C ends in status 1. Neither tells a script
that the run was cut short, nor where to resume it. :class:`InterruptedRun` records what stopped the
run; on SIGTERM it first writes ``last.ckpt`` (the loop stopped between two steps, so the state is
whole); ``train.py`` then exits with the shell's codes: 143 (128 + SIGTERM) and 130 (128 + SIGINT).
Ctrl-C can land in the middle of a step, so it keeps the last ``last.ckpt`` written on schedule.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

__all__ = ["InterruptedRun", "EXIT_TERMINATED", "EXIT_INTERRUPTED"]

EXIT_TERMINATED = 128 + signal.SIGTERM
EXIT_INTERRUPTED = 128 + signal.SIGINT


class InterruptedRun(pl.Callback):
    """Records why a run stopped early (:attr:`code`, :attr:`message`); on SIGTERM writes ``last.ckpt``.

    Attributes:
        code: ``None`` while nothing stopped the run; else the exit status the command should end with.
        message: one line for the user: what stopped the run and where to resume it.
    """

    def __init__(self) -> None:
        self.code: int | None = None
        self.message = ""

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.code, cause = EXIT_TERMINATED, "SIGTERM"
            saved = self._save_last(trainer)
        elif isinstance(exception, KeyboardInterrupt):
            self.code, cause = EXIT_INTERRUPTED, "Ctrl-C"
            saved = self._existing_last(trainer)
        else:
            return
        where = (f"resume with --ckpt_path {saved}" if saved is not None
                 else "no checkpoint was written yet (nothing to resume)")
        self.message = f"stopped by {cause} at step {trainer.global_step}: no model.pt written; {where}"

    @staticmethod
    def _last_path(trainer: pl.Trainer) -> Path | None:
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        return None

    def _save_last(self, trainer: pl.Trainer) -> Path | None:
        path = self._last_path(trainer)
        if path is not None:
            trainer.save_checkpoint(path)  # atomic: scan.training.checkpoint_io
        return path

    def _existing_last(self, trainer: pl.Trainer) -> Path | None:
        path = self._last_path(trainer)
        return path if path is not None and path.is_file() else None
