"""``scan.fusion``: blocks that mix a stage's new image with the previous stage's output."""

from .adaptive import AdaptiveFusion, FixedAlphaFusion, fuse

__all__ = ["AdaptiveFusion", "FixedAlphaFusion", "fuse"]
