"""The paste-back: what each translated face gives the photo (the registered *blend kinds*), and
:func:`paste_back`, which warps it into the photo and mixes it in through its mask.

A blend kind is a function of the photo, the translated crop and the aligned face that returns the
crop to paste and the mask to paste it through (:class:`Blend`), both in crop space. Built in:
``square`` (a rounded, feathered square) and ``hull`` (the landmarks' hull raised over the forehead)
here; ``seamless`` (Poisson blending over the square), ``hull-seamless`` (the same, guided by the
hull), ``square-colour`` and ``hull-colour`` (colours matched to the photo's at the edge) in
``seamless.py``; ``parsing`` (face and hair from the user's
face-parsing network) in ``parsing.py``.
More plug in without editing scan, as stage kinds do (:func:`register_blend`); ``infer.py --mask``,
the web page and :class:`scan.portrait.PortraitOptions` accept every registered name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from PIL import Image, ImageDraw
from torch import Tensor

from scan.align.crop import AlignedFace, crop_corners, shift_matrices, warp_from_crops
from scan.errors import UserError
from scan.imageio import model_to_uint8, uint8_to_model

__all__ = [
    "Blend",
    "BlendKind",
    "UnknownBlendError",
    "register_blend",
    "blend_kinds",
    "get_blend",
    "rounded_square_mask",
    "landmark_hull_mask",
    "paste_back",
    "footprint_box",
]


def rounded_square_mask(size: int, feather: float = 0.08, radius: float = 0.15) -> Tensor:
    """A crop-sized mask: 1 inside a rounded square, ramping smoothly to exactly 0 at the border.

    Args:
        size: crop side.
        feather: width of the soft edge, as a fraction of ``size``.
        radius: corner radius, as a fraction of ``size``.

    Returns:
        :math:`(1, size, size)` in ``[0, 1]``.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    px, py = torch.meshgrid(coords, coords, indexing="xy")
    half, r = size / 2 - 1.0, radius * size
    qx, qy = (px - size / 2).abs() - (half - r), (py - size / 2).abs() - (half - r)
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0) - r  # SDF
    t = (-outside / max(feather * size, 1e-6)).clamp(0, 1)
    return (t * t * (3 - 2 * t))[None]  # smoothstep: no visible seam where the ramp starts


def _convex_hull(points: np.ndarray) -> np.ndarray:
    pts = sorted(map(tuple, points))

    def turn(o, a, b) -> float:  # z of the cross product (a - o) x (b - o): > 0 for a left turn
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def landmark_hull_mask(landmarks_in_crop: np.ndarray, size: int, feather: float = 0.06) -> Tensor:
    """The face region: convex hull of the landmarks with the brows raised to cover the forehead.

    Args:
        landmarks_in_crop: ``(68, 2)`` landmarks in crop pixels.
        size: crop side.
        feather: blur of the edge, as a fraction of ``size``.

    Returns:
        :math:`(1, size, size)` in ``[0, 1]``.
    """
    lm = np.asarray(landmarks_in_crop, np.float64)
    eye_to_mouth = (lm[48] + lm[54]) / 2 - (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    forehead = lm[17:27] - 0.9 * eye_to_mouth
    hull = _convex_hull(np.concatenate([lm, forehead]))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull], fill=255)
    mask = torch.from_numpy(np.asarray(canvas, np.float32) / 255.0)[None, None]
    sigma = max(feather * size / 2, 0.5)
    kernel = int(2 * round(3 * sigma) + 1)
    mask = gaussian_blur2d(mask, (kernel, kernel), (sigma, sigma))
    return mask[0] * rounded_square_mask(size, feather=0.02, radius=0.0)  # zero on the crop border


def footprint_box(matrices: np.ndarray | Tensor, size: int, height: int, width: int,
                  margin: int = 2) -> tuple[int, int, int, int] | None:
    """The part of the photo that crops cut with ``matrices`` can touch when pasted back.

    Args:
        matrices: :math:`(N, 2, 3)` original-to-crop matrices.
        size: crop side.
        height, width: the photo's size.
        margin: pixels added on every side (bilinear sampling reaches one pixel further).

    Returns:
        ``(x0, y0, x1, y1)`` clipped to the photo (``x1``, ``y1`` exclusive), or ``None`` when no crop
        overlaps it.
    """
    points = crop_corners(matrices, size).reshape(-1, 2)
    x0, y0 = np.floor(points.min(0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(0)).astype(int) + margin + 1
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_back(photo: Tensor, crops: Tensor, matrices: np.ndarray | Tensor, masks: Tensor) -> Tensor:
    """Blend translated crops into the photo, each through its mask warped into the photo's frame.

    Only the part of the photo the crops cover is warped and blended (see :func:`footprint_box`),
    so a huge photo costs no more than a small one. Where every mask is zero the photo's pixels are
    returned unchanged, bit for bit.

    Args:
        photo: :math:`(1, C, H, W)` or :math:`(C, H, W)`: floats, or ``uint8`` in ``[0, 255]``.
        crops: :math:`(N, C, S, S)` translated crops, in the photo's value range (``[-1, 1]`` for a
            ``uint8`` photo).
        matrices: :math:`(N, 2, 3)` original-to-crop matrices the crops were cut with.
        masks: :math:`(N, 1, S, S)` or :math:`(1, S, S)` crop-space masks in ``[0, 1]``.

    Returns:
        The blended photo, shaped like ``photo`` and of its dtype (rounded for ``uint8``).
    """
    squeeze = photo.ndim == 3
    out = photo[None] if squeeze else photo
    box = footprint_box(matrices, crops.shape[-1], *out.shape[-2:]) if len(crops) else None
    if box is None:
        return photo
    x0, y0, x1, y1 = box
    m = shift_matrices(matrices, x0, y0)
    region = out[..., y0:y1, x0:x1]
    region = uint8_to_model(region) if photo.dtype == torch.uint8 else region
    masks = masks.expand(len(crops), 1, *crops.shape[-2:]) if masks.ndim == 3 else masks
    warped = warp_from_crops(crops.to(region.dtype), m, y1 - y0, x1 - x0)
    warped_masks = warp_from_crops(masks.to(device=region.device, dtype=region.dtype), m, y1 - y0, x1 - x0).clamp(0, 1)
    for face, mask in zip(warped, warped_masks):  # one face after the other: later faces on top
        region = torch.where(mask > 0, mask * face + (1 - mask) * region, region)
    if photo.dtype == torch.uint8:  # untouched pixels round back to exactly their old value
        region = model_to_uint8(region)
    out = out.clone()
    out[..., y0:y1, x0:x1] = region
    return out[0] if squeeze else out


# ------------------------------------------------------------------------------------- blend kinds


class Blend(NamedTuple):
    """What one face gives the photo, in crop space.

    Attributes:
        crop: :math:`(C, S, S)` in ``[-1, 1]``: the pixels to paste (the translated crop, or a version
            of it adjusted to the photo, e.g. its colours matched at the border).
        mask: :math:`(1, S, S)` in ``[0, 1]``: how much of ``crop`` each pixel takes; it must be 0 on
            the crop's border, or the crop's edge shows.
    """

    crop: Tensor
    mask: Tensor


class BlendKind(Protocol):
    """A registered blend kind (see :func:`register_blend`)."""

    def __call__(self, photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend: ...


class UnknownBlendError(UserError, ValueError):
    """A blend kind (``--mask``, ``mask=``) that no module has registered (yet)."""


Fn = TypeVar("Fn", bound=Callable)

_BLENDS: dict[str, BlendKind] = {}
# Modules that register further built-in kinds, imported on the first lookup rather than here: they
# import register_blend from this module, and a kind that needs a heavy library (a network, a solver)
# costs nothing until it is asked for. A new built-in kind adds its module's name.
_BUILT_IN_KIND_MODULES: tuple[str, ...] = ("scan.align.seamless", "scan.align.parsing")
_built_ins_loaded = False


def _load_built_in_kinds() -> None:
    global _built_ins_loaded
    if not _built_ins_loaded:
        _built_ins_loaded = True
        for module in _BUILT_IN_KIND_MODULES:
            importlib.import_module(module)


def register_blend(name: str) -> Callable[[Fn], Fn]:
    """Register a blend kind under ``name``: a function of the photo, the translated crop and the
    aligned face that returns the crop to paste and its mask (:class:`Blend`), in crop space.

    The paste step (:func:`paste_back`) then warps both into the photo and mixes them in: a pixel
    becomes ``mask * crop + (1 - mask) * photo``; where every mask is 0 the photo's pixels stay
    as they were, bit for bit. Once registered, the name is accepted by ``infer.py --mask``, the web
    page's mask choice, :class:`scan.portrait.PortraitOptions` and the translator's ``mask=``.

    Args:
        name: the kind's name (``--mask NAME``).

    Returns:
        A decorator that registers the function and returns it unchanged. The function is called
        once per face with:

        - ``photo``: the whole photo (or video frame) the face was cut from, ``uint8``.
        - ``translated``: the translated crop, floats in ``[-1, 1]``.
        - ``face``: the :class:`~scan.align.AlignedFace`: ``face.crop`` is the photo's own crop
          (``[-1, 1]``), ``face.matrix`` maps photo pixels to crop pixels,
          ``face.landmarks_in_crop`` the 68 landmarks in crop pixels.

    Shape:
        - photo: :math:`(3, H, W)`
        - translated, face.crop: :math:`(3, S, S)`
        - Output: :class:`Blend` of :math:`(3, S, S)` and :math:`(1, S, S)`

    Raises:
        ValueError: ``name`` is registered already.

    Example:
        >>> from scan.align import Blend, landmark_hull_mask, register_blend
        >>> @register_blend("hull-soft")
        ... def hull_soft(photo, translated, face):
        ...     size = translated.shape[-1]
        ...     return Blend(translated, landmark_hull_mask(face.landmarks_in_crop, size, feather=0.12))
        >>> # infer.py --mask hull-soft, or translator.portrait(photo, mask="hull-soft")
    """

    def decorator(fn: Fn) -> Fn:
        if name in _BLENDS:
            raise ValueError(f"a blend kind named {name!r} is already registered")
        _BLENDS[name] = fn
        return fn

    return decorator


def blend_kinds() -> list[str]:
    """Every registered blend kind, in the order they were registered (the built-in ones first)."""
    _load_built_in_kinds()
    return list(_BLENDS)


def get_blend(name: str) -> BlendKind:
    """The blend kind registered as ``name``.

    Raises:
        UnknownBlendError: no such kind; the message lists the registered ones.
    """
    _load_built_in_kinds()
    kind = _BLENDS.get(name)
    if kind is None:
        raise UnknownBlendError(f"unknown paste-back mask (blend kind) {name!r}; registered: {', '.join(_BLENDS)} "
                                "(import the module that registers it first)")
    return kind


@register_blend("square")
def square_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """The translated crop through a rounded, feathered square: the whole crop but its rim."""
    return Blend(translated, rounded_square_mask(translated.shape[-1]))


@register_blend("hull")
def hull_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """The translated crop through the face's landmark hull, raised over the forehead: hair and
    background stay the photo's."""
    return Blend(translated, landmark_hull_mask(face.landmarks_in_crop, translated.shape[-1]))
