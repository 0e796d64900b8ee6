"""KID and FID of one set of images against another, from their features, computed by torchmetrics.

torchmetrics' ``KernelInceptionDistance`` and ``FrechetInceptionDistance`` take any feature module;
here that module is the identity over features computed beforehand, so the real images' features are
extracted once and shared by every row of a report (every stage, the untranslated input) instead of
once per metric object.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from scan.errors import InputError

__all__ = ["DistributionScores", "KID_SUBSETS", "KID_SUBSET_SIZE"]

# The field's KID protocol: 100 random subsets of up to 1000 images each.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class _Precomputed(nn.Module):
    """The "feature extractor" of a metric that is handed features: the identity."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class DistributionScores:
    """KID (mean and standard deviation over random subsets) and FID between real and generated
    images, accumulated from their features batch by batch.

    FID keeps running sums (memory flat in the number of images); KID keeps the features themselves
    (``D`` floats per image, 8 KB for Inception's 2048), as its subsets are drawn at the end.

    Args:
        num_features: ``D``, the features' dimension.
        metrics: ``"kid"`` and/or ``"fid"``.
        kid_subsets: subsets KID averages over.
        kid_subset_size: images per subset (at most; fewer where fewer were seen).

    Example:
        >>> scores = DistributionScores(2, metrics=("kid",), kid_subsets=1)
        >>> scores.update(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), real=True)
        >>> scores.update(torch.tensor([[2.0, 0.0], [4.0, 0.0]]), real=False)
        >>> scores.compute()["kid"]  # k(x, y) = (x.y / 2 + 1)^3: (2*1)/2 + (2*125)/2 - 2 * (1+1+27+125)/4
        49.0
    """

    def __init__(self, num_features: int, metrics: tuple[str, ...] = ("kid", "fid"), kid_subsets: int = KID_SUBSETS,
                 kid_subset_size: int = KID_SUBSET_SIZE) -> None:
        unknown = set(metrics) - {"kid", "fid"}
        if unknown:
            raise ValueError(f"unknown distribution metric(s) {sorted(unknown)}; valid: kid, fid")
        identity = _Precomputed(num_features)
        self.kid_subset_size = kid_subset_size
        self.counts = {True: 0, False: 0}
        with warnings.catch_warnings():  # "KID will save all extracted features": it must, and we say so above
            warnings.simplefilter("ignore", UserWarning)
            self.kid = (KernelInceptionDistance(identity, subsets=kid_subsets, subset_size=kid_subset_size)
                        if "kid" in metrics else None)
        self.fid = FrechetInceptionDistance(identity) if "fid" in metrics else None

    def update(self, features: Tensor, real: bool) -> None:
        """Add a batch of features :math:`(N, D)` of real (``real=True``) or generated images."""
        features = features.detach().float().cpu()
        self.counts[real] += features.shape[0]
        if self.kid is not None:
            self.kid.update(features, real=real)
        if self.fid is not None:
            self.fid.update(features, real=real)

    def compute(self, seed: int = 0) -> dict[str, float]:
        """``{"kid", "kid_std", "fid"}`` (those asked for).

        Args:
            seed: seeds KID's random subsets (the same numbers on every call).

        Raises:
            InputError: fewer than 2 real or 2 generated images (neither metric is defined).
        """
        if min(self.counts.values()) < 2:
            raise InputError(f"KID/FID need at least 2 real and 2 generated images, got {self.counts[True]} real and "
                             f"{self.counts[False]} generated")
        scores: dict[str, float] = {}
        if self.kid is not None:
            self.kid.subset_size = min(self.kid_subset_size, *self.counts.values())
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                mean, std = self.kid.compute()
            scores.update(kid=float(mean), kid_std=float(std))
        if self.fid is not None:
            scores["fid"] = float(self.fid.compute())
        return scores
