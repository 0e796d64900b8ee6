"""``scan-web``: a web page to try trained models, a thin Gradio layer over :class:`~scan.translator.Translator`.

    scan-web --checkpoint model.pt                       # http://127.0.0.1:7860
    scan-web --checkpoint a.pt --checkpoint b.pt --port 8000
    python -m scan.web --checkpoint demo_output/model.pt

Upload a photo (or take one with the webcam), pick the options, see the result, stage strip and time.

Safe to leave running on a shared machine: it listens on localhost unless ``--host`` says otherwise;
images over ``--max-pixels`` are refused (their header is read, never the pixels) and uploads over
50 MB too; at most ``--queue-size`` requests wait, one runs at a time; the page chooses only among
the options and models the command line offered (no file system path is taken from it); a mistake
(no face, an unreadable file) is one line on the page, a bug is one line too (its traceback goes to
the server's log only). Gradio needs the ``web`` extra: ``pip install -e ".[web]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import html
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from scan.align.landmarks import BACKENDS, FACE_MODES, NoFaceError
from scan.align.paste import blend_kinds
from scan.errors import (
    InputError,
    UserError,
    add_debug_flag,
    command_errors,
    int_range,
    one_line,
    positive_int,
    true_or_false,
)
from scan.imageio import load_image
from scan.model import DIRECTIONS
from scan.outputs import save_image
from scan.portrait import CROP_TEMPLATES, PortraitOptions
from scan.runtime import MAX_THREADS, budget_threads
from scan.strips import stage_strip
from scan.web_models import Models, check_choice

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["main", "build_parser", "Models", "translate_photo", "build_app", "start", "close", "WebResult",
           "DEFAULT_MAX_PIXELS", "CROP_CHOICES"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 24_000_000  # a 24 MP photo; the pipeline itself copes with more, a shared server need not
MAX_UPLOAD = "50mb"  # Gradio refuses bigger uploads before they reach the disk
CROP_CHOICES = CROP_TEMPLATES  # "none": the image is an aligned crop already (infer.py --align none)
# System fonts only: Gradio's default theme fetches its fonts from Google, which a machine without
# internet (or a user who does not want to be tracked) cannot reach.
SANS = ("ui-sans-serif", "system-ui", "DejaVu Sans", "sans-serif")
MONO = ("ui-monospace", "DejaVu Sans Mono", "monospace")


class WebDependencyError(UserError, ImportError):
    """Gradio is not installed (the ``web`` extra)."""


def _import_gradio() -> Any:
    # Gradio reads this when it is imported: no usage statistics, no version check over the network.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise WebDependencyError('scan-web needs Gradio: pip install -e ".[web]" (make installs it)') from None
    return gradio


@dataclass
class WebResult:
    """What the page shows: the result image, the stage strip and a one-line summary."""

    image: Image.Image
    strip: Image.Image
    summary: str


def _open_photo(path: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """Decode an uploaded photo after checking its pixel count from the header alone.

    Raises:
        InputError: not a readable image, or more than ``max_pixels`` pixels.
    """
    # The messages never name the file: its path is the server's, its name the visitor's.
    try:
        with Image.open(path) as header:  # reads the header only
            width, height = header.size
    except Exception as e:  # PIL raises many types for a bad file
        raise InputError(f"the upload is not a readable image ({type(e).__name__})") from None
    if width * height > max_pixels:
        raise InputError(f"the image is {width}x{height} px ({width * height / 1e6:.1f} MP); this page takes at most "
                         f"{max_pixels / 1e6:.1f} MP")
    try:
        return load_image(path)
    except Exception as e:
        raise InputError(f"the upload is not a readable image ({type(e).__name__})") from None


def translate_photo(
    models: Models,
    photo: str | os.PathLike[str] | None,
    model: str,
    direction: str = "a2b",
    crop: str = "ffhq",
    faces: str = "largest",
    mask: str = "square",
    paste: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> WebResult:
    """What the page's button does: one photo through :meth:`Translator.portrait` (or
    :meth:`Translator.aligned` for ``crop="none"``), timed.

    Args:
        models: the models on offer.
        photo: the uploaded file (a path in Gradio's upload cache), or ``None`` when nothing was given.
        model: a label of ``models``.
        direction: as for :class:`Translator`.
        crop, faces, mask, paste: the portrait's options (:class:`~scan.portrait.PortraitOptions`; ``crop``
            is its ``align``: a crop template, or ``none`` for an image that is an aligned crop already).
        max_pixels: larger images are refused before they are decoded.

    Returns:
        The result, the stage strip and a summary (faces, seconds, model).

    Raises:
        UserError: no photo, a bad option, an unreadable or too large image, no face found.
    """
    if photo is None:
        raise InputError("upload a photo or take one with the webcam first")
    check_choice("crop", crop, CROP_CHOICES)  # named as the page names it; the options check the rest
    options = PortraitOptions(align=crop, paste=paste, faces=faces, landmarks=models.landmarks, mask=mask)
    translator = models.get(model, direction)
    model = models.label(model)
    began = time.perf_counter()
    image = _open_photo(photo, max_pixels)
    try:
        result = translator.portrait(image, options)
    except NoFaceError:
        raise InputError("no face found (for an aligned crop, choose crop template: none)") from None
    seconds = time.perf_counter() - began
    what = "the aligned crop" if crop == "none" else f"{len(result.faces)} face(s)"
    summary = f"{what} translated {direction} by {model} in {seconds:.2f} s ({image.width}x{image.height} px)"
    return WebResult(result.image, stage_strip(result), summary)


def _examples(folder: Path) -> list[list[str]]:
    """The example inputs, written into ``folder``: scikit-image's astronaut (a portrait) and three
    held-out photos drawn as the offline demo set draws them (aligned crops already)."""
    from skimage import data as skdata

    from scan.datasets.demo import build_demo_set

    astronaut = save_image(Image.fromarray(skdata.astronaut()), folder / "astronaut.png")
    demo = build_demo_set(folder / "demo_set", train=1, test=3)
    return [[str(astronaut), "ffhq"]] + [[str(p), "none"] for p in sorted((demo / "testA").glob("*.png"))]


def _one_line_upload_errors(gr: Any, preprocess: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap an image component's ``preprocess`` so that a bad upload is one line on the page.

    Gradio opens the uploaded file (its header only) before the handler runs, and would report a
    file that is no image as a bare "Error". (A subclass of ``gr.Image`` would do the same, but
    Gradio writes a ``.pyi`` stub beside the module of every component class it sees defined.)
    """

    def preprocess_reporting_one_line(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except Exception as e:
            raise gr.Error(f"the upload is not a readable image ({type(e).__name__})", print_exception=False) from None

    return preprocess_reporting_one_line


def build_app(models: Models, max_pixels: int = DEFAULT_MAX_PIXELS, examples_folder: Path | None = None,
              threads: int | None = None) -> gr.Blocks:
    """The page.

    Args:
        models: the models on offer (the model picker lists their labels).
        max_pixels: larger images are refused with a message.
        examples_folder: where the example inputs are written (default: a temporary folder, removed
            at exit).
        threads: CPU threads a translation keeps busy; ``None``: the CPUs idle when it starts.
    """
    gr = _import_gradio()
    if examples_folder is None:
        holder = tempfile.TemporaryDirectory(prefix="scan-web-")
        examples_folder = Path(holder.name)
    else:
        holder = None

    def run(photo: str | None, model: str, direction: str, crop: str, faces: str, mask: str,
            paste: bool) -> tuple[Image.Image, Image.Image, str]:
        budget_threads(threads)  # per request: the machine's load changes while the page is served
        try:
            result = translate_photo(models, photo, model, direction, crop, faces, mask, paste, max_pixels)
        except UserError as e:
            # Gradio renders the message as HTML: escape it.
            raise gr.Error(html.escape(one_line(e)), print_exception=False) from None
        except Exception as e:  # a bug: one line on the page, the traceback in the server's log
            log.exception("scan-web: translating failed")
            raise gr.Error(f"unexpected {type(e).__name__} (a bug; the server's log has the traceback)",
                           print_exception=False) from None
        return result.image, result.strip, result.summary

    # Uploads and results live in Gradio's cache folder: those over an hour old are deleted hourly,
    # all of them when the server stops.
    with gr.Blocks(title="scan: try a model", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# scan: try a model\nUpload a portrait (or take one with the webcam), then **Translate**. "
                    f"Images up to {max_pixels / 1e6:.1f} MP.")
        with gr.Row():
            model = gr.Dropdown(models.labels, value=models.labels[0], label="model", elem_id="model")
            direction = gr.Radio(list(DIRECTIONS), value=DIRECTIONS[0], label="direction", elem_id="direction")
            crop = gr.Radio(list(CROP_CHOICES), value="ffhq", label="crop template (none: an aligned crop)",
                            elem_id="crop")
            faces = gr.Radio(list(FACE_MODES), value="largest", label="faces", elem_id="faces")
            mask = gr.Radio(blend_kinds(), value="square", label="paste-back mask", elem_id="mask")
            paste = gr.Checkbox(value=True, label="paste back into the photo", elem_id="paste")
        with gr.Row():
            photo = gr.Image(type="filepath", sources=["upload", "webcam"], label="input", elem_id="photo")
            photo.preprocess = _one_line_upload_errors(gr, photo.preprocess)
            result = gr.Image(type="pil", format="png", label="result", interactive=False, elem_id="result")
        button = gr.Button("Translate", variant="primary", elem_id="translate")
        summary = gr.Textbox(label="time taken", interactive=False, elem_id="summary")
        strip = gr.Image(type="pil", format="png", label="stages",
                         interactive=False, elem_id="stages")
        gr.Examples(_examples(examples_folder), inputs=[photo, crop], label="examples")
        button.click(run, [photo, model, direction, crop, faces, mask, paste], [result, strip, summary],
                     api_name="translate")
    app._scan_examples = holder  # kept alive with the page; the folder goes when it does
    return app


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scan-web", description="A web page to try trained scan models (Gradio).")
    p.add_argument("--checkpoint", required=True, type=Path, action="append",
                   help="scan model file or training checkpoint; repeat it to offer several (a model picker)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int_range(1, 65535), default=7860)
    p.add_argument("--share", type=true_or_false, default=False, metavar="{true,false}",
                   help="also publish the page through a public gradio.live link (needs internet; default false)")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images (default: %(default)s)")
    p.add_argument("--queue-size", type=positive_int, default=8,
                   help="requests that may wait while one runs; more are turned away (default: %(default)s)")
    p.add_argument("--landmarks", choices=BACKENDS, default="auto")
    p.add_argument("--parsing-model", type=Path, default=None, metavar="FILE",
                   help="the face-parsing network (ONNX) for the 'parsing' mask (default: $SCAN_FACE_PARSING_MODEL)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=None, metavar="N",
                   help="CPU threads a translation keeps busy (default: all this process may use)")
    add_debug_flag(p)
    return p


def start(args: argparse.Namespace, block: bool = True, on_ready: Callable[[str], None] | None = None) -> gr.Blocks:
    """Load the models, build the page and serve it.

    Args:
        args: parsed by :func:`build_parser`.
        block: serve until interrupted; otherwise return once the server is up (tests).
        on_ready: called with the page's address once it is up.

    Raises:
        UserError: a bad checkpoint, device or landmark backend; Gradio missing; the port taken.
    """
    gr = _import_gradio()
    if args.parsing_model is not None:
        from scan.align.parsing import use_parsing_model

        use_parsing_model(args.parsing_model)
    models = Models(args.checkpoint, args.device, args.precision, args.landmarks)
    app = build_app(models, args.max_pixels, threads=args.threads)
    # One translation at a time (they share the models and the CPU/GPU); a bounded line behind it.
    app.queue(max_size=args.queue_size, default_concurrency_limit=1)
    if not _is_loopback(args.host):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the page", file=sys.stderr)
    theme = gr.themes.Default(font=list(SANS), font_mono=list(MONO))
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                   max_file_size=MAX_UPLOAD, show_error=False, ssr_mode=False, theme=theme, quiet=True,
                   footer_links=[])
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise InputError(f"cannot serve on {args.host}:{args.port}: {_why_not_served(args.host, args.port, e)}") \
            from None
    url = app.local_url or f"http://{args.host}:{args.port}/"
    print(f"scan-web: serving {', '.join(models.labels)} on {url} (Ctrl-C stops it)", flush=True)
    if on_ready is not None:
        on_ready(url)
    if block:
        try:
            app.block_thread()
        finally:
            close(app)
    return app


def _why_not_served(host: str, port: int, error: OSError) -> str:
    """What Gradio's "cannot find empty port" meant: found by binding the address ourselves."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, port))
    except socket.gaierror:
        return "not a host name or address this machine can resolve (--host)"
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return "the port is taken (choose another with --port)"
        return f"{e.strerror or e} (--host: an address of this machine, e.g. 127.0.0.1 or 0.0.0.0)"
    return one_line(error)


def close(app: gr.Blocks) -> None:
    """Stop the server and delete every upload, result and example copy it cached (Gradio's own close
    keeps them, in a shared temporary folder, readable by everyone)."""
    app.close()
    cached = {Path(f) for files in app.temp_file_sets for f in files}
    cached |= {Path(f) for block in app.blocks.values() for f in getattr(block, "keep_in_cache", ())}
    for path in cached:  # each in a folder of its own, named by its hash
        with contextlib.suppress(OSError):
            path.unlink()
            path.parent.rmdir()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a service manager): closed as on Ctrl-C (uploads deleted), exit 143; not dead at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with command_errors(args.debug) as status:
        start(args)
    return status.code


if __name__ == "__main__":
    sys.exit(main())
