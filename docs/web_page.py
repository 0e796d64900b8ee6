"""The README's picture of scan-web (``docs/web_page.png``): the page in headless Chromium, driven as
``tests/test_web.py`` drives it, after translating the astronaut with a trained model and the
``hull-seamless`` mask. The model picker shows the file's stem.

Usage (Debian's ``chromium`` and the dev extra's Playwright, as for the browser test):
    python docs/web_page.py demo_output/model.pt docs/web_page.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright import sync_api
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser test's Chromium flags

from test_web import CHROMIUM_ARGS, find_chromium  # noqa: E402

from scan import web  # noqa: E402
from scan.outputs import atomic_write  # noqa: E402

RESULT_SHOWN = ("() => { const img = document.querySelector('#result img');"
                " return img !== null && img.complete && img.naturalWidth > 0; }")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a trained model file (make demo's model.pt)")
    parser.add_argument("out", type=Path, help="the picture to write (PNG)")
    parser.add_argument("--mask", default="hull-seamless", help="the paste-back mask to pick on the page")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("error: no Chromium here (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(args.model, work / "demo.pt")  # the picker names it "demo", whatever the file's path
        Image.fromarray(data.astronaut()).save(work / "astronaut.png")
        app = web.start(web.build_parser().parse_args(["--checkpoint", str(work / "demo.pt"),
                                                        "--port", str(free_port())]), block=False)
        try:
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1200, "height": 1000})
                page.goto(app.local_url)
                page.set_input_files("#photo input[type=file]", str(work / "astronaut.png"))
                page.wait_for_selector("#photo img", timeout=30_000)
                page.check(f"#mask input[value='{args.mask}']")
                page.click("#translate")
                page.wait_for_function(RESULT_SHOWN, timeout=60_000)
                print(page.input_value("#summary textarea"))
                page.screenshot(path=str(work / "page.png"), full_page=True)
                browser.close()
        finally:
            app.close()
        shown = Image.open(work / "page.png").convert("RGB")
    shown = shown.resize((900, round(shown.height * 900 / shown.width)), Image.Resampling.LANCZOS)
    atomic_write(args.out, lambda tmp: shown.quantize(256).save(tmp, optimize=True))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
