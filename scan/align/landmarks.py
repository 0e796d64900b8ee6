"""Finding faces: detection + 68 iBUG landmarks behind one interface, FAN (face-alignment) or dlib
(offline), and the detection step of a portrait (:func:`detect_faces`: on a smaller copy of a large
photo, the chosen faces only)."""

from __future__ import annotations

import importlib.util
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.errors import UserError
from scan.imageio import model_to_uint8

__all__ = [
    "AlignmentError",
    "NoFaceError",
    "Face",
    "LandmarkBackend",
    "DlibBackend",
    "FanBackend",
    "get_backend",
    "choose_faces",
    "detect_faces",
    "faces_from_landmarks",
    "image_to_array",
    "SerialBackend",
    "BACKENDS",
    "FACE_MODES",
    "MAX_DETECT_SIDE",
    "MIN_FACE",
    "detect_scale",
]

BACKENDS = ("auto", "fan", "dlib")
FACE_MODES = ("largest", "all")  # which detected faces to translate

# Faces are found on a copy of the photo whose long side is at most this: detectors gain nothing from
# more pixels, and a 12000 x 12000 photo would take minutes and many GB. Crops are still cut from the
# full-resolution photo.
MAX_DETECT_SIDE = 2048

# The smallest face the dlib backend looks for, as a fraction of the photo's shorter side (see
# DlibBackend): a portrait's face is larger (the astronaut's box is 0.18 of her photo's side).
MIN_FACE = 0.15
ALL_FACES_MIN_FACE = 0.05  # faces="all": a group photo's faces, down to a twentieth of its shorter side
# dlib's frontal HOG detector slides an 80 x 80 window whose face box is ~73 px on a side over an image
# pyramid, each level 5/6 the size of the one before: on an image scanned at scale s, boxes come in
# sizes 73 / s * (6/5)**level, and faces down to ~0.8 of the smallest are still found.
_HOG_BOX = 73
_HOG_STEP = 6 / 5


class AlignmentError(UserError, RuntimeError):
    """No usable landmark backend, or no face where one was required."""


class NoFaceError(AlignmentError):
    """A photo in which no face (above the score and size thresholds) was found."""


@dataclass
class Face:
    """One detected face.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in pixels.
        score: detector confidence (backend-specific scale; higher is surer).
        landmarks: ``(68, 2)`` float array of iBUG landmarks, ``(x, y)`` in pixels.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Geometric mean of the box's width and height."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0)))


class LandmarkBackend(Protocol):
    name: str
    default_min_score: float

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB ``uint8`` image of shape ``(H, W, 3)``."""
        ...


def _dlib_model_path() -> Path | None:
    # Importing face_recognition_models needs pkg_resources, gone with setuptools >= 81: find the
    # package's folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return path if path.is_file() else None


def detect_scale(
    height: int, width: int, min_face: float | None = MIN_FACE, upsample: int = 1, max_side: int = MAX_DETECT_SIDE
) -> float:
    """The factor by which :class:`DlibBackend` resizes a ``height x width`` photo before its HOG scan.

    A face of ``min_face`` (a fraction of the shorter side if below 1, else pixels) should just fill
    the scan's smallest box (~73 px): 73 over ``min_face`` in pixels, rounded up to one of the scales
    the whole-photo scan visits (``2**upsample * (5/6)**k``, so boxes keep that scan's sizes), at most
    ``2**upsample`` (a small photo is scanned as before) and at most ``max_side`` over the longer
    side (no photo is scanned at a huge size). ``min_face=None``: ``2**upsample``, the whole-photo scan.
    """
    top = 2.0**upsample
    if min_face is None:
        return top
    if min_face <= 0:
        raise ValueError(f"min_face must be > 0 (a fraction of the shorter side, or pixels), got {min_face!r}")
    smallest = min_face * min(height, width) if min_face < 1 else min_face
    ratio = top * smallest / _HOG_BOX  # the smallest face at scale `top`, in smallest boxes
    levels = max(0, int(np.floor(np.log(ratio) / np.log(_HOG_STEP) + 1e-9))) if ratio > 0 else 0
    longest = max(height, width) * top
    if longest / _HOG_STEP**levels > max_side:
        levels = int(np.ceil(np.log(longest / max_side) / np.log(_HOG_STEP) - 1e-9))
    return top / _HOG_STEP**levels


class DlibBackend:
    """dlib's HOG face detector and 68-point shape predictor (``pip install scan-gan[dlib]``): fully
    offline, CPU only, good on frontal faces.

    The detector's cost is the pixels it scans. It looks for faces down to ``min_face`` (default
    :data:`MIN_FACE`, 0.15 of the shorter side, below a portrait's face: the astronaut's is 0.18), on a
    copy resized (:func:`detect_scale`) so that such a face fills its smallest box, ~73 px: a 512 px
    portrait is scanned at 494 px, not 1024 (4x fewer pixels). A photo under ~290 px on its shorter
    side is scanned as before, at twice its size. Boxes come back in the photo's pixels; the landmarks
    are found on the full-resolution photo. (:func:`detect_faces` scans again for smaller faces where
    none that large is found, and for ``faces="all"``.)

    Args:
        upsample: the photo is scanned at most ``2**upsample`` times its size (finds smaller faces in
            small photos, slower).
        min_face: the smallest face looked for (box side): a fraction of the photo's shorter side if
            below 1, else pixels. ``None``: the path before it, HOG over the whole photo upsampled
            ``upsample`` times (faces from ~36 px at any photo size; the cost grows with the photo).
    """

    name = "dlib"
    # HOG scores: real frontal faces score ~1 and above; at upsample 1 the astronaut photo's mission
    # patch scores ~0.1. Below this the detection is dropped unless the caller asks otherwise.
    default_min_score = 0.5

    def __init__(self, upsample: int = 1, *, min_face: float | None = MIN_FACE) -> None:
        try:
            import dlib
        except ImportError as e:
            raise AlignmentError("the dlib backend needs dlib: pip install 'scan-gan[dlib]' (dlib-bin)") from e
        model = _dlib_model_path()
        if model is None:
            raise AlignmentError(
                "the dlib backend needs the 68-point model: pip install 'scan-gan[dlib]' (face-recognition-models)"
            )
        if min_face is not None and min_face <= 0:
            raise ValueError(f"min_face must be > 0 (a fraction of the shorter side, or pixels), got {min_face!r}")
        self.min_face = min_face
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self._rectangle = dlib.rectangle

    def find_boxes(self, image: np.ndarray, min_face: float | None | str = "default",
                   ) -> list[tuple[tuple[float, float, float, float], float]]:
        """Face boxes ``(x0, y0, x1, y1)`` and scores (the detection half of :meth:`detect`), on a copy
        resized by :func:`detect_scale` (``min_face``: this call's, else the backend's)."""
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        smallest = self.min_face if min_face == "default" else min_face
        scale = detect_scale(height, width, smallest, self.upsample)  # type: ignore[arg-type]
        if scale == 2.0**self.upsample:  # as before: dlib upsamples the photo itself
            return self._run(image, self.upsample)
        import cv2  # comes with face-alignment

        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Bilinear down to half size still reads every pixel (and costs a fifth of INTER_AREA's ~2 ms
        # on the astronaut); below that, area averaging keeps HOG's gradients free of aliasing.
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)
        sx, sy = size[0] / width, size[1] / height
        return [
            (((x0 + 0.5) / sx - 0.5, (y0 + 0.5) / sy - 0.5, (x1 + 0.5) / sx - 0.5, (y1 + 0.5) / sy - 0.5), score)
            for (x0, y0, x1, y1), score in self._run(small, 0)
        ]

    def _run(self, image: np.ndarray, upsample: int) -> list[tuple[tuple[float, float, float, float], float]]:
        rects, scores, _ = self._detector.run(image, upsample, 0.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The 68 landmarks inside one box (the landmark half of :meth:`detect`)."""
        shape = self._predictor(np.ascontiguousarray(image), self._rectangle(*(int(round(v)) for v in box)))
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)

    def detect(self, image: np.ndarray, min_face: float | None | str = "default") -> list[Face]:
        return [Face(box, score, self.landmarks(image, box)) for box, score in self.find_boxes(image, min_face)]


_FAN_FILES = ("2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth")


def fan_weights_cached() -> bool:
    """Whether face-alignment's FAN and S3FD weights are already in torch's hub cache."""
    import torch.hub

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return all((folder / name).is_file() for name in _FAN_FILES)


class FanBackend:
    """face-alignment's FAN landmarks with its S3FD detector: the best quality, any GPU. Its weights
    are fetched on first use into torch's hub cache (``$TORCH_HOME/hub/checkpoints``).

    Args:
        device: ``cpu``, ``cuda``, ...
    """

    name = "fan"
    default_min_score = 0.9  # S3FD's face probability

    def __init__(self, device: str = "cpu") -> None:
        try:
            import face_alignment

            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, face_detector="sfd"
            )
        except Exception as e:  # a failed download surfaces as URLError, OSError, HTTPError, ...
            raise AlignmentError(
                f"the fan backend could not load its weights ({type(e).__name__}: {e}); put "
                f"{' and '.join(_FAN_FILES)} in {os.path.join('$TORCH_HOME', 'hub', 'checkpoints')} or use "
                "--landmarks dlib (pip install 'scan-gan[dlib]')"
            ) from None

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The 68 landmarks inside one box, without detection (video tracking between detections)."""
        found = self._fa.get_landmarks_from_image(image, detected_faces=[list(box)])
        if not found:
            return np.tile(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), (68, 1)).astype(np.float64)
        return np.asarray(found[0][:, :2], np.float64)

    def detect(self, image: np.ndarray) -> list[Face]:
        landmarks, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True, return_landmark_score=True)
        if landmarks is None:
            return []
        return [
            Face((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(b[4]), np.asarray(pts[:, :2], np.float64))
            for pts, b in zip(landmarks, boxes)
        ]


def get_backend(name: str = "auto", device: str = "cpu") -> LandmarkBackend:
    """A landmark backend by name: ``fan``, ``dlib``, or ``auto`` (FAN when its weights are cached,
    else dlib, else an error that says how to get either)."""
    if name == "fan":
        return FanBackend(device)
    if name == "dlib":
        return DlibBackend()
    if name != "auto":
        raise ValueError(f"unknown landmark backend {name!r}; valid: {', '.join(BACKENDS)}")
    if fan_weights_cached():
        return FanBackend(device)
    try:
        return DlibBackend()
    except AlignmentError:
        raise AlignmentError(
            "no landmark backend is usable: install the offline one with pip install 'scan-gan[dlib]', or "
            f"place face-alignment's FAN weights ({', '.join(_FAN_FILES)}) in torch's hub cache"
        ) from None


def choose_faces(faces: list[Face], mode: str = "largest", min_score: float = 0.5, min_size: float = 32) -> list[Face]:
    """Keep the faces to translate.

    Args:
        faces: detections.
        mode: ``largest`` (the one biggest face) or ``all`` (every face, largest first).
        min_score: detections scoring lower are dropped (false positives such as badges and patterns).
        min_size: faces smaller than this many pixels (box side) are dropped.
    """
    if mode not in FACE_MODES:
        raise ValueError(f"faces must be one of {FACE_MODES}, got {mode!r}")
    kept = sorted((f for f in faces if f.score >= min_score and f.size >= min_size), key=lambda f: -f.size)
    return kept[:1] if mode == "largest" else kept


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
    threshold = backend.default_min_score if min_score is None else min_score
    scale = max(height, width) / MAX_DETECT_SIDE
    if scale > 1:
        array = np.asarray(Image.fromarray(array).resize((round(width / scale), round(height / scale)),
                                                         Image.Resampling.BOX))
    # The dlib backend looks for a portrait's face first (its min_face, fast). Every face of a group
    # photo, or a photo where no face that large is found, takes the slower scan for faces down to a
    # twentieth of the shorter side.
    small_faces = {"min_face": ALL_FACES_MIN_FACE} if getattr(backend, "min_face", None) else None
    chosen: list[Face] = []
    for options in ([small_faces] if faces == "all" and small_faces else [{}, small_faces]):
        if options is None:
            break
        found = backend.detect(array, **options)
        chosen = choose_faces([_rescaled(f, scale) for f in found] if scale > 1 else found, faces, threshold, min_size)
        if chosen:
            break
    return chosen


def _rescaled(face: Face, scale: float) -> Face:
    """A detection on a copy downscaled by ``scale``, in the original's pixels (centres: ``(x + .5) * scale - .5``)."""
    box = tuple(float(v) * scale for v in face.box)
    return Face(box, face.score, (face.landmarks + 0.5) * scale - 0.5)  # type: ignore[arg-type]


def faces_from_landmarks(landmarks: np.ndarray | list[np.ndarray]) -> list[Face]:
    """Faces whose landmarks were found elsewhere: ``(68, 2)`` for one face, or one such array per face.
    Each face's box is its landmarks' bounding box; its score is infinite (nothing to filter)."""
    arrays = [landmarks] if np.asarray(landmarks).ndim == 2 else list(landmarks)
    faces = []
    for lm in arrays:
        lm = np.asarray(lm, np.float64)
        (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
        faces.append(Face((x0, y0, x1, y1), float("inf"), lm))
    return faces


# One lock per landmark backend object, however many translators (and wrappers) share it.
_BACKEND_LOCKS: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_BACKEND_LOCKS_GUARD = threading.Lock()


class SerialBackend:
    """A landmark backend that detects in one thread at a time: neither dlib's detector nor
    face_alignment's FAN is documented as thread-safe, and the workers of
    :meth:`scan.translator.Translator.portraits` (or a web server's request threads) share one.

    Args:
        backend: the backend to guard; every :class:`SerialBackend` of one backend shares its lock.
    """

    def __init__(self, backend: LandmarkBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.default_min_score = backend.default_min_score
        with _BACKEND_LOCKS_GUARD:
            self._lock = _BACKEND_LOCKS.setdefault(backend, threading.Lock())

    def detect(self, image: np.ndarray, **options: Any) -> list[Face]:
        with self._lock:
            return self.backend.detect(image, **options)

    @property
    def min_face(self) -> float | None:
        return getattr(self.backend, "min_face", None)
