"""LightningDataModule over two unpaired folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from scan.datasets.augment import BatchAugment, load_size_for
from scan.datasets.unpaired import UnpairedImageDataset, resolve_folders
from scan.evaluation.evaluator import EvalFolders
from scan.imageio import NoImagesError
from scan.runtime import MAX_WORKERS

__all__ = ["UnpairedDataModule", "MAX_BATCH_SIZE"]

MAX_BATCH_SIZE = 4096  # images per step; far beyond one GPU's memory at 64 px


class UnpairedDataModule(pl.LightningDataModule):
    """Training batches ``{"a", "b"}`` from two unpaired folders, augmented on the device, and the
    held-out folders that evaluation scores (:meth:`evaluation_folders`; no validation loader: the
    evaluation callback streams the whole held-out folder itself).

    Args:
        root: a CycleGAN-layout folder (``trainA/``, ``trainB/``, optionally ``testA/``, ``testB/``).
        dir_a: domain A folder (instead of ``root``).
        dir_b: domain B folder (instead of ``root``).
        size: training crop side (the model's top resolution; ``train.py`` links it to the model).
        load_size: side images are resized to before cropping; default CycleGAN's 286/256 ratio.
        batch_size: images per domain per step (CycleGAN: 1).
        num_workers: decoding processes (default: up to 4, at most the CPU count).
        flip: random horizontal flips.
        color_jitter: colour jitter strength (0: off).
        blur_prob: probability of a random blur (0: off).
    """

    def __init__(
        self,
        root: str | None = None,
        dir_a: str | None = None,
        dir_b: str | None = None,
        size: int = 256,
        load_size: int | None = None,
        batch_size: int = 1,
        num_workers: int | None = None,
        flip: bool = True,
        color_jitter: float = 0.0,
        blur_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root, self.dir_a, self.dir_b = root, dir_a, dir_b
        self.size = size
        self.load_size = load_size or load_size_for(size)
        if self.load_size < size:
            raise ValueError(f"load_size {self.load_size} is smaller than the crop size {size}")
        # Checked here, before the run's folder exists: a DataLoader refuses 0 only at the first epoch,
        # and 100000 workers would start that many processes.
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size {batch_size} is outside 1..{MAX_BATCH_SIZE}")
        if num_workers is not None and not 0 <= num_workers <= MAX_WORKERS:
            raise ValueError(f"num_workers {num_workers} is outside 0..{MAX_WORKERS}")
        self.batch_size = batch_size
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.augment = BatchAugment(size, flip=flip, color_jitter=color_jitter, blur_prob=blur_prob)
        self.train_set: UnpairedImageDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            dir_a, dir_b = resolve_folders(self.root, self.dir_a, self.dir_b, "train")
            self.train_set = UnpairedImageDataset(dir_a, dir_b, self.load_size)
        self.check_batch_size(self.trainer.world_size if self.trainer is not None else 1)

    def check_batch_size(self, world_size: int) -> None:
        """Training batches drop the incomplete last one: refuse data that would give none at all.

        Raises:
            NoImagesError: fewer images per epoch than ``batch_size`` times ``world_size``.
        """
        assert self.train_set is not None, "call setup() first"
        if len(self.train_set) < self.batch_size * world_size:
            raise NoImagesError(
                f"{len(self.train_set)} training image(s) per epoch in {self.train_set.folders}, fewer than one "
                f"batch (batch_size {self.batch_size} x {world_size} process(es)); lower --data.batch_size or add "
                "images"
            )

    def _loader(self, dataset: Any, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        return self._loader(self.train_set, shuffle=True, batch_size=self.batch_size)

    def evaluation_folders(self, direction: str) -> tuple[EvalFolders, bool]:
        """The folders ``direction`` is scored on during training, and whether they are held out.

        With a ``root`` that has a test split (``testA/``, ``testB/``, and known answers in
        ``testA_target/`` where the data has them): those. Otherwise the training folders stand in.
        """
        if self.root is not None and all((Path(self.root) / f"test{d}").is_dir() for d in "AB"):
            return EvalFolders.from_root(self.root, direction, "test"), True
        dir_a, dir_b = resolve_folders(self.root, self.dir_a, self.dir_b, "train")
        source, real = (dir_a, dir_b) if direction == "a2b" else (dir_b, dir_a)
        return EvalFolders(source, real), False

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        # Augment on the device the batch now lives on (GPU when training on one).
        training = self.trainer is not None and self.trainer.training
        self.augment.train(training)
        return {key: self.augment(value) for key, value in batch.items()}
