"""Video: streaming decode / encode with PyAV, face tracking with temporal smoothing, and the
temporal blend that keeps a translation's colours from flickering.

The pieces :meth:`scan.translator.Translator.video` and ``infer.py`` put together:

    frames = read_video(path)                      # an iterator of (H, W, 3) uint8 frames
    tracker = FaceTracker(backend, faces="all")    # detect every N frames, track between, smooth
    faces = tracker.update(frame)                  # per frame: tracks with steady landmarks, opacity
    out = temporal_blend(new, previous, crop, previous_crop, strength=0.7)
    write_video(path, frames, fps, audio_from=source)

PyAV (``pip install 'scan-gan[video]'``) brings FFmpeg inside its wheel; it is imported only when a
file is read or written, so the rest of scan works without it. Memory is constant whatever the
clip's length: one frame is decoded, translated and encoded at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scan.align.align import detect_faces
from scan.align.crop import quad_to_matrix, template_quad, warp_to_crops
from scan.align.landmarks import FACE_MODES, Face, LandmarkBackend
from scan.errors import InputError, UserError, one_line

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_OUTPUT_EXTENSIONS",
    "VideoInfo",
    "is_video",
    "probe_video",
    "read_video",
    "write_video",
    "OneEuroFilter",
    "FaceTracker",
    "TrackedFace",
    "temporal_blend",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".gif", ".m4v")
# Output: H.264 in MP4 (plays everywhere) or VP9 in WebM (browsers, no patents).
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".webm")
_ENCODERS = {".mp4": "libx264", ".webm": "libvpx-vp9"}


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a video, by its extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError("video needs PyAV: pip install 'scan-gan[video]' (av)") from None
    return av


# ----------------------------------------------------------------------------------------- reading


@dataclass
class VideoInfo:
    """What a clip holds.

    Attributes:
        width, height: frame size in pixels.
        fps: the average frame rate (frames per second).
        frames: the container's frame count, or an estimate from the duration (0 when unknown).
        codec: the video codec's name.
        has_audio: whether the clip has an audio stream.
    """

    width: int
    height: int
    fps: Fraction
    frames: int
    codec: str
    has_audio: bool


def _reason(error: BaseException) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds around it."""
    return str(getattr(error, "strerror", None) or one_line(error))


def _open(path: Path) -> Any:
    av = _av()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable video ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: no video stream")
    return container


def _info(path: Path, container: Any) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not ctx.width or not ctx.height:  # PyAV gives no decoder context for an unknown codec
        name = ctx.name if ctx is not None else "unknown to this FFmpeg"
        raise InputError(f"{path}: cannot decode its video (codec {name})")
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    frames = int(stream.frames or 0)
    if not frames and stream.duration and stream.time_base:
        frames = round(float(stream.duration * stream.time_base * rate))
    if not frames and container.duration:  # WebM keeps only the container's duration, in microseconds
        frames = round(container.duration / 1_000_000 * float(rate))
    return VideoInfo(ctx.width, ctx.height, Fraction(rate), frames, ctx.name, bool(container.streams.audio))


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read a clip's header.

    Raises:
        InputError: not a file, not a video PyAV can open, no video stream, or a codec it cannot decode.
    """
    path = Path(path)
    container = _open(path)
    try:
        return _info(path, container)
    finally:
        container.close()


def read_video(path: str | os.PathLike[str], audio: Callable[[Any], None] | None = None) -> Iterator[np.ndarray]:
    """Decode a clip frame by frame (streaming: one frame in memory at a time).

    Args:
        path: the clip (any container and codec FFmpeg decodes: mp4, mov, webm, avi, mkv, gif, ...).
        audio: called with every packet of the first audio stream, in file order (to copy it).

    Yields:
        RGB ``uint8`` frames, :math:`(H, W, 3)`.

    Raises:
        InputError: the file cannot be opened or decoded, or holds no frame. A truncated MP4 or
            MOV (cut before its index, which is written last) cannot be opened; a truncated stream
            format (MKV, WebM, AVI) yields the frames before the damage, as a player shows them.
    """
    path = Path(path)
    av = _av()
    container = _open(path)
    count = 0
    try:
        _info(path, container)
        video = container.streams.video[0]
        video.thread_type = "AUTO"  # frame-threaded decoding: the decoder keeps pace with the encoder
        streams = [video, *container.streams.audio[:1]]
        for packet in container.demux(streams):
            if packet.stream.type == "audio":
                if audio is not None and packet.dts is not None:
                    audio(packet)
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                if count:  # damage after some frames: keep those, as a player would
                    break
                raise InputError(f"{path}: cannot decode its video ({_reason(e)})") from None
            for frame in frames:
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        if not count:
            raise InputError(f"{path}: cannot decode its video ({_reason(e)})") from None
    finally:
        container.close()
    if not count:
        raise InputError(f"{path}: the video holds no frames")


# ----------------------------------------------------------------------------------------- writing


class _Encoder:
    """An output clip: the video stream is added when the first frame shows its size; audio packets
    that arrive before it wait (a muxer needs every stream before its first packet)."""

    def __init__(self, path: Path, rate: Fraction, crf: int = 20) -> None:
        self.encoder = _ENCODERS.get(path.suffix.lower())
        if self.encoder is None:
            raise InputError(f"{path}: unknown video extension (use {' or '.join(VIDEO_OUTPUT_EXTENSIONS)})")
        self.av = _av()
        self.rate, self.crf, self.count = rate, crf, 0
        self.out = self.av.open(str(path), "w", format="mp4" if self.encoder == "libx264" else "webm")
        self.video: Any = None
        self.audio: Any = None
        self._pending: list[Any] = []

    def add_audio(self, template: Any) -> None:
        self.audio = self.out.add_stream_from_template(template)

    def mux_audio(self, packet: Any) -> None:
        if self.audio is None:
            return
        packet.stream = self.audio
        if self.video is None:
            self._pending.append(packet)
        else:
            self.out.mux(packet)

    def write(self, frame: np.ndarray) -> None:
        if self.video is None:
            height, width = frame.shape[:2]
            self.video = self.out.add_stream(self.encoder, rate=self.rate)
            self.video.width, self.video.height = width, height
            self.video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            # veryfast / realtime: the encoder must not be the slow part of a 10 frames/s pipeline.
            self.video.options = (
                {"crf": str(self.crf), "preset": "veryfast"} if self.encoder == "libx264"
                else {"crf": str(self.crf + 12), "b": "0", "deadline": "realtime", "cpu-used": "8"}
            )
            self.video.codec_context.time_base = Fraction(1) / self.rate
            for packet in self._pending:
                self.out.mux(packet)
            self._pending.clear()
        picture = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        picture.pts, picture.time_base = self.count, Fraction(1) / self.rate
        self.out.mux(self.video.encode(picture))
        self.count += 1

    def close(self, source: Path) -> int:
        """Flush the encoder and close the file; the number of frames written.

        Raises:
            InputError: no frame was written.
        """
        try:
            if self.video is None:
                raise InputError(f"{source}: the video holds no frames")
            self.out.mux(self.video.encode(None))
        finally:
            self.out.close()
        return self.count

    def abort(self) -> None:
        """Close the file after an error (the caller deletes it)."""
        with contextlib.suppress(Exception):
            self.out.close()


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], fps: Fraction | float,
                crf: int = 20) -> int:
    """Encode frames into an MP4 (H.264) or WebM (VP9) file, streaming (no audio; see
    :func:`transcode`).

    The caller writes to a temporary path and renames it (see :func:`scan.outputs.atomic_write`).
    The pixel format is 4:2:0 (what players expect) when both sides are even, else 4:4:4 (H.264
    and VP9 cannot subsample an odd side; most players other than browsers still play it).

    Args:
        path: the output; its extension picks the format (``.mp4`` or ``.webm``).
        frames: RGB ``uint8`` frames :math:`(H, W, 3)`, all of one size.
        fps: frame rate.
        crf: quality (lower is better; 20 is visually lossless for H.264).

    Returns:
        The number of frames written.

    Raises:
        InputError: an unknown extension, or no frames.
    """
    encoder = _Encoder(Path(path), Fraction(fps).limit_denominator(1_001_000), crf)
    try:
        for frame in frames:
            encoder.write(frame)
    except BaseException:
        encoder.abort()
        raise
    return encoder.close(Path(path))


# Audio codecs each output format takes unchanged (packets are copied, never re-encoded).
_AUDIO_FITS = {".mp4": {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}, ".webm": {"opus", "vorbis"}}


def transcode(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    process: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]],
    copy_audio: bool = True,
    on_frame: Callable[[], None] | None = None,
) -> int:
    """Decode ``source``, run its frames through ``process``, encode them into ``target`` at the same
    frame rate, copying the first audio stream's packets as they come (one pass, constant memory).

    Args:
        source: the input clip.
        target: the output (``.mp4`` / ``.webm``; the temporary file of an atomic write).
        process: frames in, as many frames out (lazily: it is pulled one frame at a time).
        copy_audio: copy the audio stream. When the output format cannot hold its codec (AAC in
            WebM, say) the output has no sound and a note on stderr says so.
        on_frame: called after each frame is encoded (a progress bar).

    Returns:
        The number of frames written.

    Raises:
        InputError: the source cannot be read or holds no frames; an unknown output extension.
    """
    source, target = Path(source), Path(target)
    info = probe_video(source)
    encoder = _Encoder(target, info.fps)
    try:
        if copy_audio and info.has_audio:
            with _open(source) as template:
                audio = template.streams.audio[0]
                if audio.codec_context.name in _AUDIO_FITS[target.suffix.lower()]:
                    encoder.add_audio(audio)
                else:
                    print(f"note: {source}: its {audio.codec_context.name} audio cannot go into "
                          f"{target.suffix} unchanged; the output has no sound", file=sys.stderr)
        for frame in process(read_video(source, audio=encoder.mux_audio)):
            encoder.write(frame)
            if on_frame is not None:
                on_frame()
    except BaseException:
        encoder.abort()
        raise
    return encoder.close(source)


# ------------------------------------------------------------------------------------- smoothing


class OneEuroFilter:
    """The one-euro filter (Casiez et al., CHI 2012): a low-pass whose cutoff rises with speed, so a
    still signal is smoothed hard (no jitter) and a moving one followed closely (little lag).

    Here one speed is shared by every coordinate, so a set of landmarks is filtered as one shape (a
    rigid motion moves every point with the same lag). For ``(N, 2)`` points it is the speed of the
    affine motion fitted to all of them (translation, plus the linear part times the points' spread),
    which averages the landmarks' own noise away instead of reading it as motion; for other shapes,
    the mean absolute speed.

    Args:
        min_cutoff: cutoff in Hz at rest (lower: steadier, more lag on slow motion).
        beta: how fast the cutoff rises with speed (units of the signal per second); higher: less
            lag on fast motion, more jitter.
        d_cutoff: cutoff of the speed estimate, in Hz.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x, self._dx = None, 0.0

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter the next sample ``x`` (any shape), ``dt`` seconds after the previous one.

        Returns:
            The filtered sample, shaped like ``x``.
        """
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x = x.copy()
            return x.copy()
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        speed = _shape_speed(x, self._x) / dt
        self._dx += self._alpha(self.d_cutoff, dt) * (speed - self._dx)
        cutoff = self.min_cutoff + self.beta * self._dx
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        return self._x.copy()


def _shape_speed(x: np.ndarray, previous: np.ndarray) -> float:
    """How far a shape moved: for ``(N, 2)`` points with ``N >= 3``, the least-squares affine motion's
    translation plus its linear part's norm times the points' RMS spread; else the mean absolute
    change."""
    if x.ndim != 2 or x.shape[1] != 2 or len(x) < 3:
        return float(np.abs(x - previous).mean())
    centre = previous.mean(0)
    spread = previous - centre
    moved = x - previous
    shift = moved.mean(0)
    linear, *_ = np.linalg.lstsq(spread, moved - shift, rcond=None)
    rms = float(np.sqrt((spread**2).sum(1).mean()))
    return float(np.hypot(*shift) + np.linalg.norm(linear, 2) * rms)


# -------------------------------------------------------------------------------------- tracking

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
        fresh: no usable history this frame (new face, lost and found, a jump): temporal blending
            starts over.
        state: per-face memory of whoever translates (the previous crop and translation).
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
    state: dict[str, Any] = field(default_factory=dict)

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


# ------------------------------------------------------------------------------- temporal colours


def temporal_blend(
    output: Tensor, previous: Tensor | None, crop: Tensor, previous_crop: Tensor | None,
    strength: float = 0.7, tolerance: float = 0.15, reset_fraction: float = 0.5,
) -> tuple[Tensor, bool]:
    """Blend a translated crop with the previous frame's (already blended) one, in aligned crop space.

    A recursive average: where the input crop did not change, the output keeps ``strength`` of the
    previous output, which averages away the frame-to-frame flicker of the translation; where the
    input changed (a blink, a mouth opening, a misalignment) the blend fades out per pixel, so
    moving parts do not leave ghosts. When most of the crop changed (a cut, a fast turn) the
    history is dropped.

    Args:
        output: this frame's translation, :math:`(3, S, S)` in ``[-1, 1]``.
        previous: the previous frame's blended translation, or ``None`` (no history).
        crop: this frame's input crop, :math:`(3, S, S)` in ``[-1, 1]``.
        previous_crop: the previous input crop, or ``None``.
        strength: the weight of the past where nothing moved, in ``[0, 1)`` (0: off).
        tolerance: input change (mean absolute, in ``[-1, 1]`` units) at which a pixel stops blending.
        reset_fraction: the history is dropped when more than this fraction of the pixels changed
            by more than ``tolerance``.

    Returns:
        The blended crop, and whether the history was used (``False`` after a reset).
    """
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    if previous is None or previous_crop is None or strength == 0 or previous.shape != output.shape:
        return output, False
    change = (crop - previous_crop).abs().mean(0, keepdim=True)
    if float((change > tolerance).float().mean()) > reset_fraction:
        return output, False
    # Pooled over a few pixels: sensor noise alone must not switch the blend off.
    side = max(3, (output.shape[-1] // 32) | 1)
    change = F.avg_pool2d(change[None], side, stride=1, padding=side // 2, count_include_pad=False)[0]
    weight = strength * (1 - change / tolerance).clamp(0, 1)
    return weight * previous + (1 - weight) * output, True
