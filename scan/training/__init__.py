"""``scan.training``: the LightningModule, safe checkpoint I/O and the ``train.py`` command line."""

from scan.training.checkpoint_io import SafeCheckpointIO
from scan.training.module import NonFiniteLossError, OptimizerSpec, Phase, SCANModule, default_schedule

__all__ = ["NonFiniteLossError", "OptimizerSpec", "Phase", "SCANModule", "SafeCheckpointIO", "default_schedule"]
