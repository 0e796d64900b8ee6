"""What a training run does besides the step: held-out evaluation and image logs, as Lightning callbacks.

- :class:`EvaluationCallback`: every N epochs (and at the end of every phase), every trained stage
  scored over the whole held-out folder by :mod:`scan.evaluation`, logged as ``val/<row>/<metric>_<direction>``
  (``val/stage2/psnr_a2b``, ``val/input/psnr_a2b``, ``val/stage1/kid_b2a`` ...), with an image grid per stage;
- :class:`TrainingImages`: a grid of the step's images every N batches (``train/stage<k>``), from what
  :meth:`SCANModule.training_step <scan.training.SCANModule.training_step>` returns.

Each grid row is one sample: real A, fake B, rec A, real B, fake A, rec B, then the fusion alpha maps.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor

from scan.datasets.unpaired import HeldOutImages
from scan.evaluation import DISTRIBUTION_METRICS, METRICS, EvalFolders, Evaluator, evaluating, load_inception
from scan.imageops import heatmap, make_grid, uint8_to_model

__all__ = ["EvaluationCallback", "TrainingImages", "log_grid"]


def log_grid(trainer: pl.Trainer, tag: str, images: dict[str, Tensor | None], rows: int = 4) -> None:
    """Log one grid of up to ``rows`` samples to TensorBoard (rank 0; other loggers are left alone).

    Args:
        trainer: the running trainer.
        tag: the image's tag.
        images: ``real_a, fake_b, rec_a, real_b, fake_a, rec_b`` in ``[-1, 1]``, then ``alpha_ab``,
            ``alpha_ba`` in ``[0, 1]`` (or None: a single-stage model has none); all of one batch size.
        rows: samples shown.
    """
    experiment: Any = getattr(trainer.logger, "experiment", None) if trainer.is_global_zero else None
    if not hasattr(experiment, "add_image"):
        return
    order = ("real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b")
    grid_rows = []
    for i in range(min(rows, images["real_a"].shape[0])):  # type: ignore[union-attr]
        row = [images[name][i] for name in order]  # type: ignore[index]
        row += [heatmap(alpha[i]) for alpha in (images.get("alpha_ab"), images.get("alpha_ba")) if alpha is not None]
        grid_rows.append([t.detach().float().cpu() for t in row])
    grid = (make_grid(grid_rows).clamp(-1, 1) + 1) / 2
    experiment.add_image(tag, grid, trainer.global_step)


class TrainingImages(pl.Callback):
    """A grid of the training step's images every ``every_n_steps`` batches (0: never)."""

    def __init__(self, every_n_steps: int = 500) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = self.every_n_steps
        if every and batch_idx % every == 0 and isinstance(outputs, dict) and "images" in outputs:
            log_grid(trainer, f"train/stage{outputs['stage']}", outputs["images"])


class EvaluationCallback(pl.Callback):
    """Held-out evaluation during training, over the whole held-out folder (:mod:`scan.evaluation`).

    The folders come from the data module's ``evaluation_folders(direction)`` (``testA/``, ``testB/``
    and ``testA_target/`` of a CycleGAN-layout root; without a test split, the first
    ``fallback_images`` training images). Rank 0 evaluates; the scores are logged at the epoch's end.

    Args:
        every_n_epochs: evaluate every this many epochs (0: never), and at the end of every phase.
        metrics: any of :data:`scan.evaluation.METRICS`; those the data cannot give (no known answers,
            no real images of the other domain) are left out.
        directions: ``a2b`` and/or ``b2a``.
        batch_size: images per evaluation batch.
        max_images: score only the first this many held-out images of each folder.
        fallback_images: how many training images stand in where there is no held-out split.
        image_rows: samples in the image grid logged per stage (0: none).
        inception_weights: the Inception file for KID/FID (see :func:`scan.evaluation.load_inception`).
    """

    def __init__(self, every_n_epochs: int = 1, metrics: list[str] | None = None,
                 directions: list[str] | None = None, batch_size: int = 16, max_images: int | None = None,
                 fallback_images: int = 32, image_rows: int = 4, inception_weights: str | None = None) -> None:
        self.metrics = list(metrics) if metrics is not None else ["psnr", "ssim", "detail", "cycle"]
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"evaluation metrics: unknown {', '.join(unknown)}; valid: {', '.join(METRICS)}")
        self.directions = list(directions) if directions is not None else ["a2b", "b2a"]
        if not set(self.directions) <= {"a2b", "b2a"} or not self.directions:
            raise ValueError(f"evaluation directions must be a2b and/or b2a, got {self.directions}")
        if every_n_epochs < 0 or image_rows < 0 or fallback_images < 1:
            raise ValueError("evaluation: every_n_epochs and image_rows must be >= 0, fallback_images >= 1")
        self.every_n_epochs, self.batch_size, self.max_images = every_n_epochs, batch_size, max_images
        self.fallback_images, self.image_rows, self.inception_weights = fallback_images, image_rows, inception_weights
        self._evaluators: dict[int | None, Evaluator] = {}
        self._features: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Fail before the first step, not after an epoch: weights asked for must be there. Only rank 0
        # evaluates, so only rank 0 needs (and may fetch) them.
        wanted = self.every_n_epochs and set(self.metrics) & set(DISTRIBUTION_METRICS)
        if wanted and trainer.is_global_zero and self._features is None:
            self._features = load_inception(self.inception_weights, option="--evaluation.inception_weights PATH")

    def _evaluator(self, limit: int | None, device: torch.device) -> Evaluator:
        if limit not in self._evaluators:
            self._evaluators[limit] = Evaluator(self.metrics, self._features, self.batch_size, device, max_images=limit)
        return self._evaluators[limit]

    def _due(self, trainer: pl.Trainer, pl_module: Any) -> bool:
        epoch = trainer.current_epoch
        if not self.every_n_epochs or trainer.sanity_checking:
            return False
        index, in_phase = pl_module.phase_at(epoch)
        phase_ends = in_phase + 1 == pl_module.phases[index].total_epochs
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return (epoch + 1) % self.every_n_epochs == 0 or phase_ends or last

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module: Any = pl_module
        if not self._due(trainer, module) or not trainer.is_global_zero:
            return
        folders_of = getattr(trainer.datamodule, "evaluation_folders", None)  # type: ignore[attr-defined]
        if folders_of is None:
            return
        index, _ = module.phase_at(trainer.current_epoch)
        stage = module.trained_stage(module.phases[index])
        logs: dict[str, float] = {}
        firsts: dict[str, Tensor] = {}
        for direction in self.directions:
            found = folders_of(direction)
            if found is None:
                continue
            folders, held_out = found
            limit = self.max_images if held_out else self.fallback_images
            report = self._evaluator(limit, module.device).evaluate(module.model, folders, direction, upto=stage)
            for row, scores in report.rows.items():
                logs.update({f"val/{row}/{metric}_{direction}": value for metric, value in scores.items()})
            if self.image_rows:
                firsts[direction] = _first_images(folders, module.model.config.top_size, self.image_rows)
        if logs:
            module.log_dict(logs, on_epoch=True, rank_zero_only=True)
        if {"a2b", "b2a"} <= set(firsts):
            _log_stage_grids(trainer, module, firsts["a2b"], firsts["b2a"], stage, self.image_rows)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folders_of = getattr(trainer.datamodule, "evaluation_folders", None)  # type: ignore[attr-defined]
        if self.every_n_epochs and folders_of is not None:
            found = folders_of(self.directions[0])
            if found is not None and not found[1]:
                rank_zero_info(f"evaluation: no held-out split (testA/, testB/); the first {self.fallback_images} "
                               "training images stand in")


def _first_images(folders: EvalFolders, size: int, count: int) -> Tensor:
    images = HeldOutImages(folders.source, size, limit=count)
    return uint8_to_model(torch.stack([images[i]["image"] for i in range(len(images))]))


@torch.no_grad()
def _log_stage_grids(trainer: pl.Trainer, module: Any, real_a: Tensor, real_b: Tensor, stage: int, rows: int) -> None:
    """One grid per stage ``1..stage`` of the first held-out images (``val/stage<k>``)."""
    model = module.model
    n = min(real_a.shape[0], real_b.shape[0])
    real_a, real_b = real_a[:n].to(module.device), real_b[:n].to(module.device)
    with evaluating(model):
        ab = model.G_ab(model.stage_input(real_a, stage), upto=stage)
        ba = model.G_ba(model.stage_input(real_b, stage), upto=stage)
        for k in range(1, stage + 1):
            fake_b, fake_a = ab.outputs[k - 1], ba.outputs[k - 1]
            log_grid(trainer, f"val/stage{k}", {
                "real_a": model.stage_input(real_a, k), "fake_b": fake_b, "rec_a": model.G_ba(fake_b, upto=k).final,
                "real_b": model.stage_input(real_b, k), "fake_a": fake_a, "rec_b": model.G_ab(fake_a, upto=k).final,
                "alpha_ab": ab.alphas[k - 1], "alpha_ba": ba.alphas[k - 1]}, rows)
