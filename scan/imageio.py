"""Images in and out of scan: finding and decoding image files, and converting between images as
people store them (files, PIL, ``uint8``) and as the networks see them (floats in ``[-1, 1]``).

Training (``scan.datasets``) and inference (the translator, ``infer.py``, ``scan-align``, the web
page) both read images through here, so a photo decodes the same way wherever it goes: EXIF
orientation applied, 16-bit and float images rescaled, transparency composited on white.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from scan.errors import InputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "NoImagesError",
    "find_images",
    "load_image",
    "to_rgb",
    "as_model_input",
    "uint8_to_model",
    "model_to_uint8",
    "pil_to_uint8",
    "pil_to_model",
    "model_to_pil",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class NoImagesError(InputError):
    """A folder that should hold images has no usable one."""


# ------------------------------------------------------------------------------------------ files


def find_images(
    folder: str | os.PathLike[str], recursive: bool = True, extensions: Sequence[str] = IMAGE_EXTENSIONS,
    what: str = "image files", skipped: list[str] | None = None,
) -> list[Path]:
    """Image files under ``folder`` (by extension, case-insensitive), sorted for reproducibility.

    The one folder walker of scan: every entry it cannot use is reported, never dropped unmentioned.

    Args:
        folder: where to look.
        recursive: also look in sub-folders, linked ones too (each folder once: no loops).
        extensions: the suffixes that count (e.g. images and videos, for a folder of both).
        what: what the files are called in the error message.
        skipped: where given, gets one ``"path: reason"`` line per entry that cannot be used: a
            sub-folder that cannot be read, a symlink that leads nowhere or in a loop, a folder reached a
            second time through a link, and a name with
            one of ``extensions`` that is no regular file (a folder, a pipe, a device).

    Raises:
        NoImagesError: ``folder`` does not exist, or holds no file with one of ``extensions``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NoImagesError(f"{folder}: no such folder")
    found: list[Path] = []
    problems: list[str] = []

    def unreadable(error: OSError) -> None:
        problems.append(f"{error.filename}: unreadable folder, skipped ({error.strerror or error})")

    visited: set[tuple[int, int]] = set()
    # Linked sub-folders are followed (data sets are often linked in); a folder reached a second time,
    # through a link back up (a loop) or a second link, is reported and not walked again.
    for directory, subfolders, names in os.walk(folder, onerror=unreadable, followlinks=True):
        try:
            status = os.stat(directory)
        except OSError as e:
            unreadable(e)
            subfolders.clear()
            continue
        if (status.st_dev, status.st_ino) in visited:
            problems.append(f"{directory}: a folder reached a second time (a link loop or a second link to it), "
                            "skipped")
            subfolders.clear()
            continue
        visited.add((status.st_dev, status.st_ino))
        if not recursive:
            subfolders.clear()
        for name in names + [d for d in subfolders if Path(d).suffix.lower() in extensions]:
            path = Path(directory) / name
            if path.suffix.lower() not in extensions:
                continue
            try:
                mode = path.stat().st_mode  # follows a symlink to its file
            except OSError as e:
                kind = "a symlink loop" if e.errno == errno.ELOOP else "a dangling symlink" if path.is_symlink() \
                    else "unreadable"
                problems.append(f"{path}: {kind}, skipped ({e.strerror or e})")
                continue
            if stat.S_ISREG(mode):
                found.append(path)
            else:
                problems.append(f"{path}: not a regular file (a folder, pipe or device), skipped")
    if skipped is not None:
        skipped.extend(sorted(problems))
    if not found:
        more = f"; {len(problems)} entr{'y' if len(problems) == 1 else 'ies'} skipped" if problems else ""
        raise NoImagesError(f"{folder}: no {what} ({', '.join(extensions)}){more}")
    return sorted(found)


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
        OSError, ValueError, Image.DecompressionBombError: the file is not a decodable image, or
            has no pixels (a side of 0, which a TIFF or a crafted PNG header can declare).
    """
    with Image.open(path) as image:
        if 0 in image.size:
            raise ValueError(f"an image of {image.width}x{image.height} px: no pixels")
        image.load()  # decode now, inside the `with`, so truncation surfaces here
        # 16-bit RGB PNGs come back from PIL as 8-bit RGB already; other modes need care.
        return to_rgb(image)


# ------------------------------------------------------------------------------------ conversions


def uint8_to_model(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``uint8`` in ``[0, 255]`` to floats in ``[-1, 1]``."""
    return x.to(dtype) / 127.5 - 1.0


def as_model_input(images: Tensor, channels: int = 3) -> Tensor:
    """Check and convert what a user passes as images to the float ``[-1, 1]`` batch the networks take.

    Accepted: ``uint8`` in ``[0, 255]`` (converted), or any float dtype in ``[-1, 1]`` (cast to
    float32); :math:`(B, C, H, W)` or one image :math:`(C, H, W)`. A float image in ``[0, 1]`` cannot
    be told apart from a dark one in ``[-1, 1]``: convert it with ``x * 2 - 1``.

    Raises:
        TypeError: not a tensor, or an integer / bool dtype other than ``uint8``.
        ValueError: wrong shape, empty, NaN/inf, or floats outside ``[-1, 1]`` (e.g. 0-255 floats).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"expected a tensor of images, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != channels:
        raise ValueError(f"expected images shaped (B, {channels}, H, W) or ({channels}, H, W), "
                         f"got {tuple(images.shape)}")
    if images.numel() == 0:
        raise ValueError(f"expected at least one non-empty image, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return uint8_to_model(images)
    if not images.is_floating_point():
        raise TypeError(f"expected uint8 images in [0, 255] or floats in [-1, 1], got dtype {images.dtype}")
    images = images.float()
    low, high = images.aminmax()
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise ValueError("the images contain NaN or inf values")
    if low < -1.001 or high > 1.001:
        hint = " (0-255 floats: pass uint8, or x / 127.5 - 1)" if high > 2 else ""
        raise ValueError(f"expected floats in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}")
    return images


def model_to_uint8(x: Tensor) -> Tensor:
    """Floats in ``[-1, 1]`` to ``uint8`` (rounded, clamped)."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def pil_to_uint8(image: Image.Image) -> Tensor:
    """A PIL image to a ``(3, H, W)`` RGB ``uint8`` tensor."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def pil_to_model(image: Image.Image) -> Tensor:
    """A PIL image to a ``(1, 3, H, W)`` RGB float tensor in ``[-1, 1]``."""
    return uint8_to_model(pil_to_uint8(image).unsqueeze(0))


def model_to_pil(x: Tensor) -> Image.Image:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in ``[-1, 1]`` to an RGB PIL image."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"model_to_pil takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    return Image.fromarray(model_to_uint8(x).permute(1, 2, 0).cpu().numpy(), "RGB")
