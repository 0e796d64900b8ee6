"""Steady colours in a video: each face's translation blended with its previous one where the input
did not change (:func:`temporal_blend`), and the per-face memory that takes (:class:`TemporalSmoother`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor

__all__ = ["temporal_blend", "TemporalSmoother"]


def temporal_blend(
    output: Tensor, previous: Tensor | None, crop: Tensor, previous_crop: Tensor | None,
    strength: float = 0.7, tolerance: float = 0.15, reset_fraction: float = 0.5,
) -> tuple[Tensor, bool]:
    """Blend a translated crop with the previous frame's (already blended) one, in aligned crop space.

    A recursive average: where the input crop did not change, the output keeps ``strength`` of the
    previous output, which averages away the frame-to-frame flicker of the translation; where the
    input changed (a blink, a mouth opening, a misalignment) the blend fades out per pixel, so
    moving parts do not leave ghosts. When most of the crop changed (a cut, a fast turn) the
    history is dropped.

    Args:
        output: this frame's translation, :math:`(3, S, S)` in ``[-1, 1]``.
        previous: the previous frame's blended translation, or ``None`` (no history).
        crop: this frame's input crop, :math:`(3, S, S)` in ``[-1, 1]``.
        previous_crop: the previous input crop, or ``None``.
        strength: the weight of the past where nothing moved, in ``[0, 1)`` (0: off).
        tolerance: input change (mean absolute, in ``[-1, 1]`` units) at which a pixel stops blending.
        reset_fraction: the history is dropped when more than this fraction of the pixels changed
            by more than ``tolerance``.

    Returns:
        The blended crop, and whether the history was used (``False`` after a reset).
    """
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    if previous is None or previous_crop is None or strength == 0 or previous.shape != output.shape:
        return output, False
    change = (crop - previous_crop).abs().mean(0, keepdim=True)
    if float((change > tolerance).float().mean()) > reset_fraction:
        return output, False
    # Pooled over a few pixels: sensor noise alone must not switch the blend off.
    side = max(3, (output.shape[-1] // 32) | 1)
    change = F.avg_pool2d(change[None], side, stride=1, padding=side // 2, count_include_pad=False)[0]
    weight = strength * (1 - change / tolerance).clamp(0, 1)
    return weight * previous + (1 - weight) * output, True


class TemporalSmoother:
    """Each face's previous translation and crop, for :func:`temporal_blend` on the next frame.

    The memory is the video path's, not the tracker's: the tracker only says which face is which
    (its ``id``) and when a face has no usable past (``fresh``).

    Args:
        strength: the weight of the past where nothing moved, in ``[0, 1)`` (0: off).

    Example:
        >>> smoother = TemporalSmoother(0.7)
        >>> for frame in frames:
        ...     tracks = tracker.update(frame)
        ...     smoother.keep_only(t.id for t in tracks)
        ...     outputs = [smoother(t.id, out, crop, restart=t.fresh) for t, out, crop in ...]
    """

    def __init__(self, strength: float = 0.7) -> None:
        if not 0 <= strength < 1:
            raise ValueError(f"temporal must be in [0, 1), got {strength}")
        self.strength = strength
        self._previous: dict[int, tuple[Tensor, Tensor]] = {}

    def __call__(self, face_id: int, output: Tensor, crop: Tensor, restart: bool = False) -> Tensor:
        """This frame's translation of face ``face_id``, blended with the face's previous one.

        Args:
            face_id: the face's identity across frames.
            output: its translation on this frame, :math:`(3, S, S)` in ``[-1, 1]``.
            crop: its input crop on this frame, :math:`(3, S, S)` in ``[-1, 1]``.
            restart: forget the face's past first (a new face, a cut).

        Returns:
            The blended translation (remembered for the next frame).
        """
        if restart:
            self._previous.pop(face_id, None)
        previous, previous_crop = self._previous.get(face_id, (None, None))
        blended, _ = temporal_blend(output, previous, crop, previous_crop, self.strength)
        self._previous[face_id] = blended, crop
        return blended

    def keep_only(self, face_ids: Iterable[int]) -> None:
        """Forget every face but ``face_ids`` (the faces gone from the video)."""
        keep = set(face_ids)
        self._previous = {i: v for i, v in self._previous.items() if i in keep}
