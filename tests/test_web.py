"""scan-web, the page to try a model: its API driven with gradio_client against a server on a free
local port, its command line, and a real browser (Debian's Chromium, through Playwright) uploading
the astronaut and waiting for the result."""

import os
import re
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

import scan
from scan.errors import UserError
from scan.outputs import short_labels
from scan.translator import Translator

gr = pytest.importorskip("gradio", reason='scan-web needs the web extra: pip install -e ".[web]"')
from gradio_client import Client, handle_file  # noqa: E402  (after the skip: part of the same extra)
from gradio_client.exceptions import AppError  # noqa: E402

from scan import web  # noqa: E402

# Gradio's queue uses pandas options that pandas 3 deprecates: its noise, not ours.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 3_000_000  # the astronaut and Chromium's synthetic camera (1920x1440) pass, 2000x2000 does not


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny models (different weights) and the inputs: the astronaut, a faceless image, a file
    that is no image, an image over the pixel limit."""
    folder = tmp_path_factory.mktemp("web")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        scan.save_model(scan.create_model("tiny"), folder / name)
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.png")
    Image.new("RGB", (256, 256), (128, 128, 128)).save(folder / "grey.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    Image.new("RGB", (2000, 2000), (200, 100, 50)).save(folder / "big.png")
    return folder


@pytest.fixture(scope="module")
def server(files):
    """scan-web on a free local port, as `scan-web --checkpoint a.pt --checkpoint b.pt` starts it."""
    args = web.build_parser().parse_args(["--checkpoint", str(files / "a.pt"), "--checkpoint", str(files / "b.pt"),
                                          "--port", str(free_port()), "--max-pixels", str(MAX_PIXELS)])
    app = web.start(args, block=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def client(server, files):
    return Client(server.local_url, download_files=str(files / "downloads"), verbose=False)


def translate(client, files, photo, model="a.pt", direction="a2b", crop="ffhq", faces="largest", mask="square",
              paste=True):
    # The picker offers each model by its file's stem (never the server's path); other names as given.
    label = {"a.pt": "a", "b.pt": "b"}.get(model, model)
    return client.predict(handle_file(str(files / photo)), label, direction, crop, faces, mask, paste,
                          api_name="/translate")


def page_error(client, files, photo, **options) -> str:
    with pytest.raises(AppError) as caught:
        translate(client, files, photo, **options)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.slow
def test_the_page_translates_the_astronaut_like_the_translator(client, files):
    result, strip, summary = translate(client, files, "astronaut.png")
    photo = skdata.astronaut()
    cartoon = np.asarray(Image.open(result))
    assert cartoon.shape == photo.shape
    changed = np.any(cartoon != photo, axis=-1)
    assert changed[60:220, 150:330].mean() > 0.5  # the face
    assert not changed[:40, :40].any() and not changed[-40:, -40:].any()  # far from it: bit for bit (a PNG)
    # A thin layer: the same picture as Translator.portrait gives by hand.
    expected = Translator.from_checkpoint(files / "a.pt").portrait(Image.fromarray(photo)).image
    assert np.abs(cartoon.astype(int) - np.asarray(expected).astype(int)).max() <= 1
    # The stage strip: aligned crop, stage 1, stage 2, alpha 2 (4 tiles of 192 px), and the time taken.
    assert Image.open(strip).size == (4 + 4 * (192 + 4), 4 + 192 + 16 + 4)
    assert re.fullmatch(r"1 face\(s\) translated a2b by a in \d+\.\d\d s \(512x512 px\)", summary)


def test_the_model_picker_and_the_options_reach_the_translator(client, files):
    # An aligned crop (crop: none) in the other direction, through each model: each model's own answer.
    crop = skdata.astronaut()[40:296, 130:386]
    Image.fromarray(crop).save(files / "crop.png")
    results = {}
    for model in ("a.pt", "b.pt"):
        result, _, summary = translate(client, files, "crop.png", model=model, direction="b2a", crop="none")
        results[model] = np.asarray(Image.open(result))
        expected = Translator.from_checkpoint(files / model, direction="b2a").aligned(Image.fromarray(crop)).image
        assert np.abs(results[model].astype(int) - np.asarray(expected).astype(int)).max() <= 1
        assert summary.startswith("the aligned crop translated b2a by ")
    assert results["a.pt"].shape == crop.shape
    assert not np.array_equal(results["a.pt"], results["b.pt"])


def test_the_picker_shows_short_names_never_paths(files):
    assert short_labels([files / "a.pt", files / "b.pt"]) == ["a", "b"]
    two_runs = [Path("/tmp/x/run1/model.pt"), Path("/tmp/x/run2/model.pt")]
    assert short_labels(two_runs) == ["run1/model", "run2/model"]
    models = web.Models([files / "a.pt"], device="cpu", landmarks="dlib")
    assert models.labels == ["a"] and models.get(str(files / "a.pt"), "a2b") is models.get("a", "a2b")
    with pytest.raises(UserError, match="model must be one of a"):
        models.get("c", "a2b")


def test_mistakes_are_one_line_on_the_page(client, files):
    assert page_error(client, files, "broken.png") == "the upload is not a readable image (UnidentifiedImageError)"
    assert page_error(client, files, "grey.png").startswith("no face found")
    assert page_error(client, files, "big.png") == "the image is 2000x2000 px (4.0 MP); this page takes at most 3.0 MP"


def test_a_bug_is_one_line_on_the_page_and_its_traceback_stays_in_the_log(client, files, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail\nin /server/path")

    monkeypatch.setattr(web, "translate_photo", broken)
    message = page_error(client, files, "grey.png")
    assert message == "unexpected RuntimeError (a bug; the server's log has the traceback)"
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_the_page_takes_only_the_models_and_options_it_offers(client, files):
    # A path typed into the API is not a model on offer, whatever file it names.
    for options in ({"model": "b.pt/../a.pt"}, {"model": str(files / "a.pt")}, {"direction": "sideways"},
                    {"crop": "../../etc"}):
        with pytest.raises(AppError, match="not in the list of choices"):
            translate(client, files, "grey.png", **options)


def test_the_server_listens_on_localhost_with_a_bounded_queue(server):
    assert urlparse(server.local_url).hostname == "127.0.0.1"
    assert server._queue.max_size == 8 and server._queue.default_concurrency_limit == 1


def test_the_command_line(files, capsys):
    args = web.build_parser().parse_args(["--checkpoint", "m.pt"])
    assert (args.host, args.port, args.share, args.checkpoint) == ("127.0.0.1", 7860, False, [Path("m.pt")])
    assert web.build_parser().parse_args(["--checkpoint", "m.pt", "--share", "false"]).share is False
    with pytest.raises(SystemExit):
        web.build_parser().parse_args(["--checkpoint", "m.pt", "--share", "maybe"])
    capsys.readouterr()
    # A missing checkpoint: one line, exit status 2, before anything listens.
    assert web.main(["--checkpoint", str(files / "missing.pt"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.pt" in err
    assert web.main(["--checkpoint", str(files / "a.pt"), "--checkpoint", str(files / "a.pt")]) == 2
    assert "named twice" in capsys.readouterr().err


@pytest.mark.parametrize(("host", "reason"), [
    ("192.0.2.1", "Cannot assign requested address (--host: an address of this machine"),  # TEST-NET-1
    ("no.such.host.invalid", "not a host name or address this machine can resolve (--host)"),
])
def test_an_unusable_host_is_named_not_blamed_on_the_port(host, reason):
    """What Gradio reports as "cannot find empty port" for any address it cannot bind, told apart."""
    found = web._why_not_served(host, free_port(), OSError("Cannot find empty port in range"))
    assert reason in found and "port is taken" not in found
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert web._why_not_served("127.0.0.1", port, OSError("x")) == "the port is taken (choose another with --port)"


@pytest.mark.slow
def test_a_taken_port_is_one_line(files, server, capsys):
    taken = urlparse(server.local_url).port  # the test server's
    assert web.main(["--checkpoint", str(files / "a.pt"), "--port", str(taken)]) == 2
    assert capsys.readouterr().err == f"error: cannot serve on 127.0.0.1:{taken}: the port is taken (choose another " \
                                      "with --port)\n"


def find_chromium() -> str | None:
    for name in (os.environ.get("SCAN_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


# Without these Chromium keeps trying to reach Google's servers (updates, sync, field trials).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # a synthetic camera, allowed without asking: the webcam path runs too
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.mark.slow
def test_a_browser_uploads_the_astronaut_and_sees_the_result(server, files, tmp_path):
    """Headless Chromium: the page loads (nothing fetched from outside this machine), the astronaut is
    uploaded, Translate clicked, the result shown; then a faceless image gives its one-line error,
    and a photo taken with the (synthetic) webcam is translated. (docs/web_page.py takes the README's
    picture the same way, on a trained model.)"""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium here: .ci/run installs Debian's with apt-get (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is in the dev extra")
    outside: list[str] = []

    def only_this_machine(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.route("**/*", only_this_machine)
            page.goto(server.local_url)
            page.set_input_files("#photo input[type=file]", str(files / "astronaut.png"))
            page.wait_for_selector("#photo img", timeout=30_000)  # the upload is shown
            began = time.perf_counter()
            page.click("#translate")
            page.wait_for_function(
                "() => { const img = document.querySelector('#result img');"
                " return img !== null && img.complete && img.naturalWidth > 0; }", timeout=60_000)
            round_trip = time.perf_counter() - began
            assert page.eval_on_selector("#result img", "img => [img.naturalWidth, img.naturalHeight]") == [512, 512]
            assert page.eval_on_selector("#stages img", "img => img.naturalWidth") > 0
            assert "1 face(s) translated a2b" in page.input_value("#summary textarea")
            screenshot = tmp_path / "web_page.png"
            page.screenshot(path=str(screenshot), full_page=True)

            page.set_input_files("#photo input[type=file]", str(files / "grey.png"))
            page.click("#translate")
            toast = page.wait_for_selector("text=no face found", timeout=30_000)
            assert toast is not None and "Traceback" not in page.content()

            # The webcam: Chromium's synthetic camera (no face in it), translated as an aligned crop.
            page.click("#photo button[aria-label='Capture from camera']")
            page.click("#photo button:has-text('Click to Access Webcam')")
            page.wait_for_function("() => { const v = document.querySelector('#photo video');"
                                   " return v !== null && v.readyState >= 2 && v.videoWidth > 0; }",
                                   timeout=30_000)  # the stream plays: a capture now holds a frame
            page.click("#photo button[aria-label='capture photo']")
            page.wait_for_selector("#photo img", timeout=30_000)
            page.check("#crop input[value='none']")
            page.click("#translate")
            page.wait_for_function("() => document.querySelector('#summary textarea').value.startsWith('the aligned')",
                                   timeout=60_000)
            captured = page.input_value("#summary textarea")
        finally:
            browser.close()
    assert outside == [], f"the page fetched from outside this machine: {outside}"
    assert Image.open(screenshot).size[0] == 1200
    assert re.fullmatch(r"the aligned crop translated a2b by .* in \d+\.\d\d s \(\d+x\d+ px\)", captured), captured
    print(f"\nround trip (click to result shown): {round_trip:.2f} s")


@pytest.mark.slow
def test_sigterm_closes_the_server_and_deletes_its_uploads_and_results(files, tmp_path):
    """What a service manager sends: exit status 143, and nothing left in Gradio's temporary folder
    (uploads, results and the examples' copies, all readable by every user of the machine)."""
    import signal
    import subprocess
    import sys

    cache = tmp_path / "gradio"
    cache.mkdir()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "scan.web", "--checkpoint", str(files / "a.pt"), "--port",
                                str(port), "--landmarks", "dlib"], env=dict(os.environ, GRADIO_TEMP_DIR=str(cache)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("scan-web: serving a on "), process.stderr.read()
        client = Client(f"http://127.0.0.1:{port}/", download_files=str(tmp_path / "downloads"), verbose=False)
        client.predict(handle_file(str(files / "astronaut.png")), "a", "a2b", "ffhq", "largest", "square", True,
                       api_name="/translate")
        assert len([p for p in cache.rglob("*") if p.is_file()]) >= 3  # the upload, the result, the strip
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 143
    assert [p for p in cache.rglob("*") if p.is_file()] == []
