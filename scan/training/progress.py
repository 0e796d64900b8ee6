"""Progress bars that do not make a GPU step wait: redrawn by the clock, not after every batch."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

__all__ = ["ThrottledTQDMProgressBar", "ThrottledRichProgressBar", "throttled"]

MIN_REDRAW_INTERVAL_S = 0.5


class _RedrawnByTheClock(ProgressBar):
    """Redraws the training bar at most every ``min_interval_s`` seconds and at an epoch's last batch.

    Each redraw reads the step's losses (``G``, ``D``) from the device, which makes the host wait until
    the device has finished everything queued. Lightning's bars do that after every batch; at batch
    1 on a GPU, where a step takes milliseconds, the wait costs more than the bar is worth.
    """

    min_interval_s: float = MIN_REDRAW_INTERVAL_S
    _last_redraw: float = -float("inf")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last_redraw >= self.min_interval_s or batch_idx + 1 == trainer.num_training_batches:
            self._last_redraw = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class ThrottledTQDMProgressBar(_RedrawnByTheClock, TQDMProgressBar):
    """Lightning's tqdm bar, redrawn by the clock (see :func:`throttled`)."""


class ThrottledRichProgressBar(_RedrawnByTheClock, RichProgressBar):
    """Lightning's rich bar, redrawn by the clock (see :func:`throttled`)."""


_THROTTLED: dict[type, type[_RedrawnByTheClock]] = {
    TQDMProgressBar: ThrottledTQDMProgressBar,
    RichProgressBar: ThrottledRichProgressBar,
}


def throttled(bar: Any, min_interval_s: float = MIN_REDRAW_INTERVAL_S) -> ProgressBar | None:
    """The same bar, settings kept, redrawn at most every ``min_interval_s`` seconds; ``None`` for
    a bar that is not one of Lightning's two (the user's own bar is left as it is).

    Args:
        bar: the trainer's progress bar callback (``None`` when it is turned off).
        min_interval_s: least time between redraws.
    """
    kind = _THROTTLED.get(type(bar))
    if kind is None:
        return None
    copy = kind.__new__(kind)  # a not yet started bar: its state is its settings
    copy.__dict__.update(vars(bar))
    copy.min_interval_s = min_interval_s
    return copy
