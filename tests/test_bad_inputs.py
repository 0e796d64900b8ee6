"""The bad-input table: every command, fed what hostile or careless users feed it.

Each case runs a real command line (``infer.py``, ``train.py``, ``scan-align``, ``scan-export``) in a
subprocess, in a folder of its own, and checks:
- the exit status (2: the user's mistake; 1: a folder run where some inputs failed; 0: done);
- no traceback, and for status 2 exactly one ``error:`` line (argparse's usage line aside), naming
  what is wrong;
- every file that was there before is byte for byte the same afterwards, the files that appear are
  exactly the expected ones, and no temporary file is left behind.

The cases run two at a time (the machine has two cores) in one fixture; each test checks one case.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from command_server import CommandServer
from PIL import Image
from skimage import data

import scan
from scan.datasets.demo import build_demo_set
from scan.outputs import OutputError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # every case runs a command in a subprocess

PROGRAMS = {
    "infer": [str(ROOT / "infer.py")],
    "export": ["-m", "scan.export"],
    "align": ["-m", "scan.align"],
    "demo-set": ["-m", "scan.datasets.demo"],
    "train": [str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs" / "demo.yaml"), "--data.num_workers",
              "0", "--data.batch_size", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar",
              "false", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
              "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"],
}


@dataclass
class Case:
    """One hostile command line.

    Attributes:
        id: the test id.
        program: a key of ``PROGRAMS``.
        args: the arguments; ``{d}`` is the case's own folder.
        code: the expected exit status.
        message: text the error line must hold (status 2), or the failure list must (status 1).
        setup: makes the case's extra files in its folder.
        new: files (relative to the folder) the run must create; nothing else may appear.
        new_run: a training run that started may also leave its new log folder, ``runs/demo/version_0/``.
        argparse: the error comes from argparse (a usage line precedes the ``error:`` line).
        env: environment variables for the command (``{d}`` is the case's folder).
    """

    id: str
    program: str
    args: str
    code: int
    message: str = ""
    setup: Callable[[Path], None] | None = None
    new: set[str] = field(default_factory=set)
    new_run: bool = False
    argparse: bool = False
    env: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- inputs
def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _crop() -> np.ndarray:
    return np.asarray(Image.fromarray(data.astronaut()).crop((150, 50, 300, 200)).resize((64, 64)))


def _save_dict(path: Path, obj) -> None:
    torch.save(obj, path)


def _model_dict() -> dict:
    torch.manual_seed(0)
    model = scan.create_model("tiny")
    return {"format": "scan-model", "format_version": 1, "config": model.config.to_dict(),
            "state_dict": model.state_dict()}


def _bad_checkpoint(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        checkpoint = _model_dict()
        change(checkpoint)
        _save_dict(d / "bad.pt", checkpoint)

    return setup


def _wrong_type(c: dict) -> None:
    c["config"]["stages"][0]["generator"]["ngf"] = "8"


def _wrong_shape(c: dict) -> None:
    name = next(k for k, v in c["state_dict"].items() if v.ndim == 4)
    c["state_dict"][name] = torch.zeros(2, 2, 2, 2)


def _nan_weights(c: dict) -> None:
    for value in c["state_dict"].values():
        if value.is_floating_point():
            value.fill_(float("nan"))


class _WritesAMarker:
    """Unpickling this runs code: it opens (creates) a marker file. A safe loader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _booby_trap(d: Path) -> None:
    checkpoint = _model_dict()
    checkpoint["payload"] = _WritesAMarker(d / "pwned")
    _save_dict(d / "bad.pt", checkpoint)


def _write(relative: str, content: bytes) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        (d / relative).parent.mkdir(parents=True, exist_ok=True)
        (d / relative).write_bytes(content)

    return setup


def _photos(*names: str, array: Callable[[], np.ndarray] = _crop) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for name in names:
            if name.endswith(".jpg"):
                (d / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array()).save(d / name, quality=95)
            else:
                _png(d / name, array())

    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for s in setups:
            s(d)

    return setup


def _hard_link(d: Path) -> None:
    os.link(d / "astronaut.png", d / "linked.png")


def _truncated_jpegs(d: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG")
    for domain in "AB":
        (d / f"bad/train{domain}").mkdir(parents=True)
        for i in range(3):  # truncated JPEGs pass the header check and fail only when decoded
            (d / f"bad/train{domain}/{i}.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])


def _earlier_run(d: Path) -> None:
    run = d / "runs/demo/version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: earlier run\n")
    (run / "events.out.tfevents.0").write_bytes(b"earlier events")


def _truncated_copy(source: str, target: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        raw = (d / source).read_bytes()
        (d / target).write_bytes(raw[: len(raw) // 2])

    return setup


I = "--checkpoint {d}/tiny.pt"  # noqa: E741 (the common infer prefix)
BAD = "--checkpoint {d}/bad.pt --input {d}/crop.png --output {d}/out.png --align none"

CASES = [
    # --- nothing lost or overwritten
    Case("infer-output-folder-holds-the-input", "infer", f"{I} --input {{d}}/astronaut.png --output {{d}} --overwrite",
         2, "is the input"),
    Case("infer-output-is-a-hard-link-to-the-input", "infer",
         f"{I} --input {{d}}/astronaut.png --output {{d}}/linked.png --overwrite --align none", 2, "is the input",
         setup=_hard_link),
    Case("infer-same-stem-different-extension", "infer", f"{I} --input {{d}}/in --output {{d}}/out --align none", 0,
         setup=_photos("in/face.jpg", "in/face.png"), new={"out/face.jpg.png", "out/face.png.png"}),
    Case("infer-strips-of-same-name-in-subfolders", "infer",
         f"{I} --input {{d}}/in --output {{d}}/out --align none --save-stages {{d}}/strips", 0,
         setup=_photos("in/s1/p.png", "in/s2/p.png"),
         new={"out/s1/p.png", "out/s2/p.png", "strips/s1/p_stages.png", "strips/s2/p_stages.png"}),
    Case("infer-existing-strip-without-overwrite", "infer",
         f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none --save-stages {{d}}/strips", 2,
         "crop_stages.png exists; pass --overwrite", setup=_write("strips/crop_stages.png", b"keep me")),
    Case("infer-existing-output-without-overwrite", "infer",
         f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none", 2, "out.png exists; pass --overwrite",
         setup=_write("out.png", b"keep me")),
    Case("export-over-its-own-checkpoint", "export", "--checkpoint {d}/tiny.pt --output {d}/tiny.pt --overwrite", 2,
         "is the input"),
    Case("export-existing-output-without-overwrite", "export", "--checkpoint {d}/tiny.pt --output {d}/out.onnx", 2,
         "out.onnx exists; pass --overwrite", setup=_write("out.onnx", b"keep me")),
    Case("align-same-stem-different-extension", "align", "{d}/raw {d}/aligned --size 64 --landmarks dlib", 0,
         setup=_photos("raw/a.jpg", "raw/a.png", array=data.astronaut), new={"aligned/a.jpg.png", "aligned/a.png.png"}),
    # --- bad paths and files: one line, not a traceback
    Case("infer-missing-input", "infer", f"{I} --input {{d}}/nowhere.png --output {{d}}/out.png", 2,
         "nowhere.png: no such file or folder"),
    Case("infer-unknown-output-extension", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.xyz", 2,
         "unknown image extension"),
    Case("infer-corrupt-image", "infer", f"{I} --input {{d}}/bad.png --output {{d}}/out.png --align none", 2,
         "bad.png: not a readable image", setup=_write("bad.png", b"\x89PNG\r\n\x1a\n garbage")),
    Case("infer-1x1-image", "infer", f"{I} --input {{d}}/dot.png --output {{d}}/out.png --landmarks dlib", 2,
         "dot.png: no face found", setup=lambda d: _png(d / "dot.png", np.zeros((1, 1, 3), np.uint8))),
    Case("infer-folder-carries-on-past-bad-files", "infer",
         f"{I} --input {{d}}/in --output {{d}}/out --landmarks dlib", 1, "2 of 3 input(s) failed",
         setup=_both(_photos("in/astronaut.png", array=data.astronaut), _write("in/broken.png", b"nope"),
                     lambda d: _png(d / "in/dot.png", np.zeros((1, 1, 3), np.uint8))),
         new={"out/astronaut.png"}),
    Case("infer-folder-in-batches-carries-on-past-bad-files", "infer",
         f"{I} --input {{d}}/in --output {{d}}/out --landmarks dlib --batch-size 3 --workers 2", 1,
         "2 of 4 input(s) failed",
         setup=_both(_photos("in/a.png", "in/s/b.png", array=data.astronaut), _write("in/broken.png", b"nope"),
                     lambda d: _png(d / "in/dot.png", np.zeros((1, 1, 3), np.uint8))),
         new={"out/a.png", "out/s/b.png"}),
    Case("infer-folder-of-bad-files-only-batch-larger-than-the-folder", "infer",
         f"{I} --input {{d}}/in --output {{d}}/out --landmarks dlib --batch-size 64 --workers 2", 1,
         "2 of 2 input(s) failed",
         setup=_both(_write("in/broken.png", b"nope"),
                     lambda d: _png(d / "in/dot.png", np.zeros((1, 1, 3), np.uint8)))),
    Case("infer-empty-folder", "infer", f"{I} --input {{d}}/empty --output {{d}}/out", 2, "no image files",
         setup=lambda d: (d / "empty").mkdir()),
    Case("infer-folder-without-images", "infer", f"{I} --input {{d}}/docs --output {{d}}/out", 2, "no image files",
         setup=_write("docs/readme.txt", b"text")),
    Case("infer-output-under-a-file", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/crop.png/out.png", 2,
         "is a file, not a folder"),
    Case("infer-save-stages-is-a-file", "infer",
         f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none --save-stages {{d}}/astronaut.png", 2,
         "is a file, not a folder"),
    Case("infer-unwritable-output", "infer", f"{I} --input {{d}}/crop.png --output /proc/scan-out.png --align none",
         2, "cannot write /proc/scan-out.png"),
    Case("infer-checkpoint-is-a-folder", "infer", "--checkpoint {d} --input {d}/crop.png --output {d}/out.png", 2,
         "a folder, not a checkpoint file"),
    # --- checkpoints
    Case("infer-checkpoint-without-config", "infer", BAD, 2, "no model config",
         setup=_bad_checkpoint(lambda c: c.pop("config"))),
    Case("infer-checkpoint-wrong-typed-field", "infer", BAD, 2, "GeneratorConfig.ngf must be int",
         setup=_bad_checkpoint(_wrong_type)),
    Case("infer-checkpoint-wrong-shape-weight", "infer", BAD, 2, "wrong shape", setup=_bad_checkpoint(_wrong_shape)),
    Case("infer-checkpoint-string-state-dict", "infer", BAD, 2, "'state_dict' is str",
         setup=_bad_checkpoint(lambda c: c.update(state_dict="weights"))),
    Case("infer-checkpoint-random-bytes", "infer", BAD, 2, "not a readable PyTorch checkpoint",
         setup=_write("bad.pt", bytes(range(256)) * 8)),
    Case("infer-checkpoint-empty", "infer", BAD, 2, "empty file", setup=_write("bad.pt", b"")),
    Case("infer-checkpoint-a-list", "infer", BAD, 2, "holds a list",
         setup=lambda d: _save_dict(d / "bad.pt", [1, 2, 3])),
    Case("infer-checkpoint-from-a-newer-scan", "infer", BAD, 2, "newer scan",
         setup=_bad_checkpoint(lambda c: c.update(format_version=99))),
    Case("infer-checkpoint-booby-trapped", "infer", BAD, 2, "refused", setup=_booby_trap),
    Case("export-checkpoint-without-config", "export", "--checkpoint {d}/bad.pt --output {d}/out.onnx", 2,
         "no model config", setup=_bad_checkpoint(lambda c: c.pop("config"))),
    Case("export-checkpoint-wrong-shape-weight", "export", "--checkpoint {d}/bad.pt --output {d}/out.onnx", 2,
         "wrong shape", setup=_bad_checkpoint(_wrong_shape)),
    Case("export-checkpoint-booby-trapped", "export", "--checkpoint {d}/bad.pt --output {d}/out.onnx", 2,
         "refused", setup=_booby_trap),
    # --- devices
    Case("infer-device-cuda-without-a-gpu", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.png "
         "--align none --device cuda", 2, "not available on this machine; available: cpu"),
    Case("infer-readme-bf16-cuda-line-on-a-cpu", "infer", f"{I} --input {{d}}/astronaut.png --output {{d}}/out.png "
         "--precision bf16 --device cuda", 2, "not available on this machine; available: cpu"),
    Case("infer-device-mps", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none --device mps",
         2, "not available on this machine"),
    Case("infer-device-banana", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none "
         "--device banana", 2, "is not a device name; available here: cpu"),
    # --- sizes
    Case("align-size-0", "align", "{d}/raw {d}/aligned --size 0", 2, "0 is not positive", argparse=True,
         setup=_photos("raw/a.png")),
    Case("align-size-negative", "align", "{d}/raw {d}/aligned --size -5", 2, "-5 is not positive", argparse=True,
         setup=_photos("raw/a.png")),
    Case("align-scale-0", "align", "{d}/raw {d}/aligned --scale 0", 2, "--scale 0.0: must be a positive number",
         setup=_photos("raw/a.png")),
    Case("align-empty-folder", "align", "{d}/empty {d}/aligned", 2, "no image files",
         setup=lambda d: (d / "empty").mkdir()),
    Case("align-output-is-a-file", "align", "{d}/raw {d}/crop.png", 2, "is a file; give a folder",
         setup=_photos("raw/a.png")),
    Case("export-size-not-a-multiple", "export", "--checkpoint {d}/tiny.pt --output {d}/out.onnx --size 50", 2,
         "needs a positive multiple of 16"),
    Case("export-size-negative", "export", "--checkpoint {d}/tiny.pt --output {d}/out.onnx --size -16", 2,
         "-16 is not positive", argparse=True),
    Case("align-size-huge", "align", "{d}/raw {d}/aligned --size 100000", 2, "100000 px is outside 8..8192",
         argparse=True, setup=_photos("raw/a.png")),
    Case("export-size-huge", "export", "--checkpoint {d}/tiny.pt --output {d}/out.onnx --size 100000", 2,
         "100000 px is outside 8..8192", argparse=True),
    Case("export-size-0", "export", "--checkpoint {d}/tiny.pt --output {d}/out.onnx --size 0", 2,
         "0 is not positive", argparse=True),
    Case("infer-batch-size-0", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.png --batch-size 0", 2,
         "--batch-size: 0 is not positive", argparse=True),
    Case("infer-workers-negative", "infer", f"{I} --input {{d}}/crop.png --output {{d}}/out.png --workers -1", 2,
         "--workers: -1 is outside 0..64", argparse=True),
    Case("infer-unknown-blend-kind", "infer", f"{I} --input {{d}}/astronaut.png --output {{d}}/out.png --mask circle",
         2, "--mask: invalid choice: 'circle' (choose from 'square', 'hull', ", argparse=True),
    # --- torch.compile where it cannot work: one line, early (a fresh cache, so that nothing compiled
    # before is reused)
    Case("infer-compile-without-a-cxx-compiler", "infer",
         f"{I} --input {{d}}/crop.png --output {{d}}/out.png --align none --compile", 2, "No working C++ compiler",
         env={"CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": "{d}-inductor-cache"}),
    # --- NaN
    Case("infer-model-with-nan-weights", "infer", BAD, 2, "output is NaN/inf", setup=_bad_checkpoint(_nan_weights)),
    Case("infer-folder-with-a-nan-model-names-each-file", "infer",
         "--checkpoint {d}/bad.pt --input {d}/in --output {d}/out --align none", 1,
         "in/b.png: the model's output is NaN",
         setup=_both(_bad_checkpoint(_nan_weights), _photos("in/a.png", "in/b.png"))),
    # --- the demo set builder
    Case("demo-set-into-a-file", "demo-set", "{d}/crop.png --train 2 --test 1", 2, "crop.png is a file; give a folder"),
    Case("demo-set-unwritable", "demo-set", "/proc/scan-demo --train 2 --test 1", 2, "cannot write /proc/scan-demo"),
    Case("infer-every-face-without-paste-back", "infer", f"{I} --input {{d}}/astronaut.png --output {{d}}/out.png "
         "--faces all --no-paste-back", 2, "--faces all with --no-paste-back: one output per photo holds one face"),
    Case("demo-set-size-1", "demo-set", "{d}/set --size 1", 2, "1 is outside 8..1024", argparse=True),
    Case("demo-set-size-2048", "demo-set", "{d}/set --size 2048", 2, "2048 is outside 8..1024", argparse=True),
    Case("demo-set-train-100000000", "demo-set", "{d}/set --train 100000000", 2, "100000000 is outside 1..20000",
         argparse=True),
    Case("demo-set-too-large-for-memory", "demo-set", "{d}/set --train 10000 --size 512", 2,
         "would hold 126.0 GB in memory while they are drawn; at most 4 GB"),
    Case("demo-set-over-an-existing-one", "demo-set", "{d}/data --train 2 --test 1", 2, "already holds a data set"),
    # --- training
    Case("train-resume-from-random-bytes", "train", "--data.root {d}/data --ckpt_path {d}/bad.ckpt", 2,
         "bad.ckpt: not a readable PyTorch checkpoint", setup=_write("bad.ckpt", bytes(range(256)) * 8)),
    Case("train-resume-from-an-empty-file", "train", "--data.root {d}/data --ckpt_path {d}/bad.ckpt", 2,
         "empty file", setup=_write("bad.ckpt", b"")),
    Case("train-resume-from-a-truncated-file", "train", "--data.root {d}/data --ckpt_path {d}/bad.ckpt", 2,
         "not a readable PyTorch checkpoint", setup=_truncated_copy("tiny.pt", "bad.ckpt")),
    Case("train-resume-from-a-model-file", "train", "--data.root {d}/data --ckpt_path {d}/tiny.pt", 2,
         "cannot resume a run"),
    Case("train-resume-from-a-missing-file", "train", "--data.root {d}/data --ckpt_path {d}/nowhere.ckpt", 2,
         "nowhere.ckpt: no such checkpoint file"),
    Case("train-only-broken-files-with-2-workers", "train", "--data.root {d}/bad --data.num_workers 2", 2,
         "no file could be decoded", setup=_truncated_jpegs, new_run=True),
    Case("train-reuses-an-existing-logger-version", "train",
         "--data.root {d}/data --trainer.logger.init_args.save_dir {d}/runs --trainer.logger.init_args.version 0", 2,
         "holds an earlier run", setup=_earlier_run),
    Case("train-batch-larger-than-the-data", "train", "--data.root {d}/data --data.batch_size 20", 2,
         "fewer than one batch"),
    Case("train-nan-losses-stop-the-run-with-image-logging-on", "train",
         "--data.root {d}/data --model.lr 1e30 --model.image_log_every_n_steps 1 --model.max_nonfinite_steps 2 "
         "--trainer.max_epochs 4", 2, "loss was NaN/inf for", new_run=True),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, tuple[Case, subprocess.CompletedProcess, dict, dict, Path]]:
    pool = tmp_path_factory.mktemp("pool")
    scan.save_model(scan.create_model("tiny"), pool / "tiny.pt")
    _png(pool / "astronaut.png", data.astronaut())
    _png(pool / "crop.png", _crop())
    build_demo_set(pool / "data", train=4, test=2, size=72)

    # Two warm interpreters fork each case's command (tests/command_server.py), so that no case pays
    # seconds of imports; a case with its own environment runs as a plain subprocess.
    servers: queue.Queue[CommandServer] = queue.Queue()
    for _ in range(2):
        servers.put(CommandServer())

    def command(argv: list[str], d: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
        if env:
            return subprocess.run([sys.executable, *argv], cwd=d, capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore", **env})
        server = servers.get()
        try:
            return server.run(argv, d)
        finally:
            servers.put(server)

    def run(case: Case):
        d = tmp_path_factory.mktemp(case.id)
        for item in pool.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy)(item, d / item.name)
        if case.setup is not None:
            case.setup(d)
        before = _snapshot(d)
        args = case.args.replace("{d}", str(d)).split()
        start = time.perf_counter()
        env = {k: v.replace("{d}", str(d)) for k, v in case.env.items()}
        result = command([*PROGRAMS[case.program], *args], d, env)
        print(f"{case.id}: {time.perf_counter() - start:.1f} s", file=sys.__stderr__)
        return case.id, (case, result, before, _snapshot(d), d)

    try:
        with ThreadPoolExecutor(max_workers=2) as executor:
            return dict(executor.map(run, CASES))
    finally:
        while not servers.empty():
            servers.get().close()


def test_the_table_covers_every_command():
    assert {case.program for case in CASES} == set(PROGRAMS)
    assert len({case.id for case in CASES}) == len(CASES)


def _train_in_process(tmp_path, monkeypatch, *extra: str) -> int:
    """train.py's main in this process (the table's subprocesses cost seconds of imports each)."""
    from scan.datasets.demo import build_demo_set
    from scan.training.cli import main as train_main

    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.chdir(tmp_path)
    build_demo_set(tmp_path / "data", train=4, test=2, size=72)
    return train_main([*PROGRAMS["train"][1:], "--data.root", str(tmp_path / "data"), *extra])


def test_a_bad_training_option_is_its_line_and_the_tip_not_a_usage_dump(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        _train_in_process(tmp_path, monkeypatch, "--model.bogus", "3")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-2:] == ["tip: For details of accepted options run: train.py fit --help",
                                             "error: unrecognized arguments: --model.bogus 3"]
    assert "usage:" not in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--model.model_overrides", '{"loss": {"lambda_cycle": "x"}}'], "LossConfig.lambda_cycle must be float, got 'x'"),
    (["--trainer.accelerator", "gpu"], "No supported gpu backend found"),
])
def test_late_training_mistakes_are_one_line_before_any_step(tmp_path, monkeypatch, capsys, extra, message):
    if "gpu" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert _train_in_process(tmp_path, monkeypatch, *extra) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "a bug" not in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_run_that_fails_before_writing_anything_leaves_no_empty_log_folder(tmp_path, monkeypatch, capsys):
    import scan.training.cli as training_cli

    def disk_full(path, write):  # the run's folder is made, then its first file (config.yaml) fails
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        raise OutputError(f"cannot write {path}: No space left on device (0.0 MB free there)")

    monkeypatch.setattr(training_cli, "atomic_write", disk_full)
    assert _train_in_process(tmp_path, monkeypatch) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "runs/demo/version_0").exists()  # else the next run would be version_1
    assert (tmp_path / "runs/demo").is_dir()  # only the run's own folder goes


def test_only_a_run_folder_without_anything_logged_is_removed(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from scan.training.interrupts import remove_unused_folder

    def events(folder: Path, scalars: int) -> None:
        writer = SummaryWriter(str(folder))  # its file starts with a header record
        for step in range(scalars):
            writer.add_scalar("loss", 1.0, step)
        writer.close()

    (tmp_path / "run/checkpoints/a").mkdir(parents=True)
    events(tmp_path / "run", scalars=0)
    assert remove_unused_folder(tmp_path / "run") and not (tmp_path / "run").exists()
    events(tmp_path / "logged", scalars=1)  # one scalar logged keeps it
    (tmp_path / "logged/empty").mkdir()
    assert not remove_unused_folder(tmp_path / "logged") and (tmp_path / "logged/empty").is_dir()
    (tmp_path / "kept/checkpoints").mkdir(parents=True)
    (tmp_path / "kept/checkpoints/last.ckpt").write_bytes(b"")  # any other file, however small, keeps it all
    assert not remove_unused_folder(tmp_path / "kept") and (tmp_path / "kept/checkpoints/last.ckpt").is_file()
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked/elsewhere").symlink_to(tmp_path / "kept")  # a link is not followed, nor removed
    assert not remove_unused_folder(tmp_path / "linked") and (tmp_path / "kept/checkpoints").is_dir()
    assert not remove_unused_folder(tmp_path / "missing")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, results):
    _, result, before, after, d = results[case.id]
    stderr = result.stderr
    assert result.returncode == case.code, stderr
    assert "Traceback" not in stderr and "weights_only=False" not in stderr and "set to `False`" not in stderr
    if case.code == 2:
        # ours: "error: ...", argparse's: "prog: error: ..."
        errors = [line for line in stderr.splitlines() if line.startswith("error:") or ": error: " in line]
        assert len(errors) == 1 and case.message in errors[0], stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        if case.argparse:  # argparse's usage, then its one error line
            assert lines[0].startswith("usage:") and lines[-1] == errors[0], stderr
        elif case.program != "train":  # (Lightning may print its own notes before our line)
            assert lines == errors, stderr
    elif case.code == 1:
        assert case.message in stderr
    # Nothing that was there changed; exactly the expected files appeared; no temporary file is left.
    assert {k: v for k, v in after.items() if k in before} == before
    appeared = set(after) - set(before)
    if case.new_run:
        appeared = {name for name in appeared if not name.startswith("runs/demo/version_0/")}
    assert appeared == case.new, stderr
    assert not (d / "pwned").exists()


@pytest.mark.parametrize("command", [
    ["benchmarks/model_cost.py", "--sizes", "0"],
    ["benchmarks/model_cost.py", "--presets", "nope"],
    ["benchmarks/video_flicker.py", "--seconds", "nan"],
    ["benchmarks/video_flicker.py", "--width", "-3"],
])
def test_benchmark_scripts_refuse_bad_arguments_in_one_line(command, commands):
    result = commands.run([ROOT / command[0], *command[1:]])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"{Path(command[0]).name}: error: argument {command[1]}")
