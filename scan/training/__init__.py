"""``scan.training``: the LightningModule, safe checkpoint I/O and the ``train.py`` command line."""

from scan.training.checkpoint_io import SafeCheckpointIO
from scan.training.module import NonFiniteLossError, Phase, SCANModule, default_schedule

__all__ = ["NonFiniteLossError", "Phase", "SCANModule", "SafeCheckpointIO", "default_schedule"]
