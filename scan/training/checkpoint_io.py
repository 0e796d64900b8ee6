"""Lightning checkpoint I/O that never leaves a corrupt only copy and never unpickles code."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.plugins.io import TorchCheckpointIO

from scan.checkpoint import atomic_save, read_checkpoint

__all__ = ["SafeCheckpointIO"]


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
