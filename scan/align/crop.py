"""Cutting faces out: crop templates (FFHQ's oriented square, a wider portrait), the matrices they
give, kornia warps to and from crops, and the align step of a portrait (:func:`cut_faces`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import warp_affine
from torch import Tensor

from scan.align.landmarks import Face, LandmarkBackend, detect_faces, faces_from_landmarks
from scan.imageio import uint8_to_model

__all__ = [
    "TEMPLATES",
    "AlignedFace",
    "cut_faces",
    "align_faces",
    "ffhq_quad",
    "portrait_quad",
    "template_quad",
    "quad_to_matrix",
    "invert_affine",
    "crop_corners",
    "shift_matrices",
    "warp_to_crops",
    "warp_from_crops",
    "fade_padding",
]

TEMPLATES = ("ffhq", "portrait")


def _rot90(v: np.ndarray) -> np.ndarray:
    # Pixel coordinates: x right, y down. Turns a vector a quarter turn clockwise on screen.
    return np.array([-v[1], v[0]])


def _ffhq_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre ``c`` and half-axes ``x`` (right), ``y`` (down) of FFHQ's crop square."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) iBUG landmarks, got an array of shape {lm.shape}")
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)  # levelled on the eyes, tilted by the eye-mouth axis
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return c, x, y


def _quad(c: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_quad(landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The FFHQ data set's crop (Karras et al.): corners top-left, bottom-left, bottom-right, top-right.

    Args:
        landmarks: ``(68, 2)`` iBUG landmarks in pixels.
        scale: side multiplier (1 is FFHQ's exact crop).

    Returns:
        ``(4, 2)`` quad corners in pixels.
    """
    c, x, y = _ffhq_frame(landmarks)
    return _quad(c, x * scale, y * scale)


def portrait_quad(landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A head-and-shoulders crop: FFHQ's square 1.8x wider, its centre moved down towards the chest."""
    c, x, y = _ffhq_frame(landmarks)
    return _quad(c + 0.5 * y, 1.8 * scale * x, 1.8 * scale * y)


def template_quad(landmarks: np.ndarray, template: str = "ffhq", scale: float = 1.0) -> np.ndarray:
    if template == "ffhq":
        return ffhq_quad(landmarks, scale)
    if template == "portrait":
        return portrait_quad(landmarks, scale)
    raise ValueError(f"unknown crop template {template!r}; valid: {', '.join(TEMPLATES)}")


def quad_to_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 similarity mapping original pixels to crop pixels (pixel centres at integers), sending
    the quad's corners to the crop's corners.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``crop = M[:, :2] @ p + M[:, 2]``.
    """
    top_left, _, bottom_right, top_right = np.asarray(quad, np.float64)
    x_axis = top_right - top_left
    side = np.hypot(*x_axis)
    ex = x_axis / side
    ey = _rot90(ex)
    linear = (size / side) * np.stack([ex, ey])
    # A pixel's outer edge at the quad's corner: the corner sits at -0.5 in pixel-centre coordinates.
    offset = -linear @ top_left - 0.5
    return np.concatenate([linear, offset[:, None]], axis=1)


def invert_affine(matrix: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Inverse of one ``(2, 3)`` or a batch ``(N, 2, 3)`` of affine matrices."""
    m = matrix.detach().cpu().double().numpy() if isinstance(matrix, Tensor) else np.asarray(matrix, np.float64)
    single = m.ndim == 2
    m = m[None] if single else m
    full = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (len(m), 1, 1))], axis=1)
    inv = np.linalg.inv(full)[:, :2]
    inv = inv[0] if single else inv
    return torch.from_numpy(inv).to(matrix.dtype).to(matrix.device) if isinstance(matrix, Tensor) else inv


def crop_corners(matrices: np.ndarray | Tensor, size: int) -> np.ndarray:
    """Where the corner pixels of crops cut with ``matrices`` lie in the photo.

    Returns:
        ``(N, 4, 2)`` photo pixel coordinates ``(x, y)``.
    """
    m = matrices.detach().cpu().numpy() if isinstance(matrices, Tensor) else np.asarray(matrices, np.float64)
    inverse = np.asarray(invert_affine(m.reshape(-1, 2, 3)))
    corners = np.array([[0.0, 0.0], [size - 1.0, 0.0], [0.0, size - 1.0], [size - 1.0, size - 1.0]])
    return np.einsum("nij,kj->nki", inverse[:, :, :2], corners) + inverse[:, None, :, 2]


def shift_matrices(matrices: np.ndarray | Tensor, x0: int, y0: int) -> np.ndarray:
    """The same original-to-crop matrices for a region of the photo whose top-left pixel is ``(x0, y0)``
    (region pixel ``q`` is photo pixel ``q + (x0, y0)``)."""
    m = np.array(matrices.detach().cpu() if isinstance(matrices, Tensor) else matrices, np.float64).reshape(-1, 2, 3)
    m[:, :, 2] += m[:, :, :2] @ np.array([x0, y0], np.float64)
    return m


def _read_interval(low: float, high: float, length: int, margin: int) -> tuple[int, int]:
    """Pixels ``[start, stop)`` along one axis that sampling ``[low, high]`` with reflection at the
    photo's edges reads (reflection about pixel centres: ``-x`` and ``2 (L - 1) - x``)."""
    last = length - 1
    if low < -last or high > 2 * last:  # reflected more than once: read it all
        return 0, length
    start, stop = low, high
    if low < 0:
        stop = max(stop, -low)
    if high > last:
        start = min(start, 2 * last - high)
    return max(int(np.floor(start)) - margin, 0), min(int(np.ceil(stop)) + margin + 1, length)


def warp_to_crops(image: Tensor, matrices: np.ndarray | Tensor, size: int) -> Tensor:
    """Cut ``N`` square crops out of one image (batched, differentiable, on the image's device).

    Only the part of the image the crops read is converted and sampled, so a huge photo costs
    little more than a small one; the crops are the same as from the whole image.

    Args:
        image: :math:`(1, C, H, W)` or :math:`(C, H, W)`: floats, or ``uint8`` in ``[0, 255]``.
        matrices: :math:`(N, 2, 3)` original-to-crop matrices.
        size: crop side.

    Returns:
        :math:`(N, C, size, size)` in the image's value range (``[-1, 1]`` for a ``uint8`` image);
        outside the photo, reflected content.
    """
    image = image[None] if image.ndim == 3 else image
    height, width = image.shape[-2:]
    corners = crop_corners(matrices, size).reshape(-1, 2)
    x0, x1 = _read_interval(corners[:, 0].min(), corners[:, 0].max(), width, margin=2)
    y0, y1 = _read_interval(corners[:, 1].min(), corners[:, 1].max(), height, margin=2)
    region = image[..., y0:y1, x0:x1]
    region = uint8_to_model(region) if region.dtype == torch.uint8 else region
    m = torch.from_numpy(shift_matrices(matrices, x0, y0)).to(device=region.device, dtype=region.dtype)
    return warp_affine(
        region.expand(len(m), -1, -1, -1), m, (size, size), mode="bilinear", padding_mode="reflection",
        align_corners=True,
    )


def warp_from_crops(crops: Tensor, matrices: np.ndarray | Tensor, height: int, width: int) -> Tensor:
    """Warp crops back into the original photo's frame (zeros outside each crop's footprint).

    Args:
        crops: :math:`(N, C, S, S)`.
        matrices: :math:`(N, 2, 3)` original-to-crop matrices (the ones the crops were cut with).
        height, width: the photo's size.

    Returns:
        :math:`(N, C, height, width)`.
    """
    inverse = invert_affine(np.asarray(matrices) if not isinstance(matrices, Tensor) else matrices)
    m = torch.as_tensor(inverse).to(device=crops.device, dtype=crops.dtype)
    return warp_affine(crops, m, (height, width), mode="bilinear", padding_mode="zeros", align_corners=True)


def fade_padding(crops: Tensor, matrices: np.ndarray | Tensor, height: int, width: int) -> Tensor:
    """FFHQ's treatment of a crop that reaches past the photo: the reflected content there is blurred
    and faded toward the crop's median colour, the further out the more, so that no mirrored second
    face (a second pair of eyes above the head) reaches the network.

    As in FFHQ's ``recreate_aligned_images``, with ``q`` the crop's side in photo pixels: a band
    ``0.3 q`` wide past the photo's edge, ``t`` the distance past the edge over that width (negative
    inside the photo); the crop is mixed with itself blurred (Gaussian, sigma ``0.02 q``) with weight
    ``clip(3 t + 1, 0, 1)`` (which reaches a third of the band into the photo, so the blur has no edge
    of its own), then toward its per-channel median with weight ``clip(t, 0, 1)``. FFHQ works on the
    padded photo; here the same weights are evaluated per crop pixel, through the crop's matrix.

    Args:
        crops: :math:`(N, C, S, S)` crops cut with :func:`warp_to_crops` (reflection outside the photo).
        matrices: :math:`(N, 2, 3)` the original-to-crop matrices they were cut with.
        height, width: the photo's size.

    Returns:
        The crops; those that reach more than half a pixel past the photo changed, the others returned
        as they were (the same tensor rows, bit for bit).
    """
    size = crops.shape[-1]
    inverse = np.asarray(invert_affine(np.asarray(matrices.detach().cpu() if isinstance(matrices, Tensor)
                                                  else matrices, np.float64).reshape(-1, 2, 3)))
    grid = np.stack(np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64),
                                indexing="xy"), -1)  # (S, S, 2): x, y of each crop pixel
    out = []
    for crop, inv in zip(crops, inverse):
        source = grid @ inv[:, :2].T + inv[:, 2]  # each crop pixel's place in the photo
        beyond = np.maximum(np.maximum(-source[..., 0], source[..., 0] - (width - 1)),
                            np.maximum(-source[..., 1], source[..., 1] - (height - 1)))  # px past the edge
        if beyond.max() <= 0.5:
            out.append(crop)
            continue
        side = np.hypot(*inv[:, 0]) * size  # the crop's side in photo pixels
        t = torch.from_numpy(beyond / max(0.3 * side, 1.0)).to(crop)[None]
        sigma = max(0.02 * size, 0.5)  # 0.02 of the side, in crop pixels
        kernel = int(2 * round(3 * sigma) + 1)
        blurred = gaussian_blur2d(crop[None], (kernel, kernel), (sigma, sigma), border_type="reflect")[0]
        crop = crop + (blurred - crop) * (3 * t + 1).clamp(0, 1)
        median = crop.flatten(1).median(dim=1).values[:, None, None]
        out.append(crop + (median - crop) * t.clamp(0, 1))
    return torch.stack(out) if out else crops


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


def cut_faces(photo: Tensor, faces: list[Face], size: int, template: str = "ffhq",
              scale: float = 1.0) -> list[AlignedFace]:
    """Cut each face out of ``photo`` as a ``size`` x ``size`` crop on a template, in one batched warp.

    Args:
        photo: :math:`(1, 3, H, W)` or :math:`(3, H, W)`: floats in ``[-1, 1]``, or ``uint8`` (the
            cheaper choice for a large photo: only the faces' surroundings are converted).
        faces: the faces, with their landmarks in the photo's pixels.
        size: crop side (the model's input size).
        template: ``ffhq`` (FFHQ's exact crop) or ``portrait`` (head and shoulders).
        scale: multiplies the template's side.

    Returns:
        One :class:`AlignedFace` per face, in order; empty for no faces. Where a crop reaches past the
        photo, the part outside is blurred and faded to a flat colour (:func:`fade_padding`).
    """
    if not faces:
        return []
    matrices = np.stack([quad_to_matrix(template_quad(f.landmarks, template, scale), size) for f in faces])
    crops = fade_padding(warp_to_crops(photo, matrices, size), matrices, *photo.shape[-2:])
    return [AlignedFace(face, crop, matrix) for face, crop, matrix in zip(faces, crops, matrices)]


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
    """Find every chosen face of ``photo`` and cut it out as a ``size`` x ``size`` crop on a template
    (:func:`scan.align.detect_faces`, then :func:`cut_faces`).

    Args:
        photo: :math:`(1, 3, H, W)` or :math:`(3, H, W)`: floats in ``[-1, 1]``, or ``uint8``.
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
    found = faces_from_landmarks(landmarks) if landmarks is not None else detect_faces(photo, backend, faces,
                                                                                          min_score)
    return cut_faces(photo, found, size, template, scale)
