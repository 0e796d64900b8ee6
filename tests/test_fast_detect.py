"""The dlib backend's face finder (issue 25, item 2): HOG on a copy scaled to the smallest face looked
for finds the faces the whole-photo scan found (``DlibBackend(min_face=None)``, the path before it),
with the same landmarks, and a huge photo is never scanned at a huge size."""

import numpy as np
import pytest
from PIL import Image
from sample_photos import two_faces
from skimage import data

from scan.align.landmarks import MAX_DETECT_SIDE, MIN_FACE, DlibBackend, detect_faces, detect_scale

BOX = 73  # the side of dlib's smallest HOG box (scan/align/landmarks.py)


# The photos of tests/test_portrait_hashes.py (two_faces, clip_frames) and tests/test_video.py.


def face_frame(shift: int, side: int = 128) -> np.ndarray:
    crop = data.astronaut()[30 + shift:286 + shift, 120 + 2 * shift:376 + 2 * shift]
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BILINEAR))


def astronaut(side: int = 512) -> np.ndarray:
    photo = Image.fromarray(data.astronaut())
    return np.asarray(photo if side == 512 else photo.resize((side, side), Image.Resampling.BICUBIC))


PHOTOS = {
    "astronaut": lambda: astronaut(),  # scanned at 0.96x (before: 2x)
    "astronaut-300": lambda: astronaut(300),  # 1.67x
    "two-faces": lambda: np.asarray(two_faces()),  # 2x: a short side below ~290 px is scanned as before
    "clip-frame-0": lambda: face_frame(0),
    "clip-frame-8": lambda: face_frame(8),
    "video-frame-192": lambda: face_frame(0, side=192),
}


@pytest.fixture(scope="module")
def backends():
    return DlibBackend(min_face=None), DlibBackend()


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(before, after):
    """Each face found before (score >= 0.5) with the face found now that overlaps it most."""
    found = [f for f in after if f.score >= 0.5]
    pairs = []
    for face in (f for f in before if f.score >= 0.5):
        best = max(found, key=lambda f: iou(face.box, f.box))
        pairs.append((face, best, iou(face.box, best.box)))
    return pairs, found


@pytest.mark.parametrize("name", PHOTOS)
def test_the_faster_finder_finds_the_same_faces_with_the_same_landmarks(backends, name):
    photo = PHOTOS[name]()
    before, after = (backend.detect(photo) for backend in backends)
    pairs, found = matched(before, after)
    assert len(pairs) == len(found) >= 1  # the same faces, no more, no fewer
    for face, now, overlap in pairs:
        assert overlap > 0.9, (face.box, now.box)
        assert np.abs(face.landmarks - now.landmarks).max() <= 2  # pixels


@pytest.mark.slow
def test_an_enlarged_photo_is_scanned_smaller_and_keeps_its_face(backends):
    photo = astronaut(1024)  # her face ~185 px: scanned at 0.56x (before: 2x, 16 times the pixels)
    assert detect_scale(1024, 1024) < 0.6
    pairs, found = matched(*(backend.detect(photo) for backend in backends))
    ((face, now, overlap),) = pairs
    assert len(found) == 1 and overlap > 0.7
    # The boxes come from scans 3.6x apart, so the landmarks differ by up to ~1% of the face's size.
    assert np.abs(face.landmarks - now.landmarks).max() <= 0.02 * face.size


def test_the_astronaut_mission_patch_is_still_found_below_the_score_threshold(backends):
    everything = detect_faces(astronaut(), backends[1], faces="all", min_score=-1.0)
    assert len(everything) == 2 and any(f.box[1] > 300 for f in everything)
    assert len(detect_faces(astronaut(), backends[1], faces="all")) == 1


@pytest.mark.slow
def test_a_face_smaller_than_min_face_is_not_found_unless_asked_for(backends, monkeypatch):
    # Her face at ~60 px in a 1024 px photo: 0.06 of its side, under MIN_FACE (0.15: ~154 px).
    photo = Image.new("RGB", (1024, 1024), (90, 120, 150))
    photo.paste(Image.fromarray(data.astronaut()).crop((130, 10, 330, 250)).resize((133, 160)), (400, 400))
    photo = np.asarray(photo)
    before, after = (backend.detect(photo) for backend in backends)
    assert [f for f in before if f.score >= 0.5]  # the whole-photo scan finds faces from ~36 px
    assert not [f for f in after if f.score >= 0.5]  # documented: smaller than min_face, not looked for
    asking = backends[1]
    monkeypatch.setattr(asking, "min_face", 48)  # in pixels
    small = [f for f in asking.detect(photo) if f.score >= 0.5]
    assert len(small) == 1 and iou(small[0].box, before[0].box) > 0.9
    monkeypatch.setattr(asking, "min_face", 0.05)  # a fraction of the short side
    assert len([f for f in asking.detect(photo) if f.score >= 0.5]) == 1


def test_lfw_crops_are_too_small_for_either_path(backends):
    # scikit-image's 25 x 25 face crops (the first 100 of lfw_subset): faces of ~20 px, below the ~36 px
    # the whole-photo scan reaches, so neither path finds one.
    crops = np.repeat((data.lfw_subset()[:100] * 255).round().astype(np.uint8)[..., None], 3, -1)
    for backend in backends:
        assert sum(len(backend.find_boxes(c)) for c in crops) == 0


def test_detect_scale_is_one_of_the_scales_the_old_scan_visited():
    assert detect_scale(512, 512, None) == 2.0  # the path before: the whole photo upsampled once
    for side in (100, 128, 260, 290):
        assert detect_scale(side, 2 * side) == 2.0  # small photos are scanned as before
    for short in range(292, 6000, 37):
        scale = detect_scale(short, short + 100)
        levels = np.log(2 / scale) / np.log(6 / 5)
        assert abs(levels - round(levels)) < 1e-9 and scale < 2
        # The smallest box found covers a face of MIN_FACE of the short side (a little smaller, not larger).
        assert MIN_FACE * short / 1.2 < BOX / scale <= MIN_FACE * short
    assert detect_scale(512, 512) == pytest.approx(2 * (5 / 6) ** 4)  # the astronaut: 494 px, not 1024


@pytest.mark.parametrize("height,width", [(4000, 3000), (12000, 9000), (3000, 12000), (300, 20000)])
def test_huge_photos_are_not_scanned_at_huge_sizes(height, width):
    scale = detect_scale(height, width)
    assert min(height, width) * scale <= 1.2 * BOX / MIN_FACE  # ~584 px at most on the short side
    assert max(height, width) * scale <= MAX_DETECT_SIDE
    # Even when the smallest face is given in pixels.
    assert max(height, width) * detect_scale(height, width, min_face=20) <= MAX_DETECT_SIDE


def test_detect_scale_takes_pixels_and_rejects_nonsense():
    assert BOX / detect_scale(2000, 2000, min_face=100) <= 100 < 1.2 * BOX / detect_scale(2000, 2000, min_face=100)
    assert detect_scale(500, 500, min_face=10) == 2.0  # no smaller than the old scan's smallest face
    assert detect_scale(512, 512, upsample=0) == 1.0 and detect_scale(1000, 1000, upsample=0) < 1
    for bad in (0, -0.1):
        with pytest.raises(ValueError, match="min_face"):
            detect_scale(512, 512, min_face=bad)
        with pytest.raises(ValueError, match="min_face"):
            DlibBackend(min_face=bad)


class Recorder:
    """Stands in for dlib's detector: records the size of what it is asked to scan."""

    def __init__(self, boxes=()):
        self.calls, self.boxes = [], boxes

    def run(self, image, upsample, threshold):
        import dlib

        self.calls.append((image.shape, upsample))
        return [dlib.rectangle(*b) for b in self.boxes], [1.0] * len(self.boxes), [0] * len(self.boxes)


def test_find_boxes_scans_the_scaled_copy_and_maps_boxes_back(backends, monkeypatch):
    old, backend = backends
    monkeypatch.setattr(backend, "_detector", Recorder(boxes=[(100, 50, 172, 122)]))
    ((box, score),) = backend.find_boxes(np.zeros((4000, 3000, 3), np.uint8))
    ((shape, upsample),) = backend._detector.calls
    scale = detect_scale(4000, 3000)
    assert upsample == 0 and shape == (round(4000 * scale), round(3000 * scale), 3) and max(shape) < 800
    sx, sy = shape[1] / 3000, shape[0] / 4000  # pixel centres map as (x + 0.5) / scale - 0.5
    assert box == pytest.approx(((100.5 / sx) - 0.5, (50.5 / sy) - 0.5, (172.5 / sx) - 0.5, (122.5 / sy) - 0.5))
    # The path before: the whole photo, upsampled by dlib itself.
    monkeypatch.setattr(old, "_detector", Recorder())
    old.find_boxes(np.zeros((4000, 3000, 3), np.uint8))
    assert old._detector.calls == [((4000, 3000, 3), 1)]


def test_a_group_photo_s_small_faces_are_still_found(backends):
    """Four faces of a tenth of the photo's shorter side, below the portrait's MIN_FACE: ``all`` scans
    for small faces from the start, and ``largest``, finding none that large, scans again for them."""
    canvas = np.full((800, 1200, 3), 200, np.uint8)
    small = np.asarray(Image.fromarray(astronaut()).resize((220, 220)))
    for x in (50, 330, 610, 890):
        canvas[300:520, x:x + 220] = small
    old, new = backends
    every_old = detect_faces(canvas, old, faces="all")
    every_new = detect_faces(canvas, new, faces="all")
    assert len(every_old) == len(every_new) == 4
    pairs, _ = matched(every_old, every_new)
    # The same faces (boxes from neighbouring HOG scales overlap less), landmarks within 2 px.
    assert all(overlap > 0.6 and np.abs(a.landmarks - b.landmarks).max() <= 2 for a, b, overlap in pairs)
    largest = detect_faces(canvas, new, faces="largest")
    assert len(largest) == 1 and any(iou(largest[0].box, f.box) > 0.9 for f in every_old)
