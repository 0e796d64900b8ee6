"""End-to-end portrait latency, split into detect / landmarks / warp / translate / paste-back.

The paste-back is timed for every registered blend kind (``paste_ms_by_kind``: the kind's blend step
and the paste, as a portrait runs them; ``paste_ms`` is ``square``'s, the default), each row's
``total_ms`` with ``square``; ``added_by_kind`` is each kind's added time over ``square`` as a
fraction of that total (the seamless kind's target: <= 0.10).

For every preset at each crop size (default 256 and 512), the translation runs eager fp32, eager
bf16 autocast, and ONNX Runtime (CPU) on scikit-image's astronaut portrait (512x512), with the dlib
backend (FAN needs weights that cannot be fetched here). Medians of ``--repeats`` runs; all rows in
one run, so their ratios are comparable.

``detect_ms`` is the dlib backend's default detection (HOG on a copy scaled so that the smallest face
looked for, ``MIN_FACE`` of the short side, fills the detector's smallest box); ``detect_ms_before``
is the path before it (HOG over the whole photo upsampled 2x, ``DlibBackend(min_face=None)``), timed
in the same run, and ``total_ms_before`` the row's total with it.

Usage:
    python benchmarks/infer_latency.py [--sizes 256 512] [--presets ...] [--repeats 3] [--out FILE]
    python benchmarks/infer_latency.py --quick   # seconds; checks the script end to end (tiny, 64 px)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

import scan
from scan.align import (
    AlignedFace,
    DlibBackend,
    Face,
    blend_kinds,
    ffhq_quad,
    get_blend,
    paste_back,
    quad_to_matrix,
    warp_to_crops,
)
from scan.align.landmarks import MIN_FACE, detect_scale
from scan.export import export_model
from scan.imageio import pil_to_model

warnings.filterwarnings("ignore")


def timed(fn, repeats: int):
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--presets", nargs="+", default=[p for p in scan.list_models() if p != "tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime column")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "infer_latency.json")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 64 px, one repeat: checks the script")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.presets, args.repeats = [64], ["tiny"], 1
    torch.set_grad_enabled(False)

    photo = Image.fromarray(data.astronaut())
    array = np.asarray(photo)
    x = pil_to_model(photo)
    pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()  # uint8, as a portrait pastes into
    backend, before = DlibBackend(), DlibBackend(min_face=None)
    t_detect, boxes = timed(lambda: backend.find_boxes(array), args.repeats)
    t_detect_before, _ = timed(lambda: before.find_boxes(array), args.repeats)
    box = max(boxes, key=lambda b: b[1])[0]
    t_landmarks, landmarks = timed(lambda: backend.landmarks(array, box), args.repeats)

    rows = []
    for size in args.sizes:
        matrix = quad_to_matrix(ffhq_quad(landmarks), size)[None]
        t_warp, crop = timed(lambda matrix=matrix, size=size: warp_to_crops(x, matrix, size), args.repeats)
        face = AlignedFace(Face((0, 0, 1, 1), 1.0, landmarks), crop[0], matrix[0])
        paste_by_kind = {}
        for kind in blend_kinds():
            if kind == "parsing":  # needs the user's network: not part of this benchmark
                continue
            blend = get_blend(kind)

            def blend_and_paste(blend=blend, crop=crop, face=face, matrix=matrix):
                b = blend(pixels, crop[0], face)  # the crop stands in for its translation
                return Image.fromarray(paste_back(pixels, b.crop[None], matrix, b.mask[None]).permute(1, 2, 0).numpy())

            paste_by_kind[kind] = timed(blend_and_paste, args.repeats)[0]
        t_paste = paste_by_kind["square"]
        for preset in args.presets:
            model = scan.create_model(preset).eval()
            generator = model.G_ab
            runners = {
                "fp32": lambda generator=generator, crop=crop: generator(crop).final,
                "bf16": lambda generator=generator, crop=crop: _bf16(generator, crop),
            }
            if not args.no_onnx:
                import onnxruntime

                with tempfile.TemporaryDirectory() as tmp:
                    path = export_model(model, Path(tmp) / "model.onnx", "onnx", size=size)
                    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = {"image": crop.numpy()}
                runners["onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)[0]
            for engine, run in runners.items():
                t_translate, _ = timed(run, args.repeats)
                row = {
                    "preset": preset, "size": size, "engine": engine, "detect_ms": 1e3 * t_detect,
                    "landmarks_ms": 1e3 * t_landmarks, "warp_ms": 1e3 * t_warp, "translate_ms": 1e3 * t_translate,
                    "paste_ms": 1e3 * t_paste,
                }
                row["total_ms"] = sum(v for k, v in row.items() if k.endswith("_ms"))
                row["detect_ms_before"] = 1e3 * t_detect_before
                row["total_ms_before"] = row["total_ms"] - row["detect_ms"] + row["detect_ms_before"]
                row["paste_ms_by_kind"] = {k: 1e3 * t for k, t in paste_by_kind.items()}
                row["added_by_kind"] = {k: (1e3 * t - row["paste_ms"]) / row["total_ms"]
                                        for k, t in paste_by_kind.items()}
                rows.append(row)
                print(
                    f"{preset:16} {size:>4} {engine:11} detect {row['detect_ms']:6.1f} (before "
                    f"{row['detect_ms_before']:6.1f})  landmarks "
                    f"{row['landmarks_ms']:5.1f}  warp {row['warp_ms']:5.1f}  translate {row['translate_ms']:8.1f}  "
                    f"paste {row['paste_ms']:5.1f}  total {row['total_ms']:8.1f} ms (before "
                    f"{row['total_ms_before']:8.1f})  added by seamless "
                    f"{100 * row['added_by_kind'].get('seamless', float('nan')):+.1f}%",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "photo": "skimage astronaut 512x512", "landmarks": "dlib",
            "detect": f"dlib HOG, min_face {MIN_FACE} of the short side: scanned at "
                      f"{detect_scale(*array.shape[:2]):.3f}x (before: 2x)"}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


def _bf16(generator, crop):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return generator(crop).final


if __name__ == "__main__":
    main()
