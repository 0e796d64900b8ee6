"""Following faces through a video: detect every few frames, track the landmarks in between, keep
each face's identity, smooth its landmarks (one-euro filter) and fade faces in and out.

The video path of a portrait uses this step in place of detection: :meth:`FaceTracker.update`
takes a frame and returns the faces to paste on it, with steady landmarks and an opacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scan.align.crop import quad_to_matrix, template_quad, warp_to_crops
from scan.align.landmarks import FACE_MODES, Face, LandmarkBackend, detect_faces
from scan.align.smoothing import OneEuroFilter

__all__ = ["FaceTracker", "TrackedFace"]

_THUMB = 32  # side of the grey crop that checks a track still sees its face


def _thumbnail(pixels: Tensor, landmarks: np.ndarray) -> np.ndarray:
    """A small grey FFHQ-aligned crop around ``landmarks``, zero mean, unit norm (for correlation)."""
    matrix = quad_to_matrix(template_quad(landmarks, "ffhq", 0.7), _THUMB)
    crop = warp_to_crops(pixels, matrix[None], _THUMB)[0].mean(0).numpy().astype(np.float64)
    crop -= crop.mean()
    return crop / max(float(np.linalg.norm(crop)), 1e-6)


def _box_of(landmarks: np.ndarray) -> np.ndarray:
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    return np.array([x0, y0, x1, y1], np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class TrackedFace:
    """One face followed across frames.

    Attributes:
        id: its identity: the same face keeps its number for as long as it is tracked.
        landmarks: ``(68, 2)`` smoothed landmarks in this frame's pixels.
        raw: ``(68, 2)`` the landmarks measured on this frame (or the last ones, while fading out).
        weight: paste-back opacity in ``[0, 1]``: it ramps up as a face appears and down as it leaves.
        leaving: the face was lost; it is fading out at its last place.
        fresh: no usable history on this frame (a new face, or the same place with another look: a
            cut): whoever keeps memory per face (the temporal blend) starts over. The tracker
            sets it for the one frame it happens on.
    """

    id: int
    landmarks: np.ndarray
    raw: np.ndarray
    weight: float
    box_shape: np.ndarray  # the detector's box relative to the landmarks' box (centre offset, scale)
    reference: np.ndarray  # thumbnail at the last detection
    smoother: OneEuroFilter
    scale: float  # the face's size at detection, pixels: the filter runs in units of it
    leaving: bool = False
    fresh: bool = True
    misses: int = 0

    @property
    def face(self) -> Face:
        box = _box_of(self.landmarks)
        return Face((box[0], box[1], box[2], box[3]), 1.0, self.landmarks)


class FaceTracker:
    """Detect faces every ``detect_every`` frames, track their landmarks in between, smooth them.

    Between detections each face's landmarks are measured inside a box that follows the previous
    frame's landmarks (dlib's shape predictor or FAN, a millisecond or so instead of a full
    detection). A track whose aligned face no longer correlates with the face seen at its last
    detection (occlusion, a cut, drift) forces a detection at once. Detections are matched to tracks
    by box overlap, so each face keeps its ``id``. Landmarks are smoothed by a one-euro filter that
    works in units of the face's size (so it behaves the same on any resolution).

    Args:
        backend: the landmark backend. Without a ``landmarks(image, box)`` method every frame is a
            detection.
        faces: ``largest`` (one face, kept while it is tracked) or ``all``.
        detect_every: frames between detections.
        fps: the clip's frame rate (the filter's time step).
        min_score: detection threshold (default: the backend's).
        min_confidence: a track whose thumbnail correlation falls below this triggers a detection.
        fade_frames: frames over which a face fades in or out (0: it pops).
        min_cutoff, beta, d_cutoff: the one-euro filter's settings (see :class:`OneEuroFilter`;
            ``beta`` per face size per second). With the defaults a still face's landmarks jitter
            by 0.16 px (0.39 px detected anew each frame; ``benchmarks/video_flicker.py``), and a face
            crossing its own width in a second is followed with a lag of about a frame.
    """

    def __init__(
        self,
        backend: LandmarkBackend,
        faces: str = "largest",
        detect_every: int = 10,
        fps: float = 25.0,
        min_score: float | None = None,
        min_confidence: float = 0.6,
        fade_frames: int = 6,
        min_cutoff: float = 1.0,
        beta: float = 4.0,
        d_cutoff: float = 3.0,
    ) -> None:
        if faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {FACE_MODES}, got {faces!r}")
        if detect_every < 1 or fade_frames < 0 or fps <= 0:
            raise ValueError(f"need detect_every >= 1, fade_frames >= 0, fps > 0; got {detect_every}, "
                             f"{fade_frames}, {fps}")
        self.backend, self.faces, self.detect_every = backend, faces, detect_every
        self.dt, self.min_score, self.min_confidence = 1.0 / fps, min_score, min_confidence
        self.fade_frames, self.min_cutoff, self.beta, self.d_cutoff = fade_frames, min_cutoff, beta, d_cutoff
        self.tracks: list[TrackedFace] = []
        self.index = -1
        self.detections = 0
        self._last_detection = -(10**9)
        self._next_id = 0
        self._can_track = callable(getattr(backend, "landmarks", None))

    def update(self, frame: np.ndarray) -> list[TrackedFace]:
        """Follow the faces into the next frame.

        Args:
            frame: RGB ``uint8`` :math:`(H, W, 3)`.

        Returns:
            The faces to paste on this frame (fading ones included), largest first.
        """
        self.index += 1
        for track in self.tracks:  # what was new on the previous frame has a history now
            track.fresh = False
        pixels = torch.from_numpy(frame).permute(2, 0, 1)  # a view: the tracker copies nothing
        live = [t for t in self.tracks if not t.leaving]
        detect = (not self._can_track or not live or self.index - self._last_detection >= self.detect_every)
        measured: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if not detect:
            for track in live:
                raw = self._track(frame, track)
                thumb = _thumbnail(pixels, raw)
                if float((thumb * track.reference).sum()) < self.min_confidence or not self._inside(raw, frame):
                    detect = True  # lost or drifting: look again now
                    break
                measured[track.id] = raw, thumb
        if detect:
            measured = self._detect(frame, pixels, live)
        for track in self.tracks:
            if track.id in measured and not track.leaving:
                raw, _ = measured[track.id]
                track.raw = raw
                track.landmarks = track.smoother(raw / track.scale, self.dt) * track.scale
                step = 1.0 / self.fade_frames if self.fade_frames else 1.0
                track.weight = min(1.0, track.weight + step)
            else:
                track.leaving = True
                track.weight -= 1.0 / self.fade_frames if self.fade_frames else 1.0
        self.tracks = [t for t in self.tracks if t.weight > 1e-6]
        return sorted(self.tracks, key=lambda t: -_side(t.landmarks))

    def _inside(self, landmarks: np.ndarray, frame: np.ndarray) -> bool:
        """Most of the face is in the frame (a face leaving at the edge is lost, not tracked off it)."""
        height, width = frame.shape[:2]
        x, y = landmarks[:, 0], landmarks[:, 1]
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        return bool(inside.mean() > 0.8)

    def _track(self, frame: np.ndarray, track: TrackedFace) -> np.ndarray:
        box = _box_of(track.raw)
        centre, side = (box[:2] + box[2:]) / 2, np.maximum(box[2:] - box[:2], 1.0)
        c = centre + track.box_shape[:2] * side
        half = track.box_shape[2:] * side / 2
        guess = (c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1])
        return np.asarray(self.backend.landmarks(frame, guess), np.float64)  # type: ignore[attr-defined]

    def _detect(self, frame: np.ndarray, pixels: Tensor,
                live: list[TrackedFace]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Detect, match detections to tracks by overlap, start new tracks; the landmarks measured per
        track id (tracks left unmatched are missing from the result and start to fade out)."""
        self._last_detection = self.index
        self.detections += 1
        found = detect_faces(frame, self.backend, "all", self.min_score)
        pairs = sorted(((_iou(_box_of(f.landmarks), _box_of(t.raw)), i, t) for i, f in enumerate(found)
                        for t in live), key=lambda p: -p[0])
        taken_f: set[int] = set()
        taken_t: set[int] = set()
        measured: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for overlap, i, track in pairs:
            if overlap < 0.3 or i in taken_f or track.id in taken_t:
                continue
            taken_f.add(i)
            taken_t.add(track.id)
            thumb = _thumbnail(pixels, found[i].landmarks)
            jump = float((thumb * track.reference).sum()) < self.min_confidence
            track.reference, track.box_shape, track.misses = thumb, _box_shape(found[i]), 0
            if jump:  # the same place but another look (a cut): no history to blend with
                track.fresh = True
                track.smoother.reset()
            measured[track.id] = found[i].landmarks, thumb
        for track in live:
            if track.id in taken_t:
                continue
            # Missed once: keep following it by its landmarks when they still see the face (a detector
            # can miss a blurred frame); missed twice, or lost, it fades out.
            track.misses += 1
            if track.misses < 2 and self._can_track:
                raw = self._track(frame, track)
                thumb = _thumbnail(pixels, raw)
                if float((thumb * track.reference).sum()) >= self.min_confidence and self._inside(raw, frame):
                    measured[track.id] = raw, thumb
        new = [f for i, f in enumerate(found) if i not in taken_f]
        if self.faces == "largest":
            new = new[:1] if not [t for t in live if t.id in measured] else []
        for f in new:
            track = TrackedFace(
                id=self._next_id, landmarks=f.landmarks, raw=f.landmarks,
                weight=1.0 if self.index == 0 or not self.fade_frames else 0.0,
                box_shape=_box_shape(f), reference=_thumbnail(pixels, f.landmarks),
                smoother=OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff), scale=max(f.size, 1.0),
            )
            self._next_id += 1
            self.tracks.append(track)
            measured[track.id] = f.landmarks, track.reference
        return measured


def _side(landmarks: np.ndarray) -> float:
    box = _box_of(landmarks)
    return float(np.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)))


def _box_shape(face: Face) -> np.ndarray:
    """The detector's box relative to the landmarks' box: centre offset and size, in units of the
    landmarks' box (the shape predictor wants boxes like the detector's)."""
    lm = _box_of(face.landmarks)
    side = np.maximum(lm[2:] - lm[:2], 1.0)
    box = np.asarray(face.box, np.float64)
    return np.concatenate([((box[:2] + box[2:]) - (lm[:2] + lm[2:])) / 2 / side, (box[2:] - box[:2]) / side])
