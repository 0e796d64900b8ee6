"""``Translator``: inference with a trained model, on aligned images or on whole portraits."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.align import (
    MASKS,
    AlignedFace,
    NoFaceError,
    align_faces,
    landmark_hull_mask,
    paste_back,
    rounded_square_mask,
)
from scan.align.landmarks import LandmarkBackend, get_backend
from scan.checkpoint import load_model
from scan.datasets.images import to_rgb
from scan.errors import DeviceError, UserError
from scan.generator import StackOutput
from scan.imageops import as_model_input, model_to_pil, pil_to_model, pil_to_uint8
from scan.model import SCAN

__all__ = ["Translator", "PortraitResult", "FaceResult", "NonFiniteOutputError", "resolve_device",
           "available_devices"]

PRECISIONS = ("fp32", "bf16")


class NonFiniteOutputError(UserError, RuntimeError):
    """The model produced NaN/inf: its weights are broken (a diverged or corrupt model)."""


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps``."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the named device,
    checked to exist here.

    Raises:
        DeviceError: not a device name, or no such device on this machine (the message lists those
            there are).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {device!r} is not a device name; available here: {', '.join(available)}") from None
    name = f"cuda:{resolved.index or 0}" if resolved.type == "cuda" else resolved.type
    if name not in available:
        raise DeviceError(f"device {device!r} is not available on this machine; available: {', '.join(available)}")
    return resolved


@dataclass
class FaceResult:
    """One translated face.

    Attributes:
        crop: the model's input, :math:`(3, S, S)` in ``[-1, 1]``.
        output: the translated crop, :math:`(3, S, S)` in ``[-1, 1]``.
        stages: every stage's output, coarse to fine.
        alphas: every stage's fusion map (``None`` for stage 1).
        aligned: detection and crop matrix; ``None`` when the input was an aligned image already.
    """

    crop: Tensor
    output: Tensor
    stages: list[Tensor] = field(default_factory=list)
    alphas: list[Tensor | None] = field(default_factory=list)
    aligned: AlignedFace | None = None


@dataclass
class PortraitResult:
    """``image``: the result photo (pasted back) or the first translated crop; ``faces``: per face."""

    image: Image.Image
    faces: list[FaceResult]


class Translator:
    """Runs one direction of a trained SCAN model under ``torch.inference_mode``; no Trainer needed.

    Args:
        model: the model.
        direction: ``a2b`` or ``b2a``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        precision: ``fp32`` or ``bf16`` (autocast).

    Example:
        >>> translator = Translator.from_checkpoint("selfie2anime.pt")
        >>> result = translator.portrait(Image.open("me.jpg"))
        >>> result.image.save("me_anime.png")
    """

    def __init__(self, model: SCAN, direction: str = "a2b", device: str = "auto", precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.device = resolve_device(device)
        self.generator = model.generator(direction).to(self.device).eval()
        self.direction, self.precision = direction, precision
        self.size, self.channels = model.config.top_size, model.config.channels
        self._backends: dict[str, LandmarkBackend] = {}

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], direction: str = "a2b", device: str = "auto", precision: str = "fp32"
    ) -> Translator:
        """Load a scan model file (or training checkpoint) safely and wrap one of its directions."""
        return cls(load_model(path), direction, device, precision)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def translate(self, images: Tensor) -> StackOutput:
        """Translate a batch: floats in ``[-1, 1]`` or ``uint8`` in ``[0, 255]``, :math:`(B, 3, H, W)`
        (or one image :math:`(3, H, W)`) with sides the stack accepts. Outputs are floats in ``[-1, 1]``.

        Raises:
            TypeError, ValueError: images of another dtype, shape or range (see
                :func:`scan.imageops.as_model_input`).
            NonFiniteOutputError: the model's output holds NaN/inf (broken weights).
        """
        images = as_model_input(images, self.channels)
        with torch.inference_mode(), self._autocast():
            out = self.generator(images.to(self.device))
        if not bool(torch.isfinite(out.final).all()):
            raise NonFiniteOutputError(
                "the model's output is NaN/inf: its weights are broken (a diverged run or a corrupt file)"
            )
        return StackOutput(
            outputs=[o.float() for o in out.outputs],
            alphas=[a if a is None else a.float() for a in out.alphas],
            raw=[r.float() for r in out.raw],
        )

    def __call__(self, image: Image.Image | Tensor) -> Image.Image | Tensor:
        """Translate an already aligned image.

        A PIL image (any mode, EXIF orientation applied, as the file loader does) is resized to the
        model's size and the result returned as a PIL image of that size; a tensor (see
        :meth:`translate`) is translated as it is.
        """
        if isinstance(image, Tensor):
            return self.translate(image).final
        return model_to_pil(self.translate(self._model_input(image)).final)

    def _model_input(self, image: Image.Image) -> Tensor:
        return pil_to_model(_as_rgb(image).resize((self.size, self.size), Image.Resampling.BICUBIC))

    def _face_results(self, crops: Tensor, aligned: list[AlignedFace] | list[None]) -> list[FaceResult]:
        out = self.translate(crops)
        return [
            FaceResult(crops[i].cpu(), out.final[i].cpu(), [o[i].cpu() for o in out.outputs],
                       [None if al is None else al[i].cpu() for al in out.alphas], a)
            for i, a in enumerate(aligned)
        ]

    def aligned(self, image: Image.Image) -> PortraitResult:
        """Translate an image that is already an aligned crop; the result has the input's size."""
        image = _as_rgb(image)
        (face,) = self._face_results(self._model_input(image), [None])
        return PortraitResult(model_to_pil(face.output).resize(image.size, Image.Resampling.BICUBIC), [face])

    def landmark_backend(self, name: str = "auto") -> LandmarkBackend:
        """The landmark backend ``name`` (``auto``, ``fan``, ``dlib``), created once and kept."""
        if name not in self._backends:
            self._backends[name] = get_backend(name, device=str(self.device))
        return self._backends[name]

    def portrait(
        self,
        photo: Image.Image,
        align: str = "ffhq",
        paste: bool = True,
        faces: str = "largest",
        landmarks: str = "auto",
        mask: str = "square",
        min_score: float | None = None,
        user_landmarks: np.ndarray | list[np.ndarray] | None = None,
    ) -> PortraitResult:
        """Translate the face(s) of a photo.

        Args:
            photo: the photo (any PIL mode; EXIF orientation is applied, as the file loader does).
                Faces are detected on a copy at most ``scan.align.MAX_DETECT_SIDE`` pixels long;
                crops are cut from the photo itself.
            align: ``ffhq`` or ``portrait`` crop template.
            paste: blend the translated faces back into the photo; otherwise ``image`` is the first
                translated crop.
            faces: ``largest`` or ``all``.
            landmarks: ``auto``, ``fan`` or ``dlib`` backend.
            mask: paste-back mask, ``square`` (rounded, feathered) or ``hull`` (landmark hull).
            min_score: detection threshold (default: the backend's).
            user_landmarks: ``(68, 2)`` landmarks per face computed elsewhere (skips detection).

        Returns:
            A :class:`PortraitResult`; its ``faces`` hold every stage's output and alpha map.

        Raises:
            scan.align.NoFaceError: no face was found.
            scan.align.AlignmentError: no landmark backend is usable.
        """
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        # The photo stays uint8: only the faces' surroundings are converted to floats (a 12000 px
        # photo would take GBs as floats).
        pixels = pil_to_uint8(_as_rgb(photo))
        # With the user's landmarks no backend is used (align_faces skips detection).
        backend: LandmarkBackend | str = "auto" if user_landmarks is not None else self.landmark_backend(landmarks)
        aligned = align_faces(pixels, self.size, align, 1.0, backend, faces, min_score, user_landmarks)
        if not aligned:
            raise NoFaceError("no face found")
        results = self._face_results(torch.stack([a.crop for a in aligned]), aligned)
        if not paste:
            return PortraitResult(model_to_pil(results[0].output), results)
        if mask == "hull":
            masks = torch.stack([landmark_hull_mask(a.landmarks_in_crop, self.size) for a in aligned])
        else:
            masks = rounded_square_mask(self.size)
        matrices = np.stack([a.matrix for a in aligned])
        blended = paste_back(pixels, torch.stack([r.output for r in results]), matrices, masks)
        return PortraitResult(Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB"), results)



def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__} (tensors go to translate())")
    return to_rgb(image)
