"""Unpaired datasets over two image folders (CycleGAN's ``trainA/``, ``trainB/`` layout or any two)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from scan.datasets.images import check_image, report_bad_files
from scan.errors import InputError
from scan.imageio import NoImagesError, find_images, load_image, pil_to_uint8

__all__ = ["resolve_folders", "usable_images", "UnpairedImageDataset", "FixedPairsDataset", "HeldOutImages"]


def resolve_folders(
    root: str | os.PathLike[str] | None, dir_a: str | os.PathLike[str] | None, dir_b: str | os.PathLike[str] | None,
    split: str = "train",
) -> tuple[Path, Path]:
    """The two domain folders: ``dir_a``/``dir_b`` when given, else ``root/{split}A`` and ``root/{split}B``.

    Raises:
        NoImagesError: a folder is missing.
    """
    if dir_a is not None and dir_b is not None:
        folders = Path(dir_a), Path(dir_b)
    elif root is not None:
        folders = Path(root) / f"{split}A", Path(root) / f"{split}B"
    else:
        raise NoImagesError("give either root (CycleGAN layout: trainA/, trainB/) or both dir_a and dir_b")
    for folder in folders:
        if not folder.is_dir():
            hint = f" (expected CycleGAN layout {split}A/ and {split}B/ under {root})" if dir_a is None else ""
            raise NoImagesError(f"{folder}: no such folder{hint}")
    return folders


def usable_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files of ``folder`` that pass :func:`check_image`; the others are reported in one warning.

    Raises:
        NoImagesError: no usable image in ``folder``.
    """
    skipped: list[str] = []
    files = find_images(folder, recursive, skipped=skipped)
    good, bad = [], []
    for path in files:
        reason = check_image(path)
        (bad.append((path, reason)) if reason else good.append(path))
    for line in skipped:  # entries the walker could not use: a dangling symlink, an unreadable folder
        where, _, reason = line.partition(": ")
        bad.append((Path(where), reason))
    report_bad_files(bad, str(folder))
    if not good:
        raise NoImagesError(f"{folder}: no usable image ({len(files)} file(s), all unreadable)")
    return good


class _DecodingDataset(Dataset):
    """Decodes files to square uint8 tensors, skipping files that only fail at decode time
    (e.g. truncated JPEGs, which pass the header check)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._warned: set[Path] = set()

    def _square(self, image: Image.Image) -> torch.Tensor:
        # CycleGAN's `resize_and_crop` first step: resize to a square load size (aspect not kept).
        return pil_to_uint8(image.resize((self.size, self.size), Image.Resampling.BICUBIC))

    def _decode(self, files: list[Path], index: int) -> torch.Tensor:
        for attempt in range(len(files)):
            path = files[(index + attempt) % len(files)]
            try:
                image = load_image(path)
            except Exception as e:
                if path not in self._warned:  # listed once per worker process
                    self._warned.add(path)
                    warnings.warn(f"{path}: skipped unreadable file ({type(e).__name__}: {e})", stacklevel=2)
                continue
            return self._square(image)
        raise NoImagesError(f"{files[0].parent}: no file could be decoded")


class UnpairedImageDataset(_DecodingDataset):
    """Unpaired samples ``{"a": A[i], "b": B[random]}`` as ``(3, S, S)`` uint8 tensors.

    An epoch is ``max(len(A), len(B))`` samples; B is drawn at random, independently of A (from
    torch's RNG, which DataLoader seeds per worker and epoch, mixed with A's index so that DDP ranks
    draw differently). Random cropping and flipping happen later, on the batch,
    on the device (:class:`scan.datasets.BatchAugment`).

    Args:
        dir_a: folder of domain A (searched recursively).
        dir_b: folder of domain B.
        load_size: side of the square each image is resized to (CycleGAN: 286 for 256 crops).
    """

    def __init__(self, dir_a: str | os.PathLike[str], dir_b: str | os.PathLike[str], load_size: int) -> None:
        super().__init__(load_size)
        self.files_a = usable_images(Path(dir_a))
        self.files_b = usable_images(Path(dir_b))
        self.folders = f"{dir_a} and {dir_b}"

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Under DDP every rank seeds torch alike, so a plain draw would hand all ranks the same B
        # images; mixing in A's index (different on every rank) keeps the draws independent.
        seed = int(torch.randint(2**62, ())) ^ ((index * 0x9E3779B97F4A7C15) % 2**62)
        index_b = int(torch.randint(len(self.files_b), (), generator=torch.Generator().manual_seed(seed)))
        return {"a": self._decode(self.files_a, index % len(self.files_a)), "b": self._decode(self.files_b, index_b)}


class FixedPairsDataset(_DecodingDataset):
    """A small fixed set ``{"a": A[i], "b": B[i]}`` (plus ``"a_target"``, the known translation of A[i],
    where a ``<dir_a>_target`` folder holds files of the same names): the demo set's held-out photos and
    their answers (:func:`scan.datasets.demo.load_heldout`).

    Args:
        dir_a, dir_b: the domain folders.
        size: the square size images are resized to (the model's top size).
        count: how many pairs (fewer if a folder holds fewer images).
    """

    def __init__(self, dir_a: str | os.PathLike[str], dir_b: str | os.PathLike[str], size: int, count: int) -> None:
        super().__init__(size)
        self.files_a = usable_images(Path(dir_a))[:count]
        self.files_b = usable_images(Path(dir_b))[:count]
        n = min(len(self.files_a), len(self.files_b))
        self.files_a, self.files_b = self.files_a[:n], self.files_b[:n]
        target_dir = Path(dir_a).with_name(Path(dir_a).name + "_target")
        targets = [target_dir / p.relative_to(dir_a) for p in self.files_a]
        self.targets = targets if target_dir.is_dir() and all(t.is_file() for t in targets) else None

    def __len__(self) -> int:
        return len(self.files_a)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"a": self._decode(self.files_a, index), "b": self._decode(self.files_b, index)}
        if self.targets is not None:
            item["a_target"] = self._decode(self.targets, index)
        return item


class HeldOutImages(_DecodingDataset):
    """Every usable image of a folder, in a fixed (sorted) order, each with its known answer where a
    ``targets`` folder holds one of the same relative name: what evaluation streams in batches.

    A file that passes the header check but fails to decode is not replaced by another (as the
    training sets do): its sample comes back with ``ok`` false, and the caller reports and drops it.

    Args:
        folder: the images (searched recursively).
        size: the square side images are resized to.
        targets: a folder of known answers (``testA_target/``), one per image.
        limit: the first this many images only.

    Raises:
        NoImagesError: no usable image.
        InputError: ``targets`` lacks the answer of some image (the first is named).
    """

    def __init__(self, folder: str | os.PathLike[str], size: int, targets: str | os.PathLike[str] | None = None,
                 limit: int | None = None) -> None:
        super().__init__(size)
        self.folder = Path(folder)
        self.files = usable_images(self.folder)[:limit]
        self.targets: list[Path] | None = None
        if targets is not None:
            self.targets = [Path(targets) / p.relative_to(self.folder) for p in self.files]
            missing = [t for t in self.targets if not t.is_file()]
            if missing:
                raise InputError(f"{missing[0]}: no known answer for {self.files[self.targets.index(missing[0])]} "
                                 f"({len(missing)} of {len(self.files)} missing in {targets})")

    def __len__(self) -> int:
        return len(self.files)

    def _decode_one(self, path: Path) -> tuple[torch.Tensor, bool]:
        try:
            image = load_image(path)
        except Exception:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), False
        return self._square(image), True

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, ok = self._decode_one(self.files[index])
        item = {"image": image, "index": torch.tensor(index)}
        if self.targets is not None:
            target, target_ok = self._decode_one(self.targets[index])
            item["target"], ok = target, ok and target_ok
        item["ok"] = torch.tensor(ok)
        return item
