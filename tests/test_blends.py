"""The blend kinds that hide the seam (scan.align.seamless: ``seamless``, ``square-colour``,
``hull-colour``) and the face-parsing mask (scan.align.parsing, with a tiny ONNX model exported here),
each step alone; then every registered kind through infer.py, the web page and a video."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import scan
from scan.align import blend_kinds, get_blend, rounded_square_mask
from scan.align import parsing as parsing_module
from scan.align.crop import AlignedFace, cut_faces
from scan.align.parsing import PARSING_ENV, ParsingModelError, parsing_mask, use_parsing_model
from scan.align.seamless import SEAM_MARGIN, _fast_length, border_ring, match_border_colour, poisson_blend
from scan.imageio import model_to_uint8, pil_to_uint8
from scan.translator import Translator


def ramp(size: int) -> torch.Tensor:
    """A smooth photo crop: linear in x and y (harmonic: the Poisson solution reproduces it)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([0.6 * xx, 0.5 * yy, 0.3 * (xx + yy) / 2])


def test_poisson_blend_takes_the_photo_at_the_edge_and_the_translation_s_gradients_inside():
    photo = ramp(64)
    # A flat translation into a linear photo: the solution is the photo itself (harmonic).
    assert (poisson_blend(torch.full((3, 64, 64), 0.3), photo) - photo).abs().max() < 1e-5
    # A translation with detail: its gradients kept inside, offset to meet the photo at the edge.
    detail = torch.sin(torch.linspace(0, 12, 64))[None, None, :].expand(3, 64, 64) * 0.3
    out = poisson_blend(detail + 0.8, photo)
    assert torch.equal(out[:, :SEAM_MARGIN], photo[:, :SEAM_MARGIN])  # the border: the photo's
    inner = (out - detail)[:, 20:44, 20:44]
    assert (inner - photo[:, 20:44, 20:44]).abs().mean() < 0.1  # the +0.8 offset is gone, the detail kept


def test_poisson_blend_agrees_with_opencv_seamless_clone_on_a_square():
    size = 64
    photo = ramp(size)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    translated = torch.stack([torch.sin(3 * xx) * 0.4, torch.cos(2 * yy) * 0.3, 0 * xx + 0.2])
    ours = model_to_uint8(poisson_blend(translated, photo)).float()
    length = _fast_length(size - 1 - 2 * SEAM_MARGIN)
    start = (size - 1 - length) // 2
    region = np.zeros((size, size), np.uint8)
    region[start:start + length + 1, start:start + length + 1] = 255
    x, y, w, h = cv2.boundingRect(region)

    def hwc(t):
        return np.ascontiguousarray(model_to_uint8(t).permute(1, 2, 0).numpy())

    theirs = cv2.seamlessClone(hwc(translated), hwc(photo), region, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    difference = (ours - torch.from_numpy(theirs).permute(2, 0, 1).float()).abs()
    assert difference.mean() < 4  # grey levels: the same solution, discretised a little differently


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    return x[:, 1:-1, :-2] + x[:, 1:-1, 2:] + x[:, :-2, 1:-1] + x[:, 2:, 1:-1] - 4 * x[:, 1:-1, 1:-1]


def test_guided_poisson_blend_keeps_each_side_s_gradients_where_the_weight_says():
    torch.manual_seed(0)
    photo, translated = torch.rand(3, 48, 48) * 2 - 1, torch.rand(3, 48, 48) * 2 - 1
    photo, translated = 0.4 * photo, 0.4 * translated + 0.3  # no clipping at [-1, 1]
    # Weight 1 everywhere: the plain Poisson blend; weight 0: the photo itself.
    plain = poisson_blend(translated, photo)
    assert (poisson_blend(translated, photo, torch.ones(1, 48, 48)) - plain).abs().max() < 1e-5
    assert (poisson_blend(translated, photo, torch.zeros(48, 48)) - photo).abs().max() < 1e-5
    # Left half 0, right half 1: the left keeps the photo's texture (only a harmonic correction, whose
    # Laplacian is 0), the right the translation's; and no step where they meet.
    weight = torch.zeros(48, 48)
    weight[:, 24:] = 1
    out = poisson_blend(translated, photo, weight)
    rows = slice(SEAM_MARGIN + 2, 48 - SEAM_MARGIN - 4)
    assert _laplacian(out - photo)[:, rows, SEAM_MARGIN + 2:20].abs().max() < 1e-4
    assert _laplacian(out - translated)[:, rows, 26:48 - SEAM_MARGIN - 4].abs().max() < 1e-4
    assert _laplacian(out - photo)[:, rows, 26:40].abs().max() > 0.1  # the right half is not the photo's


@pytest.mark.parametrize("size", [4, 8, 16])
def test_poisson_blend_on_tiny_crops_does_not_fail(size):
    photo, translated = torch.zeros(3, size, size), torch.ones(3, size, size)
    out = poisson_blend(translated, photo)
    assert out.shape == (3, size, size) and torch.isfinite(out).all()


def test_colour_transfer_matches_the_ring_s_statistics_to_the_photo_s():
    torch.manual_seed(0)
    photo = torch.rand(3, 32, 32) * 0.4 - 0.6
    translated = torch.rand(3, 32, 32) * 0.8 + 0.1
    ring = border_ring(rounded_square_mask(32))
    matched = match_border_colour(translated, photo, ring, max_gain=4.0)
    for c in range(3):
        assert abs(matched[c][ring[0]].mean() - photo[c][ring[0]].mean()) < 1e-4
        assert abs(matched[c][ring[0]].std() - photo[c][ring[0]].std()) < 1e-4
    # A flat ring would ask for an endless gain: clamped.
    flat = match_border_colour(translated, torch.zeros(3, 32, 32), ring, max_gain=2.0)
    assert flat[0][ring[0]].std() >= translated[0][ring[0]].std() / 2 - 1e-6
    assert torch.equal(match_border_colour(translated, photo, torch.zeros(1, 32, 32, dtype=torch.bool)), translated)


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[torch.Tensor, AlignedFace]:
    from scan.align import detect_faces

    photo = data.astronaut()
    pixels = pil_to_uint8(Image.fromarray(photo))
    return pixels, cut_faces(pixels, [detect_faces(photo, "dlib")[0]], 64)[0]


@pytest.mark.parametrize("kind", ["seamless", "hull-seamless", "square-colour", "hull-colour"])
def test_each_seam_kind_gives_a_crop_and_a_mask_zero_on_the_border(astronaut_face, kind):
    pixels, face = astronaut_face
    translated = torch.full((3, 64, 64), 0.9)  # a bright flat "translation": the seam would show
    crop, mask = get_blend(kind)(pixels, translated, face)
    assert crop.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert mask[0, 0].max() == 0 and mask[0, :, -1].max() == 0
    assert crop.min() >= -1 and crop.max() <= 1
    ring = border_ring(mask)[0]
    # Where the paste meets the photo, the pasted crop is nearer the photo than the raw translation.
    assert (crop[:, ring] - face.crop[:, ring]).abs().mean() < (translated[:, ring] - face.crop[:, ring]).abs().mean()


def test_seamless_on_a_face_at_the_photo_s_edge_and_a_tiny_face():
    torch.manual_seed(0)
    model = scan.create_model("tiny")
    translator = Translator(model, device="cpu")
    photo = Image.fromarray(data.astronaut()[100:, 60:420])  # the top of the head cut off
    from scan.align import detect_faces

    landmarks = detect_faces(data.astronaut(), "dlib")[0].landmarks - [60, 100]
    result = translator.portrait(photo, mask="seamless", user_landmarks=landmarks)
    assert result.image.size == photo.size
    tiny = photo.resize((36, 32))
    result = translator.portrait(tiny, mask="seamless", user_landmarks=landmarks * 0.1)
    assert result.image.size == (36, 32)


# ---------------------------------------------------------------------------------- face parsing


class TinyParser(torch.nn.Module):
    """A stand-in for BiSeNet: 'skin' (class 1) where the red channel is bright, 'cloth' (16) where the
    blue one is, background elsewhere; 19 logits per pixel, as the real network gives."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-100.0)
            self.conv.bias[[0, 1, 16]] = 0.0
            self.conv.weight[1, 0] = 10.0  # input normalised with ImageNet's statistics: > 0 when bright
            self.conv.weight[16, 2] = 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module")
def parser_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("parsing") / "parser.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyParser(), (torch.zeros(1, 3, 512, 512),), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False)
    return path


@pytest.fixture
def parsing_model(parser_onnx, monkeypatch):
    monkeypatch.delenv(PARSING_ENV, raising=False)
    use_parsing_model(parser_onnx)
    yield parser_onnx
    use_parsing_model(None)


def test_the_parsing_mask_covers_face_and_hair_classes_only(parsing_model):
    crop = torch.full((3, 64, 64), -1.0)
    crop[0, :, :32] = 1.0  # left half red: "skin"
    crop[2, :, 32:] = 1.0  # right half blue: "cloth", which stays the photo's
    mask = parsing_mask(crop, 48)
    assert mask.shape == (1, 48, 48)
    assert mask[0, 24, 8] > 0.95 and mask[0, 24, 40] < 0.05
    assert mask[0, 0].max() == 0  # zero on the border


def test_the_parsing_model_comes_from_the_option_or_the_environment(parser_onnx, monkeypatch, tmp_path):
    monkeypatch.delenv(PARSING_ENV, raising=False)
    use_parsing_model(None)
    with pytest.raises(ParsingModelError) as caught:
        parsing_module.parsing_model_path()
    assert "\n" not in str(caught.value) and "--parsing-model" in str(caught.value)
    monkeypatch.setenv(PARSING_ENV, str(parser_onnx))
    assert parsing_module.parsing_model_path() == parser_onnx
    with pytest.raises(ParsingModelError, match="no such face-parsing model"):
        use_parsing_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    use_parsing_model(tmp_path / "junk.onnx")
    try:
        with pytest.raises(ParsingModelError, match="not a readable ONNX model"):
            parsing_mask(torch.zeros(3, 16, 16), 16)
    finally:
        use_parsing_model(None)


# ---------------------------------------------------- every kind through infer.py, the page, video


@pytest.mark.slow
def test_every_registered_kind_through_infer_the_web_page_and_video(tmp_path, parsing_model):
    from scan import infer_cli, web
    from scan.video import write_video

    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    photo = data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    frames = [np.asarray(Image.fromarray(photo[40 + 4 * i:296 + 4 * i, 130:386]).resize((64, 64))) for i in range(3)]
    write_video(tmp_path / "clip.mp4", frames, 25)
    models = web.Models([tmp_path / "tiny.pt"], device="cpu", landmarks="dlib")
    translator = Translator.from_checkpoint(tmp_path / "tiny.pt", device="cpu")
    kinds = blend_kinds()
    assert {"square", "hull", "seamless", "hull-seamless", "square-colour", "hull-colour", "parsing"} <= set(kinds)
    far = (slice(440, None), slice(0, 60))  # far from the face: the photo, bit for bit
    for kind in kinds:
        out = tmp_path / f"{kind}.png"
        assert infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(tmp_path / "astronaut.png"),
                               "--output", str(out), "--landmarks", "dlib", "--mask", kind,
                               "--parsing-model", str(parsing_model)]) == 0
        pasted = np.asarray(Image.open(out))
        assert pasted.shape == photo.shape and np.array_equal(pasted[far], photo[far])
        assert not np.array_equal(pasted, photo), kind
        shown = web.translate_photo(models, tmp_path / "astronaut.png", "tiny", mask=kind)
        assert np.abs(np.asarray(shown.image).astype(int) - pasted.astype(int)).max() <= 1
        clip = tmp_path / f"{kind}.mp4"
        assert infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(tmp_path / "clip.mp4"),
                               "--output", str(clip), "--landmarks", "dlib", "--mask", kind,
                               "--allow-no-face"]) == 0
        results = list(translator.video(iter(frames), landmarks="dlib", mask=kind))
        assert len(results) == 3 and all(r.image.size == (64, 64) for r in results)


def test_the_parsing_mask_without_a_model_is_one_line_from_infer(tmp_path, capsys, monkeypatch):
    from scan import infer_cli

    monkeypatch.delenv(PARSING_ENV, raising=False)
    use_parsing_model(None)
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    status = infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(tmp_path / "photo.png"),
                             "--output", str(tmp_path / "out.png"), "--mask", "parsing"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1 and "face-parsing network" in err[0] and PARSING_ENV in err[0]


def test_seamless_docstring_examples_run():
    import doctest

    from scan.align import seamless

    result = doctest.testmod(seamless, extraglobs={"torch": torch})
    assert result.attempted > 0 and result.failed == 0
