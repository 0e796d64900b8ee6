"""An offline unpaired demo set with a known answer, built from photos bundled with scikit-image.

Domain A is random crops of photos; domain B is a cartoon rendering (edge-preserving smoothing,
brighter, more saturated and warmer colours, colour quantisation, dark outlines; done with kornia) of
*other* crops, so the two folders are unpaired. Held-out A crops come with their true cartoon
rendering in ``testA_target/``, so a translation's quality can be measured (PSNR) against the answer.
Other mappings (``MAPPINGS``) make domain B differently: ``reshape`` adds a global change of shape,
``lineart`` puts 1-pixel outlines and fine hatching at the top resolution.

Usage::

    python -m scan.datasets.demo OUT_DIR [--train 300] [--test 16] [--size 72] [--mapping lineart]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import kornia
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scan.checks import check_shape
from scan.errors import InputError, add_debug_flag, int_range, run_command
from scan.outputs import save_image

__all__ = ["cartoonize", "reshape", "lineart", "MAPPINGS", "build_demo_set", "load_heldout", "DEMO_PHOTOS"]

DEMO_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
    "colorwheel", "camera", "coins", "clock", "brick", "grass", "gravel",
)  # fmt: skip


WARM_GAIN = (1.1, 0.95, 0.7)  # per-channel gain of the cartoon palette (R, G, B)


def cartoonize(images: Tensor, levels: int = 5, edge_threshold: float = 0.12) -> Tensor:
    """Render photos as flat-coloured cartoons with dark outlines.

    Args:
        images: RGB batch in ``[0, 1]``.
        levels: colour levels per channel after quantisation.
        edge_threshold: Sobel magnitude (of the smoothed luminance) where outlines start.

    Returns:
        The cartoon batch in ``[0, 1]``.

    Shape:
        - Input: :math:`(B, 3, H, W)`
        - Output: :math:`(B, 3, H, W)`
    """
    check_shape(images, ("B", 3, "H", "W"), "cartoonize")
    x = images.float()
    for _ in range(2):  # edge-preserving smoothing flattens textures but keeps object boundaries
        x = kornia.filters.bilateral_blur(x, (5, 5), sigma_color=0.1, sigma_space=(2.0, 2.0))
    hsv = kornia.color.rgb_to_hsv(x)
    hue, sat, val = hsv.unbind(1)
    x = kornia.color.hsv_to_rgb(torch.stack([hue, (sat * 1.6).clamp(0, 1), val.clamp(0, 1) ** 0.7], 1))
    x = (x * x.new_tensor(WARM_GAIN).view(1, 3, 1, 1)).clamp(0, 1)  # a warm palette, as in many cartoons
    x = torch.round(x * (levels - 1)) / (levels - 1)
    magnitude = kornia.filters.sobel(kornia.color.rgb_to_grayscale(x))
    outline = ((magnitude - edge_threshold) / edge_threshold).clamp(0, 1)
    return (x * (1 - 0.85 * outline)).clamp(0, 1)


def reshape(images: Tensor, eye_gain: float = 0.35, chin_squeeze: float = 0.5) -> Tensor:
    """The smooth geometric change anime portraits make to a face, applied to the whole crop: the
    upper-central region (where eyes sit in an aligned face) is enlarged and the lower part is
    compressed towards the bottom edge. Fixed and deterministic: a global change of shape that a
    translator must learn, unlike the local colour changes of :func:`cartoonize`.

    Args:
        images: RGB batch in ``[0, 1]``.
        eye_gain: how much the region around the eye line is magnified (0: not at all).
        chin_squeeze: how much the part below the mouth line is compressed (0: not at all).

    Returns:
        The reshaped batch in ``[0, 1]`` (borders are reflected).

    Shape:
        - Input: :math:`(B, 3, H, W)`
        - Output: :math:`(B, 3, H, W)`
    """
    check_shape(images, ("B", 3, "H", "W"), "reshape")
    b, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    # Magnify around the eye line: each output pixel samples closer to the centre (a smooth bump).
    cy = -0.15
    dx, dy = xs, ys - cy
    shrink = 1.0 - eye_gain * torch.exp(-(dx**2 + dy**2) / (2 * 0.35**2))
    sx, sy = dx * shrink, cy + dy * shrink
    # Squeeze the lower part: below the mouth line the output reaches further down the source.
    below = (sy - 0.3).clamp(min=0)
    sy = sy + chin_squeeze * below**2
    grid = torch.stack([sx, sy], dim=-1).to(images)[None].expand(b, h, w, 2)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection",
                                          align_corners=True)
    return out.clamp(0, 1)


def _thin_edges(lum: Tensor, threshold: float) -> Tensor:
    """1-pixel edges of a luminance batch: the Sobel magnitude, kept where it exceeds ``threshold`` and is
    a maximum across the edge (compared with the two neighbours along the dominant gradient axis; of two
    equal pixels across a step, the left/upper one is kept). Bool, same shape as ``lum``."""
    grad = kornia.filters.spatial_gradient(lum)  # normalised Sobel: a ramp of slope s gives s
    gx, gy = grad[:, :, 0], grad[:, :, 1]
    magnitude = torch.sqrt(gx**2 + gy**2)
    h, w = lum.shape[-2:]
    padded = torch.nn.functional.pad(magnitude, (1, 1, 1, 1), mode="replicate")

    def shifted(dy: int, dx: int) -> Tensor:
        return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    across_x = (magnitude > shifted(0, -1)) & (magnitude >= shifted(0, 1))
    across_y = (magnitude > shifted(-1, 0)) & (magnitude >= shifted(1, 0))
    return torch.where(gx.abs() >= gy.abs(), across_x, across_y) & (magnitude > threshold)


def lineart(
    images: Tensor,
    levels: int = 4,
    paper: float = 0.6,
    edge_threshold: float = 0.12,
    stripe_freq: float = 100.0,
    shade_level: float = 0.5,
    stripe_period: tuple[float, float] = (3.0, 16.0),
    ink: float = 0.85,
) -> Tensor:
    """Render photos as line art: 1-pixel dark outlines and fine hatching on a light flat palette, detail
    that lives at the top resolution (halving the resolution loses it, unlike :func:`cartoonize`).

    A deterministic and local function of the full-resolution photo, with no dependence on a pixel's
    absolute position, so a convolutional network at that resolution can learn it:

    - palette: each channel quantised to ``levels`` values, then lightened towards white (``paper``);
    - outlines: the edges of the *unsmoothed* luminance (Sobel magnitude above ``edge_threshold``),
      thinned to one pixel by keeping only the maximum across the edge;
    - hatching: in shaded areas (luminance, smoothed by a 5 px Gaussian of sigma 1, below
      ``shade_level``) dark stripes where ``0.5 + 0.5 * sin(stripe_freq * smoothed luminance) < 0.35``: their
      phase follows the luminance, so they run along its contours, like engraving. They are drawn
      only where the stripes' period across the contours, ``2 pi / (stripe_freq * |gradient|)``, is
      within ``stripe_period`` pixels: clean stripes about 1-6 px wide, not speckle in flat areas or
      textures.

    Args:
        images: RGB batch in ``[0, 1]``.
        levels: colour levels per channel of the palette.
        paper: how far the palette is lightened towards white (0: not at all, 1: white paper).
        edge_threshold: Sobel magnitude (slope of the luminance per pixel) where outlines start.
        stripe_freq: radians of stripe phase per unit of luminance.
        shade_level: luminance below which areas are hatched.
        stripe_period: the range of stripe periods (pixels) that are drawn.
        ink: how dark outlines and stripes are (1: black).

    Returns:
        The line-art batch in ``[0, 1]``.

    Shape:
        - Input: :math:`(B, 3, H, W)`
        - Output: :math:`(B, 3, H, W)`
    """
    check_shape(images, ("B", 3, "H", "W"), "lineart")
    x = images.float()
    lum = kornia.color.rgb_to_grayscale(x)
    palette = paper + (1 - paper) * torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)
    outline = _thin_edges(lum, edge_threshold)
    smooth = kornia.filters.gaussian_blur2d(lum, (5, 5), (1.0, 1.0), border_type="replicate")
    grad = kornia.filters.spatial_gradient(smooth)
    slope = torch.sqrt(grad[:, :, 0] ** 2 + grad[:, :, 1] ** 2)
    period = 2 * math.pi / (stripe_freq * slope).clamp_min(1e-6)
    stripes = 0.5 + 0.5 * torch.sin(stripe_freq * smooth) < 0.35
    hatch = stripes & (smooth < shade_level) & (period >= stripe_period[0]) & (period <= stripe_period[1])
    return (palette * (1 - ink * (outline | hatch).float())).clamp(0, 1)


def _reshape_cartoon(images: Tensor) -> Tensor:
    return cartoonize(reshape(images))


def _reshape_lineart(images: Tensor) -> Tensor:
    return lineart(reshape(images))


# Domain B of the demo set, from photos: a local mapping (palette, flat colours, outlines), the same
# with a global change of shape, where a coarse-to-fine stack should matter, and line art, whose
# 1-pixel outlines and hatching only the top resolution holds (also after the change of shape).
MAPPINGS = {"cartoon": cartoonize, "reshape": _reshape_cartoon, "lineart": lineart,
            "reshape-lineart": _reshape_lineart}


def _photos() -> list[Tensor]:
    from skimage import data

    photos = []
    for name in DEMO_PHOTOS:
        array = np.asarray(getattr(data, name)())
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos.append(torch.from_numpy(array[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1))
    return photos


def _random_crops(photos: list[Tensor], count: int, size: int, generator: torch.Generator) -> Tensor:
    crops = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (), generator=generator))]
        h, w = photo.shape[-2:]
        side = int(torch.randint(min(96, h, w), min(h, w, 224) + 1, (), generator=generator))
        top = int(torch.randint(h - side + 1, (), generator=generator))
        left = int(torch.randint(w - side + 1, (), generator=generator))
        crop = photo[None, :, top : top + side, left : left + side]
        crops.append(torch.nn.functional.interpolate(crop, size=(size, size), mode="area"))
    return torch.cat(crops)


def _save(images: Tensor, folder: Path) -> None:
    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, array in enumerate(arrays):
        save_image(Image.fromarray(array), folder / f"{i:04d}.png")


SUBFOLDERS = ("trainA", "trainB", "testA", "testA_target", "testB")


MAX_SIDE = 1024  # --size
MAX_PAIRS = 20_000  # --train, --test
MAX_BYTES = 4_000_000_000  # the set is drawn in memory


def build_demo_set(
    out_dir: str | Path, train: int = 300, test: int = 16, size: int = 72, seed: int = 0, mapping: str = "cartoon"
) -> Path:
    """Write the demo set in CycleGAN layout: ``trainA/``, ``trainB/``, ``testA/``, ``testB/`` and
    ``testA_target/`` (the true translation of each ``testA`` image, same file names), and
    ``preview.png``, a picture of the mapping on the first held-out photos.

    Args:
        out_dir: destination; must not already hold a demo set (nothing is overwritten).
        train: images per training domain.
        test: images per test domain.
        size: side of the stored squares (the loader crops from them).
        seed: all crops are drawn from this seed.
        mapping: how domain B is made from photos: ``cartoon`` (:func:`cartoonize`), ``reshape``
            (:func:`reshape`, then :func:`cartoonize`), ``lineart`` (:func:`lineart`) or
            ``reshape-lineart`` (:func:`reshape`, then :func:`lineart`).

    Returns:
        ``out_dir``.
    """
    if mapping not in MAPPINGS:
        raise InputError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")
    to_b = MAPPINGS[mapping]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the data set")
    if size < 8:
        raise InputError(f"size {size}: the demo images need at least 8 px (the cartoon filters are 5 px wide)")
    # The crops are drawn in memory, as float32, four sets at once: refuse before allocating them.
    needed = 2 * (train + test) * size * size * 3 * 4 * 2  # the crops and their mapping
    if needed > MAX_BYTES:
        raise InputError(f"{train} + {test} images of {size} px would hold {needed / 1e9:.1f} GB in memory while "
                         f"they are drawn; at most {MAX_BYTES / 1e9:.0f} GB (fewer images or a smaller --size)")
    existing = [name for name in SUBFOLDERS if (out / name).exists()]
    if existing:
        raise InputError(f"{out}: already holds a data set ({existing[0]}/ exists); choose another folder")
    generator = torch.Generator().manual_seed(seed)
    photos = _photos()
    # Four independent draws: A and B never show the same crop, so the set is truly unpaired.
    # Rounded to the 8 bits they are stored with, so that each stored answer is the mapping of exactly
    # the stored photo (a mapping with hard thresholds, like lineart's, would otherwise differ).
    train_a, train_b_photo, test_a, test_b_photo = (
        (_random_crops(photos, n, size, generator) * 255).round() / 255 for n in (train, train, test, test)
    )
    _save(train_a, out / "trainA")
    _save(to_b(train_b_photo), out / "trainB")
    _save(test_a, out / "testA")
    _save(to_b(test_a), out / "testA_target")
    _save(to_b(test_b_photo), out / "testB")
    _save_preview(test_a[:4], mapping, out / "preview.png")
    return out


def _save_preview(photos: Tensor, mapping: str, path: Path) -> None:
    """A picture of the mapping, one row per held-out photo: the photo, the photo with a grid, (for
    ``reshape`` and ``reshape-lineart``: that grid after the change of shape,) and the true answer."""
    from scan.strips import make_grid

    step = max(4, photos.shape[-1] // 8)
    gridded = photos.clone()
    gridded[..., ::step, :] = gridded[..., :, ::step] = 1.0
    reshaped = [reshape(gridded)] if mapping.startswith("reshape") else []
    columns = [photos, gridded, *reshaped, MAPPINGS[mapping](photos)]
    grid = make_grid([list(row) for row in zip(*columns)])
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    save_image(picture.resize((picture.width * 2, picture.height * 2), Image.Resampling.NEAREST), path)


def load_heldout(root: str | Path, size: int) -> tuple[Tensor, Tensor]:
    """The demo set's held-out photos and their true answers (domain B), resized to ``size``.

    Args:
        root: a folder written by :func:`build_demo_set` (``testA/``, ``testA_target/``, ``testB/``).
        size: the side images are resized to (the model's top resolution).

    Returns:
        ``(photos, targets)``, both in ``[-1, 1]``.

    Shape:
        - Output: :math:`(N, 3, size, size)` each.
    """
    from scan.datasets.unpaired import FixedPairsDataset
    from scan.imageio import uint8_to_model

    root = Path(root)
    pairs = FixedPairsDataset(root / "testA", root / "testB", size, count=10**9)  # all of them
    if pairs.targets is None:
        raise FileNotFoundError(f"{root}: no testA_target/ with a true answer for every testA/ image")
    items = [pairs[i] for i in range(len(pairs))]
    return (uint8_to_model(torch.stack([it["a"] for it in items])),
            uint8_to_model(torch.stack([it["a_target"] for it in items])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build scan's offline unpaired demo set (photo -> cartoon).")
    parser.add_argument("out_dir", type=Path)
    # Bounded: the set is built in memory (a 2048 px set of 300 held 15 GB) and --train 10**8 would run for hours.
    parser.add_argument("--train", type=int_range(1, MAX_PAIRS), default=300)
    parser.add_argument("--test", type=int_range(1, MAX_PAIRS), default=16)
    parser.add_argument("--size", type=int_range(8, MAX_SIDE), default=72)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mapping", choices=list(MAPPINGS), default="cartoon",
                        help="domain B: cartoon (palette, flat colours, outlines), reshape (the same after a "
                             "smooth anime-like change of shape), lineart (1-pixel outlines and fine hatching on a "
                             "light palette) or reshape-lineart (line art after the change of shape)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        build_demo_set(args.out_dir, args.train, args.test, args.size, args.seed, args.mapping)
        print(f"demo set written to {args.out_dir} (trainA/, trainB/, testA/, testA_target/, testB/; preview.png "
              "shows the mapping)")
        return 0

    return run_command(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
