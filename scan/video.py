"""Video in one import: the pieces :meth:`scan.translator.Translator.video` and ``infer.py`` put
together, each in the module of its job.

    frames = read_video(path)                      # scan.videoio: PyAV decode, (H, W, 3) uint8 frames
    tracker = FaceTracker(backend, faces="all")    # scan.align.tracking: detect every N frames, track
    faces = tracker.update(frame)                  #   between, smooth (scan.align.smoothing), fade
    out = temporal_blend(new, previous, crop, previous_crop, strength=0.7)   # scan.temporal
    write_video(path, frames, fps)                 # scan.videoio: encode (transcode copies the audio)
"""

from scan.align.smoothing import OneEuroFilter
from scan.align.tracking import FaceTracker, TrackedFace
from scan.temporal import TemporalSmoother, temporal_blend
from scan.videoio import (
    VIDEO_EXTENSIONS,
    VIDEO_OUTPUT_EXTENSIONS,
    VideoInfo,
    is_video,
    probe_video,
    read_video,
    transcode,
    write_video,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_OUTPUT_EXTENSIONS",
    "VideoInfo",
    "is_video",
    "probe_video",
    "read_video",
    "write_video",
    "transcode",
    "OneEuroFilter",
    "FaceTracker",
    "TrackedFace",
    "temporal_blend",
    "TemporalSmoother",
]
