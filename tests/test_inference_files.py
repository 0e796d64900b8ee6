"""Inference-only model files (``scan.save_model(..., inference=True)``, ``scan-export --format scan``):
the generators of one direction or both, no discriminators; they load, translate bit for bit as the
full file does, refuse the direction they dropped and refuse to train."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data

import scan
from scan import export, infer_cli
from scan.checkpoint import CheckpointError
from scan.errors import UserError
from scan.model import MissingPartError
from scan.training.finetune import InitFromError, load_initial_weights


@pytest.fixture(scope="module")
def tiny() -> scan.SCAN:
    torch.manual_seed(0)
    return scan.create_model("tiny").eval()


def _translations(model: scan.SCAN, directions) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        return {d: model.translate(x, d).final for d in directions}


@pytest.mark.parametrize("kept", [("a2b", "b2a"), ("a2b",), ("b2a",)])
def test_an_inference_file_translates_bit_for_bit_as_the_full_one_and_holds_only_its_parts(tmp_path, tiny, kept):
    full = scan.save_model(tiny, tmp_path / "full.pt")
    small = scan.save_model(tiny, tmp_path / "small.pt", inference=True, directions=list(kept))
    loaded = scan.load_model(small)
    assert loaded.directions == kept and not loaded.trainable
    assert len(loaded.D_a) == len(loaded.D_b) == 0
    names = {k.split(".")[0] for k in loaded.state_dict()}
    assert names == {scan.model.GENERATOR_NAMES[d] for d in kept}
    assert small.stat().st_size < full.stat().st_size
    ours, theirs = _translations(loaded, kept), _translations(scan.load_model(full), kept)
    assert all(torch.equal(ours[d], theirs[d]) for d in kept)
    for dropped in set(scan.model.DIRECTIONS) - set(kept):
        with pytest.raises(MissingPartError, match=f"holds {'/'.join(kept)} only, not {dropped}"):
            loaded.translate(torch.zeros(1, 3, 64, 64), dropped)
    # Saved again as it is, it stays an inference-only file.
    again = scan.load_model(scan.save_model(loaded, tmp_path / "again.pt"))
    assert again.directions == kept and not again.trainable


def test_mobile_256_drops_its_discriminators_to_under_a_megabyte(tmp_path):
    model = scan.create_model("mobile-256")
    full = scan.save_model(model, tmp_path / "full.pt").stat().st_size
    small = scan.save_model(model, tmp_path / "small.pt", inference=True).stat().st_size
    generators = sum(p.numel() for name in ("G_ab", "G_ba") for p in getattr(model, name).parameters())
    assert small < 1_000_000 < full
    assert small < 4 * generators + 100_000  # the generators' float32 weights and little more


def test_an_inference_model_refuses_to_train(tmp_path, tiny):
    loaded = scan.load_model(scan.save_model(tiny, tmp_path / "small.pt", inference=True))
    batch = torch.zeros(1, 3, 32, 32)
    with pytest.raises(MissingPartError, match="cannot train"):
        loaded.generator_step(batch, batch, stage=1)
    with pytest.raises(MissingPartError, match="cannot train"):
        loaded.discriminator_step(real_a=batch, real_b=batch, fake_a=batch, fake_b=batch, stage=1)
    with pytest.raises(InitFromError, match="inference-only model file .* cannot train"):
        load_initial_weights(scan.create_model("tiny"), tmp_path / "small.pt")


def test_bad_save_requests_and_a_malformed_inference_entry(tmp_path, tiny):
    with pytest.raises(ValueError, match="pass inference=True"):
        scan.save_model(tiny, tmp_path / "x.pt", directions=["a2b"])
    with pytest.raises(ValueError, match="directions must be some of"):
        scan.save_model(tiny, tmp_path / "x.pt", inference=True, directions=["sideways"])
    one = scan.load_model(scan.save_model(tiny, tmp_path / "a2b.pt", inference=True, directions=["a2b"]))
    with pytest.raises(MissingPartError):
        scan.save_model(one, tmp_path / "b2a.pt", inference=True, directions=["b2a"])
    entry = torch.load(tmp_path / "a2b.pt", weights_only=True)
    entry["inference"] = {"directions": ["a2b", "a2b"]}
    torch.save(entry, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="'inference' entry must list some of"):
        scan.load_model(tmp_path / "bad.pt")


def test_scan_export_writes_them_and_infer_py_uses_them(tmp_path, tiny, capsys):
    scan.save_model(tiny, tmp_path / "full.pt")
    assert export.main(["--checkpoint", str(tmp_path / "full.pt"), "--format", "scan",
                        "--output", str(tmp_path / "both.pt")]) == 0
    assert "(scan, both, 2 stage(s), 0." in capsys.readouterr().out
    assert export.main(["--checkpoint", str(tmp_path / "both.pt"), "--format", "scan", "--direction", "a2b",
                        "--output", str(tmp_path / "a2b.pt")]) == 0
    assert scan.load_model(tmp_path / "a2b.pt").directions == ("a2b",)
    capsys.readouterr()
    # One error line and exit 2: a direction the file dropped; "both" for a one-direction format.
    assert export.main(["--checkpoint", str(tmp_path / "a2b.pt"), "--format", "scan", "--direction", "b2a",
                        "--output", str(tmp_path / "b2a.pt")]) == 2
    assert export.main(["--checkpoint", str(tmp_path / "full.pt"), "--format", "onnx", "--direction", "both",
                        "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: this inference-only model holds a2b only, not b2a",
                   "error: direction 'both': an onnx file holds one direction (a2b or b2a)"]
    assert not (tmp_path / "b2a.pt").exists() and not (tmp_path / "x.onnx").exists()

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((128, 128)).save(photo)
    outputs = {}
    for name in ("full", "a2b"):
        outputs[name] = tmp_path / f"out-{name}.png"
        assert infer_cli.main(["--checkpoint", str(tmp_path / f"{name}.pt"), "--input", str(photo),
                               "--output", str(outputs[name]), "--align", "none"]) == 0
    assert Image.open(outputs["full"]).tobytes() == Image.open(outputs["a2b"]).tobytes()
    assert infer_cli.main(["--checkpoint", str(tmp_path / "a2b.pt"), "--input", str(photo),
                           "--output", str(tmp_path / "b2a.png"), "--align", "none", "--direction", "b2a"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"error: {tmp_path / 'a2b.pt'}: an inference-only file that holds a2b only, not b2a"


def test_a_translator_builds_only_its_direction_from_a_full_file(tmp_path, tiny):
    from scan.translator import Translator

    full = scan.save_model(tiny, tmp_path / "full.pt")
    model = scan.load_model(full, directions=["b2a"])
    assert model.directions == ("b2a",) and len(model.D_a) == 0
    assert torch.equal(_translations(model, ["b2a"])["b2a"], _translations(tiny, ["b2a"])["b2a"])
    translator = Translator.from_checkpoint(full, "b2a", device="cpu")
    assert sum(p.numel() for p in translator.generator.parameters()) == sum(p.numel() for p in tiny.G_ba.parameters())


def test_the_web_page_and_the_translator_take_them(tmp_path, tiny):
    from scan import web
    from scan.translator import Translator

    path = scan.save_model(tiny, tmp_path / "a2b.pt", inference=True, directions=["a2b"])
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((128, 128)).save(photo)
    models = web.Models([path], device="cpu", landmarks="dlib")
    shown = web.translate_photo(models, photo, "a2b", direction="a2b", crop="none")
    expected = Translator.from_checkpoint(path, device="cpu").aligned(Image.open(photo).convert("RGB"))
    assert shown.image.tobytes() == expected.image.tobytes()
    with pytest.raises(UserError, match="'a2b' is an inference-only file that holds no b2a translator"):
        web.translate_photo(models, photo, "a2b", direction="b2a", crop="none")
