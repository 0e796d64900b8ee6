"""Inference: the Translator API, infer.py end to end and its errors, export to ONNX / TorchScript."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import scan
from scan.export import export_model
from scan.export import main as export_main
from scan.generator import StackOutput
from scan.infer_cli import main as infer_main
from scan.translator import Translator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), folder / "tiny.pt")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.brick()).convert("RGB").save(folder / "brick.png")
    return folder


@pytest.mark.slow
def test_infer_end_to_end_on_the_astronaut(files, tmp_path):
    out, strips = tmp_path / "result.png", tmp_path / "strips"
    result = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--checkpoint", str(files / "tiny.pt"), "--input",
         str(files / "astronaut.png"), "--output", str(out), "--landmarks", "dlib", "--save-stages", str(strips)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    original = np.asarray(Image.open(files / "astronaut.png"))
    translated = np.asarray(Image.open(out))
    assert translated.shape == original.shape
    changed = np.any(translated != original, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 50 * 50  # the face was replaced...
    assert 130 < xs.mean() < 310 and 40 < ys.mean() < 220  # ...where the face is
    assert not changed[300:].any() and not changed[:, :100].any()  # and nothing far from it
    strip = Image.open(strips / "astronaut_stages.png")
    assert strip.size == (4 + 4 * (192 + 4), 4 + 192 + 16 + 4)  # crop, 2 stages, 1 alpha map


def test_translator_api(files):
    translator = Translator.from_checkpoint(files / "tiny.pt", direction="b2a", device="cpu")
    crop = Image.fromarray(data.astronaut()).crop((150, 50, 300, 200))
    out = translator(crop)
    assert isinstance(out, Image.Image) and out.size == (64, 64)
    batch = torch.rand(3, 3, 64, 64) * 2 - 1
    assert translator(batch).shape == (3, 3, 64, 64)
    aligned = translator.aligned(crop)
    assert aligned.image.size == crop.size and len(aligned.faces[0].stages) == 2
    portrait = translator.portrait(Image.fromarray(data.astronaut()), landmarks="dlib", paste=False)
    assert portrait.image.size == (64, 64) and portrait.faces[0].alphas[1].shape == (1, 64, 64)
    fp32 = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    bf16 = Translator.from_checkpoint(files / "tiny.pt", precision="bf16", device="cpu")
    assert (bf16(batch) - fp32(batch)).abs().mean() < 0.02 and bf16(batch).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        Translator.from_checkpoint(files / "tiny.pt", precision="fp8")
    # Landmark models load once per translator, or once for several that share them.
    assert fp32.landmark_backend("dlib") is fp32.landmark_backend("dlib")
    assert bf16.landmark_backend("dlib") is not fp32.landmark_backend("dlib")
    translator.share_landmark_models(fp32)
    assert translator.landmark_backend("dlib") is fp32.landmark_backend("dlib")


def test_identity_translator_leaves_the_photo_outside_the_face_bit_exact(files):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")

    class Identity(torch.nn.Module):
        def forward(self, x):
            return StackOutput([x], [None], [x])

    translator.generator = Identity()
    photo = Image.open(files / "astronaut.png")
    result = translator.portrait(photo, landmarks="dlib")
    before, after = np.asarray(photo).astype(int), np.asarray(result.image).astype(int)
    assert np.array_equal(before[300:], after[300:]) and np.array_equal(before[:, :120], after[:, :120])
    assert np.abs(before - after).mean() < 1.0  # inside the mask: resampling only


def test_infer_folder_mode_carries_on_and_reports_failures(files, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut.png", "brick.png"):
        (photos / name).write_bytes((files / name).read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    code = infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(photos), "--output",
                       str(tmp_path / "out"), "--landmarks", "dlib"])
    assert code == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["astronaut.png"]
    err = capsys.readouterr().err
    assert "2 of 3 input(s) failed" in err and "brick.png: no face found" in err and "broken.jpg" in err


def test_infer_align_none_translates_an_aligned_crop(files, tmp_path):
    crop = tmp_path / "crop.png"
    Image.fromarray(data.astronaut()).crop((150, 50, 300, 200)).save(crop)
    assert infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(crop), "--output",
                       str(tmp_path / "o.png"), "--align", "none"]) == 0
    assert Image.open(tmp_path / "o.png").size == (150, 150)


@pytest.mark.parametrize(
    "case, message",
    [
        ("unreadable", "not a readable image"),
        ("no_face", "no face found"),
        ("not_a_model", "not a readable PyTorch checkpoint"),
        ("output_is_input", "is the input"),
        ("exists", "exists; pass --overwrite"),
        ("missing", "no such file or folder"),
    ],
)
def test_infer_errors_are_one_line_and_exit_2(files, tmp_path, capsys, case, message):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"keep me")
    checkpoint, source, output = files / "tiny.pt", files / "astronaut.png", tmp_path / "out.png"
    if case == "unreadable":
        source = bad
    elif case == "no_face":
        source = files / "brick.png"
    elif case == "not_a_model":
        checkpoint = files / "astronaut.png"
    elif case == "output_is_input":
        output = source
    elif case == "exists":
        output = existing
    elif case == "missing":
        source = tmp_path / "nope.png"
    code = infer_main(["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output),
                       "--landmarks", "dlib"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert existing.read_bytes() == b"keep me"


@pytest.mark.slow
def test_onnx_export_matches_torch(files, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = scan.load_model(files / "tiny.pt")
    path = export_model(model, tmp_path / "tiny.onnx", "onnx", "a2b")
    assert not list(tmp_path.glob("*.data"))  # self-contained file
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        reference = model.translate(x, "a2b").final.numpy()
    assert np.abs(ours - reference).max() <= 1e-4


def test_torchscript_export_and_cli(files, tmp_path, capsys):
    out = tmp_path / "b2a.pt"
    assert export_main(["--checkpoint", str(files / "tiny.pt"), "--format", "torchscript", "--direction", "b2a",
                        "--output", str(out)]) == 0
    scripted = torch.jit.load(str(out))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(scripted(x), scan.load_model(files / "tiny.pt").translate(x, "b2a").final, atol=1e-6)
    assert export_main(["--checkpoint", str(files / "tiny.pt"), "--output", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
