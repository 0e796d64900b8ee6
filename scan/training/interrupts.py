"""A training run stopped from outside, ended honestly: a non-zero exit status and a resumable checkpoint.

Lightning turns SIGTERM (what schedulers and ``kill`` send) into a stop at the next batch's end and
then exits with status 0, as if the run had finished; Ctrl-C ends in status 1. Neither tells a script
that the run was cut short, nor where to resume it. :class:`InterruptedRun` records what stopped the
run; on SIGTERM it first writes ``last.ckpt`` (the loop stopped between two steps, so the state is
whole); ``train.py`` then exits with the shell's codes: 143 (128 + SIGTERM) and 130 (128 + SIGINT).
Ctrl-C can land in the middle of a step, so it keeps the last ``last.ckpt`` written on schedule.
A run that fails before logging anything leaves no empty ``version_N`` folder (:class:`RunFolder`).
"""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

__all__ = ["InterruptedRun", "RunFolder", "remove_unused_folder", "EXIT_TERMINATED", "EXIT_INTERRUPTED"]

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


def _holds_records(events: Path) -> bool:
    """Whether a TensorBoard event file holds more than its header (the file-version record every
    writer starts with). Records are framed as: 8-byte length, 4-byte CRC, data, 4-byte CRC."""
    try:
        with open(events, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            f.seek(8 + 4 + struct.unpack("<Q", head)[0] + 4)
            return f.read(1) != b""
    except OSError:
        return True  # unreadable: not ours to judge, so keep it


def remove_unused_folder(folder: Path) -> bool:
    """Remove ``folder`` and the folders under it if they hold no file but TensorBoard event files
    without a record (a logger opened, nothing logged) and no link.

    A folder with anything else is left exactly as it is.

    Returns:
        Whether ``folder`` is gone.
    """
    if not folder.is_dir() or folder.is_symlink():
        return False
    tree = list(os.walk(folder, topdown=False))  # deepest first; os.walk never follows a link
    for root, dirs, files in tree:
        if any(os.path.islink(os.path.join(root, name)) for name in dirs + files):
            return False
        if any(not name.startswith("events.out.tfevents.") or _holds_records(Path(root, name)) for name in files):
            return False
    try:
        for root, _, files in tree:
            for name in files:
                os.unlink(os.path.join(root, name))
            os.rmdir(root)
    except OSError:  # something appeared meanwhile, or not ours to remove: keep the rest
        return False
    return True


class RunFolder(pl.Callback):
    """Remembers the run's log folder, so that a run that fails before logging anything can remove it
    (:meth:`drop_if_unused`): an empty ``version_N`` looks like a run and pushes the next to ``N+1``."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if trainer.is_global_zero and log_dir is not None:
            self.path = Path(log_dir)

    def drop_if_unused(self) -> None:
        """Remove the folder if the run wrote nothing in it (call once the run has ended, loggers closed)."""
        if self.path is not None:
            remove_unused_folder(self.path)
