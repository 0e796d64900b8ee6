"""Video: decoding and encoding with PyAV, Translator.video (tracking, smoothing, fades, identities,
pass-through), the one-euro filter and the temporal blend, and infer.py on clips and their bad inputs.

The clips are made here: a few 128 px frames of the astronaut's face moving, with a sine as audio."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import scan
from scan.infer_cli import main as infer_main
from scan.translator import Translator
from scan.video import FaceTracker, OneEuroFilter, probe_video, read_video, temporal_blend, write_video

av = pytest.importorskip("av")

SIDE = 128


def face_frame(shift: int, side: int = SIDE) -> np.ndarray:
    """The astronaut's face, ``shift`` px further right and down each frame, as a ``side`` px frame."""
    crop = data.astronaut()[30 + shift:286 + shift, 120 + 2 * shift:376 + 2 * shift]
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BILINEAR))


def make_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = True) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=16000) if audio else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if sound is not None:
            t = np.arange(16000 * len(frames) // fps) / 16000
            samples = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)[None],
                                                 format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 16000, 0
            out.mux(sound.encode(samples))
            out.mux(sound.encode(None))
        out.mux(video.encode(None))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), folder / "tiny.pt")
    make_clip(folder / "clip.mp4", [face_frame(i) for i in range(8)])
    brick = np.asarray(Image.fromarray(data.brick()).convert("RGB").resize((SIDE, SIDE)))
    make_clip(folder / "brick.mp4", [np.roll(brick, i, axis=1) for i in range(4)], audio=False)
    return folder


@pytest.fixture(scope="module")
def translator(files):
    return Translator.from_checkpoint(files / "tiny.pt", device="cpu")


def frames_of(path: Path) -> list[np.ndarray]:
    return list(read_video(path))


# ------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_infer_on_a_clip_keeps_frames_size_rate_and_sound(files, tmp_path):
    out, sheets = tmp_path / "clip_anime.mp4", tmp_path / "sheets"
    status = infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(files / "clip.mp4"), "--output",
                         str(out), "--landmarks", "dlib", "--save-stages", str(sheets)])
    assert status == 0
    source, result = probe_video(files / "clip.mp4"), probe_video(out)
    assert (result.width, result.height, result.fps, result.has_audio) == (SIDE, SIDE, 25, True)
    before, after = frames_of(files / "clip.mp4"), frames_of(out)
    assert len(after) == len(before) == source.frames == 8
    with av.open(str(out)) as container:  # the sound is the source's, packet for packet
        copied = sum(p.size for p in container.demux(container.streams.audio[0]) if p.size)
    with av.open(str(files / "clip.mp4")) as container:
        original = sum(p.size for p in container.demux(container.streams.audio[0]) if p.size)
    assert copied == original > 0
    changed = [np.abs(a.astype(int) - b).mean(-1) > 12 for a, b in zip(after, before)]
    assert all(c[40:90, 40:90].mean() > 0.5 for c in changed)  # the face is translated in every frame
    sheet = Image.open(sheets / "clip_stages.png")
    assert sheet.height > 3 * sheet.width / 4 / 2  # several frames, one row each
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


@pytest.mark.slow
def test_webm_output_and_a_folder_of_images_and_videos(files, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    make_clip(folder / "clip.mp4", [face_frame(i) for i in range(3)], audio=False)
    Image.fromarray(data.astronaut()).resize((256, 256)).save(folder / "still.png")
    out = tmp_path / "out"
    assert infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(folder), "--output", str(out),
                       "--landmarks", "dlib"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "still.png"]
    assert len(frames_of(out / "clip.mp4")) == 3 and Image.open(out / "still.png").size == (256, 256)
    webm = tmp_path / "clip.webm"
    assert infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(folder / "clip.mp4"), "--output",
                       str(webm), "--landmarks", "dlib"]) == 0
    info = probe_video(webm)
    assert (info.codec, info.width, info.fps) == ("vp9", SIDE, 25) and len(frames_of(webm)) == 3


# -------------------------------------------------------------------------------- Translator.video


@pytest.mark.slow
def test_video_tracks_one_identity_passes_faceless_frames_through_and_fades(translator):
    blank = np.full((SIDE, SIDE, 3), 128, np.uint8)
    clip = [face_frame(i) for i in range(5)] + [blank, blank] + [face_frame(i) for i in range(5, 12)]
    results = list(translator.video(iter(clip), landmarks="dlib", detect_every=4, fade_frames=3))
    assert len(results) == len(clip)
    assert all(len(r.faces) == 1 and r.faces[0].track == 0 for r in results[:5])  # one face, one identity
    assert results[0].image.size == (SIDE, SIDE)
    # The face leaves: it fades out over the blank frames (no face found there, yet it is still pasted,
    # weaker), then the blank frames come through untouched once it is gone.
    tracker_frames = [r for r in results[5:7]]
    assert all(len(r.faces) <= 1 for r in tracker_frames)
    returned = results[7:]
    assert all(len(r.faces) == 1 for r in returned) and returned[0].faces[0].track == 1  # a new face: a new id
    # It fades in: the first frame of the new face changes the picture less than a later one.
    change = [np.abs(np.asarray(r.image, int) - f).mean() for r, f in zip(returned, clip[7:])]
    assert change[0] < 0.6 * change[3]
    passthrough = list(translator.video([blank, blank], landmarks="dlib"))
    assert all(r.faces == [] and np.array_equal(np.asarray(r.image), blank) for r in passthrough)


def test_tracker_keeps_each_face_identity_and_detects_only_every_n_frames():
    from scan.align import DlibBackend

    def two_faces(i: int, right: bool) -> np.ndarray:
        frame = np.full((SIDE, 2 * SIDE + 32, 3), 90, np.uint8)
        frame[:, :SIDE] = face_frame(i)
        if right:
            frame[:, SIDE + 32:] = face_frame(10 - i)[:, ::-1]
        return frame

    tracker = FaceTracker(DlibBackend(), faces="all", detect_every=5, fade_frames=4)
    seen = []
    for i in range(10):
        tracks = tracker.update(two_faces(i, right=i >= 3))
        seen.append({round(float(t.landmarks[:, 0].mean()) > SIDE): (t.id, t.weight) for t in tracks})
    assert tracker.detections <= 4  # frames 0, 3 (a new face is not seen until a detection), 5..., not 10
    assert all(s[0][0] == 0 for s in seen)  # the left face keeps id 0 throughout
    right = [s[1] for s in seen if 1 in s]
    assert len({r[0] for r in right}) == 1 and right[0][0] != 0  # the right face: one other id
    weights = [r[1] for r in right]
    assert weights[0] < 0.5 and weights[-1] == 1.0 and weights == sorted(weights)  # it fades in


# ------------------------------------------------------------------------------------- smoothing


def test_one_euro_filter_removes_jitter_at_rest_and_follows_motion():
    rng = np.random.default_rng(0)
    fps, n = 25.0, 200
    shape = rng.uniform(0, 100, (68, 2))  # 68 points spread over 100 units, each with noise of 1
    still = shape + rng.normal(0, 1.0, (n, 68, 2))
    smooth = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    out = np.stack([smooth(x, 1 / fps) for x in still])
    assert out[50:].std(0).mean() < 0.5 * still[50:].std(0).mean()  # jitter at rest cut by more than half
    # A steady motion of 100 units/s: the filter's cutoff rises with speed, so it lags less than a
    # fixed low-pass at its resting cutoff (beta = 0) would.
    ramp = shape + 100.0 * np.arange(n)[:, None, None] / fps + rng.normal(0, 1.0, (n, 68, 2))
    lag = {}
    for beta in (0.0, 0.05):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        followed = np.stack([f(x, 1 / fps) for x in ramp])
        lag[beta] = float((shape + 100.0 * np.arange(n)[:, None, None] / fps - followed)[100:].mean())
    assert 0 < lag[0.05] < 0.3 * lag[0.0]
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)


def test_tracker_landmarks_are_steady_on_a_still_noisy_face():
    from scan.align import DlibBackend, detect_faces

    rng = np.random.default_rng(0)
    still = face_frame(0, side=192).astype(float)
    frames = [np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8) for _ in range(20)]
    backend = DlibBackend()
    tracker = FaceTracker(backend, detect_every=5)
    smoothed = np.stack([tracker.update(f)[0].landmarks for f in frames])[5:]
    raw = np.stack([detect_faces(f, backend)[0].landmarks for f in frames])[5:]
    assert smoothed.std(0).mean() < 0.6 * raw.std(0).mean()


def test_temporal_blend_keeps_still_parts_and_resets_on_change():
    torch.manual_seed(0)
    crop = torch.rand(3, 64, 64) * 2 - 1
    previous, output = torch.zeros(3, 64, 64), torch.ones(3, 64, 64)
    blended, used = temporal_blend(output, previous, crop, crop, strength=0.6)
    assert used and torch.allclose(blended, torch.full_like(blended, 0.4))  # nothing moved: 60% history
    moved = crop.clone()
    moved[:, :16] = -crop[:, :16]  # the top quarter changed a lot
    blended, used = temporal_blend(output, previous, moved, crop, strength=0.6)
    assert used and blended[:, :12].min() == 1.0 and torch.allclose(blended[:, 24:], torch.tensor(0.4))
    blended, used = temporal_blend(output, previous, -crop, crop, strength=0.6)  # a cut
    assert not used and torch.equal(blended, output)
    assert temporal_blend(output, None, crop, None)[1] is False
    with pytest.raises(ValueError, match="strength"):
        temporal_blend(output, previous, crop, crop, strength=1.0)


def test_write_and_read_round_trip_odd_sizes(tmp_path):
    frames = [np.full((33, 47, 3), 40 * i, np.uint8) for i in range(4)]
    assert write_video(tmp_path / "odd.mp4", frames, 12.5) == 4
    info = probe_video(tmp_path / "odd.mp4")
    back = frames_of(tmp_path / "odd.mp4")
    assert (info.width, info.height, float(info.fps), len(back)) == (47, 33, 12.5, 4)
    assert all(abs(int(b.mean()) - int(f.mean())) <= 3 for b, f in zip(back, frames))


# ------------------------------------------------------------------------------------- bad inputs


def run_cli(files: Path, source: Path, target: Path, *extra: str) -> int:
    return infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(source), "--output", str(target),
                       "--landmarks", "dlib", *extra])


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


@pytest.mark.parametrize("kind", ["junk", "truncated", "no frames", "unknown codec"])
def test_unreadable_truncated_and_empty_clips_are_refused(files, tmp_path, capsys, kind):
    bad = tmp_path / "bad.mp4"
    if kind == "junk":
        bad.write_bytes(os.urandom(4000))
    elif kind == "truncated":  # an MP4's index is at its end: a cut file cannot be read
        whole = (files / "clip.mp4").read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    elif kind == "no frames":
        with av.open(str(bad), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width = stream.height = 64
            out.start_encoding()
    else:  # an AVI whose video is tagged with a codec no FFmpeg knows
        bad = tmp_path / "bad.avi"
        with av.open(str(bad), "w") as out:
            stream = out.add_stream("mpeg4", rate=25)
            stream.width = stream.height = 64
            for i in range(3):
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), "rgb24")))
            out.mux(stream.encode(None))
        bad.write_bytes(bad.read_bytes().replace(b"FMP4", b"QQQQ"))
    target = tmp_path / "out.mp4"
    assert run_cli(files, bad, target) == 2
    line = one_error_line(capsys)
    assert bad.name in line and ("codec unknown" in line) == (kind == "unknown codec")
    assert not target.exists() and not list(tmp_path.glob(".out*"))


def test_a_clip_without_faces_is_refused_unless_allowed(files, tmp_path, capsys):
    target = tmp_path / "out.mp4"
    assert run_cli(files, files / "brick.mp4", target) == 2
    assert "no face found in any of its 4 frames" in one_error_line(capsys)
    assert not target.exists() and not list(tmp_path.iterdir())  # nothing written, no temporary file
    assert run_cli(files, files / "brick.mp4", target, "--allow-no-face") == 0
    before, after = frames_of(files / "brick.mp4"), frames_of(target)
    assert len(after) == 4 and all(np.abs(a.astype(int) - b).mean() < 3 for a, b in zip(after, before))


def test_existing_output_and_output_equal_to_input_are_refused(files, tmp_path, capsys):
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    assert run_cli(files, files / "clip.mp4", existing) == 2
    assert "--overwrite" in one_error_line(capsys) and existing.read_bytes() == b"keep me"
    copy = tmp_path / "clip.mp4"
    copy.write_bytes((files / "clip.mp4").read_bytes())
    assert run_cli(files, copy, copy, "--overwrite") == 2
    assert "is the input" in one_error_line(capsys) and copy.read_bytes() == (files / "clip.mp4").read_bytes()
    assert run_cli(files, copy, tmp_path / "out.gif") == 2
    assert ".mp4 or .webm" in one_error_line(capsys)
    assert run_cli(files, copy, tmp_path / "out.mp4", "--align", "none") == 2
    assert "--align none" in one_error_line(capsys) and not (tmp_path / "out.mp4").exists()


def _mpegts(path: Path, side: int, frames: int = 4) -> bytes:
    import av

    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        picture = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def test_a_clip_whose_frame_size_changes_is_refused_not_squashed(tmp_path, capsys):
    """MPEG-TS pieces joined byte for byte change size mid-stream (as broadcast recordings do)."""
    clip = tmp_path / "joined.mkv"  # the container is found by its content
    clip.write_bytes(_mpegts(tmp_path / "a.ts", 128) + _mpegts(tmp_path / "b.ts", 96))
    assert {f.shape for f in read_video(clip)} == {(128, 128, 3), (96, 96, 3)}
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    out = tmp_path / "out.mp4"
    assert infer_main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(clip), "--output", str(out),
                       "--landmarks", "dlib", "--allow-no-face"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("is 96x96 px, but the clip started at 128x128: a clip's frames must keep one size"), error
    assert not out.exists() and not list(tmp_path.glob(".out.mp4*"))
    # The library alike: no stale face pasted into a frame of another size.
    translator = Translator.from_checkpoint(tmp_path / "tiny.pt", device="cpu")
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((48, 64, 3), np.uint8)]
    with pytest.raises(scan.errors.InputError, match="frame 1 is 64x48 px, but the clip started at 64x64"):
        list(translator.video(iter(frames), landmarks="dlib"))
