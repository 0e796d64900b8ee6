"""Face detection + 68 iBUG landmarks behind one interface: FAN (face-alignment) or dlib (offline)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from scan.errors import UserError

__all__ = [
    "AlignmentError",
    "NoFaceError",
    "Face",
    "LandmarkBackend",
    "DlibBackend",
    "FanBackend",
    "get_backend",
    "choose_faces",
    "BACKENDS",
    "FACE_MODES",
]

BACKENDS = ("auto", "fan", "dlib")
FACE_MODES = ("largest", "all")  # which detected faces to translate


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


class DlibBackend:
    """dlib's HOG face detector and 68-point shape predictor (``pip install scan-gan[dlib]``): fully
    offline, CPU only, good on frontal faces.

    Args:
        upsample: times the image is upsampled before detection (finds smaller faces, slower).
    """

    name = "dlib"
    # HOG scores: real frontal faces score ~1 and above; at upsample 1 the astronaut photo's mission
    # patch scores ~0.1. Below this the detection is dropped unless the caller asks otherwise.
    default_min_score = 0.5

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError as e:
            raise AlignmentError("the dlib backend needs dlib: pip install 'scan-gan[dlib]' (dlib-bin)") from e
        model = _dlib_model_path()
        if model is None:
            raise AlignmentError(
                "the dlib backend needs the 68-point model: pip install 'scan-gan[dlib]' (face-recognition-models)"
            )
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self._rectangle = dlib.rectangle

    def find_boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Face boxes ``(x0, y0, x1, y1)`` and scores (the detection half of :meth:`detect`)."""
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), self.upsample, 0.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]

    def landmarks(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The 68 landmarks inside one box (the landmark half of :meth:`detect`)."""
        shape = self._predictor(np.ascontiguousarray(image), self._rectangle(*(int(round(v)) for v in box)))
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face(box, score, self.landmarks(image, box)) for box, score in self.find_boxes(image)]


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
