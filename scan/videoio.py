"""Video files in and out: streaming decode / encode with PyAV, and the audio copied as it is.

    info = probe_video(path)                       # size, frame rate, frame count, codec, audio
    frames = read_video(path)                      # an iterator of (H, W, 3) uint8 frames
    write_video(path, frames, fps)                 # MP4 (H.264) or WebM (VP9)
    transcode(source, target, process)             # decode -> process -> encode, audio copied

PyAV (``pip install 'scan-gan[video]'``) brings FFmpeg inside its wheel; it is imported only when a
file is read or written, so the rest of scan works without it. Memory is constant whatever the
clip's length: one frame is decoded, processed and encoded at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from scan.errors import InputError, UserError, one_line

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_OUTPUT_EXTENSIONS",
    "VideoInfo",
    "is_video",
    "probe_video",
    "read_video",
    "write_video",
    "transcode",
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
