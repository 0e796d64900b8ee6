"""The portrait pipeline step by step (scan.portrait): its options, decode, detect, align, translate,
blend (the registered blend kinds), paste; the batched stream (scan.batching); the video's tracker and
temporal memory; and the blend registry through infer.py, the web page and the library."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import scan
from scan import portrait
from scan.align import (
    Blend,
    DlibBackend,
    Face,
    NoFaceError,
    UnknownBlendError,
    blend_kinds,
    cut_faces,
    detect_faces,
    get_blend,
    landmark_hull_mask,
    register_blend,
    rounded_square_mask,
)
from scan.align import paste as paste_module
from scan.align.tracking import FaceTracker
from scan.batching import translate_in_batches
from scan.errors import UserError
from scan.portrait import FaceResult, PortraitOptionError, PortraitOptions, PreparedPhoto, with_settings
from scan.temporal import TemporalSmoother, temporal_blend
from scan.translator import Translator


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut) -> Face:
    return detect_faces(astronaut, "dlib")[0]


class FixedBackend:
    """A landmark backend that 'finds' the same faces in any image (no detector needed)."""

    name = "fixed"
    default_min_score = 0.5

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        self.calls += 1
        return list(self.faces)


@pytest.fixture(scope="module")
def translator() -> Translator:
    torch.manual_seed(0)
    return Translator(scan.create_model("tiny"), device="cpu")


@pytest.fixture
def blend_kind():
    """A blend kind registered for one test (and removed after it): the crop replaced by flat grey,
    through a square covering the crop's middle."""
    name = "test-flat-grey"

    def flat_grey(photo, translated, face):
        size = translated.shape[-1]
        mask = torch.zeros(1, size, size)
        mask[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
        return Blend(torch.zeros_like(translated), mask)

    register_blend(name)(flat_grey)
    yield name
    del paste_module._BLENDS[name]


# ------------------------------------------------------------------------------------- options


def test_options_are_checked_once_when_made():
    options = PortraitOptions()
    assert (options.align, options.paste, options.faces, options.landmarks, options.mask) == (
        "ffhq", True, "largest", "auto", "square")
    for field, value in [("align", "bogus"), ("faces", "many"), ("landmarks", "magic"), ("paste", "yes"),
                         ("min_score", float("nan"))]:
        with pytest.raises(PortraitOptionError, match=field) as caught:
            PortraitOptions(**{field: value})
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, UserError)
    with pytest.raises(UnknownBlendError, match="registered: square, hull"):
        PortraitOptions(mask="circle")
    with pytest.raises(AttributeError):
        options.mask = "hull"  # frozen: what was checked stays checked


def test_settings_by_name_replace_fields_of_the_options():
    assert with_settings(None, {}) == PortraitOptions()
    base = PortraitOptions(faces="all")
    assert with_settings(base, {"mask": "hull"}) == PortraitOptions(faces="all", mask="hull")
    assert with_settings(base, {}) is base
    with pytest.raises(TypeError, match="unknown portrait option.*colour"):
        with_settings(None, {"colour": "red"})
    with pytest.raises(TypeError, match="must be a PortraitOptions"):
        with_settings("ffhq", {})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ the steps


def test_decode_takes_images_and_loaders_and_converts_like_the_file_loader():
    rgba = Image.new("RGBA", (8, 6), (10, 20, 30, 0))
    decoded = portrait.decode(lambda: rgba)
    assert decoded.mode == "RGB" and decoded.size == (8, 6) and decoded.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(TypeError, match="expected a PIL image, got Tensor"):
        portrait.decode(torch.zeros(3, 8, 8))  # type: ignore[arg-type]
    frame = np.zeros((6, 8, 3), np.uint8)[:, ::-1]  # not contiguous: copied
    out = portrait.decode_frame(frame)
    assert out.flags.c_contiguous and out.shape == (6, 8, 3)
    assert portrait.decode_frame(Image.new("L", (8, 6))).shape == (6, 8, 3)
    with pytest.raises(TypeError, match="RGB uint8 frames"):
        portrait.decode_frame(np.zeros((6, 8), np.uint8))


def test_detect_keeps_the_options_faces_or_takes_the_users_landmarks(astronaut, face):
    pixels = torch.from_numpy(astronaut).permute(2, 0, 1)
    small = Face((0.0, 0.0, 40.0, 40.0), 2.0, face.landmarks * 0.4)
    weak = Face(face.box, 0.1, face.landmarks)
    backend = FixedBackend([small, face, weak])
    assert portrait.detect(pixels, PortraitOptions(), backend) == [face]  # the largest above the threshold
    assert len(portrait.detect(pixels, PortraitOptions(faces="all"), backend)) == 2
    assert len(portrait.detect(pixels, PortraitOptions(faces="all", min_score=0.0), backend)) == 3
    given = portrait.detect(pixels, PortraitOptions(), None, user_landmarks=[face.landmarks, small.landmarks])
    assert len(given) == 2 and np.array_equal(given[0].landmarks, face.landmarks)
    with pytest.raises(ValueError, match="landmark backend"):
        portrait.detect(pixels, PortraitOptions(), None)


def test_align_cuts_each_face_on_the_options_template(astronaut, face):
    pixels = torch.from_numpy(astronaut).permute(2, 0, 1).contiguous()
    ffhq = portrait.align(pixels, [face, face], PortraitOptions(), 64)
    wide = portrait.align(pixels, [face], PortraitOptions(align="portrait"), 64)
    assert len(ffhq) == 2 and ffhq[0].crop.shape == (3, 64, 64) and ffhq[0].crop.dtype == torch.float32
    eyes = ffhq[0].landmarks_in_crop[36:48].mean(0)
    assert 24 < eyes[0] < 40 and 18 < eyes[1] < 34  # FFHQ puts the eyes in the upper middle
    assert wide[0].landmarks_in_crop[36:48].mean(0)[1] < eyes[1]  # the wider crop: the face smaller, higher
    assert portrait.align(pixels, [], PortraitOptions(), 64) == []
    assert torch.equal(cut_faces(pixels, [face], 64)[0].crop, ffhq[0].crop)


def test_translate_gives_every_face_its_stages_and_alpha_maps(translator, astronaut, face):
    pixels = torch.from_numpy(astronaut).permute(2, 0, 1).contiguous()
    aligned = cut_faces(pixels, [face, face], translator.size)
    faces = translator.translate_faces(torch.stack([a.crop for a in aligned]), aligned)
    out = translator.translate(torch.stack([a.crop for a in aligned]))
    assert len(faces) == 2 and faces[1].aligned is aligned[1]
    assert torch.equal(faces[1].output, out.final[1]) and len(faces[1].stages) == 2
    assert faces[1].alphas[0] is None and faces[1].alphas[1].shape[-2:] == (64, 64)


def _faces(astronaut, face, size=64, count=1) -> tuple[torch.Tensor, list[FaceResult]]:
    pixels = torch.from_numpy(astronaut).permute(2, 0, 1).contiguous()
    aligned = cut_faces(pixels, [face] * count, size)
    return pixels, [FaceResult(a.crop, torch.ones(3, size, size), aligned=a) for a in aligned]


def test_blend_asks_the_options_kind_for_each_faces_crop_and_mask(astronaut, face):
    pixels, faces = _faces(astronaut, face)
    square = portrait.blend(pixels, faces, PortraitOptions())
    assert torch.equal(square[0].mask, rounded_square_mask(64)) and square[0].crop is faces[0].output
    hull = portrait.blend(pixels, faces, PortraitOptions(mask="hull"))
    assert torch.equal(hull[0].mask, landmark_hull_mask(faces[0].aligned.landmarks_in_crop, 64))


def test_paste_warps_each_blend_back_through_its_mask_times_its_opacity(astronaut, face):
    pixels, faces = _faces(astronaut, face, count=2)
    blends = [Blend(torch.ones(3, 64, 64), rounded_square_mask(64))] * 2
    pasted = np.asarray(portrait.paste(pixels, blends, faces))
    assert pasted.shape == astronaut.shape
    changed = np.any(pasted != astronaut, axis=2)
    assert pasted[changed].min() > astronaut[changed].min() and not changed[300:].any()
    assert np.array_equal(np.asarray(portrait.paste(pixels, blends, faces, opacity=[0.0, 0.0])), astronaut)
    half = np.asarray(portrait.paste(pixels, blends, faces, opacity=[0.5, 0.0])).astype(int)
    assert 0 < np.abs(half - astronaut).sum() < np.abs(pasted.astype(int) - astronaut).sum()
    with pytest.raises(ValueError, match="aligned input"):
        portrait.paste(pixels, blends[:1], [FaceResult(faces[0].crop, faces[0].output)])


def test_prepare_and_finish_run_the_steps_before_and_after_the_network(translator, astronaut, face):
    photo = Image.fromarray(astronaut)
    prepared = portrait.prepare(photo, PortraitOptions(), translator.size, FixedBackend([face]))
    assert prepared.crops.shape == (1, 3, 64, 64) and prepared.pixels.dtype == torch.uint8
    faces = translator.translate_faces(prepared.crops, prepared.aligned_faces())
    assert portrait.finish(prepared, faces, PortraitOptions()).image.size == photo.size
    assert portrait.finish(prepared, faces, PortraitOptions(paste=False)).image.size == (64, 64)
    crop = portrait.prepare(photo.crop((0, 0, 100, 80)), PortraitOptions(align="none"), 64, None)
    assert crop.pixels is None and crop.aligned_faces() == [None] and crop.size == (100, 80)
    assert portrait.finish(crop, translator.translate_faces(crop.crops, [None]), PortraitOptions()).image.size == (
        100, 80)
    with pytest.raises(NoFaceError):
        portrait.prepare(photo, PortraitOptions(), 64, FixedBackend([]))


# -------------------------------------------------------------------------------- blend registry


def test_register_blend_adds_a_kind_that_every_entry_point_accepts(translator, astronaut, face, blend_kind):
    assert blend_kinds()[:2] == ["square", "hull"] and blend_kind in blend_kinds()
    with pytest.raises(ValueError, match="already registered"):
        register_blend(blend_kind)(lambda photo, translated, face: None)
    photo = Image.fromarray(astronaut)
    result = np.asarray(translator.portrait(photo, mask=blend_kind, user_landmarks=face.landmarks).image)
    centre = face.landmarks[27:36].mean(0).astype(int)  # the nose: inside the middle of the crop
    assert np.abs(result[centre[1] - 3:centre[1] + 3, centre[0] - 3:centre[0] + 3].astype(int) - 128).max() <= 1
    assert np.array_equal(result[400:], astronaut[400:])  # far from the face: the photo, bit for bit


def test_an_unknown_blend_kind_is_one_error_that_lists_the_registered_ones():
    with pytest.raises(UnknownBlendError) as caught:
        get_blend("circle")
    assert str(caught.value).count("\n") == 0 and "registered: square, hull" in str(caught.value)


def test_infer_and_web_offer_the_registered_kinds(tmp_path, capsys, blend_kind):
    from scan import infer_cli, web

    mask = next(a for a in infer_cli.build_parser()._actions if a.dest == "mask")
    assert list(mask.choices) == blend_kinds()
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    args = ["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(tmp_path / "astronaut.png"), "--landmarks",
            "dlib"]
    assert infer_cli.main([*args, "--output", str(tmp_path / "out.png"), "--mask", blend_kind]) == 0
    with pytest.raises(SystemExit) as exit_:
        infer_cli.main([*args, "--output", str(tmp_path / "bad.png"), "--mask", "circle"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'circle'" in error and "square" in error and blend_kind in error
    models = web.Models([tmp_path / "tiny.pt"], device="cpu", landmarks="dlib")
    shown = web.translate_photo(models, tmp_path / "astronaut.png", str(tmp_path / "tiny.pt"), mask=blend_kind)
    assert shown.image.size == (512, 512)
    with pytest.raises(UnknownBlendError, match="registered: square, hull"):
        web.translate_photo(models, tmp_path / "astronaut.png", str(tmp_path / "tiny.pt"), mask="circle")


# ------------------------------------------------------------------------------- batched stream


def test_photos_in_batches_come_back_in_order_with_their_errors_in_place():
    batches: list[int] = []
    threads: set[str] = set()

    def prepare(photo):
        threads.add(threading.current_thread().name)
        if photo == "bad":
            raise ValueError("bad photo")
        crops = torch.full((photo, 3, 2, 2), float(photo))  # photo n has n faces
        return PreparedPhoto(crops, [], None, (2, 2))

    def translate(crops, aligned):
        batches.append(len(crops))
        return [FaceResult(c, -c) for c in crops]

    def finish(prepared, faces):
        return [float(f.output[0, 0, 0]) for f in faces]

    photos = [1, 3, "bad", 2, 1]
    results = list(translate_in_batches(iter(photos), prepare, translate, finish, batch_size=2, workers=2,
                                        return_exceptions=True))
    assert results[:2] == [[-1.0], [-3.0] * 3] and isinstance(results[2], ValueError)
    assert results[3:] == [[-2.0] * 2, [-1.0]]
    assert sum(batches) == 7 and max(batches) == 2
    assert all(name.startswith("scan-portraits") for name in threads)
    with pytest.raises(ValueError, match="bad photo"):
        list(translate_in_batches(iter(photos), prepare, translate, finish, 2, 0, return_exceptions=False))


# ------------------------------------------------------------------------ video: track, smooth


def test_the_tracker_marks_a_face_fresh_on_its_first_frame_only(astronaut):
    frame = np.ascontiguousarray(astronaut[:320, 60:380])
    tracker = FaceTracker(DlibBackend(), detect_every=3)
    fresh = [[t.fresh for t in tracker.update(frame)] for _ in range(4)]
    assert fresh == [[True], [False], [False], [False]]
    assert not hasattr(tracker.tracks[0], "state")  # the tracker keeps no one else's memory


def test_temporal_smoother_remembers_each_face_until_it_restarts_or_leaves():
    torch.manual_seed(0)
    crop = torch.rand(3, 16, 16) * 2 - 1
    first, second = torch.zeros(3, 16, 16), torch.ones(3, 16, 16)
    smoother = TemporalSmoother(0.6)
    assert torch.equal(smoother(7, first, crop), first)  # no past yet
    expected, _ = temporal_blend(second, first, crop, crop, 0.6)
    assert torch.equal(smoother(7, second, crop), expected)
    assert torch.equal(smoother(7, second, crop, restart=True), second)  # a cut: the past is dropped
    smoother.keep_only([8])  # face 7 left the video
    assert torch.equal(smoother(7, first, crop), first)
    with pytest.raises(ValueError, match="temporal"):
        TemporalSmoother(1.0)



# ----------------------------------------------------------------------------------------- strips


def test_stage_strips_show_each_faces_crop_stages_and_alpha_maps():
    from scan.strips import sheet_frames, stage_rows, stage_strip

    crop = torch.zeros(3, 16, 16)
    face = FaceResult(crop, crop, [crop[:, :8, :8], crop], [None, torch.ones(1, 16, 16)])
    result = portrait.PortraitResult(Image.new("RGB", (4, 4)), [face, face])
    rows = stage_rows(result, "frame 3")
    assert [[label for label, _ in row] for row in rows] == [["frame 3", "stage 1", "stage 2", "alpha 2"]] * 2
    assert stage_strip(result).size == (4 + 4 * (192 + 4), 2 * (192 + 16 + 4) + 4)
    assert sheet_frames(100) == {0, 33, 66, 99} and sheet_frames(2) == {0, 1}
    assert sheet_frames(0, fps=10) == {0, 10, 20, 30}  # frame count unknown: one a second
