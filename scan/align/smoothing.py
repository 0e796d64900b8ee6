"""Smoothing landmarks over time: the one-euro filter, which holds a still face steady and follows a
moving one closely (:class:`scan.align.tracking.FaceTracker` runs one per face)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuroFilter"]


class OneEuroFilter:
    """The one-euro filter (Casiez et al., CHI 2012): a low-pass whose cutoff rises with speed, so a
    still signal is smoothed hard (no jitter) and a moving one followed closely (little lag).

    Here one speed is shared by every coordinate, so a set of landmarks is filtered as one shape (a
    rigid motion moves every point with the same lag). For ``(N, 2)`` points it is the speed of the
    affine motion fitted to all of them (translation, plus the linear part times the points' spread),
    which averages the landmarks' own noise away instead of reading it as motion; for other shapes,
    the mean absolute speed.

    Args:
        min_cutoff: cutoff in Hz at rest (lower: steadier, more lag on slow motion).
        beta: how fast the cutoff rises with speed (units of the signal per second); higher: less
            lag on fast motion, more jitter.
        d_cutoff: cutoff of the speed estimate, in Hz.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x, self._dx = None, 0.0

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter the next sample ``x`` (any shape), ``dt`` seconds after the previous one.

        Returns:
            The filtered sample, shaped like ``x``.
        """
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x = x.copy()
            return x.copy()
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        speed = _shape_speed(x, self._x) / dt
        self._dx += self._alpha(self.d_cutoff, dt) * (speed - self._dx)
        cutoff = self.min_cutoff + self.beta * self._dx
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


def _shape_speed(x: np.ndarray, previous: np.ndarray) -> float:
    """How far a shape moved: for ``(N, 2)`` points with ``N >= 3``, the least-squares affine motion's
    translation plus its linear part's norm times the points' RMS spread; else the mean absolute
    change."""
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 3:
        return float(np.abs(x - previous).mean())
    centre = previous.mean(0)
    spread = previous - centre
    moved = x - previous
    shift = moved.mean(0)
    linear, *_ = np.linalg.lstsq(spread, moved - shift, rcond=None)
    rms = float(np.sqrt((spread**2).sum(1).mean()))
    return float(np.hypot(*shift) + np.linalg.norm(linear, 2) * rms)
