"""How much each paste-back blend kind looks like a sticker: a seam metric, every kind side by side.

For every photo the face is translated once; then every registered blend kind blends and pastes it
(``scan.portrait.blend`` and ``paste``, as ``infer.py`` does), and the result is measured on the ring
where the kind's mask goes from 0 to 1 (its weight, warped into the photo, strictly between 0.02 and
0.98):

- ``gradient``: the result's gradient energy on the ring over the photo's own gradient energy there
  (1: the ring is as busy as the photo was; a sticker's edge adds energy), and ``off``, how far it is
  from 1 either way, per photo (a smooth face pasted over the photo's hair or skin takes energy away);
- ``step``: the colour step across the ring, in grey levels: what the paste changed just inside the
  ring (weight >= 0.98; the change just outside is nil), per ring pixel the length of the RGB change
  averaged locally (a Gaussian about as wide as the ring), averaged over the ring;
- ``ms``: the blend and paste steps' time per face (fastest of ``--repeats``, all kinds timed in one
  run, side by side).

Photos: scikit-image's astronaut (dlib landmarks); the held-out photos of the offline demo set
(built here, 256 px; they have no faces, so the astronaut's landmarks are placed in the middle: the
seam is what is measured, and the translator sees the photo's content there); and the frames of a
short clip (the astronaut's face moving, small and near the frame's edge, as tests/ make it).

Usage:
    python benchmarks/seams.py --checkpoint demo_output/model.pt [--out FILE] [--repeats 3]
    python benchmarks/seams.py --quick   # seconds; an untrained tiny model, checks the script

Writes FILE (JSON), FILE.md (the table) and FILE.png (each kind on the astronaut and two held-out
photos, cropped around the face). ``parsing`` is measured only with ``--parsing-model``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
from kornia.filters import spatial_gradient
from PIL import Image, ImageDraw
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a clone

import scan  # noqa: E402
from scan.align import blend_kinds, warp_from_crops  # noqa: E402
from scan.outputs import atomic_write, save_image  # noqa: E402
from scan.portrait import PortraitOptions, blend, paste, prepare  # noqa: E402
from scan.translator import Translator  # noqa: E402

warnings.filterwarnings("ignore")


def gradient_energy(image: torch.Tensor) -> torch.Tensor:
    """Per pixel, the squared gradient (Sobel) summed over channels. ``image``: (3, H, W) in [0, 255]."""
    return spatial_gradient(image[None]).pow(2).sum(dim=(1, 2))[0]


def _local_mean(image: torch.Tensor, where: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per pixel, the Gaussian-weighted mean of ``image`` over the pixels ``where`` is true."""
    weight = where.numpy().astype(np.float32)
    blur = lambda x: scipy.ndimage.gaussian_filter(x, sigma, mode="nearest")  # noqa: E731
    norm = np.maximum(blur(weight), 1e-6)
    return torch.from_numpy(np.stack([blur(c * weight) / norm for c in image.numpy()]))


def seam_scores(photo: torch.Tensor, result: torch.Tensor, weight: torch.Tensor) -> dict[str, float]:
    """The seam metric of one pasted result.

    Args:
        photo, result: (3, H, W) in [0, 255].
        weight: (H, W), the blend mask in the photo's frame, in [0, 1].

    Returns:
        ``gradient`` (ratio), ``step`` (grey levels) and ``ring_px`` (the ring's size).
    """
    ring = (weight > 0.02) & (weight < 0.98)
    if int(ring.sum()) < 8:
        return {"gradient": float("nan"), "step": float("nan"), "ring_px": int(ring.sum())}
    gradient = float(gradient_energy(result)[ring].mean() / gradient_energy(photo)[ring].mean().clamp(min=1e-6))
    # The step: what the paste changed just inside the ring (it changed nothing just outside), as a
    # local mean over about the ring's width, so a face's own edges (in photo and result alike) cancel.
    edge = (weight > 0.5).float()
    contour = float((spatial_gradient(edge[None, None])[0, 0].abs().sum(0) > 0).sum())  # ~ the ring's length
    sigma = max(float(ring.sum()) / max(contour / 2, 1.0), 1.5)  # ~ the ring's width
    change = _local_mean(result - photo, weight >= 0.98, sigma).norm(dim=0)
    return {"gradient": gradient, "step": float(change[ring].mean()), "ring_px": int(ring.sum())}


def _to_255(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1).contiguous()


def measure_photo(translator: Translator, size: int, photo: Image.Image, kinds: list[str], repeats: int,
                  landmarks: np.ndarray | None = None) -> tuple[dict[str, dict[str, float]], dict[str, Image.Image]]:
    """Translate ``photo``'s face once, then blend and paste it with every kind; per kind the seam
    scores and the blend + paste time, and the pasted pictures."""
    options = PortraitOptions(landmarks="dlib")
    backend = None if landmarks is not None else translator.landmark_backend("dlib")
    prepared = prepare(photo, options, size, backend, landmarks)
    faces = translator.translate_faces(prepared.crops, prepared.aligned)
    pixels, height, width = prepared.pixels, photo.height, photo.width
    original = _to_255(photo)
    scores, pictures = {}, {}
    for kind in kinds:
        kind_options = PortraitOptions(landmarks="dlib", mask=kind)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            blends = blend(pixels, faces, kind_options)
            image = paste(pixels, blends, faces)
            times.append(time.perf_counter() - start)
        matrices = np.stack([f.aligned.matrix for f in faces])
        weight = warp_from_crops(torch.stack([b.mask for b in blends]), matrices, height, width).clamp(0, 1)
        weight = weight.max(dim=0).values[0]
        scores[kind] = {**seam_scores(original, _to_255(image), weight), "ms": 1e3 * min(times) / len(faces)}
        pictures[kind] = image
    return scores, pictures


def heldout_photos(folder: Path, count: int) -> list[Image.Image]:
    from scan.datasets.demo import build_demo_set

    root = build_demo_set(folder / "demo_set", train=1, test=count, size=256)
    return [Image.open(p).convert("RGB") for p in sorted((root / "testA").glob("*.png"))]


def placed_landmarks(landmarks: np.ndarray, side: int, fraction: float = 0.55) -> np.ndarray:
    """The astronaut's landmarks moved into the middle of a ``side`` px photo, scaled so that its FFHQ
    crop spans ``fraction`` of the side."""
    from scan.align import ffhq_quad

    quad = ffhq_quad(landmarks)
    crop_side = np.hypot(*(quad[3] - quad[0]))
    centre = quad.mean(0)
    return (landmarks - centre) * (fraction * side / crop_side) + side / 2


def clip_frames(count: int, side: int = 160) -> list[Image.Image]:
    """The astronaut's face moving right and down, at ``side`` px (as tests/test_portrait_hashes.py
    makes its clip): small faces whose crops reach past the frame."""
    photo = data.astronaut()
    frames = []
    for i in range(count):
        crop = photo[30 + 6 * i:286 + 6 * i, 120 + 12 * i:376 + 12 * i]
        frames.append(Image.fromarray(crop).resize((side, side), Image.Resampling.BILINEAR))
    return frames


def picture(rows: list[tuple[str, Image.Image, dict[str, Image.Image], tuple[int, int, int, int]]],
            kinds: list[str], tile: int = 160) -> Image.Image:
    """One row per photo: the photo, then each kind, all cropped to the face's surroundings."""
    head = 18
    sheet = Image.new("RGB", (tile * (len(kinds) + 1), head + len(rows) * (tile + head)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, photo, pasted, box) in enumerate(rows):
        y = head + r * (tile + head)
        for c, (label, image) in enumerate([(f"{name}: photo", photo)] + [(k, pasted[k]) for k in kinds]):
            sheet.paste(image.crop(box).resize((tile, tile), Image.Resampling.LANCZOS), (c * tile, y))
            draw.text((c * tile + 4, y - head + 3), label, fill="black")
    return sheet


def face_box(translator: Translator, photo: Image.Image, landmarks: np.ndarray | None, grow: float = 1.3):
    """A square around the face's FFHQ crop, clipped to the photo."""
    from scan.align import ffhq_quad, quad_to_matrix
    from scan.align.crop import crop_corners

    if landmarks is None:
        backend = translator.landmark_backend("dlib")
        array = np.asarray(photo)
        box = max(backend.find_boxes(array), key=lambda b: b[1])[0]
        landmarks = backend.landmarks(array, box)
    corners = crop_corners(quad_to_matrix(ffhq_quad(landmarks), 64)[None], 64)[0]
    centre, half = corners.mean(0), grow * (corners.max(0) - corners.min(0)).max() / 2
    x0, y0 = np.maximum(centre - half, 0).astype(int)
    x1, y1 = np.minimum(centre + half, [photo.width, photo.height]).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="the model (default: an untrained tiny one)")
    parser.add_argument("--heldout", type=int, default=16, help="held-out demo photos")
    parser.add_argument("--frames", type=int, default=8, help="frames of the clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed blend + paste runs per kind (fastest kept)")
    parser.add_argument("--parsing-model", type=Path, default=None, help="measure the 'parsing' kind with this model")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "seams.json")
    parser.add_argument("--quick", action="store_true", help="untrained tiny model, 2 photos, 1 frame: seconds")
    args = parser.parse_args()
    if args.quick:
        args.heldout, args.frames, args.repeats = 2, 1, 1
    torch.set_grad_enabled(False)
    if args.checkpoint is None:
        torch.manual_seed(0)
        model = scan.create_model("tiny")
    else:
        model = scan.load_model(args.checkpoint)
    translator = Translator(model, device="cpu")
    kinds = [k for k in blend_kinds() if k != "parsing" or args.parsing_model is not None]
    if args.parsing_model is not None:
        from scan.align.parsing import use_parsing_model

        use_parsing_model(args.parsing_model)

    astronaut = Image.fromarray(data.astronaut())
    backend = translator.landmark_backend("dlib")
    astronaut_box = max(backend.find_boxes(np.asarray(astronaut)), key=lambda b: b[1])[0]
    astronaut_landmarks = backend.landmarks(np.asarray(astronaut), astronaut_box)
    groups = ("astronaut", "held-out photos", "clip frames")
    per_photo: dict[str, list[dict[str, dict[str, float]]]] = {group: [] for group in groups}
    rows = []
    size = model.config.top_size
    scores, pasted = measure_photo(translator, size, astronaut, kinds, args.repeats, astronaut_landmarks[None])
    per_photo["astronaut"].append(scores)
    rows.append(("astronaut", astronaut, pasted, face_box(translator, astronaut, astronaut_landmarks)))
    with tempfile.TemporaryDirectory() as tmp:
        for i, photo in enumerate(heldout_photos(Path(tmp), args.heldout)):
            landmarks = placed_landmarks(astronaut_landmarks, photo.width)
            scores, pasted = measure_photo(translator, size, photo, kinds, args.repeats, landmarks[None])
            per_photo["held-out photos"].append(scores)
            if i < 2:
                rows.append((f"held-out {i}", photo, pasted, face_box(translator, photo, landmarks)))
    for frame in clip_frames(args.frames):
        try:
            scores, _ = measure_photo(translator, size, frame, kinds, args.repeats)
        except scan.align.NoFaceError:
            continue  # a frame where dlib finds no face: nothing pasted, nothing to measure
        per_photo["clip frames"].append(scores)

    table = []
    for group, results in per_photo.items():
        for kind in kinds:
            values = {m: float(np.nanmean([r[kind][m] for r in results])) if results else float("nan")
                      for m in ("gradient", "step", "ms")}
            # Off from 1 either way, per photo: a sticker's edge makes the ring busier than the photo, a
            # smooth face pasted over the photo's texture (hair, skin) makes it quieter; both show.
            values["off"] = float(np.nanmean([abs(r[kind]["gradient"] - 1) for r in results])) if results \
                else float("nan")
            table.append({"photos": group, "count": len(results), "kind": kind, **values})
    square = {r["photos"]: r for r in table if r["kind"] == "square"}
    for row in table:
        row["gradient_vs_square"] = row["gradient"] / square[row["photos"]]["gradient"]
    lines = ["| photos | kind | gradient ratio | vs square | off from 1 | colour step (grey levels) "
             "| blend + paste (ms/face) |",
             "|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['photos']} ({row['count']}) | {row['kind']} | {row['gradient']:.2f} | "
                     f"{row['gradient_vs_square']:.2f} | {row['off']:.2f} | {row['step']:.1f} | {row['ms']:.1f} |")
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "checkpoint": str(args.checkpoint) if args.checkpoint else "untrained tiny (seed 0)",
            "model": model.config.name, "size": model.config.top_size, "landmarks": "dlib"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps({"meta": meta, "rows": table, "photos": per_photo},
                                                                 indent=1)))
    atomic_write(args.out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    save_image(picture(rows, kinds), args.out.with_suffix(".png"))
    print(f"wrote {args.out} (and .md, .png)")


if __name__ == "__main__":
    main()
