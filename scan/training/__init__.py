"""``scan.training``: the LightningModule, fine-tuning (init_from, freeze), safe checkpoint I/O and the
``train.py`` command line."""

from scan.training.checkpoint_io import SafeCheckpointIO
from scan.training.finetune import FREEZABLE, InitFromError
from scan.training.module import NonFiniteLossError, OptimizerSpec, Phase, SCANModule, default_schedule

__all__ = ["FREEZABLE", "InitFromError", "NonFiniteLossError", "OptimizerSpec", "Phase", "SCANModule",
           "SafeCheckpointIO", "default_schedule"]
