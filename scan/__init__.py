"""scan: Stacked Cycle-Consistent Adversarial Networks for unpaired image-to-image translation.

Quick start::

    import scan
    model = scan.create_model("scan-128-256")
    out = model.translate(images)          # images in [-1, 1], (B, 3, 256, 256)
    out.final, out.outputs, out.alphas     # last output, every stage's output and alpha map
    scan.save_model(model, "model.pt")     # one safe file: config + weights
    model = scan.load_model("model.pt")
"""

# ruff: noqa: E402
# First, before anything imports torch: OpenMP reads its wait policy once, when torch loads it (so
# the imports below come after a statement).
from scan import runtime as _runtime

_runtime.prefer_passive_waiting()

from scan.checkpoint import CheckpointError, load_model, save_model
from scan.config import (
    DiscriminatorConfig,
    FusionConfig,
    GeneratorConfig,
    LossConfig,
    SCANConfig,
    StageConfig,
)
from scan.generator import StackedGenerator, StackOutput
from scan.losses import GANLoss, ImagePool, gan_loss
from scan.model import SCAN, GeneratorStep
from scan.registry import create_config, create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "SCAN",
    "CheckpointError",
    "DiscriminatorConfig",
    "FusionConfig",
    "GANLoss",
    "GeneratorConfig",
    "GeneratorStep",
    "ImagePool",
    "LossConfig",
    "SCANConfig",
    "StackOutput",
    "StackedGenerator",
    "StageConfig",
    "create_config",
    "create_model",
    "gan_loss",
    "list_models",
    "load_model",
    "register_model",
    "save_model",
]
