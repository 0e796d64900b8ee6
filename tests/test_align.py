"""The face front end: landmarks, the FFHQ template, warps, paste-back, scan-align."""

import math
import os

import numpy as np
import pytest
import torch
from kornia.geometry.transform import warp_affine
from PIL import Image
from sample_photos import two_faces
from skimage import data

from scan.align import (
    AlignmentError,
    Face,
    align_faces,
    choose_faces,
    detect_faces,
    fan_weights_cached,
    ffhq_quad,
    get_backend,
    landmark_hull_mask,
    paste_back,
    portrait_quad,
    quad_to_matrix,
    rounded_square_mask,
    warp_from_crops,
    warp_to_crops,
)
from scan.align.cli import main as align_main
from scan.imageio import pil_to_model


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def astronaut_faces(astronaut):
    return detect_faces(astronaut, "dlib")


def _synthetic_landmarks(eye_left, eye_right, mouth_left, mouth_right):
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = eye_left, eye_right, mouth_left, mouth_right
    return lm


def test_dlib_finds_the_astronaut_face_and_drops_the_mission_patch(astronaut, astronaut_faces):
    assert len(astronaut_faces) == 1
    face = astronaut_faces[0]
    x0, y0, x1, y1 = face.box
    assert x0 < 222 < x1 and y0 < 125 < y1 and 70 < face.size < 110  # her face, not the patch at (300, 360)
    assert face.landmarks.shape == (68, 2)
    eyes_y = face.landmarks[36:48, 1].mean()
    mouth_y = face.landmarks[48:68, 1].mean()
    assert y0 < eyes_y < mouth_y < y1  # eyes above the mouth, both inside the box
    # The false detection exists; only the default score threshold keeps it out.
    everything = detect_faces(astronaut, "dlib", faces="all", min_score=-1.0)
    assert len(everything) >= 2 and any(f.box[1] > 300 for f in everything)


def test_auto_backend_falls_back_to_dlib_offline():
    backend = get_backend("auto")
    assert backend.name == ("fan" if fan_weights_cached() else "dlib")
    with pytest.raises(ValueError, match="valid: auto, fan, dlib"):
        get_backend("mediapipe")


def test_ffhq_recipe_on_known_landmarks():
    lm = _synthetic_landmarks((100, 100), (140, 100), (105, 140), (135, 140))
    # eye_avg (120, 100), eye_to_eye (40, 0), eye_to_mouth (0, 40): x = (80, 0) (2 * 40 > 1.8 * 40),
    # y = (0, 80), centre (120, 104).
    expected = np.array([[40, 24], [40, 184], [200, 184], [200, 24]], dtype=float)
    assert np.allclose(ffhq_quad(lm), expected)
    assert np.allclose(ffhq_quad(lm, scale=0.5), [[80, 64], [80, 144], [160, 144], [160, 64]])
    wide = portrait_quad(lm)
    assert np.hypot(*(wide[3] - wide[0])) == pytest.approx(1.8 * 160)
    matrix = quad_to_matrix(expected, 64)
    corners = expected @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(corners, [[-0.5, -0.5], [-0.5, 63.5], [63.5, 63.5], [63.5, -0.5]])


def _similarity(angle_deg, scale, tx, ty):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_known_similarity_transform_is_recovered(astronaut, astronaut_faces):
    photo = pil_to_model(Image.fromarray(astronaut))
    landmarks = astronaut_faces[0].landmarks
    transform = _similarity(25, 0.8, 120, -40)
    moved_photo = warp_affine(photo, torch.from_numpy(transform).float()[None], (512, 512), align_corners=True)
    moved_landmarks = landmarks @ transform[:, :2].T + transform[:, 2]

    (original,) = align_faces(photo, 128, landmarks=landmarks)
    (moved,) = align_faces(moved_photo, 128, landmarks=moved_landmarks)
    # The crop of the moved photo undoes the move: M_moved o T == M_original.
    full = lambda m: np.vstack([m, [0, 0, 1]])  # noqa: E731
    assert np.allclose(full(moved.matrix) @ full(transform), full(original.matrix), atol=1e-6)
    inner = slice(16, 112)
    error = (moved.crop - original.crop)[:, inner, inner].abs().mean()
    assert error < 0.03  # same face, same place; only resampling differs


def test_warp_round_trip_is_close_inside_the_crop(astronaut, astronaut_faces):
    photo = pil_to_model(Image.fromarray(astronaut))
    matrix = quad_to_matrix(ffhq_quad(astronaut_faces[0].landmarks), 256)[None]
    back = warp_from_crops(warp_to_crops(photo, matrix, 256), matrix, 512, 512)
    coverage = warp_from_crops(torch.ones(1, 1, 256, 256), matrix, 512, 512)[0, 0]
    footprint = coverage > 0.999
    assert footprint.sum() > 100 * 100
    assert (back[0] - photo[0])[:, footprint].abs().mean() < 0.03
    assert torch.all(back[0][:, coverage == 0] == 0)  # nothing leaks outside the crop's footprint


@pytest.mark.parametrize("mask_kind", ["square", "hull"])
def test_align_then_paste_back_with_identity_restores_the_photo(astronaut, mask_kind):
    photo = pil_to_model(Image.fromarray(astronaut))
    faces = align_faces(photo, 256, backend="dlib")
    crops = torch.stack([f.crop for f in faces])
    matrices = np.stack([f.matrix for f in faces])
    if mask_kind == "square":
        masks = rounded_square_mask(256)
    else:
        masks = torch.stack([landmark_hull_mask(f.landmarks_in_crop, 256) for f in faces])
    out = paste_back(photo, crops, matrices, masks)  # the "translation" is the identity
    photo_mask = warp_from_crops(masks if masks.ndim == 4 else masks[None], matrices, 512, 512)[0, 0]
    outside, inside = photo_mask == 0, photo_mask > 0.99
    assert outside.float().mean() > 0.8 and inside.sum() > 60 * 60
    assert torch.equal(out[0][:, outside], photo[0][:, outside])  # bit for bit where the mask is 0
    mse = ((out[0] - photo[0])[:, inside] / 2).pow(2).mean()
    assert 10 * torch.log10(1 / mse) > 30  # PSNR inside the mask: only resampling blur


def test_paste_back_puts_the_translated_crop_inside_the_mask(astronaut):
    """A known, non-identity "translation" (a flat colour) is blended in with the mask's weights:
    the crop where the mask is 1, a mix in the feathered edge, the photo where it is 0."""
    photo = pil_to_model(Image.fromarray(astronaut))
    matrix = quad_to_matrix(np.array([[150, 60], [150, 260], [350, 260], [350, 60]], float), 64)[None]
    colour = torch.tensor([-0.8, 0.6, 0.1]).view(1, 3, 1, 1)
    crop, mask = colour.expand(1, 3, 64, 64), rounded_square_mask(64)
    out = paste_back(photo, crop, matrix, mask)[0]
    weight = warp_from_crops(mask[None], matrix, 512, 512)[0, 0].clamp(0, 1)
    inside, edge, outside = weight > 0.999, (weight > 0.2) & (weight < 0.8), weight == 0
    assert inside.sum() > 100 * 100 and edge.sum() > 1000 and outside.float().mean() > 0.7
    assert torch.allclose(out[:, inside], colour.view(3, 1).expand(3, int(inside.sum())), atol=5e-3)
    expected_edge = weight[edge] * colour.view(3, 1) + (1 - weight[edge]) * photo[0][:, edge]
    assert torch.allclose(out[:, edge], expected_edge, atol=1e-5)
    assert torch.equal(out[:, outside], photo[0][:, outside])


def test_masks_are_zero_on_the_crop_border_and_one_in_the_middle():
    landmarks = np.full((68, 2), 32.0) + np.random.default_rng(0).uniform(0, 20, (68, 2))
    for mask in (rounded_square_mask(64), landmark_hull_mask(landmarks, 64)):
        assert mask.shape == (1, 64, 64)
        assert mask[0, 0].max() == 0 and mask[0, -1].max() == 0 and mask[0, :, 0].max() == 0
    assert rounded_square_mask(64)[0, 32, 32] == 1


def test_choose_faces_orders_and_filters():
    def face(size, score):
        return Face((0, 0, size, size), score, np.zeros((68, 2)))

    faces = [face(40, 1.0), face(100, 0.2), face(80, 2.0), face(10, 3.0)]
    assert [f.size for f in choose_faces(faces, "all", min_score=0.5, min_size=32)] == [80, 40]
    assert [f.size for f in choose_faces(faces, "largest", min_score=0.0, min_size=32)] == [100]
    with pytest.raises(ValueError, match="faces must be one of"):
        choose_faces(faces, "biggest")


def test_scan_align_cli_aligns_a_folder_and_reports_problems(tmp_path, astronaut, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.fromarray(astronaut).save(raw / "astronaut.jpg")
    Image.fromarray(data.brick()).save(raw / "brick.png")
    (raw / "broken.png").write_bytes(b"not an image")
    before = sorted(p.name for p in raw.iterdir())
    # Photos without a crop are listed at the end, and the exit status says that some failed.
    assert align_main([str(raw), str(tmp_path / "aligned"), "--size", "64", "--landmarks", "dlib"]) == 1
    assert [p.name for p in (tmp_path / "aligned").iterdir()] == ["astronaut.png"]
    assert Image.open(tmp_path / "aligned" / "astronaut.png").size == (64, 64)
    err = capsys.readouterr().err
    assert "brick.png: no face found" in err and "broken.png: unreadable" in err
    assert sorted(p.name for p in raw.iterdir()) == before  # the input is never written to
    assert align_main([str(raw), str(raw / "out")]) == 2
    assert "the input folder or inside it" in capsys.readouterr().err


def test_scan_align_names_never_collide_and_reruns_keep_only_their_own_crops(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "aligned"
    raw.mkdir()
    two_faces().save(raw / "a.jpg")  # two faces: a_0, a_1 under --faces all
    two_faces().crop((0, 0, 220, 260)).save(raw / "a_0.jpg")  # one face: a_0_0, not a second a_0

    def align(*extra):
        return align_main([str(raw), str(out), "--size", "32", "--landmarks", "dlib", *extra])

    assert align("--faces", "all") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_0.png", "a_0_0.png", "a_1.png"]
    assert Image.open(out / "a_1.png").info["scan-align-source"] == "a.jpg#1"
    assert Image.open(out / "a_0_0.png").info["scan-align-source"] == "a_0.jpg#0"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert align("--faces", "all") == 0  # a rerun keeps what it made
    assert "kept 3 existing" in capsys.readouterr().out
    # Under --faces largest, a_0.jpg's crop would be a_0.png, which holds a.jpg's first face: reported,
    # not kept as if it were a_0.jpg's, and not overwritten.
    assert align("--faces", "largest") == 1
    assert f"{out / 'a_0.png'} exists but it was cut from a.jpg#0" in capsys.readouterr().err
    assert Image.open(out / "a.png").info["scan-align-source"] == "a.jpg#0"
    assert all((out / name).read_bytes() == data for name, data in before.items())
    # A file scan-align did not make is never taken for a crop.
    Image.new("RGB", (32, 32)).save(out / "a_0.png")
    assert align("--faces", "all") == 1
    assert "has no record of its photo" in capsys.readouterr().err
    assert align("--faces", "all", "--overwrite") == 0
    assert Image.open(out / "a_0.png").info["scan-align-source"] == "a.jpg#0"
    (out / "a_1.png").unlink()
    os.mkfifo(out / "a_1.png")  # a pipe in a crop's place: refused, never opened (reading it would block)
    assert align("--faces", "all") == 1
    assert "a_1.png is not a regular file" in capsys.readouterr().err



def test_fan_backend_without_weights_says_how_to_get_them(monkeypatch, tmp_path):
    import urllib.error

    import face_alignment.api
    import face_alignment.detection.sfd.sfd_detector as sfd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(sfd, "load_state_dict_from_url", offline)
    monkeypatch.setattr(face_alignment.api, "load_file_from_url", offline)
    assert not fan_weights_cached()
    with pytest.raises(AlignmentError, match="s3fd-619a316812.pth in .*hub.*--landmarks dlib"):
        get_backend("fan")


def test_fan_backend_converts_face_alignment_output(astronaut):
    from scan.align import FanBackend

    landmarks = np.random.default_rng(0).uniform(100, 200, (68, 2))

    class FakeFaceAlignment:  # face-alignment's documented return of get_landmarks_from_image
        def get_landmarks_from_image(self, image, return_bboxes, return_landmark_score):
            assert image.shape == (512, 512, 3) and return_bboxes and return_landmark_score
            return [landmarks], [np.ones(68)], [np.array([90.0, 80.0, 210.0, 220.0, 0.99])]

    backend = FanBackend.__new__(FanBackend)
    backend._fa = FakeFaceAlignment()
    (face,) = detect_faces(astronaut, backend)
    assert face.box == (90.0, 80.0, 210.0, 220.0) and face.score == 0.99
    assert np.array_equal(face.landmarks, landmarks)
