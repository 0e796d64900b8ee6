"""Lightning checkpoint I/O that never leaves a corrupt only copy and never unpickles code."""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from scan.checkpoint import CheckpointError, atomic_save, read_checkpoint

__all__ = ["SafeCheckpointIO", "check_training_checkpoint"]


def check_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint to resume from, safely, and check it is one that scan's training wrote.

    Returns:
        The checkpoint's dict.

    Raises:
        CheckpointError: missing, unreadable, unsafe, or not a scan training checkpoint (for example
            a ``model.pt``, which holds weights but no training state).
    """
    data = read_checkpoint(path)
    if data.get("format") == "scan-model":
        raise CheckpointError(
            f"{path}: a scan model file holds weights but no training state, so it cannot resume a run; give "
            "a run's checkpoints/last.ckpt (model files are for infer.py and scan-export)"
        )
    if not isinstance(data.get("scan"), dict) or not isinstance(data.get("state_dict"), dict) or "loops" not in data:
        raise CheckpointError(
            f"{path}: not a scan training checkpoint (keys: {sorted(map(str, data))[:6]}); give a run's "
            "checkpoints/last.ckpt"
        )
    return data


class SafeCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints atomically (temporary file, fsync, rename: a kill mid-save leaves the
    previous ``last.ckpt`` intact) and reads them with ``torch.load(weights_only=True)``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is always True here, whatever the caller asks: resuming must not run code.
        return read_checkpoint(path, map_location=map_location or "cpu")
