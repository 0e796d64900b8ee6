"""The newcomer's path: the README's demo command, scaled down, end to end."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import scan

ROOT = Path(__file__).resolve().parents[1]


def demo_command(out: Path) -> list[str]:
    """The recipe of the README's `make demo`, as make would run it once the environment exists
    (`-o` skips the venv target), with this interpreter in place of `.venv/bin/python`."""
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "demo", f"DEMO_OUT={out}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()
    command = shlex.split(recipe)
    assert command[:3] == [".venv/bin/python", "-m", "scan.demo"], recipe
    return [sys.executable, *command[1:]]


@pytest.mark.slow
def test_readme_demo_command_runs_end_to_end_scaled_down(tmp_path, commands):
    out = tmp_path / "demo_output"
    env = {"SCAN_DEMO_QUICK": "1"}
    result = commands.run(demo_command(out)[1:], cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    # The portrait: same size as the input; the face changed, the far corners untouched bit for bit.
    photo = np.asarray(Image.open(out / "astronaut.png"))
    cartoon = np.asarray(Image.open(out / "astronaut_cartoon.png"))
    assert np.array_equal(photo, skdata.astronaut())
    assert cartoon.shape == photo.shape
    changed = np.any(cartoon != photo, axis=-1)
    assert changed[90:200, 180:300].mean() > 0.5  # the astronaut's face (the demo pastes its hull)
    assert not changed[:40, :40].any() and not changed[-40:, -40:].any()

    # The pictures: the stage strip (crop, stage 1, stage 2, alpha: 4 tiles of 192 px) and the
    # held-out sheet (4 photos in quick mode; photo, stage 1, stage 2, alpha, true cartoon at 160 px).
    assert Image.open(out / "astronaut_stages.png").size == (4 + 4 * (192 + 4), 4 + 192 + 16 + 4)
    assert Image.open(out / "heldout.png").size == (4 + 5 * (160 + 4), 4 + 4 * (160 + 16 + 4))

    # Held-out scores for the photo and both stages, and a model file that loads.
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"photo", "stage1", "stage2"}
    assert all(np.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1 for s in scores.values())
    assert scores["photo"]["psnr"] < 40  # the demo set's cartoons are not the photos
    assert scan.load_model(out / "model.pt").config.num_stages == 2

    # The TensorBoard run holds both stages' validation PSNR, and the user is told how to open it.
    (events,) = list((out / "tensorboard").glob("*/version_0/events.*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"val/stage1/psnr_a2b", "val/stage2/psnr_a2b"} <= set(accumulator.Tags()["scalars"])
    assert f"--logdir {out}/tensorboard" in result.stdout
    assert f"scan-web --checkpoint {out}/model.pt" in result.stdout  # the page, on the model just trained
    assert "$ python train.py fit --config configs/demo.yaml" in result.stdout
    assert "$ python infer.py --checkpoint" in result.stdout

    # Run again into the same folder: one line, exit status 2, nothing touched.
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    again = commands.run(demo_command(out)[1:], cwd=ROOT, env=env, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "exists" in again.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
