"""Data: decoding of awkward files, skipping bad ones, layouts, augmentation, the demo set."""

import io
import shutil
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scan.datasets import (
    BatchAugment,
    FixedPairsDataset,
    NoImagesError,
    UnpairedDataModule,
    UnpairedImageDataset,
    load_image,
    resolve_folders,
)
from scan.datasets.demo import MAPPINGS, build_demo_set, cartoonize, lineart, load_heldout, reshape
from scan.errors import InputError
from scan.metrics import psnr


def _rgb(size=(40, 30), colour=(200, 30, 60)):
    return Image.new("RGB", size, colour)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)  # portrait after orientation
    top = np.asarray(loaded)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue half is on top after a clockwise turn


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.new("L", (8, 8), 128)),
        ("P", lambda: _rgb((8, 8)).convert("P", palette=Image.Palette.ADAPTIVE)),
        ("RGBA", lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0))),  # fully transparent red -> white
        ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0))),  # pure red in CMYK
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535 // 2, dtype=np.uint16))),
    ],
)
def test_modes_become_correct_rgb(tmp_path, mode, make):
    image = make()
    path = tmp_path / ("x.tiff" if mode in ("CMYK", "I;16") else "x.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (8, 8)
    pixel = np.asarray(loaded)[4, 4].astype(int)
    expected = {
        "L": (128, 128, 128),
        "P": (200, 30, 60),
        "RGBA": (255, 255, 255),
        "CMYK": (255, 0, 0),
        "I;16": (128, 128, 128),  # 16-bit mid-grey is rescaled, not clipped to white
    }[mode]
    assert np.abs(pixel - np.array(expected)).max() <= 2, pixel


def _folder_with_bad_files(folder, good=3):
    folder.mkdir(parents=True)
    for i in range(good):
        _rgb(colour=(40 * i, 100, 100)).save(folder / f"good{i}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    buffer = io.BytesIO()
    _rgb((64, 64)).save(buffer, "PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[:60])
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "sub").mkdir()
    _rgb().save(folder / "sub" / "nested.webp")
    return folder


def test_bad_files_are_reported_once_and_skipped(tmp_path):
    dir_a = _folder_with_bad_files(tmp_path / "A")
    dir_b = _folder_with_bad_files(tmp_path / "B", good=1)
    with pytest.warns(UserWarning) as record:
        dataset = UnpairedImageDataset(dir_a, dir_b, load_size=16)
    messages = "\n".join(str(w.message) for w in record)
    listed = [line.strip().split(": ")[0] for line in messages.splitlines() if line.startswith("  ")]
    for name in ("empty.png", "notes.jpg", "truncated.png"):
        assert listed.count(str(dir_a / name)) == 1 and listed.count(str(dir_b / name)) == 1
    assert "empty file" in messages
    # The truncated JPEG passes the header check and fails at decode: skipped then, once.
    assert len(dataset) == 5  # 3 good + nested + truncated.jpg in A
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[i] for i in range(len(dataset))] + [dataset[i] for i in range(len(dataset))]
    assert all(item["a"].shape == (3, 16, 16) and item["a"].dtype == torch.uint8 for item in items)
    truncated = [w for w in caught if "truncated.jpg" in str(w.message) and "/A/" in str(w.message)]
    assert len(truncated) == 1


def test_epoch_is_the_larger_domain_and_b_is_unpaired(tmp_path):
    for name, n in (("trainA", 2), ("trainB", 7)):
        (tmp_path / name).mkdir()
        for i in range(n):
            _rgb(colour=(i * 30, 0, 0)).save(tmp_path / name / f"{i}.png")
    dataset = UnpairedImageDataset(*resolve_folders(tmp_path, None, None), load_size=8)
    assert len(dataset) == 7
    torch.manual_seed(0)
    b_colours = {int(dataset[0]["b"][0, 0, 0]) for _ in range(30)}
    assert len(b_colours) > 3  # B is drawn at random, not tied to A's index


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(NoImagesError, match="trainA: no such folder.*CycleGAN layout"):
        resolve_folders(tmp_path, None, None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"garbage")
    (tmp_path / "ok").mkdir()
    _rgb().save(tmp_path / "ok" / "x.png")
    with pytest.warns(UserWarning), pytest.raises(NoImagesError, match="junk: no usable image"):
        UnpairedImageDataset(tmp_path / "junk", tmp_path / "ok", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="empty: no image files"):
        UnpairedImageDataset(tmp_path / "empty", tmp_path / "ok", 8)


def test_decompression_bomb_guard_stays_on(tmp_path):
    assert Image.MAX_IMAGE_PIXELS is not None
    path = tmp_path / "bomb.png"
    Image.new("1", (2 * 13000, 13000)).save(path)  # 338 Mpx > 2x the limit: an error, not a decode
    (tmp_path / "ok").mkdir()
    _rgb().save(tmp_path / "ok" / "x.png")
    (tmp_path / "bombs").mkdir()
    path.rename(tmp_path / "bombs" / "bomb.png")
    with pytest.warns(UserWarning, match="decompression bomb"), pytest.raises(NoImagesError):
        UnpairedImageDataset(tmp_path / "bombs", tmp_path / "ok", 8)


def test_batch_augment_crops_flips_and_is_deterministic_in_eval():
    augment = BatchAugment(16, flip=True, color_jitter=0.2, blur_prob=0.5)
    batch = torch.randint(0, 256, (4, 3, 18, 18), dtype=torch.uint8)
    out = augment.train()(batch)
    assert out.shape == (4, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert not torch.equal(augment(batch), augment(batch))  # random crops/flips differ
    augment.eval()
    assert torch.equal(augment(batch), augment(batch))
    assert augment(batch).shape == (4, 3, 16, 16)


def test_datamodule_batches_from_cyclegan_layout(tmp_path):
    root = build_demo_set(tmp_path / "demo", train=6, test=3, size=20)
    dm = UnpairedDataModule(root=str(root), size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(batch, 0)
    assert batch["a"].shape == (2, 3, 16, 16) and batch["a"].dtype == torch.float32
    # Evaluation's folders: the held-out split, with the known answers of A; B has none.
    folders, held_out = dm.evaluation_folders("a2b")
    assert held_out and (folders.source, folders.real, folders.targets) == (root / "testA", root / "testB",
                                                                           root / "testA_target")
    folders, _ = dm.evaluation_folders("b2a")
    assert (folders.source, folders.real, folders.targets) == (root / "testB", root / "testA", None)
    # Without a test split, the training folders stand in.
    shutil.rmtree(root / "testB")
    folders, held_out = UnpairedDataModule(root=str(root), size=16).evaluation_folders("a2b")
    assert not held_out and (folders.source, folders.real) == (root / "trainA", root / "trainB")


def test_demo_set_is_unpaired_and_its_answer_is_known(tmp_path):
    root = build_demo_set(tmp_path / "demo", train=8, test=4, size=24, seed=3)
    for name, n in (("trainA", 8), ("trainB", 8), ("testA", 4), ("testA_target", 4), ("testB", 4)):
        assert len(list((root / name).glob("*.png"))) == n
    val = FixedPairsDataset(root / "testA", root / "testB", size=24, count=4)
    assert val.targets is not None
    a = torch.stack([val[i]["a"] for i in range(4)]).float() / 255
    target = torch.stack([val[i]["a_target"] for i in range(4)]).float() / 255
    assert (cartoonize(a) - target).abs().mean() < 0.02  # testA_target is cartoonize(testA)
    train_a = {(root / "trainA" / p.name).read_bytes() for p in (root / "trainA").iterdir()}
    assert not train_a & {p.read_bytes() for p in (root / "testA").iterdir()}
    with pytest.raises(InputError, match="already holds a data set"):
        build_demo_set(root)


def test_reshape_mapping_changes_shape_not_colour_and_its_answers_line_up(tmp_path):
    torch.manual_seed(0)
    photos = torch.rand(2, 3, 48, 48)
    warped = reshape(photos)
    assert warped.shape == photos.shape and 0 <= warped.min() and warped.max() <= 1
    assert torch.equal(reshape(photos), warped)  # fixed and deterministic
    assert (warped - photos).abs().mean() > 0.05  # pixels move...
    flat = torch.full((1, 3, 48, 48), 0.3)
    assert torch.allclose(reshape(flat), flat, atol=1e-6)  # ...colours do not change
    # A bright dot just above the centre (the eye line) comes out spread over more pixels: magnified.
    dot = torch.zeros(1, 3, 48, 48)
    dot[..., 18:22, 22:26] = 1.0
    assert (reshape(dot) > 0.5).sum() > (dot > 0.5).sum()

    root = build_demo_set(tmp_path / "reshape", train=3, test=3, size=40, mapping="reshape")
    again = build_demo_set(tmp_path / "again", train=3, test=3, size=40, mapping="reshape")
    for name in ("trainB/0000.png", "testA_target/0002.png"):
        assert (root / name).read_bytes() == (again / name).read_bytes()
    photos_a = torch.stack([
        torch.from_numpy(np.array(Image.open(root / "testA" / f"{i:04d}.png"))).permute(2, 0, 1) for i in range(3)
    ]).float() / 255
    targets = torch.stack([
        torch.from_numpy(np.array(Image.open(root / "testA_target" / f"{i:04d}.png"))).permute(2, 0, 1)
        for i in range(3)
    ]).float() / 255
    answer_error = (MAPPINGS["reshape"](photos_a) - targets).abs().mean()
    assert answer_error < 0.02  # each target is its photo's answer (up to 8-bit rounding)...
    assert (MAPPINGS["cartoon"](photos_a) - targets).abs().mean() > 2 * answer_error  # ...not the plain cartoon
    with pytest.raises(InputError, match="unknown mapping 'anime'; valid: cartoon, reshape, lineart, reshape-lineart"):
        build_demo_set(tmp_path / "other", mapping="anime")

    # preview.png: one row per held-out photo (up to 4), 2x; photo, gridded photo, reshaped grid, answer.
    cell = 2 * (40 + 2)  # a 40 px crop and its 2 px padding, doubled
    with Image.open(root / "preview.png") as preview:
        assert preview.size == (4 * cell + 4, 3 * cell + 4)
        top_left = np.asarray(preview.convert("RGB"))[4:84:2, 4:84:2]  # the first photo, at 1x
    assert np.abs(top_left.astype(int) - np.array(Image.open(root / "testA" / "0000.png"))).max() <= 1
    plain = build_demo_set(tmp_path / "plain", train=1, test=1, size=40)
    with Image.open(plain / "preview.png") as preview:
        assert preview.size == (3 * cell + 4, cell + 4)  # no reshaped grid for the cartoon mapping


def _ink_runs(row):
    """Lengths of the runs of inked (dark) pixels along a 1-D tensor of luminance."""
    inked = np.concatenate([[0], (row < 0.3).numpy().astype(int), [0]])
    edges = np.diff(inked)
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_lineart_draws_thin_outlines_and_hatching_locally():
    # A flat light square on a light ground: its edges become 1-pixel outlines and nothing else is inked.
    square = torch.full((1, 3, 48, 48), 0.9)
    square[..., 12:36, 12:36] = 0.6
    out = lineart(square)
    assert out.shape == square.shape and 0 <= out.min() and out.max() <= 1
    for line in (out[0, 0, 24], out[0, 0, :, 24]):  # a row and a column through the square: two 1-px lines
        assert _ink_runs(line).tolist() == [1, 1]
    assert _ink_runs(out[0, 0, 5]).tolist() == []  # a row outside it: no ink
    assert 4 * 22 <= (out[0, 0] < 0.3).sum() <= 4 * 25  # the outline, once around the square's 24 px sides
    # A dark ramp is hatched with fine stripes along its contours; the same ramp, lighter, is not.
    ramp = torch.linspace(0.05, 0.45, 64).expand(1, 3, 16, 64).contiguous()
    runs = _ink_runs(lineart(ramp)[0, 0, 8])
    assert len(runs) >= 4 and 1 <= runs.min() and runs.max() <= 6, runs
    assert len(_ink_runs(lineart(ramp + 0.5)[0, 0, 8])) == 0
    # Deterministic and local: a shifted photo gives the shifted answer (no absolute position), exactly.
    torch.manual_seed(0)
    photos = F.interpolate(torch.rand(2, 3, 12, 12), size=48, mode="bilinear", align_corners=False)
    answer = lineart(photos)
    assert torch.equal(lineart(photos), answer)
    assert torch.equal(lineart(photos[..., 5:, 7:])[..., 4:-4, 4:-4], answer[..., 9:-4, 11:-4])
    with pytest.raises(ValueError, match="lineart expects"):
        lineart(photos[0])
    with pytest.raises(ValueError, match="lineart expects"):
        lineart(photos[:, :1])


def _median_psnr(x, y):
    return float(torch.stack([psnr(a[None], b[None]) for a, b in zip(x, y)]).median())


def _half_resolution(images, size):
    low = F.interpolate(images, size=size // 2, mode="area")
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def test_lineart_answers_are_exact_and_need_the_top_resolution(tmp_path):
    # Built at the size they are loaded at, each stored answer is its stored photo's mapping, to the bit.
    for mapping, columns in (("lineart", 3), ("reshape-lineart", 4)):
        root = build_demo_set(tmp_path / mapping, train=1, test=3, size=40, mapping=mapping)
        photos, stored = (torch.stack([torch.from_numpy(np.array(Image.open(root / folder / f"{i:04d}.png")))
                                       for i in range(3)]) for folder in ("testA", "testA_target"))
        answer = MAPPINGS[mapping](photos.permute(0, 3, 1, 2).float() / 255)
        assert torch.equal((answer * 255).round().to(torch.uint8).permute(0, 2, 3, 1), stored), mapping
        with Image.open(root / "preview.png") as preview:  # photo, gridded photo, (reshaped grid,) answer
            assert preview.size == (columns * 2 * (40 + 2) + 4, 3 * 2 * (40 + 2) + 4)

    # As the quality benchmark loads it (stored at 144 px, loaded at 128): the true answer taken down to
    # half resolution and back loses much (the outlines and stripes), unlike the cartoon of the same photos.
    root = build_demo_set(tmp_path / "oracle", train=1, test=8, size=144, mapping="lineart")
    photos, targets = load_heldout(root, 128)
    half = _median_psnr(_half_resolution(targets, 128), targets)
    assert half < 22
    cartoons = cartoonize((photos + 1) / 2) * 2 - 1
    assert _median_psnr(_half_resolution(cartoons, 128), cartoons) > 25
    assert _median_psnr(photos, targets) < half - 5  # and the photo itself is far from its answer
