"""The ``parsing`` blend kind: the face and hair, as a face-parsing network sees them, replaced; the
rest (neck, clothes, hat, background) stays the photo's.

The network is the user's, an ONNX file in the common BiSeNet layout trained on CelebAMask-HQ: input
``(1, 3, 512, 512)`` RGB in ``[0, 1]`` normalised with ImageNet's mean and standard deviation, output
``(1, 19, H, W)`` class logits (0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g,
7 l_ear, 8 r_ear, 9 ear_r, 10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth,
17 hair, 18 hat). It runs with ONNX Runtime on the photo's own crop of the face. Nothing is
downloaded: the file is named with ``infer.py --parsing-model``, ``scan-web --parsing-model``,
:func:`use_parsing_model` or the ``SCAN_FACE_PARSING_MODEL`` environment variable.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

from scan.align.crop import AlignedFace
from scan.align.paste import Blend, register_blend, rounded_square_mask
from scan.errors import UserError

__all__ = [
    "PARSING_ENV",
    "PARSING_SIZE",
    "FACE_AND_HAIR",
    "ParsingModelError",
    "use_parsing_model",
    "parsing_model_path",
    "parse_labels",
    "parsing_mask",
]

PARSING_ENV = "SCAN_FACE_PARSING_MODEL"
PARSING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Skin, brows, eyes, glasses, ears, earring, nose, mouth, lips, and hair: what a stylised face
# replaces. Neck (14), necklace (15), cloth (16) and hat (18) stay the photo's.
FACE_AND_HAIR = (*range(1, 14), 17)

_chosen: Path | None = None
_lock = threading.Lock()


class ParsingModelError(UserError, ValueError):
    """The face-parsing model is not given, missing, or not of the expected layout."""


def use_parsing_model(path: str | os.PathLike[str] | None) -> None:
    """Choose the face-parsing ONNX file for the ``parsing`` blend kind (``None``: back to
    ``$SCAN_FACE_PARSING_MODEL``).

    Raises:
        ParsingModelError: no such file.
    """
    global _chosen
    if path is not None and not Path(path).is_file():
        raise ParsingModelError(f"{path}: no such face-parsing model (an ONNX file)")
    _chosen = None if path is None else Path(path)


def parsing_model_path() -> Path:
    """The face-parsing ONNX file: the one chosen with :func:`use_parsing_model`, else
    ``$SCAN_FACE_PARSING_MODEL``.

    Raises:
        ParsingModelError: none is given, or the file does not exist.
    """
    path = _chosen or (Path(os.environ[PARSING_ENV]) if os.environ.get(PARSING_ENV) else None)
    if path is None:
        raise ParsingModelError(
            "the 'parsing' mask needs a face-parsing network as ONNX (BiSeNet, 19 CelebAMask-HQ classes): give "
            f"--parsing-model FILE or set {PARSING_ENV}; nothing is downloaded")
    if not path.is_file():
        raise ParsingModelError(f"{path}: no such face-parsing model (an ONNX file)")
    return path


@functools.lru_cache(maxsize=4)
def _session(path: str, modified: float):  # noqa: ANN202 (onnxruntime is imported here only)
    """An ONNX Runtime session for ``path``, loaded once (again if the file changes)."""
    try:
        import onnxruntime
    except ImportError:
        raise ParsingModelError("the 'parsing' mask runs its network with ONNX Runtime: pip install -e '.[onnx]'") \
            from None
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a file that is no model
        raise ParsingModelError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ParsingModelError(f"{path}: a face-parsing model takes one image, this one {len(inputs)} inputs")
    return session


def parse_labels(crop: Tensor) -> Tensor:
    """The face-parsing network's class per pixel of a face crop, at the network's resolution.

    Args:
        crop: the photo's crop of a face, in ``[-1, 1]``.

    Returns:
        ``(H, W)`` ``int64`` class indices (``H = W = 512`` for the usual BiSeNet export).

    Raises:
        ParsingModelError: no model, or one whose output is not ``(1, 19, H, W)``.

    Shape:
        - crop: :math:`(3, S, S)`
    """
    path = parsing_model_path()
    session = _session(str(path), path.stat().st_mtime)
    image = F.interpolate(((crop.detach().float().cpu() + 1) / 2)[None], size=(PARSING_SIZE, PARSING_SIZE),
                          mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    feed = {session.get_inputs()[0].name: ((image - mean) / std).numpy().astype(np.float32)}
    with _lock:  # one run at a time: ONNX Runtime's own threads use the cores already
        logits = session.run(None, feed)[0]
    if logits.ndim != 4 or logits.shape[:2] != (1, 19):
        raise ParsingModelError(f"{path}: expected (1, 19, H, W) class logits (BiSeNet, CelebAMask-HQ), got "
                                f"{tuple(logits.shape)}")
    return torch.from_numpy(np.asarray(logits[0]).argmax(0))


def parsing_mask(crop: Tensor, size: int, classes: tuple[int, ...] = FACE_AND_HAIR, feather: float = 0.03) -> Tensor:
    """A soft mask of the ``classes`` the parsing network finds in a face crop.

    Args:
        crop: the photo's crop of a face, in ``[-1, 1]``.
        size: the mask's side (the translated crop's).
        classes: the CelebAMask-HQ classes to cover (default: face and hair).
        feather: blur of the edge, as a fraction of ``size``.

    Returns:
        :math:`(1, size, size)` in ``[0, 1]``, 0 on the crop's border.
    """
    labels = parse_labels(crop)
    hit = torch.isin(labels, torch.tensor(classes)).float()[None, None]
    mask = F.interpolate(hit, size=(size, size), mode="area") if hit.shape[-1] >= size else \
        F.interpolate(hit, size=(size, size), mode="bilinear", align_corners=False)
    sigma = max(feather * size / 2, 0.5)
    kernel = int(2 * round(3 * sigma) + 1)
    mask = gaussian_blur2d(mask, (kernel, kernel), (sigma, sigma))
    return mask[0].clamp(0, 1) * rounded_square_mask(size, feather=0.02, radius=0.0)  # zero on the border


@register_blend("parsing")
def parsing_blend(photo: Tensor, translated: Tensor, face: AlignedFace) -> Blend:
    """The translated crop through the face and hair a face-parsing network finds in the photo's crop
    (the user's ONNX model; see :mod:`scan.align.parsing`)."""
    return Blend(translated, parsing_mask(face.crop, translated.shape[-1]).to(translated.device))
