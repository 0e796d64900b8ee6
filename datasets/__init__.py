"""``scan.datasets``: unpaired image folders, robust decoding, batch augmentation, the offline demo set."""

from typing import Any

from .augment import BatchAugment, load_size_for
from .images import IMAGE_EXTENSIONS, NoImagesError, find_images, load_image, to_rgb
from .unpaired import FixedPairsDataset, UnpairedImageDataset, resolve_folders

__all__ = [
    "IMAGE_EXTENSIONS",
    "BatchAugment",
    "FixedPairsDataset",
    "NoImagesError",
    "UnpairedDataModule",
    "UnpairedImageDataset",
    "find_images",
    "load_image",
    "load_size_for",
    "resolve_folders",
    "to_rgb",
]


def __getattr__(name: str) -> Any:
    # The data module pulls in Lightning (~2 s): only training needs it, not infer.py or scan-align.
    if name == "UnpairedDataModule":
        from .datamodule import UnpairedDataModule

        return UnpairedDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
