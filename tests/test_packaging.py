"""The wheel installs one import package, `scan`, with the top-level folders mapped under it; the
installed library's smoke check (`python -m scan`) works."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> list[str]:
    src = tmp_path_factory.mktemp("src")
    # Build from a copy: building in place would leave build/ and *.egg-info in the checkout.
    shutil.copytree(
        ROOT, src, dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", "outputs"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


@pytest.mark.slow
def test_wheel_maps_folders_under_scan(wheel_files):
    for expected in ["scan/__init__.py", "scan/stages/resnet.py", "scan/fusion/adaptive.py", "scan/datasets/demo.py",
                     "scan/training/module.py", "scan/align/crop.py"]:
        assert expected in wheel_files


@pytest.mark.slow
def test_wheel_installs_nothing_outside_scan(wheel_files):
    top_level = {name.split("/")[0] for name in wheel_files}
    dist_info = {t for t in top_level if t.endswith(".dist-info")}
    assert top_level - dist_info == {"scan"}, top_level  # no top-level `datasets` (Hugging Face's name)
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in wheel_files)


def test_smoke_check_reports_a_broken_round_trip(monkeypatch, capsys):
    """`python -m scan` (the README's quick check of an install) translates through every stage and
    fails, status 1, when the reloaded model disagrees with the one it saved."""
    import scan
    from scan.__main__ import main

    assert main() == 0
    out = capsys.readouterr().out
    assert "stage 1: output (1, 3, 32, 32)" in out and "stage 2: output (1, 3, 64, 64)" in out
    assert "outputs identical = True" in out
    monkeypatch.setattr(scan, "load_model", lambda path: scan.create_model("tiny").eval())  # other weights
    assert main() == 1
    assert "outputs identical = False" in capsys.readouterr().out
