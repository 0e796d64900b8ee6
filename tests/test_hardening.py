"""The library side of the error policy: atomic writes, output plans, what translate() accepts, NaN,
devices, and huge photos. The command-line side is the table in ``test_bad_inputs.py``."""

from __future__ import annotations

import errno
import io
import os
import signal
import threading

import numpy as np
import pytest
import torch
from kornia.geometry.transform import warp_affine
from PIL import Image
from skimage import data

import scan
import scan.align.landmarks as detection_module
from scan.align import (
    detect_faces,
    footprint_box,
    paste_back,
    rounded_square_mask,
    warp_from_crops,
    warp_to_crops,
)
from scan.errors import DeviceError, InputError, UserError, each_carrying_on, one_line, run_command
from scan.imageio import load_image, pil_to_model
from scan.outputs import OutputError, OutputPlan, atomic_write, output_stems, save_image
from scan.strips import heatmap
from scan.translator import NonFiniteOutputError, Translator, resolve_device


@pytest.fixture(scope="module")
def translator() -> Translator:
    torch.manual_seed(0)
    return Translator(scan.create_model("tiny"), device="cpu")


# ------------------------------------------------------------------------------- atomic writes
def test_a_write_that_fails_half_way_keeps_the_old_file(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"the old result")

    def disk_full(tmp):
        tmp.write_bytes(b"half a PN")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="cannot write .*result.png: No space left on device"):
        atomic_write(target, disk_full)
    assert target.read_bytes() == b"the old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.png"]  # no temporary file left


def test_atomic_image_write_has_the_format_and_mode_of_a_plain_save(tmp_path):
    image = Image.fromarray(data.astronaut()[:32, :32])
    save_image(image, tmp_path / "a.jpg")
    image.save(tmp_path / "plain.jpg")
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    assert (tmp_path / "a.jpg").stat().st_mode == (tmp_path / "plain.jpg").stat().st_mode


def test_output_plan_refuses_inputs_collisions_and_existing_files(tmp_path):
    photo = tmp_path / "me.png"
    photo.write_bytes(b"photo")
    (tmp_path / "old.png").write_bytes(b"old")
    plan = OutputPlan(inputs=[photo])
    with pytest.raises(InputError, match="is the input"):
        plan.claim(tmp_path / "sub" / ".." / "me.png")
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        plan.claim(tmp_path / "old.png")
    plan.claim(tmp_path / "new.png", source="a.jpg")
    with pytest.raises(InputError, match="two outputs of this run would get this name .from a.jpg and b.jpg"):
        plan.claim(tmp_path / "new.png", source="b.jpg")
    overwriting = OutputPlan(inputs=[photo], overwrite=True)
    assert overwriting.claim(tmp_path / "old.png") == tmp_path / "old.png"
    with pytest.raises(InputError, match="is the input"):
        overwriting.claim(photo)  # not even with overwrite


def test_output_stems_keep_relative_paths_and_split_shared_stems(tmp_path):
    files = [tmp_path / n for n in ("face.jpg", "face.png", "solo.jpg", "s1/p.png", "s2/p.png")]
    stems = {str(f.relative_to(tmp_path)): str(s) for f, s in output_stems(files, tmp_path).items()}
    assert stems == {"face.jpg": "face.jpg", "face.png": "face.png", "solo.jpg": "solo", "s1/p.png": "s1/p",
                     "s2/p.png": "s2/p"}


# -------------------------------------------------------------------------------- error policy
def test_run_command_turns_errors_into_one_line_and_a_status(capsys):
    def fail(error):
        def body():
            raise error
        return body

    assert run_command(fail(InputError("x.png: no face found"))) == 2
    assert capsys.readouterr().err == "error: x.png: no face found\n"
    assert run_command(fail(KeyError("oops"))) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError") and "--debug" in err and err.count("\n") == 1
    with pytest.raises(InputError):
        run_command(fail(InputError("shown with its traceback")), debug=True)


def test_scan_s_message_on_several_lines_keeps_them_all_on_its_one_line():
    # scan's own message names a file whose name holds a newline: all of it is kept
    assert one_line(InputError("in/new\nline.png: no face found")) == "in/new line.png: no face found"
    assert one_line(ValueError("torch's first line\n  pages of compiler output")) == "torch's first line"
    assert len(one_line(ValueError("x" * 5000))) == 600


@pytest.mark.parametrize(("sent", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_a_command_as_ctrl_c_does_cleaning_up_on_the_way(tmp_path, capsys, sent, code):
    before = signal.getsignal(sent)

    def writes_then_is_killed():
        def write(tmp):
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), sent)  # raised here, in the middle of the write
        atomic_write(tmp_path / "out.png", write)
        return 0

    assert run_command(writes_then_is_killed) == code
    assert capsys.readouterr().err == f"error: stopped by {signal.Signals(sent).name}\n"
    assert list(tmp_path.iterdir()) == []  # the temporary file went with it
    assert signal.getsignal(sent) is before  # the command's handler is gone with the command


def test_ctrl_c_is_one_error_line_and_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted) == 130
    assert capsys.readouterr().err == "error: interrupted (Ctrl-C)\n"


def test_during_training_sigterm_is_left_to_lightning_and_sighup_joins_it(capsys):
    """Lightning's SIGTERM handler calls the one it replaced (the command's) after its own, and stops
    the run gracefully at the next step: the command's handler must then raise nothing."""
    stops: list[int] = []

    def body():
        ours = signal.getsignal(signal.SIGTERM)

        def lightning(signum, frame):  # as pytorch_lightning's _HandlersCompose: its own, then the previous
            stops.append(signum)
            ours(signum, frame)

        signal.signal(signal.SIGTERM, lightning)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)  # forwarded as SIGTERM, to the same graceful stop
        signal.signal(signal.SIGTERM, ours)  # Lightning's teardown restores what it replaced
        return 0

    assert run_command(body) == 0 and stops == [signal.SIGTERM, signal.SIGTERM]
    assert capsys.readouterr().err == ""


def test_a_full_disk_in_a_background_thread_prints_no_traceback(monkeypatch):
    shown: list[BaseException] = []  # what the hook before the command's is handed (it prints tracebacks)
    monkeypatch.setattr(threading, "excepthook", lambda args: shown.append(args.exc_value))

    def body():
        for error in (OSError(errno.ENOSPC, "No space left on device"), KeyError("a bug in a thread")):
            thread = threading.Thread(target=lambda e=error: (_ for _ in ()).throw(e))
            thread.start()
            thread.join()
        return 0

    assert run_command(body) == 0
    # The full disk is the command's to report (its own write fails too); anything else is shown as before.
    assert [type(e) for e in shown] == [KeyError]


def test_a_folder_run_lists_every_failure_with_its_input():
    def work(path):
        if path == "bad.png":
            raise InputError("the model's output is NaN/inf")  # a message that does not name the file
        if path == "named.png":
            raise InputError("named.png: no face found")
        if path == "bug.png":
            raise KeyError("oops")

    failures = each_carrying_on(["ok.png", "bad.png", "named.png", "bug.png"], work, lambda path: path)
    assert failures == ["bad.png: the model's output is NaN/inf", "named.png: no face found",
                        "bug.png: unexpected KeyError: 'oops' (rerun with --debug)"]


def test_one_line_takes_the_cause_out_of_a_dataloader_worker_traceback():
    message = ("Caught NoImagesError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise NoImagesError(...)\n'
               "scan.datasets.images.NoImagesError: data/trainA: no file could be decoded\n")
    assert one_line(UserError(message)) == "data/trainA: no file could be decoded"
    assert one_line(ValueError("first line\nsecond")) == "first line"


# ------------------------------------------------------------------- what translate() accepts
def test_translate_accepts_uint8_and_other_float_dtypes_the_same(translator):
    torch.manual_seed(1)
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    floats = pixels.float() / 127.5 - 1
    reference = translator.translate(floats).final
    assert torch.equal(translator.translate(pixels).final, reference)
    assert torch.allclose(translator.translate(floats.double()).final, reference)
    assert torch.allclose(translator.translate(floats.half()).final, reference, atol=0.02)
    assert translator.translate(floats[0]).final.shape == (1, 3, 64, 64)  # one (C, H, W) image
    model = scan.create_model("tiny")
    assert torch.equal(model.translate(pixels).final, model.translate(floats).final)


@pytest.mark.parametrize("images, error, message", [
    (torch.zeros(1, 3, 64, 64, dtype=torch.int64), TypeError, "uint8 images in .0, 255. or floats"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.bool), TypeError, "dtype torch.bool"),
    (torch.zeros(0, 3, 64, 64), ValueError, "at least one non-empty image"),
    (torch.full((1, 3, 64, 64), 200.0), ValueError, r"values in \[200, 200\] \(0-255 floats: pass uint8"),
    (torch.full((1, 3, 64, 64), float("nan")), ValueError, "NaN or inf"),
    (torch.zeros(1, 4, 64, 64), ValueError, r"shaped \(B, 3, H, W\)"),
    (np.zeros((64, 64, 3)), TypeError, "got ndarray"),
])
def test_translate_says_what_it_expects(translator, images, error, message):
    with pytest.raises(error, match=message):
        translator.translate(images)
    if isinstance(images, torch.Tensor):
        with pytest.raises(error, match=message):
            scan.create_model("tiny").translate(images)


def test_pil_inputs_are_converted_exactly_like_the_file_loader(translator, tmp_path):
    """EXIF orientation, 16-bit depth and transparency: Translator(PIL) == Translator(load_image(file))."""
    rgb = data.astronaut()[100:228, 150:214]  # 128 x 64: rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = io.BytesIO()
    Image.fromarray(rgb).save(rotated, "JPEG", exif=exif.tobytes())
    sixteen = Image.fromarray(data.camera()[:64, :64].astype(np.uint16) * 257)  # 16-bit greyscale
    rgba = np.dstack([rgb[:64], np.where(np.arange(64) < 32, 0, 255).astype(np.uint8)[None].repeat(64, 0)])
    (tmp_path / "rotated.jpg").write_bytes(rotated.getvalue())
    sixteen.save(tmp_path / "deep.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    for name in ("rotated.jpg", "deep.png", "clear.png"):
        from_file = load_image(tmp_path / name)
        from_pil = Image.open(tmp_path / name)
        assert np.array_equal(np.asarray(translator(from_pil)), np.asarray(translator(from_file))), name
        assert translator.aligned(from_pil).image.size == from_file.size, name
    assert load_image(tmp_path / "rotated.jpg").size == (128, 64)  # the orientation was applied
    assert np.asarray(load_image(tmp_path / "deep.png")).max() > 200  # rescaled, not clipped to 255 -> white
    assert np.asarray(load_image(tmp_path / "clear.png"))[0, 0].tolist() == [255, 255, 255]  # on white


# --------------------------------------------------------------------------------------- NaN
def test_a_model_with_nan_weights_is_an_error_not_a_picture():
    model = scan.create_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="NaN/inf"):
        Translator(model, device="cpu")(Image.fromarray(data.astronaut()[:64, :64]))


def test_heatmap_survives_nan():
    alpha = torch.tensor([[[float("nan"), 0.0], [1.0, float("inf")]]])
    colours = heatmap(alpha)
    assert torch.isfinite(colours).all()
    assert torch.equal(colours[:, 0, 0], heatmap(torch.zeros(1, 1, 1))[:, 0, 0])  # NaN shows as 0


# ------------------------------------------------------------------------------------- devices
def test_unavailable_devices_are_one_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="'banana' is not a device name; available here: cpu"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="'cuda:3' is not available on this machine; available: cpu"):
            resolve_device("cuda:3")


# ---------------------------------------------------------------------------------- huge photos
@pytest.mark.slow
def test_large_photos_are_searched_on_a_smaller_copy(monkeypatch):
    """Detecting on a copy at most MAX_DETECT_SIDE long finds the same face, in full-size pixels."""
    photo = data.astronaut()
    full = detect_faces(photo, "dlib")[0]
    monkeypatch.setattr(detection_module, "MAX_DETECT_SIDE", 300)
    small = detect_faces(photo, "dlib")[0]
    assert np.abs(small.landmarks - full.landmarks).mean() < 3.0  # pixels, in a 512-px photo
    assert detect_faces(np.zeros((1, 1, 3), np.uint8), "dlib") == []  # too small to hold a face


def test_paste_back_touches_only_the_crops_footprint_and_matches_a_full_frame_paste():
    torch.manual_seed(0)
    photo = pil_to_model(Image.fromarray(data.astronaut()))[0]
    size, angle = 64, 0.3
    linear = 0.5 * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    matrices = np.concatenate([linear, np.array([[-80.0], [-20.0]])], axis=1)[None]
    crops = torch.rand(1, 3, size, size) * 2 - 1
    masks = rounded_square_mask(size)
    out = paste_back(photo, crops, matrices, masks)
    # The reference: warp and blend over the whole frame.
    warped = warp_from_crops(crops, matrices, *photo.shape[-2:])[0]
    mask = warp_from_crops(masks[None], matrices, *photo.shape[-2:])[0].clamp(0, 1)
    reference = torch.where(mask > 0, mask * warped + (1 - mask) * photo, photo)
    assert torch.allclose(out, reference, atol=1e-4)  # float rounding of the shifted matrix; 1/255 is 8e-3
    x0, y0, x1, y1 = footprint_box(matrices, size, *photo.shape[-2:])
    outside = torch.ones(photo.shape[-2:], dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(out[:, outside], photo[:, outside])
    assert (x1 - x0) * (y1 - y0) < 0.25 * photo.shape[-1] * photo.shape[-2]  # much less than the photo
    assert footprint_box(matrices + np.array([[[0, 0, 1e4], [0, 0, 0]]]), size, 512, 512) is None  # off the photo


@pytest.mark.parametrize("shift", [(-80.0, -20.0), (60.0, -20.0), (-330.0, 10.0)],
                         ids=["inside", "over-the-left-edge", "mostly-outside"])
def test_crops_cut_from_the_read_region_equal_crops_of_the_whole_photo(shift):
    pixels = torch.from_numpy(data.astronaut()).permute(2, 0, 1).contiguous()
    photo = pixels.float() / 127.5 - 1
    linear = 0.5 * np.array([[np.cos(0.3), np.sin(0.3)], [-np.sin(0.3), np.cos(0.3)]])
    matrices = np.concatenate([linear, np.array([[shift[0]], [shift[1]]])], axis=1)[None]
    whole = warp_affine(photo[None], torch.from_numpy(matrices).float(), (64, 64), mode="bilinear",
                        padding_mode="reflection", align_corners=True)
    assert torch.allclose(warp_to_crops(photo, matrices, 64), whole, atol=1e-4)
    assert torch.allclose(warp_to_crops(pixels, matrices, 64), whole, atol=1e-4)  # uint8 in, [-1, 1] out
    uint8_result = paste_back(pixels, whole, matrices, rounded_square_mask(64))
    float_result = paste_back(photo, whole, matrices, rounded_square_mask(64))
    assert uint8_result.dtype == torch.uint8
    assert (uint8_result.float() / 127.5 - 1 - float_result).abs().max() <= 1 / 127.5


def test_an_image_without_pixels_is_an_input_error_not_a_black_image():
    from scan.errors import InputError

    translator = Translator(scan.create_model("tiny"), device="cpu")
    for size in ((0, 0), (64, 0)):
        with pytest.raises(InputError, match=rf"an image of {size[0]}x{size[1]} px: no pixels"):
            translator.portrait(Image.new("RGB", size))
        with pytest.raises(InputError, match="no pixels"):
            translator.aligned(Image.new("RGB", size))
