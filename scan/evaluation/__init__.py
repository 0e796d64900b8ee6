"""``scan.evaluation``: the one home of evaluation.

Every stage of a model scored over a whole held-out folder, streamed in batches: PSNR, SSIM and a
detail score against known answers where the data has them, the cycle error, and the field's
distribution metrics, KID and FID, against the other domain's real images (computed by torchmetrics
from a pluggable feature extractor; the default is the standard FID Inception-v3 TorchScript file).

- :class:`Evaluator`: the library API (folders or in-memory batches);
- :func:`load_inception` and :class:`TorchScriptFeatures`: feature extractors (the seam);
- ``scan-eval`` / ``python -m scan.evaluation`` (:mod:`scan.evaluation.cli`): the command;
- :class:`scan.training.callbacks.EvaluationCallback`: the same during training.
"""

from scan.evaluation.distribution import DistributionScores
from scan.evaluation.evaluator import (
    DISTRIBUTION_METRICS,
    METRICS,
    PAIRED_METRICS,
    DirectionReport,
    EvalFolders,
    Evaluator,
    evaluating,
)
from scan.evaluation.features import (
    INCEPTION_FILE,
    MissingWeightsError,
    TorchScriptFeatures,
    default_inception_path,
    load_inception,
)

__all__ = [
    "DISTRIBUTION_METRICS",
    "INCEPTION_FILE",
    "METRICS",
    "PAIRED_METRICS",
    "DirectionReport",
    "DistributionScores",
    "EvalFolders",
    "Evaluator",
    "MissingWeightsError",
    "TorchScriptFeatures",
    "default_inception_path",
    "evaluating",
    "load_inception",
]
