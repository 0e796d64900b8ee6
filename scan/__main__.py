"""``python -m scan``: a smoke check of the installed library on a real photo (no downloads).

Builds the ``tiny`` preset, translates scikit-image's astronaut portrait through both stages, saves
the model as a safe file, reloads it and checks the outputs agree. Prints what it did.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch


def main() -> int:
    from PIL import Image
    from skimage import data

    import scan
    from scan.imageio import pil_to_model

    print(f"scan {scan.__version__}: presets {', '.join(scan.list_models())}")
    model = scan.create_model("tiny").eval()
    size = model.config.top_size
    photo = pil_to_model(Image.fromarray(data.astronaut()))
    x = torch.nn.functional.interpolate(photo, size=(size, size), mode="area")
    with torch.inference_mode():
        out = model.translate(x)
    for k, (y, alpha) in enumerate(zip(out.outputs, out.alphas), start=1):
        mean_alpha = "-" if alpha is None else f"{alpha.mean().item():.3f}"
        print(f"  stage {k}: output {tuple(y.shape)}, mean alpha {mean_alpha}")
    with tempfile.TemporaryDirectory() as tmp:
        path = scan.save_model(model, Path(tmp) / "tiny.pt")
        with torch.inference_mode():
            same = torch.equal(scan.load_model(path).translate(x).final, out.final)
    print(f"  saved and reloaded {path.name}: outputs identical = {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
