"""Aligning faces: landmarks -> template quad -> 2x3 matrix -> kornia warp."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.align.crop import quad_to_matrix, template_quad, warp_to_crops
from scan.align.landmarks import Face, LandmarkBackend, choose_faces, get_backend
from scan.imageops import model_to_uint8

__all__ = ["AlignedFace", "align_faces", "detect_faces", "image_to_array", "MAX_DETECT_SIDE"]

# Faces are found on a copy of the photo whose long side is at most this: detectors gain nothing from
# more pixels, and a 12000 x 12000 photo would take minutes and many GB. Crops are still cut from the
# full-resolution photo.
MAX_DETECT_SIDE = 2048


@dataclass
class AlignedFace:
    """One face cut out of a photo.

    Attributes:
        face: the detection (box, score, landmarks in photo pixels).
        crop: :math:`(C, S, S)` float crop, in the value range of the photo tensor it came from
            (``[-1, 1]`` for a ``uint8`` photo).
        matrix: ``(2, 3)`` float64 matrix mapping photo pixels to crop pixels.
    """

    face: Face
    crop: Tensor
    matrix: np.ndarray

    @property
    def landmarks_in_crop(self) -> np.ndarray:
        return self.face.landmarks @ self.matrix[:, :2].T + self.matrix[:, 2]


def image_to_array(image: np.ndarray | Tensor) -> np.ndarray:
    """An RGB ``uint8`` ``(H, W, 3)`` array from an array or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor,
    ``uint8`` or floats in ``[-1, 1]`` (the landmark backends want the former)."""
    if isinstance(image, Tensor):
        image = image[0] if image.ndim == 4 else image
        pixels = image if image.dtype == torch.uint8 else model_to_uint8(image)
        return pixels.permute(1, 2, 0).cpu().numpy()
    return np.asarray(image)


def detect_faces(
    image: np.ndarray | Tensor,
    backend: LandmarkBackend | str = "auto",
    faces: str = "largest",
    min_score: float | None = None,
    min_size: float = 32,
) -> list[Face]:
    """Detect faces and their 68 landmarks, keeping ``largest`` or ``all`` above the thresholds.

    A photo longer than :data:`MAX_DETECT_SIDE` is searched on a downscaled copy; boxes and landmarks
    come back in the photo's own pixels. A photo smaller than ``min_size`` holds no face.

    Args:
        image: RGB ``uint8`` array ``(H, W, 3)`` or a tensor in ``[-1, 1]``.
        backend: a backend or its name (``auto``, ``fan``, ``dlib``).
        faces: ``largest`` or ``all``.
        min_score: drop detections scoring lower (default: the backend's own threshold).
        min_size: drop faces smaller than this (pixels).
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    array = image_to_array(image)
    height, width = array.shape[:2]
    if min(height, width) < min_size:
        return []
    scale = max(height, width) / MAX_DETECT_SIDE
    if scale <= 1:
        found = backend.detect(array)
    else:
        small = Image.fromarray(array).resize((round(width / scale), round(height / scale)), Image.Resampling.BOX)
        found = [_rescaled(face, scale) for face in backend.detect(np.asarray(small))]
    threshold = backend.default_min_score if min_score is None else min_score
    return choose_faces(found, faces, threshold, min_size)


def _rescaled(face: Face, scale: float) -> Face:
    """A detection on a copy downscaled by ``scale``, in the original's pixels (pixel centres map as
    ``(x + 0.5) * scale - 0.5``)."""
    box = tuple(float(v) * scale for v in face.box)
    return Face(box, face.score, (face.landmarks + 0.5) * scale - 0.5)  # type: ignore[arg-type]


def align_faces(
    photo: Tensor,
    size: int,
    template: str = "ffhq",
    scale: float = 1.0,
    backend: LandmarkBackend | str = "auto",
    faces: str = "largest",
    min_score: float | None = None,
    landmarks: np.ndarray | list[np.ndarray] | None = None,
) -> list[AlignedFace]:
    """Cut every chosen face out of ``photo`` as a ``size`` x ``size`` crop on a template.

    Args:
        photo: :math:`(1, 3, H, W)` or :math:`(3, H, W)`: floats in ``[-1, 1]``, or ``uint8`` (the
            cheaper choice for a large photo: only the faces' surroundings are converted).
        size: crop side (the model's input size).
        template: ``ffhq`` (FFHQ's exact crop) or ``portrait`` (head and shoulders).
        scale: multiplies the template's side.
        backend: landmark backend or name; unused when ``landmarks`` is given.
        faces: ``largest`` or ``all``.
        min_score: detection threshold (default: the backend's).
        landmarks: landmarks computed elsewhere, ``(68, 2)`` per face; skips detection.

    Returns:
        The aligned faces, largest first; empty if none was found.
    """
    if landmarks is not None:
        arrays = [landmarks] if np.asarray(landmarks).ndim == 2 else list(landmarks)
        chosen = []
        for lm in arrays:
            lm = np.asarray(lm, np.float64)
            (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
            chosen.append(Face((x0, y0, x1, y1), float("inf"), lm))
    else:
        chosen = detect_faces(photo, backend, faces, min_score)
    if not chosen:
        return []
    matrices = np.stack([quad_to_matrix(template_quad(f.landmarks, template, scale), size) for f in chosen])
    crops = warp_to_crops(photo, matrices, size)
    return [AlignedFace(face, crop, matrix) for face, crop, matrix in zip(chosen, crops, matrices)]

