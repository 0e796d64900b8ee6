"""A full disk (issue 24): every writer, ours or torch's or TensorBoard's, ends in one line that names the
path and the free space, exit status 2, and leaves no temporary file. A small tmpfs is the full disk
where this machine lets the test mount one; a failing writer stands in everywhere."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import scan
from scan import export
from scan.errors import run_command, write_failure
from scan.outputs import OutputError, atomic_write, atomic_write_bytes

FULL = OSError(errno.ENOSPC, "No space left on device")


def test_a_failing_writer_is_one_output_error_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "kept.png").write_bytes(b"the user's file")

    def fails(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise FULL

    with pytest.raises(OutputError, match=r"cannot write .*kept\.png: No space left on device \([\d,.]+ MB free"):
        atomic_write(tmp_path / "kept.png", fails)
    assert [p.name for p in tmp_path.iterdir()] == ["kept.png"]  # no .tmp left, the old file whole
    assert (tmp_path / "kept.png").read_bytes() == b"the user's file"


def test_torch_serialises_into_memory_so_its_writer_never_meets_the_disk(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: written.append(bytes(data)) or len(data))
    atomic_write_bytes(tmp_path / "m.pt", lambda buffer: torch.save({"x": torch.ones(3)}, buffer))
    assert len(written) == 1 and written[0][:2] == b"PK"  # torch's zip format, written by Python in one go


def test_a_storage_error_from_a_writer_that_is_not_ours_is_one_line(capsys):
    def body() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/nonexistent/run/events.out.tfevents")

    assert run_command(body) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write /nonexistent/run/events.out.tfevents: No space left on device (")
    assert "a bug" not in err and err.count("\n") == 1

    def not_storage() -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")

    assert run_command(not_storage) == 1  # anything else stays a bug report
    assert "a bug" in capsys.readouterr().err
    assert write_failure(None, FULL) == "a write failed: No space left on device"


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KB tmpfs: too small for any model file; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]}); the failing writers stand in")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_models_and_exports_onto_a_full_disk(tmp_path, full_disk, capsys):
    model = scan.create_model("tiny")
    with pytest.raises(OutputError, match=r"m\.pt: No space left on device \(0\.\d MB free there\)"):
        scan.save_model(model, full_disk / "m.pt")
    full = scan.save_model(model, tmp_path / "full.pt")
    for fmt in export.FORMATS:  # torchscript's own writer would abort the process (exit 134)
        assert export.main(["--checkpoint", str(full), "--format", fmt, "--output", str(full_disk / f"x.{fmt}")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all("No space left on device" in line and "MB free there" in line for line in lines)
    assert list(full_disk.iterdir()) == []  # nothing half-written, no temporary file


@pytest.mark.slow
def test_training_onto_a_full_disk_is_one_line(tmp_path, full_disk, commands):
    from scan.datasets.demo import build_demo_set

    demo_root = build_demo_set(tmp_path / "demo", train=8, test=2, size=72)
    root = Path(__file__).resolve().parents[1]
    cmd = [root / "train.py", "fit", "--config", str(root / "configs" / "demo.yaml"),
           "--model.model_overrides", "null", "--data.root", str(demo_root), "--data.num_workers", "0",
           "--data.batch_size", "2", "--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "2",
           "--checkpoint.every_n_train_steps", "1", "--trainer.logger.init_args.save_dir", str(full_disk / "runs")]
    result = commands.run(cmd, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "No space left on device" in lines[0] and "MB free there" in lines[0] and "a bug" not in result.stderr
    assert "Traceback" not in result.stderr  # nor from TensorBoard's writer thread
    assert not [p for p in full_disk.rglob("*") if ".tmp" in p.name]


def test_an_output_is_never_a_special_file(tmp_path, capsys):
    """--overwrite replaces files, never a device node or a pipe (with a regular file in its place)."""
    from scan.errors import InputError
    from scan.outputs import OutputPlan

    os.mkfifo(tmp_path / "pipe.png")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="pipe.png is not a regular file"):
            OutputPlan(overwrite=overwrite).claim(tmp_path / "pipe.png")
    with pytest.raises(InputError, match="/dev/null is not a regular file"):
        OutputPlan(overwrite=True).claim("/dev/null")
    full = scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    assert export.main(["--checkpoint", str(full), "--format", "scan", "--output", "/dev/null", "--overwrite"]) == 2
    assert "/dev/null is not a regular file" in capsys.readouterr().err
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_write_killed_midway_leaves_nothing_after_the_next_write_of_that_file(tmp_path):
    """SIGKILL (or a power cut) mid-write cannot clean up after itself: the next write of the same file
    removes the temporary file its killed writer left, and no one else's."""
    import signal
    import time

    target = tmp_path / "last.ckpt"
    code = ("import sys, time; from pathlib import Path; from scan.outputs import atomic_write; "
            "atomic_write(sys.argv[1], lambda tmp: (tmp.write_bytes(b'half'), print('writing', flush=True), "
            "time.sleep(60)))")
    writer = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".last.ckpt.{writer.pid}.")  # what a kill leaves
    alive = tmp_path / f".last.ckpt.{os.getpid()}.other.tmp.ckpt"  # a live writer's: kept
    alive.write_bytes(b"in progress")
    time.sleep(0.01)
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "last.ckpt"])
    assert target.read_bytes() == b"whole"
