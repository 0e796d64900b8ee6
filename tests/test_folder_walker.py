"""The one folder walker (issue 24, silent skips): every entry it cannot use is reported with its
reason, by infer.py, scan-align and the training data alike, never dropped unmentioned."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import scan
from scan.align import cli as align_cli
from scan.imageio import NoImagesError, find_images
from scan.infer_cli import main as infer_main


def hostile_folder(root: Path) -> Path:
    """Two good photos, and one of each entry a walker could drop silently."""
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    for path in (folder / "a.png", folder / "sub" / "b.png"):
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    (folder / "gone.jpg").symlink_to(root / "nowhere.jpg")  # dangling
    (folder / "loop.png").symlink_to(folder / "loop.png")  # a loop
    (folder / "folder.jpg").mkdir()  # a folder with an image's name
    os.mkfifo(folder / "pipe.png")
    (folder / "locked").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "locked" / "c.png")
    return folder


@pytest.fixture
def locked_is_unreadable(monkeypatch):
    """The tests run as root here, who reads any folder: a failing scandir stands in for chmod 000."""
    scandir = os.scandir

    def refusing(path=".", *args):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", refusing)


EXPECTED = [
    ("folder.jpg", "not a regular file"),
    ("gone.jpg", "a dangling symlink, skipped"),
    ("locked", "unreadable folder, skipped (Permission denied)"),
    ("loop.png", "a symlink loop, skipped"),
    ("pipe.png", "not a regular file"),
]


def test_the_walker_lists_every_entry_it_cannot_use(tmp_path, locked_is_unreadable):
    folder = hostile_folder(tmp_path)
    skipped: list[str] = []
    files = find_images(folder, skipped=skipped)
    assert files == [folder / "a.png", folder / "sub" / "b.png"]
    assert len(skipped) == len(EXPECTED)
    for line, (name, reason) in zip(skipped, EXPECTED):
        assert line.startswith(f"{folder / name}: {reason}"), line
    assert find_images(folder, recursive=False) == [folder / "a.png"]  # and without the list: as before
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(NoImagesError, match=r"no image files .*; 1 entry skipped"):
        find_images(nothing)


def test_linked_folders_are_walked_once_and_a_loop_is_reported(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(elsewhere / "c.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "linked").symlink_to(elsewhere)  # a data set linked in: its photos count
    (folder / "again").symlink_to(elsewhere)  # a second way to the same photos: once is enough
    (folder / "up").symlink_to(folder)  # a loop
    skipped: list[str] = []
    assert find_images(folder, skipped=skipped) == [folder / "again" / "c.png"]
    assert skipped == [f"{folder / name}: a folder reached a second time (a link loop or a second link to it), "
                       "skipped" for name in ("linked", "up")]


def test_infer_and_scan_align_report_them_and_exit_1(tmp_path, locked_is_unreadable, capsys):
    folder = hostile_folder(tmp_path)
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    assert infer_main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(folder), "--output",
                       str(tmp_path / "out"), "--align", "none"]) == 1
    err = capsys.readouterr().err
    assert "5 of 7 input(s) failed:" in err and all(f"{folder / name}: {reason}" in err for name, reason in EXPECTED)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == ["a.png", "b.png"]
    assert align_cli.main([str(folder), str(tmp_path / "aligned")]) == 1
    err = capsys.readouterr().err
    assert "of 7 photo(s) failed:" in err and all(f"{folder / name}: {reason}" in err for name, reason in EXPECTED)


def test_the_training_data_warns_about_them(tmp_path, locked_is_unreadable):
    from scan.datasets.unpaired import usable_images

    folder = hostile_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = usable_images(folder)
    assert good == [folder / "a.png", folder / "sub" / "b.png"]
    message = "\n".join(str(w.message) for w in caught)
    assert "skipped 5" in message and all(f"{folder / name}: {reason}" in message for name, reason in EXPECTED)
