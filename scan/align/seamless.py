"""Blend kinds that hide the seam: ``seamless`` and ``hull-seamless`` (gradient-domain, Poisson,
blending, solved with a sine transform) and the colour-matched ``square-colour`` and ``hull-colour``.

A translated face pasted through a feathered mask still reads as a sticker when its colours differ
from the photo's where the two meet. ``seamless`` keeps the translated crop's gradients and takes its
values at the seam from the photo, so the face's colours run smoothly into the photo's surroundings;
the colour kinds only shift and scale each channel of the translated crop so that its statistics in a
ring along the mask's edge match the photo's there (cheaper, and the face keeps its own colours
relative to each other).

Everything runs in crop space, on the face's own crop of the photo (``face.crop``): the crop is small
(the model's side) whatever the photo's size, and a face at the photo's edge has a crop that is
whole (the part outside the photo padded), so the solver never sees the photo's border.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch
from torch import Tensor

from scan.align.crop import AlignedFace
from scan.align.paste import Blend, landmark_hull_mask, register_blend, rounded_square_mask

__all__ = ["poisson_blend", "harmonic_fill", "match_border_colour", "border_ring", "SEAM_MARGIN"]

# The solved square keeps this many pixels from the crop's border, where the paste masks are 0 anyway.
SEAM_MARGIN = 2


def _fast_length(limit: int) -> int:
    """The largest length <= ``limit`` whose prime factors are 2, 3 and 5 (a fast FFT: a prime
    factor like 511's 73 makes scipy's transform ten times slower)."""
    for n in range(limit, 0, -1):
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
    return 1


def _solve_dirichlet(rhs: np.ndarray) -> np.ndarray:
    """The ``(C, n, n)`` solution of the 5-point Poisson equation ``laplacian(h) = rhs`` that is 0 on
    the square's edge, exactly, with a type-I discrete sine transform."""
    n = rhs.shape[-1]
    k = np.arange(1, n + 1)
    eig = (2 * np.cos(np.pi * k / (n + 1)) - 2).astype(np.float32)
    return scipy.fft.idstn(scipy.fft.dstn(rhs, type=1, axes=(1, 2)) / (eig[:, None] + eig[None, :]),
                           type=1, axes=(1, 2))


def harmonic_fill(values: np.ndarray, start: int, length: int) -> np.ndarray:
    """The harmonic function (Laplace's equation, 5-point stencil) inside the square
    ``[start, start + length]^2`` that equals ``values`` on its edge, solved exactly with a type-I
    discrete sine transform; ``values`` as it is outside the square.

    Args:
        values: ``(C, S, S)`` float32; only the square's edge and what lies outside it are read.
        start: the square's first row and column.
        length: the square's side minus one (its edge rows are ``start`` and ``start + length``).

    Returns:
        ``(C, S, S)`` float32.
    """
    a, b, n = start, start + length, length - 1  # n: the interior's side
    edge = values
    rhs = np.zeros((len(values), n, n), np.float32)  # Dirichlet values moved to the right-hand side
    rhs[:, 0, :] -= edge[:, a, a + 1:b]
    rhs[:, -1, :] -= edge[:, b, a + 1:b]
    rhs[:, :, 0] -= edge[:, a + 1:b, a]
    rhs[:, :, -1] -= edge[:, a + 1:b, b]
    out = values.copy()
    out[:, a + 1:b, a + 1:b] = _solve_dirichlet(rhs)
    return out


def _weighted_divergence(field: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``div(weight * grad(field))`` with forward differences for the gradient, the weight averaged
    onto each pair's midpoint, and backward differences for the divergence (the 5-point Laplacian where
    the weight is 1). ``field``: ``(C, S, S)``; ``weight``: ``(S, S)``."""
    gx = np.zeros_like(field)
    gy = np.zeros_like(field)
    gx[:, :, :-1] = (field[:, :, 1:] - field[:, :, :-1]) * ((weight[:, 1:] + weight[:, :-1]) / 2)[None]
    gy[:, :-1, :] = (field[:, 1:, :] - field[:, :-1, :]) * ((weight[1:, :] + weight[:-1, :]) / 2)[None]
    div = gx + gy
    div[:, :, 1:] -= gx[:, :, :-1]
    div[:, 1:, :] -= gy[:, :-1, :]
    return div


def poisson_blend(translated: Tensor, photo_crop: Tensor, weight: Tensor | None = None) -> Tensor:
    """Gradient-domain (Poisson) blending in crop space: the crop whose gradients are the translated
    crop's inside a square :data:`SEAM_MARGIN` or so pixels in from the border (or, with ``weight``,
    ``weight * grad(translated) + (1 - weight) * grad(photo)``), and whose values on that square's edge
    (and outside it) are the photo crop's.

    Without ``weight`` the solution is the translated crop plus the harmonic function that equals
    ``photo - translated`` on the edge: what OpenCV's ``seamlessClone`` (normal clone) computes for a
    square mask, solved here with a sine transform in a quarter of its time or less
    (``tests/test_blends.py`` checks the two agree). With ``weight`` (a soft face mask) the photo keeps
    its own texture where the weight is 0, and only a smooth colour correction spreads there from the
    face: no edge where the two meet.

    Args:
        translated: the translated crop, in ``[-1, 1]``.
        photo_crop: the photo's crop of the same face, in ``[-1, 1]``.
        weight: optional :math:`(1, S, S)` or :math:`(S, S)` in ``[0, 1]``: whose gradients to keep
            where (1: the translation's, 0: the photo's).

    Returns:
        :math:`(3, S, S)` in ``[-1, 1]``, on ``translated``'s device; the photo crop itself for a crop
        too small to solve in.

    Shape:
        - translated, photo_crop: :math:`(3, S, S)`

    Example:
        >>> photo, face = torch.zeros(3, 32, 32), torch.full((3, 32, 32), 0.5)
        >>> bool(poisson_blend(face, photo).abs().max() < 1e-5)  # a flat face: only an offset, removed
        True
    """
    size = translated.shape[-1]
    t = translated.detach().float().cpu().numpy()
    p = photo_crop.detach().float().cpu().numpy()
    length = _fast_length(size - 1 - 2 * SEAM_MARGIN)
    if length < 3:
        return photo_crop.to(translated)
    start = (size - 1 - length) // 2
    a, b = start + 1, start + length  # the solved interior: [a, b)
    if weight is None:
        out = t + harmonic_fill(p - t, start, length)
    else:  # the photo plus h, where laplacian(h) = div(weight * grad(t - p)) and h = 0 on the edge
        w = weight.detach().float().cpu().numpy().reshape(size, size)
        rhs = _weighted_divergence(t - p, w)[:, a:b, a:b]
        out = p.copy()
        out[:, a:b, a:b] += _solve_dirichlet(rhs)
    inside = np.zeros((size, size), bool)
    inside[a:b, a:b] = True
    out = np.where(inside, out, p).clip(-1, 1).astype(np.float32)
    return torch.from_numpy(out).to(translated)


def border_ring(mask: Tensor, low: float = 0.02, high: float = 0.98) -> Tensor:
    """The ring along a blend mask's soft edge: the pixels whose weight is strictly between ``low``
    and ``high`` (where the translated crop and the photo meet).

    Returns:
        A boolean mask shaped like ``mask``.
    """
    return (mask > low) & (mask < high)


def match_border_colour(translated: Tensor, photo_crop: Tensor, ring: Tensor, max_gain: float = 2.0) -> Tensor:
    """Colour transfer at the border: each channel of ``translated`` shifted and scaled so that its
    mean and standard deviation in ``ring`` become the photo crop's there.

    Args:
        translated: the translated crop, in ``[-1, 1]``.
        photo_crop: the photo's crop, in ``[-1, 1]``.
        ring: where the statistics are taken (:func:`border_ring`); ``translated`` is returned as is
            when it has fewer than 8 pixels.
        max_gain: the scale is clamped to ``[1 / max_gain, max_gain]`` (a flat ring would otherwise
            blow the crop's contrast up).

    Returns:
        :math:`(3, S, S)` in ``[-1, 1]``: the whole crop adjusted (one gain and offset per channel),
        so the face keeps its colours relative to each other.
    """
    where = ring.reshape(-1).to(translated.device)
    if int(where.sum()) < 8:
        return translated
    t = translated.reshape(len(translated), -1)[:, where]
    p = photo_crop.to(translated).reshape(len(photo_crop), -1)[:, where]
    t_mean, t_std = t.mean(1), t.std(1)
    p_mean, p_std = p.mean(1), p.std(1)
    gain = (p_std / t_std.clamp(min=1e-4)).clamp(1 / max_gain, max_gain)
    return ((translated - t_mean[:, None, None]) * gain[:, None, None] + p_mean[:, None, None]).clamp(-1, 1)


@register_blend("seamless")
def seamless_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """Poisson blending over the ``square`` kind's footprint: the translated crop's gradients inside,
    the photo's values at the edge, pasted through the same rounded square (near whose edge the
    solution is the photo's crop already, so the feather hides only resampling)."""
    mask = rounded_square_mask(translated.shape[-1])
    return Blend(poisson_blend(translated, face.crop), mask)


@register_blend("square-colour")
def square_colour_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """The ``square`` kind with the crop's colours matched to the photo's along the feathered edge."""
    mask = rounded_square_mask(translated.shape[-1])
    return Blend(match_border_colour(translated, face.crop, border_ring(mask)), mask)


@register_blend("hull-colour")
def hull_colour_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """The ``hull`` kind with the crop's colours matched to the photo's along the hull's edge."""
    mask = landmark_hull_mask(face.landmarks_in_crop, translated.shape[-1])
    return Blend(match_border_colour(translated, face.crop, border_ring(mask)), mask)


@register_blend("hull-seamless")
def hull_seamless_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """Poisson blending guided by the face: the translation's gradients inside the landmarks' hull
    (the ``hull`` kind's mask), the photo's own outside it (hair, background), and the photo's values
    at the square's edge; pasted through the rounded square, near whose edge the solution is the photo
    with a smooth colour correction. The face takes the photo's light, and no edge is left anywhere."""
    size = translated.shape[-1]
    guide = landmark_hull_mask(face.landmarks_in_crop, size)
    return Blend(poisson_blend(translated, face.crop, guide), rounded_square_mask(size))
