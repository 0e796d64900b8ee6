"""Finding and decoding images robustly: what real folders of selfies and scraped art contain."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from scan.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "NoImagesError",
    "find_images",
    "load_image",
    "to_rgb",
    "check_image",
    "report_bad_files",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class NoImagesError(InputError):
    """A folder that should hold images has no usable one."""


def find_images(
    folder: str | os.PathLike[str], recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS,
    what: str = "image files",
) -> list[Path]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted for reproducibility.

    Args:
        folder: where to look.
        recursive: also look in sub-folders.
        extensions: the suffixes that count (e.g. images and videos, for a folder of both).
        what: what the files are called in the error message.

    Raises:
        NoImagesError: ``folder`` does not exist, or holds no file with one of ``extensions``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NoImagesError(f"{folder}: no such folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in extensions and p.is_file())
    if not files:
        raise NoImagesError(f"{folder}: no {what} ({', '.join(extensions)})")
    return files


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as stored to 8-bit RGB: EXIF orientation applied, 16-bit and float images
    rescaled (not clipped), palette and alpha composited on white, CMYK converted."""
    if image.getexif().get(0x0112, 1) != 1:  # an EXIF orientation other than "as stored"
        image = ImageOps.exif_transpose(image)
    return _mode_to_rgb(image)


def _mode_to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB, done correctly for the modes real files use."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit greyscale: rescale to 8 bits instead of clipping (PIL's convert clips).
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            top = 65535.0
        elif image.mode == "I":  # PIL's 32-bit int mode; 16-bit PNGs often open as it
            top = 65535.0 if array.max() > 255 else 255.0
        else:  # "F": floats, either in [0, 1] or in some larger range
            top = max(float(array.max()), 1.0)
        array = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")  # a palette may carry transparency
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Composite transparency on white rather than keeping whatever colour hides under alpha = 0.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file to RGB with its EXIF orientation applied.

    16-bit and float images are rescaled to 8 bits, palette and alpha images are composited on white,
    CMYK is converted. PIL's decompression-bomb guard stays on.

    Raises:
        OSError, ValueError, Image.DecompressionBombError: the file is not a decodable image.
    """
    with Image.open(path) as image:
        image.load()  # decode now, inside the `with`, so truncation surfaces here
        # 16-bit RGB PNGs come back from PIL as 8-bit RGB already; other modes need care.
        return to_rgb(image)


def check_image(path: Path) -> str | None:
    """Cheap validity check (header, plus PIL's ``verify``); the reason a file is bad, or None."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError as e:
        return f"decompression bomb guard: {e}"
    except Exception as e:  # PIL raises many types for garbage input
        return f"{type(e).__name__}: {e}"
    return None


def report_bad_files(bad: Iterable[tuple[Path, str]], where: str) -> None:
    """One warning listing every skipped file with its reason."""
    bad = list(bad)
    if bad:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in bad)
        warnings.warn(f"{where}: skipped {len(bad)} unreadable file(s):\n{lines}", stacklevel=2)
