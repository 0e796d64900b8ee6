"""A portrait's way through scan, as named steps, top to bottom:

    decode -> detect -> align -> translate (batched) -> blend -> paste

    image = decode(photo)                                  # any PIL image, or a loader, to RGB
    pixels = pil_to_uint8(image)
    faces = detect(pixels, options, backend)               # scan.align.landmarks: faces and landmarks
    aligned = align(pixels, faces, options, size)          # scan.align.crop: crops on a template
    crops = torch.stack([a.crop for a in aligned])
    translated = translator.translate_faces(crops, aligned)   # the network, in batches (scan.translator)
    blends = blend(pixels, translated, options)            # scan.align.paste: the registered blend kind
    image = paste(pixels, blends, translated)              # scan.align.paste: warped back, mixed in

One :class:`PortraitOptions`, checked once, goes to every step. :func:`prepare` runs the steps before
the network, :func:`finish` the ones after it; the translator composes them, for one photo or for a
stream of photos in batches, and a video uses a face tracker (``scan.align.tracking``) in place of
:func:`detect`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.align.crop import TEMPLATES, AlignedFace, cut_faces
from scan.align.landmarks import (
    BACKENDS,
    FACE_MODES,
    Face,
    LandmarkBackend,
    NoFaceError,
    detect_faces,
    faces_from_landmarks,
)
from scan.align.paste import Blend, get_blend, paste_back
from scan.errors import InputError, UserError
from scan.imageio import model_to_pil, pil_to_model, pil_to_uint8, to_rgb

if TYPE_CHECKING:  # only named in annotations: the steps need no network code
    from scan.generator import StackOutput

__all__ = [
    "PortraitOptions",
    "PortraitOptionError",
    "PortraitResult",
    "FaceResult",
    "PreparedPhoto",
    "PhotoSource",
    "CROP_TEMPLATES",
    "with_settings",
    "decode",
    "decode_frame",
    "detect",
    "align",
    "face_result",
    "blend",
    "paste",
    "prepare",
    "finish",
]

# A photo for the translator: an image, or a function that loads one (called in a worker thread, so
# that decoding overlaps the network).
PhotoSource = Image.Image | Callable[[], Image.Image]

# The crop templates, and "none" for an image that is an aligned crop already.
CROP_TEMPLATES = (*TEMPLATES, "none")


class PortraitOptionError(UserError, ValueError):
    """A portrait option that is not one of its choices."""


@dataclass(frozen=True)
class PortraitOptions:
    """How a portrait is translated: what every step of it needs to know, checked once, here.

    Attributes:
        align: ``ffhq`` or ``portrait`` crop template; ``none`` for a photo that is an aligned crop
            already (translated whole, at the model's size, and resized back).
        paste: blend the translated faces back into the photo; otherwise the result is the first
            translated crop.
        faces: ``largest`` or ``all``.
        landmarks: the landmark backend, ``auto``, ``fan`` or ``dlib``.
        mask: the paste-back blend kind, a name registered with :func:`scan.align.register_blend`
            (built in: ``square``, a rounded feathered square; ``hull``, the landmark hull).
        min_score: detection threshold (default: the backend's).

    Raises:
        PortraitOptionError: a value that is not one of the choices (a ``ValueError``; one line in
            the commands).
        scan.align.UnknownBlendError: ``mask`` is not a registered blend kind (the message lists them).

    Example:
        >>> options = PortraitOptions(faces="all", mask="hull")
        >>> translator.portrait(photo, options)
    """

    align: str = "ffhq"
    paste: bool = True
    faces: str = "largest"
    landmarks: str = "auto"
    mask: str = "square"
    min_score: float | None = None

    def __post_init__(self) -> None:
        for name, choices in (("align", CROP_TEMPLATES), ("faces", FACE_MODES), ("landmarks", BACKENDS)):
            if getattr(self, name) not in choices:
                raise PortraitOptionError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not isinstance(self.paste, bool):
            raise PortraitOptionError(f"paste must be True or False, got {self.paste!r}")
        score = self.min_score
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                                  or not math.isfinite(score)):
            raise PortraitOptionError(f"min_score must be a number or None, got {score!r}")
        get_blend(self.mask)  # an unknown kind fails now, naming the registered ones


def with_settings(options: PortraitOptions | None, settings: dict[str, Any]) -> PortraitOptions:
    """``options`` (default: :class:`PortraitOptions`' defaults) with some fields given by name, as the
    translator's methods take them (``portrait(photo, mask="hull")``).

    Raises:
        TypeError: ``options`` is not a :class:`PortraitOptions`, or a setting is no option's name.
        PortraitOptionError, scan.align.UnknownBlendError: a bad value.
    """
    if options is not None and not isinstance(options, PortraitOptions):
        raise TypeError(f"options must be a PortraitOptions, got {type(options).__name__} (give other settings "
                        "by name)")
    names = [f.name for f in dataclasses.fields(PortraitOptions)]
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise TypeError(f"unknown portrait option(s) {', '.join(unknown)}; the options: {', '.join(names)}")
    if options is None:
        return PortraitOptions(**settings)
    return dataclasses.replace(options, **settings) if settings else options


@dataclass
class FaceResult:
    """One translated face.

    Attributes:
        crop: the model's input, :math:`(3, S, S)` in ``[-1, 1]``.
        output: the translated crop, :math:`(3, S, S)` in ``[-1, 1]``.
        stages: every stage's output, coarse to fine.
        alphas: every stage's fusion map (``None`` for stage 1).
        aligned: detection and crop matrix; ``None`` when the input was an aligned image already.
        track: in a video, the face's identity (the same number in every frame it is tracked).
    """

    crop: Tensor
    output: Tensor
    stages: list[Tensor] = field(default_factory=list)
    alphas: list[Tensor | None] = field(default_factory=list)
    aligned: AlignedFace | None = None
    track: int | None = None


@dataclass
class PortraitResult:
    """``image``: the result photo (pasted back) or the first translated crop; ``faces``: per face."""

    image: Image.Image
    faces: list[FaceResult]


@dataclass
class PreparedPhoto:
    """A photo made ready for the network (what :func:`prepare` gives :func:`finish`).

    Attributes:
        crops: the network's inputs, :math:`(N, 3, S, S)` in ``[-1, 1]``.
        aligned: per crop, its detection and crop matrix; empty for an aligned input.
        pixels: the photo, :math:`(3, H, W)` ``uint8``, to paste the faces back into; ``None`` for
            an aligned input.
        size: the photo's ``(width, height)``.
    """

    crops: Tensor
    aligned: list[AlignedFace]
    pixels: Tensor | None
    size: tuple[int, int]

    def aligned_faces(self) -> list[AlignedFace | None]:
        """Per crop, its detection and matrix; ``None`` each for an aligned input."""
        return list(self.aligned) if self.aligned else [None] * len(self.crops)


# ------------------------------------------------------------------------------------ the steps

# A lazily opened image decodes on first use, and two threads decoding one object (the same image
# given twice to Translator.portraits) would corrupt it: one such decode at a time.
_DECODE_LOCK = threading.Lock()


def decode(photo: PhotoSource) -> Image.Image:
    """Decode: the photo as 8-bit RGB, as the file loader makes it (EXIF orientation applied, 16-bit
    rescaled, transparency on white); a loader is called first.

    Raises:
        TypeError: not a PIL image (nor a loader that returns one).
        InputError: an image without pixels (a side of 0).
    """
    image = photo() if callable(photo) else photo
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__} (tensors go to translate())")
    if 0 in image.size:
        raise InputError(f"an image of {image.width}x{image.height} px: no pixels to translate")
    with _DECODE_LOCK:
        image.load()
    return to_rgb(image)


def decode_frame(frame: Image.Image | np.ndarray) -> np.ndarray:
    """Decode a video frame: a writable RGB ``uint8`` ``(H, W, 3)`` array.

    Raises:
        TypeError: neither a PIL image nor such an array.
    """
    if isinstance(frame, Image.Image):
        return np.array(decode(frame))
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected RGB uint8 frames of shape (H, W, 3) or PIL images, got {array.dtype} "
                        f"{array.shape}")
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array)


def detect(pixels: Tensor, options: PortraitOptions, backend: LandmarkBackend | None,
           user_landmarks: np.ndarray | list[np.ndarray] | None = None) -> list[Face]:
    """Detect: the faces to translate (``options.faces``, above ``options.min_score``), largest first.

    Args:
        pixels: the photo, :math:`(3, H, W)` ``uint8``.
        options: the portrait's options.
        backend: the landmark backend (thread-safe where photos are prepared in several threads).
        user_landmarks: ``(68, 2)`` landmarks per face found elsewhere: no detection, no backend.
    """
    if user_landmarks is not None:
        return faces_from_landmarks(user_landmarks)
    if backend is None:
        raise ValueError("detect needs a landmark backend (or the user's landmarks)")
    return detect_faces(pixels, backend, options.faces, options.min_score)


def align(pixels: Tensor, faces: list[Face], options: PortraitOptions, size: int) -> list[AlignedFace]:
    """Align: each face cut out of the photo on the ``options.align`` template, ``size`` pixels a side."""
    return cut_faces(pixels, faces, size, options.align)


def face_result(crop: Tensor, out: StackOutput, row: int, aligned: AlignedFace | None) -> FaceResult:
    """Translate, per face: row ``row`` of a translated batch as one face's result."""
    return FaceResult(crop.cpu(), out.final[row], [o[row] for o in out.outputs],
                      [None if a is None else a[row] for a in out.alphas], aligned)


def blend(pixels: Tensor, faces: Sequence[FaceResult], options: PortraitOptions) -> list[Blend]:
    """Blend: per translated face, what it gives the photo (crop and mask) by the ``options.mask`` kind."""
    kind = get_blend(options.mask)
    return [kind(pixels, face.output, _aligned(face)) for face in faces]


def paste(pixels: Tensor, blends: Sequence[Blend], faces: Sequence[FaceResult],
          opacity: Sequence[float] | None = None) -> Image.Image:
    """Paste: the blends warped back into the photo through their masks, in order (later faces on top).

    Args:
        pixels: the photo, :math:`(3, H, W)` ``uint8`` (not changed).
        blends: per face, from :func:`blend`.
        faces: the translated faces (their crop matrices).
        opacity: per face, a factor on its mask in ``[0, 1]`` (a video's faces fade in and out).

    Returns:
        The photo with the faces pasted in; its pixels far from them unchanged, bit for bit.
    """
    masks = torch.stack([b.mask for b in blends])
    if opacity is not None:
        masks = masks * torch.tensor(list(opacity), dtype=masks.dtype)[:, None, None, None]
    matrices = np.stack([_aligned(face).matrix for face in faces])
    pasted = paste_back(pixels, torch.stack([b.crop for b in blends]), matrices, masks)
    return Image.fromarray(pasted.permute(1, 2, 0).numpy(), "RGB")


def _aligned(face: FaceResult) -> AlignedFace:
    if face.aligned is None:
        raise ValueError("a face of an aligned input has no place in a photo to blend or paste into")
    return face.aligned


# ------------------------------------------------------------------ before and after the network


def prepare(photo: PhotoSource, options: PortraitOptions, size: int, backend: LandmarkBackend | None,
            user_landmarks: np.ndarray | list[np.ndarray] | None = None) -> PreparedPhoto:
    """The steps before the network: decode -> detect -> align (or, with ``options.align == "none"``,
    the photo resized to a crop).

    Args:
        photo: the photo or its loader.
        options: the portrait's options.
        size: the model's crop side.
        backend: the landmark backend (unused for ``align="none"`` or with ``user_landmarks``).
        user_landmarks: ``(68, 2)`` landmarks per face found elsewhere.

    Raises:
        TypeError: ``photo`` is not a PIL image.
        scan.align.NoFaceError: no face was found.
    """
    image = decode(photo)
    if options.align == "none":
        crop = pil_to_model(image.resize((size, size), Image.Resampling.BICUBIC))
        return PreparedPhoto(crop, [], None, image.size)
    # The photo stays uint8: only the faces' surroundings are converted to floats (a 12000 px photo
    # would take GBs as floats).
    pixels = pil_to_uint8(image)
    aligned = align(pixels, detect(pixels, options, backend, user_landmarks), options, size)
    if not aligned:
        raise NoFaceError("no face found")
    return PreparedPhoto(torch.stack([a.crop for a in aligned]), aligned, pixels, image.size)


def finish(prepared: PreparedPhoto, faces: list[FaceResult], options: PortraitOptions) -> PortraitResult:
    """The steps after the network: blend -> paste (or the translated crop, for an aligned input or
    without ``options.paste``)."""
    if prepared.pixels is None:  # an aligned crop: its translation, at the input's size
        return PortraitResult(model_to_pil(faces[0].output).resize(prepared.size, Image.Resampling.BICUBIC), faces)
    if not options.paste:
        return PortraitResult(model_to_pil(faces[0].output), faces)
    return PortraitResult(paste(prepared.pixels, blend(prepared.pixels, faces, options), faces), faces)
