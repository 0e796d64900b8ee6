"""``Translator``: inference with a trained model, on aligned images or on whole portraits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
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
from scan.align.crop import quad_to_matrix, template_quad, warp_to_crops
from scan.align.landmarks import LandmarkBackend, get_backend
from scan.checkpoint import load_model
from scan.datasets.images import to_rgb
from scan.errors import DeviceError, UserError
from scan.generator import StackOutput
from scan.imageops import as_model_input, model_to_pil, pil_to_model, pil_to_uint8
from scan.model import SCAN
from scan.video import FaceTracker, temporal_blend

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

    def _paste_masks(self, mask: str, aligned: list[AlignedFace]) -> Tensor:
        """The paste-back mask of each face, :math:`(N, 1, S, S)`: ``hull`` follows its landmarks,
        ``square`` is one rounded square for all."""
        if mask == "hull":
            return torch.stack([landmark_hull_mask(a.landmarks_in_crop, self.size) for a in aligned])
        return rounded_square_mask(self.size).expand(len(aligned), 1, self.size, self.size)

    def share_landmark_models(self, other: Translator) -> None:
        """Use ``other``'s landmark models from now on (each loaded once, kept by both): for several
        translators in one process, e.g. both directions of a model, or several models."""
        self._backends = other._backends

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
        matrices = np.stack([a.matrix for a in aligned])
        blended = paste_back(pixels, torch.stack([r.output for r in results]), matrices,
                             self._paste_masks(mask, aligned))
        return PortraitResult(Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB"), results)

    def video(
        self,
        frames: Iterable[Image.Image | np.ndarray],
        align: str = "ffhq",
        faces: str = "largest",
        landmarks: str = "auto",
        mask: str = "square",
        min_score: float | None = None,
        fps: float = 25.0,
        detect_every: int = 10,
        temporal: float = 0.7,
        fade_frames: int = 6,
    ) -> Iterator[PortraitResult]:
        """Translate the faces of a video, frame by frame, lazily (one frame in memory at a time).

        Faces are detected on the first frame and every ``detect_every`` frames (and at once when a
        track loses its face), tracked in between, and their landmarks smoothed over time, so the
        crop does not jitter (:class:`scan.video.FaceTracker`). Faces that appear or leave fade in
        and out of the paste-back; frames without a face come out untouched. Each face's
        translation is blended with its previous one in crop space where the input did not change
        (``temporal``, :func:`scan.video.temporal_blend`), which removes most of the frame-to-frame
        flicker at the price of a short lag on slow changes of colour or light.

        Args:
            frames: RGB frames: PIL images, or ``uint8`` arrays :math:`(H, W, 3)` (what
                :func:`scan.video.read_video` yields).
            align, faces, landmarks, mask, min_score: as for :meth:`portrait` (always pasted back).
            fps: the clip's frame rate (the smoothing filter's time step).
            detect_every: frames between full detections.
            temporal: weight of the previous translation where nothing moved, in ``[0, 1)``; 0 turns
                the colour smoothing off.
            fade_frames: frames over which a face fades in or out (0: it pops).

        Yields:
            Per frame, a :class:`PortraitResult`: ``image`` the frame with its faces pasted back,
            ``faces`` per face (with ``track``, its identity); no faces on a frame passed through.
        """
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
        if not 0 <= temporal < 1:
            raise ValueError(f"temporal must be in [0, 1), got {temporal}")
        tracker = FaceTracker(self.landmark_backend(landmarks), faces, detect_every, fps, min_score,
                              fade_frames=fade_frames)
        for frame in frames:
            array = _frame_array(frame)
            tracks = tracker.update(array)
            if not tracks:
                yield PortraitResult(Image.fromarray(array, "RGB"), [])
                continue
            pixels = torch.from_numpy(array).permute(2, 0, 1)
            matrices = np.stack([quad_to_matrix(template_quad(t.landmarks, align), self.size) for t in tracks])
            crops = warp_to_crops(pixels, matrices, self.size)
            aligned = [AlignedFace(t.face, c, m) for t, c, m in zip(tracks, crops, matrices)]
            results = self._face_results(crops, aligned)
            for track, result in zip(tracks, results):
                if track.fresh:
                    track.state.clear()
                    track.fresh = False
                result.output, _ = temporal_blend(result.output, track.state.get("output"), result.crop,
                                                  track.state.get("crop"), temporal)
                track.state.update(output=result.output, crop=result.crop)
                result.track = track.id
            masks = self._paste_masks(mask, aligned)
            weights = torch.tensor([t.weight for t in tracks], dtype=masks.dtype)
            blended = paste_back(pixels, torch.stack([r.output for r in results]), matrices,
                                 masks * weights[:, None, None, None])
            yield PortraitResult(Image.fromarray(blended.permute(1, 2, 0).numpy(), "RGB"), results)


def _frame_array(frame: Image.Image | np.ndarray) -> np.ndarray:
    """A video frame as a writable RGB ``uint8`` ``(H, W, 3)`` array."""
    if isinstance(frame, Image.Image):
        return np.array(_as_rgb(frame))
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise TypeError(f"expected RGB uint8 frames of shape (H, W, 3) or PIL images, got {array.dtype} "
                        f"{array.shape}")
    return array if array.flags.writeable and array.flags.c_contiguous else np.array(array)


def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__} (tensors go to translate())")
    return to_rgb(image)
