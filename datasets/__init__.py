"""``scan.datasets``: unpaired image folders, robust decoding, batch augmentation, the offline demo set."""

from .augment import BatchAugment, load_size_for
from .datamodule import UnpairedDataModule
from .images import IMAGE_EXTENSIONS, NoImagesError, find_images, load_image
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
]
