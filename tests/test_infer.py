"""Inference: the Translator API, infer.py end to end and its errors, export to ONNX / TorchScript."""

import functools
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import data

import scan
from scan.align import NoFaceError
from scan.compiling import COMPILE_BACKEND_ENV, CompileError
from scan.export import export_model
from scan.export import main as export_main
from scan.generator import StackOutput
from scan.imageio import load_image
from scan.infer_cli import main as infer_main
from scan.translator import NonFiniteOutputError, Translator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), folder / "tiny.pt")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.brick()).convert("RGB").save(folder / "brick.png")
    faces_photo(3).save(folder / "three.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    return folder


def faces_photo(count: int) -> Image.Image:
    """``count`` copies of the astronaut's face side by side, every other one mirrored (dlib finds
    each)."""
    face = Image.fromarray(data.astronaut()).crop((130, 10, 330, 250))
    photo = Image.new("RGB", (200 * count, 240), "white")
    for i in range(count):
        photo.paste(ImageOps.mirror(face) if i % 2 else face, (200 * i, 0))
    return photo


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


# --------------------------------------------------------------- batched folders, torch.compile
def _assert_same_portrait(batched, expected):
    """A result of ``portraits`` against ``portrait``'s: the same faces, the same pixels up to one grey
    level (batches of other sizes may round differently)."""
    assert len(batched.faces) == len(expected.faces)
    assert batched.image.size == expected.image.size
    difference = np.abs(np.asarray(batched.image, dtype=int) - np.asarray(expected.image, dtype=int))
    assert difference.max() <= 1
    for got, want in zip(batched.faces, expected.faces):
        assert torch.equal(got.crop, want.crop)
        assert torch.allclose(got.output, want.output, atol=1e-5)
        assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got.stages, want.stages))
        assert np.array_equal(got.aligned.matrix, want.aligned.matrix)


def _no_worker_threads_left():
    return not [t for t in threading.enumerate() if t.name.startswith("scan-portraits")]


@pytest.mark.parametrize("faces", ["all", "largest"])
def test_portraits_in_batches_equal_portrait_one_by_one(files, faces):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    astronaut = Image.open(files / "astronaut.png")
    sources = [
        astronaut,
        functools.partial(load_image, files / "three.png"),  # 3 faces: more than a batch
        Image.open(files / "brick.png"),  # no face
        functools.partial(load_image, files / "broken.jpg"),  # not an image
        faces_photo(2),
        functools.partial(load_image, files / "astronaut.png"),
    ]
    results = list(translator.portraits(sources, batch_size=2, workers=2, faces=faces, landmarks="dlib",
                                        return_exceptions=True))
    assert len(results) == len(sources)
    assert isinstance(results[2], NoFaceError) and isinstance(results[3], UnidentifiedImageError)
    assert [len(results[i].faces) for i in (0, 1, 4, 5)] == ([1, 3, 2, 1] if faces == "all" else [1, 1, 1, 1])
    for i in (0, 1, 4, 5):
        photo = sources[i]() if callable(sources[i]) else sources[i]
        _assert_same_portrait(results[i], translator.portrait(photo, faces=faces, landmarks="dlib"))
    assert _no_worker_threads_left()


def test_portraits_raise_the_first_failure_in_its_turn(files):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    astronaut, brick = Image.open(files / "astronaut.png"), Image.open(files / "brick.png")
    results = translator.portraits([astronaut, brick, astronaut], batch_size=2, workers=1, landmarks="dlib")
    assert len(next(results).faces) == 1  # the photo before the failing one comes first
    with pytest.raises(NoFaceError):
        next(results)
    assert _no_worker_threads_left()
    # Stopping early shuts the workers down too.
    results = translator.portraits([astronaut] * 5, batch_size=1, workers=2, landmarks="dlib")
    next(results)
    results.close()
    assert _no_worker_threads_left()


def test_portraits_of_aligned_crops_equal_aligned(files):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    astronaut = Image.fromarray(data.astronaut())
    crops = [astronaut.crop((150, 50, 150 + side, 50 + side)) for side in (150, 90, 200, 64, 120)]
    results = list(translator.portraits(crops, batch_size=3, workers=0, align="none"))
    assert [r.image.size for r in results] == [c.size for c in crops]  # in order
    for crop, result in zip(crops, results):
        expected = translator.aligned(crop)
        assert result.faces[0].aligned is None
        assert np.abs(np.asarray(result.image, dtype=int) - np.asarray(expected.image, dtype=int)).max() <= 1
    assert list(translator.portraits([], align="none")) == []


def test_portraits_read_a_bounded_look_ahead(files):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    crop = Image.fromarray(data.astronaut()).crop((150, 50, 300, 200))
    pulled = []

    def photos():
        for i in range(100):
            pulled.append(i)
            yield crop

    results = translator.portraits(photos(), batch_size=4, workers=2, align="none")
    next(results)
    assert len(pulled) <= 2 * (4 + 2) + 1  # not the whole input
    assert sum(1 for _ in results) == 99 and len(pulled) == 100


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"workers": -1}, "workers"),
        ({"align": "bogus"}, "align"),
        ({"faces": "many"}, "faces"),
        ({"mask": "circle"}, "mask"),
    ],
)
def test_portraits_refuse_bad_options_before_reading_a_photo(files, options, message):
    translator = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    read = []
    with pytest.raises(ValueError, match=message):
        translator.portraits([lambda: read.append(1)], landmarks="dlib", **options)
    assert not read


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches emptied before and after: no test sees another's compiled code."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # a few seconds
def test_compiled_translator_matches_eager_and_never_recompiles(files, monkeypatch, fresh_dynamo):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")  # the same graph capture, compiled in seconds
    eager = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    compiled = Translator.from_checkpoint(files / "tiny.pt", device="cpu", compile=True, compile_batch_size=3)
    assert compiled.compiled and compiled.compiled_batch_sizes == [3]
    images = torch.rand(7, 3, 64, 64) * 2 - 1
    astronaut = Image.open(files / "astronaut.png")
    # Batches of any size run at the one compiled batch size: padded, or split and padded.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for count in (1, 2, 3, 7):
            got, want = compiled.translate(images[:count]), eager.translate(images[:count])
            assert got.final.shape == (count, 3, 64, 64) and got.alphas[1].shape == (count, 1, 64, 64)
            assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got.outputs, want.outputs))
        for result in compiled.portraits([astronaut, astronaut], landmarks="dlib"):  # batches of 3
            _assert_same_portrait(result, eager.portrait(astronaut, landmarks="dlib"))
    compiled.warm_up(1)  # a second size, for single faces
    assert compiled.compiled_batch_sizes == [1, 3]
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.allclose(compiled.translate(images[:1]).final, eager.translate(images[:1]).final, atol=1e-5)
    # The checks stay: inputs, and NaN outputs of broken weights.
    with pytest.raises(ValueError, match="expected floats in"):
        compiled.translate(images * 3)
    with torch.no_grad():
        for parameter in compiled.generator.parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError):
        compiled.translate(images[:2])


def _simulated_compile_failure(graph, example_inputs):
    raise RuntimeError("no working C++ compiler (simulated)\nCommand: g++ ...")


if "scan_test_broken" not in torch._dynamo.list_backends(exclude_tags=()):
    torch._dynamo.register_backend(_simulated_compile_failure, name="scan_test_broken")


@pytest.mark.parametrize(
    "backend, message",
    [
        ("scan_test_broken", "torch.compile failed on this machine (RuntimeError: no working C++ compiler "
                             "(simulated)); run without --compile"),
        ("scan-no-such-backend", "torch.compile failed on this machine (InvalidBackend: Invalid backend: "
                                 "'scan-no-such-backend'"),
    ],
)
def test_compile_failure_is_one_line_and_exit_2(files, tmp_path, monkeypatch, capsys, fresh_dynamo, backend, message):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, backend)
    with pytest.raises(CompileError, match="run without --compile"):
        Translator.from_checkpoint(files / "tiny.pt", device="cpu", compile=True)
    code = infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(files / "astronaut.png"), "--output",
                       str(tmp_path / "out.png"), "--landmarks", "dlib", "--compile"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out.png").exists()


def _folder_of_photos(files, folder):
    for name in ("astronaut.png", "three.png", "brick.png", "broken.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((files / name).read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "astronaut.png").write_bytes((files / "astronaut.png").read_bytes())


@pytest.mark.slow  # a few seconds
def test_infer_folder_in_batches_writes_what_one_by_one_writes(files, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _folder_of_photos(files, photos)
    outputs = {}
    for label, speed in [("one by one", ["--workers", "0"]), ("batched", ["--batch-size", "3", "--workers", "2"])]:
        out = tmp_path / label
        code = infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(photos), "--output", str(out / "out"),
                           "--landmarks", "dlib", "--faces", "all", "--save-stages", str(out / "strips"), *speed])
        captured = capsys.readouterr()
        assert code == 1, captured.err
        assert "wrote 3 file(s)" in captured.out and "2 of 5 input(s) failed" in captured.err
        assert "brick.png: no face found" in captured.err and "broken.jpg: not a readable image" in captured.err
        outputs[label] = {p.relative_to(out): np.asarray(Image.open(p), dtype=int) for p in out.rglob("*.png")}
    expected = {Path("out/astronaut.png"), Path("out/three.png"), Path("out/sub/astronaut.png"),
                Path("strips/astronaut_stages.png"), Path("strips/three_stages.png"),
                Path("strips/sub/astronaut_stages.png")}
    assert set(outputs["batched"]) == set(outputs["one by one"]) == expected
    for name in expected:
        assert np.abs(outputs["batched"][name] - outputs["one by one"][name]).max() <= 1, name


@pytest.mark.slow  # a few seconds
def test_infer_compile_on_a_folder_and_a_photo(files, tmp_path, monkeypatch, capsys, fresh_dynamo):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "aot_eager")
    photos = tmp_path / "photos"
    photos.mkdir()
    _folder_of_photos(files, photos)
    code = infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(photos), "--output",
                       str(tmp_path / "out"), "--landmarks", "dlib", "--batch-size", "2", "--compile"])
    captured = capsys.readouterr()
    assert code == 1 and "compiling the networks for batches of 2" in captured.out
    assert "2 of 5 input(s) failed" in captured.err
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    # One photo: compiled for batches of 1, whatever --batch-size says.
    assert infer_main(["--checkpoint", str(files / "tiny.pt"), "--input", str(files / "astronaut.png"), "--output",
                       str(tmp_path / "one.png"), "--landmarks", "dlib", "--batch-size", "8", "--compile"]) == 0
    assert "batches of 1" in capsys.readouterr().out


@pytest.mark.slow
def test_compile_with_inductor_matches_eager(files, fresh_dynamo):
    """The real backend (a C++ compiler on a CPU, ~30 s for the tiny model)."""
    eager = Translator.from_checkpoint(files / "tiny.pt", device="cpu")
    compiled = Translator.from_checkpoint(files / "tiny.pt", device="cpu", compile=True, compile_batch_size=2)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    assert torch.allclose(compiled.translate(images).final, eager.translate(images).final, atol=1e-4)
