"""Checking training folders for files that will not decode: what real folders of selfies and scraped
art contain.

Finding and decoding images is shared with inference and lives in :mod:`scan.imageio`; its names are
re-exported here, where training code has always found them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from scan.imageio import IMAGE_EXTENSIONS, NoImagesError, find_images, load_image, to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "NoImagesError",
    "find_images",
    "load_image",
    "to_rgb",
    "check_image",
    "report_bad_files",
]


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
