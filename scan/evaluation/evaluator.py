"""Scoring a model over a whole held-out folder, every stage, streamed in batches.

Rows of a report (one per direction):

- ``input``: the untranslated images (what translation must beat);
- ``stage1`` ... ``stageK``: every stage's output, the coarse ones upsampled bilinearly to the top size;
- ``oracle_stage1`` ... ``oracle_stage{K-1}`` (with known answers): the true answer itself passed
  through that stage's resolution, down and back up: the best any stage at that size could score.

Metrics (columns): ``psnr``, ``ssim`` and ``detail`` (PSNR of the high-frequency band) against known
answers; ``cycle`` (L1 of the image against its round trip through both directions, at each stage's
resolution; needs no answer); ``kid`` (with ``kid_std``) and ``fid`` against the other domain's real
images, from a feature extractor (:mod:`scan.evaluation.features`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from scan.datasets.unpaired import HeldOutImages
from scan.errors import InputError
from scan.evaluation.distribution import DistributionScores
from scan.imageio import model_to_uint8, uint8_to_model
from scan.metrics import detail_psnr, psnr, ssim, through_resolution, to_size
from scan.model import SCAN

__all__ = ["evaluating", "Evaluator", "EvalFolders", "DirectionReport", "METRICS", "PAIRED_METRICS",
           "DISTRIBUTION_METRICS"]

PAIRED_METRICS = ("psnr", "ssim", "detail")
DISTRIBUTION_METRICS = ("kid", "fid")
METRICS = (*PAIRED_METRICS, "cycle", *DISTRIBUTION_METRICS)
DIRECTIONS = ("a2b", "b2a")
OTHER = {"a2b": "b2a", "b2a": "a2b"}


@dataclass(frozen=True)
class EvalFolders:
    """The folders one direction is scored on.

    Attributes:
        source: the images translated (``testA/`` for ``a2b``).
        real: the other domain's real images, for KID/FID (``testB/``).
        targets: the known answers of ``source``, same relative names (``testA_target/``).
    """

    source: Path
    real: Path | None = None
    targets: Path | None = None

    @classmethod
    def from_root(cls, root: str | os.PathLike[str], direction: str = "a2b", split: str = "test") -> EvalFolders:
        """A CycleGAN-layout folder's ``{split}A/``, ``{split}B/`` and ``{split}A_target/`` (for ``a2b``;
        the other way round for ``b2a``); a missing ``real`` or ``targets`` folder is left out.

        Raises:
            InputError: ``direction`` is unknown, or the source folder is missing.
        """
        if direction not in DIRECTIONS:
            raise InputError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
        root = Path(root)
        mine, theirs = ("A", "B") if direction == "a2b" else ("B", "A")
        source, real, targets = root / f"{split}{mine}", root / f"{split}{theirs}", root / f"{split}{mine}_target"
        if not source.is_dir():
            raise InputError(f"{source}: no such folder (expected CycleGAN layout {split}A/, {split}B/ under {root})")
        return cls(source, real if real.is_dir() else None, targets if targets.is_dir() else None)


@dataclass
class DirectionReport:
    """Scores of one direction: ``rows[row][metric]`` (see the module's docstring), how many images
    were scored, and the files that could not be decoded (reported, and left out of every score)."""

    direction: str
    rows: dict[str, dict[str, float]]
    images: int
    real_images: int = 0
    skipped: list[str] = field(default_factory=list)
    stages: int = 0
    top_size: int = 0


class _PairedSums:
    """Running sums of per-image scores: a folder's mean without holding its images."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metric: str, per_image: Tensor) -> None:
        self.sums[metric] = self.sums.get(metric, 0.0) + float(per_image.double().sum())
        self.counts[metric] = self.counts.get(metric, 0) + per_image.numel()

    def means(self) -> dict[str, float]:
        return {m: self.sums[m] / self.counts[m] for m in self.sums}


class Evaluator:
    """Scores models on held-out images: every stage, every metric asked for, in batches.

    Args:
        metrics: any of ``METRICS``. Paired metrics are skipped where there are no known answers,
            KID/FID where there are no real images of the other domain.
        features: the feature extractor for KID/FID (see :mod:`scan.evaluation.features`); needed only
            for those.
        batch_size: images per batch (memory is flat in the folder's size).
        device: where the model and the features run.
        precision: ``"fp32"`` or ``"bf16"`` (the model under autocast; features in fp32).
        num_workers: decoding processes.
        max_images: score only the first this many images of each folder.
        progress: show a progress bar.

    Example:
        >>> import scan
        >>> model = scan.create_model("tiny")
        >>> photos = torch.rand(4, 3, 64, 64) * 2 - 1
        >>> report = Evaluator(metrics=("psnr", "cycle")).evaluate_batches(model, [(photos, photos)])
        >>> sorted(report.rows), sorted(report.rows["stage2"])
        (['input', 'oracle_stage1', 'stage1', 'stage2'], ['cycle', 'psnr'])
    """

    def __init__(self, metrics: Iterable[str] = ("psnr", "ssim"), features: nn.Module | None = None,
                 batch_size: int = 16, device: str | torch.device = "cpu", precision: str = "fp32",
                 num_workers: int = 0, max_images: int | None = None, progress: bool = False) -> None:
        self.metrics = tuple(dict.fromkeys(metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
        if features is None and set(self.metrics) & set(DISTRIBUTION_METRICS):
            raise ValueError("KID/FID need a feature extractor (features=...)")
        if batch_size < 1 or (max_images is not None and max_images < 1) or num_workers < 0:
            raise ValueError(f"batch_size and max_images must be >= 1 and num_workers >= 0, got {batch_size}, "
                             f"{max_images}, {num_workers}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.device = torch.device(device)
        self.features = features.to(self.device).eval() if features is not None else None
        self.batch_size, self.precision, self.num_workers = batch_size, precision, num_workers
        self.max_images, self.progress = max_images, progress
        self._real_features: dict[tuple[str, int], Tensor] = {}

    @property
    def distribution_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m in DISTRIBUTION_METRICS)

    # ------------------------------------------------------------------------------------- folders
    def evaluate(self, model: SCAN, folders: EvalFolders, direction: str = "a2b", upto: int | None = None,
                 name: str = "") -> DirectionReport:
        """Score ``model`` translating ``folders.source`` in ``direction``.

        Args:
            model: the model (left in the train/eval state it came in).
            folders: what to score on (:meth:`EvalFolders.from_root`).
            direction: ``"a2b"`` or ``"b2a"``.
            upto: score stages ``1..upto`` (default: all).
            name: shown in the progress bar.

        Raises:
            NoImagesError: a folder holds no usable image.
            InputError: a known answer is missing, or too few images for KID/FID.
        """
        size = model.config.top_size
        targets = folders.targets if set(self.metrics) & set(PAIRED_METRICS) else None
        source = HeldOutImages(folders.source, size, targets, limit=self.max_images)
        skipped: list[str] = []
        reals = None
        if self.distribution_metrics and folders.real is not None:
            reals = self.real_features(folders.real, size)
        batches = self._folder_batches(source, skipped, f"{name} {direction}".strip())
        report = self.evaluate_batches(model, batches, direction=direction, upto=upto, real_features=reals)
        report.skipped = skipped
        return report

    def real_features(self, folder: Path, size: int) -> Tensor:
        """Features of a folder's images at ``size`` (computed once per folder and size, then reused)."""
        key = (str(Path(folder).resolve()), size)
        if key not in self._real_features:
            assert self.features is not None, "real_features needs a feature extractor"
            images = HeldOutImages(folder, size, limit=self.max_images)
            chunks = [self._features(uint8_to_model(batch.to(self.device)))
                      for batch, _ in self._folder_batches(images, [], f"features of {Path(folder).name}")]
            self._real_features[key] = torch.cat(chunks)
        return self._real_features[key]

    def _folder_batches(self, dataset: HeldOutImages, skipped: list[str],
                        label: str) -> Iterator[tuple[Tensor, Tensor | None]]:
        loader = DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, shuffle=False)
        for batch in tqdm(loader, desc=label, unit="batch", disable=not self.progress, leave=False):
            ok = batch["ok"]
            skipped.extend(f"{dataset.files[int(i)]}: could not be decoded" for i in batch["index"][~ok])
            if ok.any():
                yield batch["image"][ok], (batch["target"][ok] if "target" in batch else None)

    # ------------------------------------------------------------------------------------- batches
    def evaluate_batches(self, model: SCAN, batches: Iterable[tuple[Tensor, Tensor | None]], direction: str = "a2b",
                         upto: int | None = None, real_features: Tensor | None = None) -> DirectionReport:
        """Score ``model`` on batches ``(images, targets or None)`` (``uint8``, or floats in ``[-1, 1]``,
        at the model's top size).

        Args:
            model: the model.
            batches: the images, with their known answers where there are.
            direction: ``"a2b"`` or ``"b2a"``.
            upto: score stages ``1..upto`` (default: all).
            real_features: features of the other domain's real images (KID/FID; see :meth:`real_features`).

        Returns:
            The report; rows hold only the metrics that could be computed.
        """
        if direction not in DIRECTIONS:
            raise InputError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
        top = model.num_stages if upto is None else upto
        if not 1 <= top <= model.num_stages:
            raise ValueError(f"upto must be 1..{model.num_stages}, got {upto}")
        rows = ["input", *(f"stage{k}" for k in range(1, top + 1))]
        paired = {row: _PairedSums() for row in rows}
        oracles = {f"oracle_stage{k}": _PairedSums() for k in range(1, model.num_stages)}
        distribution = None
        if self.distribution_metrics and real_features is not None:
            distribution = {row: DistributionScores(real_features.shape[1], self.distribution_metrics) for row in rows}
            for scores in distribution.values():
                scores.update(real_features, real=True)
        count = 0
        with evaluating(model), torch.no_grad():
            for images, targets in batches:
                x = images.to(self.device)
                x = uint8_to_model(x) if x.dtype == torch.uint8 else x.float()
                y = None if targets is None else targets.to(self.device)
                y = None if y is None else (uint8_to_model(y) if y.dtype == torch.uint8 else y.float())
                count += x.shape[0]
                for row, image, cycle in self._rows(model, x, direction, top):
                    if y is not None:
                        self._add_paired(paired[row], image, y)
                    if cycle is not None:
                        paired[row].add("cycle", cycle)
                    if distribution is not None:
                        distribution[row].update(self._features(image), real=False)
                if y is not None:
                    for k in range(1, model.num_stages):
                        oracle = through_resolution(y, 2 ** (model.num_stages - k))
                        self._add_paired(oracles[f"oracle_stage{k}"], oracle, y)
        if count == 0:
            raise InputError("no image to evaluate")
        results = {row: paired[row].means() for row in rows}
        if distribution is not None:
            for row in rows:
                results[row].update(distribution[row].compute())
        results.update({row: sums.means() for row, sums in oracles.items() if sums.sums})
        return DirectionReport(direction, results, count, 0 if real_features is None else real_features.shape[0],
                               stages=model.num_stages, top_size=x.shape[-1])

    def _rows(self, model: SCAN, x: Tensor, direction: str, top: int) -> Iterator[tuple[str, Tensor, Tensor | None]]:
        """``(row, image at the top size, per-image cycle error or None)`` for the input and every stage."""
        yield "input", x, None
        forward, backward = model.generator(direction), model.generator(OTHER[direction])
        with self._autocast():
            # The generators directly, not the checked translate(): a diverged model's NaN must reach
            # the scores, not stop the evaluation.
            out = forward(model.stage_input(x, top), upto=top)
        for k, output in enumerate(out.outputs, start=1):
            cycle = None
            if "cycle" in self.metrics:
                with self._autocast():
                    rec = backward(output, upto=k).final
                cycle = (rec.float() - model.stage_input(x, k)).abs().flatten(1).mean(1)
            yield f"stage{k}", to_size(output.float(), x.shape[-2:]), cycle

    def score_pairs(self, images: Tensor, targets: Tensor) -> dict[str, float]:
        """The paired metrics asked for (means over the images) of ``images`` against ``targets``, both in
        ``[-1, 1]`` at one size: e.g. an oracle, ``metrics.through_resolution(targets, 2)``, against ``targets``."""
        sums = _PairedSums()
        self._add_paired(sums, images.float(), targets.float())
        return sums.means()

    def _add_paired(self, sums: _PairedSums, image: Tensor, target: Tensor) -> None:
        if "psnr" in self.metrics:
            sums.add("psnr", psnr(image, target, reduction="none"))
        if "ssim" in self.metrics:
            sums.add("ssim", ssim(image, target, reduction="none"))
        if "detail" in self.metrics:
            sums.add("detail", detail_psnr(image, target, reduction="none"))

    def _features(self, images: Tensor) -> Tensor:
        assert self.features is not None
        return self.features(model_to_uint8(images)).float()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the duration, every submodule's own mode restored after (a training
    run freezes some stages in eval mode, and must get them back as they were)."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)
