"""The README's commands and code still work: every shell command is recognised and its options
parse; the inference, alignment and export commands run for real on stand-in files (a `tiny` model,
the astronaut as the selfie); `scan-web` loads its models and builds its page (tests/test_web.py serves
it); the TensorBoard command reads a real (tiny) run's event files and finds
the tags the README names; each benchmark command runs in its `--quick` mode and writes its results;
training commands, which need real data sets, are parsed only (what they do is tested in
test_training.py and run by the demo); every Python block runs, and the YAML shown is the shipped
config's."""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from command_server import CommandServer
from PIL import Image
from skimage import data as skdata

import scan
from scan.stages import ResnetGenerator

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def shell_commands() -> list[list[str]]:
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
                words.pop(0)
            if words:
                commands.append(words)
    return commands


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder laid out like the README assumes: the repo's configs, a finished run's config, and
    stand-ins for the files the commands name (a trained model, selfies, an aligned crop)."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    run = tmp_path / "runs" / "selfie2anime" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text((ROOT / "configs" / "selfie2anime.yaml").read_text())
    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), tmp_path / "model.pt")
    selfie = Image.fromarray(skdata.astronaut())
    selfie.save(tmp_path / "me.jpg")
    for folder in ("photos", "raw_selfies"):
        (tmp_path / folder).mkdir()
        selfie.save(tmp_path / folder / "astronaut.png")
    selfie.crop((150, 50, 300, 200)).save(tmp_path / "crop.png")
    from scan.video import write_video  # a 4-frame clip of the selfie for the video commands

    write_video(tmp_path / "clip.mp4", [np.asarray(selfie.crop((100 + 4 * i, 0, 420 + 4 * i, 320))) for i in range(4)],
                25)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["README"])  # the entry points see only the README's arguments
    return tmp_path


def _parses_and_runs(module, args: list[str]) -> None:
    """argparse exits (status 2) on an unknown option or a bad value; then the command runs, unless
    it asks for a GPU this machine lacks."""
    module.build_parser().parse_args(args)
    if "cuda" in args and not torch.cuda.is_available():
        return
    assert module.main(args) == 0


def check(words: list[str], capsys) -> None:
    """Fail unless ``words`` is a command some check here knows, and its options are accepted."""
    try:
        _check(words)
    except SystemExit as e:
        if e.code not in (0, None):
            pytest.fail(f"README command {shlex.join(words)!r} is refused: {capsys.readouterr().err[-1500:]}")


def _check(words: list[str]) -> None:
    program = words[0] if words[0] != "python" else " ".join(words[:2])
    if program == "make":
        dry_run = subprocess.run(["make", "-n", "-o", ".venv/.installed", *words[1:]], cwd=ROOT,
                                 capture_output=True, text=True)
        assert dry_run.returncode == 0, dry_run.stderr
    elif program == "python train.py":
        from scan.training.cli import main

        status = main(words[2:] + ([] if "--help" in words else ["--print_config"]))  # both end in SystemExit
        pytest.fail(f"train.py returned {status} instead of stopping after printing")
    elif program == "python infer.py":
        import scan.infer_cli

        _parses_and_runs(scan.infer_cli, words[2:])
    elif program == "scan-align":
        import scan.align.cli

        _parses_and_runs(scan.align.cli, words[1:])
    elif program == "scan-export":
        import scan.export

        _parses_and_runs(scan.export, words[1:])
    elif program == "scan-web":  # it serves until stopped: load its models and build its page only
        import scan.web

        args = scan.web.build_parser().parse_args(words[1:])
        scan.web.build_app(scan.web.Models(args.checkpoint, args.device, args.precision, args.landmarks))
    elif program == "tensorboard":
        _check_tensorboard(words)
    elif program == "scan-eval":
        _check_scan_eval(words)
    elif program == "python -m" and words[2] == "scan.datasets.demo":
        from scan.datasets.demo import main

        assert main(words[3:]) == 0  # it is quick: build the set for real
        assert (Path(words[3]) / "testA_target").is_dir()
    elif program.startswith("python benchmarks/"):
        _check_benchmark(words)
    else:
        pytest.fail(f"README command {shlex.join(words)!r} is checked by nothing; teach tests/test_readme.py")


def _check_scan_eval(words: list[str]) -> None:
    """Parse the command; run it on a small demo set and the workdir's model where it names files that
    can stand here (``demo_output/``, ``old.pt``), offline: KID/FID are then skipped with one line."""
    import scan.evaluation.cli
    from scan.datasets.demo import build_demo_set

    args = scan.evaluation.cli.build_parser().parse_args(words[1:])
    if not str(args.data).startswith("demo_output"):
        return  # a real data set the README points to (/data/selfie2anime)
    build_demo_set(args.data, train=2, test=3, size=72)
    for path in args.checkpoint:
        shutil.copyfile("model.pt", path)
    os.environ["SCAN_OFFLINE"] = "1"
    try:
        assert scan.evaluation.cli.main(words[1:]) == 0
    finally:
        del os.environ["SCAN_OFFLINE"]


def _check_tensorboard(words: list[str]) -> None:
    """Train a tiny run where the README's logdir points (as `python train.py fit` would name it), then
    run the README's command with `--inspect`, which reads the event files and lists their tags."""
    binary = Path(sys.executable).with_name("tensorboard")
    assert binary.exists(), "tensorboard is not installed beside python"
    assert words[1] == "--logdir"
    from scan.datasets import UnpairedDataModule
    from scan.datasets.demo import build_demo_set
    from scan.training import Phase, SCANModule
    from scan.training.callbacks import EvaluationCallback

    data = build_demo_set(Path("tb_data"), train=4, test=2, size=72)
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, accelerator="cpu", devices=1, log_every_n_steps=1,
        logger=pl.loggers.TensorBoardLogger(words[2], name="selfie2anime"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[EvaluationCallback()],
    )
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=1)
    trainer.fit(module, UnpairedDataModule(root=str(data), size=64, batch_size=2, num_workers=0))
    shown = subprocess.run([str(binary), "--inspect", *words[1:]], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    sections = re.split(r"^(audio|histograms|images|scalars|tensor)\b.*$", shown.stdout.split("Event statistics")[0],
                        flags=re.M)
    tags = {kind: set(body.split()) for kind, body in zip(sections[1::2], sections[2::2])}
    # The tags the README names: "Every loss per stage (`train/stage1/G_ab_gan`, `.../cycle_a`, ...)".
    [(first, more)] = re.findall(r"`(train/stage1/\w+)`((?:, `\.\.\./\w+`)+)", README)
    named = {first} | {f"train/stage1/{term}" for term in re.findall(r"`\.\.\./(\w+)`", more)}
    assert len(named) >= 4 and named <= tags["scalars"], (named, tags)
    assert {"lr/stage1", "val/stage1/psnr_a2b"} <= tags["scalars"]  # learning rates, validation PSNR
    assert {"train/stage1", "val/stage1"} <= tags["images"]  # image grids from training and validation


_BENCHMARK_COMMANDS: list[CommandServer] = []


@pytest.fixture(autouse=True)
def _benchmark_server(commands):
    """The benchmark commands run in the session's warm interpreter (conftest's ``commands``)."""
    _BENCHMARK_COMMANDS.append(commands)
    yield
    _BENCHMARK_COMMANDS.clear()


def _quality_module():
    """benchmarks/quality.py as a module (it imports its neighbours, as when run from its folder)."""
    name = "readme_quality"  # registered while it runs: its dataclasses look their module up
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "quality.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.modules.pop(name, None)


def _check_benchmark(words: list[str]) -> None:
    """Run the README's benchmark command in its quick mode, results in the working folder, and check
    what it wrote."""
    script = ROOT / words[1]
    assert script.is_file(), f"{script} does not exist"
    out = Path(script.stem).resolve()
    if script.stem == "quality":  # a folder of results, and its demo set
        outputs = ["--out", str(out), "--data", str(out / "data")]
    elif script.stem == "few_shot":  # a folder of results (its data sets and the cached base model too)
        outputs = ["--out", str(out)]
    else:
        outputs = ["--out", f"{out}.json"]
    mapping = words[words.index("--mapping") + 1] if "--mapping" in words else "cartoon"
    if script.stem == "quality" and mapping != "cartoon":
        # Every variant is run on the default mapping (`quality.py`): another mapping's command checks
        # its data and one run; its own variants are parsed here (a later --variants replaces them).
        for spec in words[words.index("--variants") + 1:] if "--variants" in words else ():
            _quality_module().parse_variant(spec, 4, 64)
        outputs += ["--variants", "scan"]
    result = _BENCHMARK_COMMANDS[0].run([str(script), *words[2:], "--quick", *outputs], cwd=Path.cwd())
    assert result.returncode == 0, result.stderr[-3000:]
    if script.stem == "few_shot":  # tested in detail by tests/test_finetune.py
        (report_path,) = out.glob("few-shot-*.json")
        assert json.loads(report_path.read_text())["runs"]
        return
    if script.stem == "quality":
        (report_path,) = out.glob(f"quality-{mapping}-*.json")
        report = json.loads(report_path.read_text())
        assert report["meta"]["mapping"] == mapping
        if mapping != "cartoon":
            assert set(report["results"]) == {"scan"} and report["results"]["scan"][0]["final"]["psnr"] > 0
            return
        variants = (words[words.index("--variants") + 1:] if "--variants" in words
                    else ["cyclegan", "cyclegan+skip", "scan", "scan+joint", "scan-fixed"])
        assert set(report["results"]) == set(variants)
        (joint_run,) = report["results"]["scan+joint"]
        assert [p["phase"] for p in joint_run["trace"]][::len(joint_run["trace"]) - 1] == ["1", "joint"]
        assert {"untranslated photo", "oracle: answer through 32 px"} <= set(report["references"])
        (scan_run,) = report["results"]["scan"]
        assert {p["stage"] for p in scan_run["trace"]} == {1, 2}
        assert all(p["psnr"] > 0 and -1 <= p["ssim"] <= 1 for p in scan_run["trace"])
        final = scan_run["final"]
        assert len(final["stage_psnr"]) == 2 and final["stage_psnr"][-1] == final["psnr"]
        assert scan_run["gflops"] > 0 and scan_run["latency_ms"] > 0
        table = report_path.with_suffix(".md").read_text()
        assert "| untranslated photo |" in table and "| scan | 2 |" in table and "| oracle: answer through" in table
        assert report_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return
    rows = json.loads(Path(f"{out}.json").read_text())["rows"]
    assert rows, f"{words[1]} wrote no rows"
    if script.stem == "model_cost":  # every non-tiny preset, cyclegan-256 the reference column
        assert {r["preset"] for r in rows} == set(scan.list_models()) - {"tiny"}
        assert all(r["gflops"] > 0 and r["params_m"] > 0 and r["latency_fp32_s"] > 0 for r in rows)
        assert all(r["gflops_vs_ref"] == 1.0 for r in rows if r["preset"] == "cyclegan-256")
    elif script.stem == "gpu_throughput":  # inference per precision, format and mode; ours vs the plain loop
        report = json.loads(Path(f"{out}.json").read_text())
        inference, training = report["inference"], report["training"]
        assert {(r["precision"], r["memory_format"], r["compiled"]) for r in inference} == {
            (p, f, c) for p in ("fp32", "bf16") for f in ("contiguous", "channels_last") for c in (False, True)}
        assert all(r["images_s"] > 0 and r["gflops_per_image"] > 0 for r in inference)
        assert {(r["phase"], r["precision"]) for r in training} == {("joint", "fp32"), ("joint", "bf16")}
        assert all(r["ours_images_s"] > 0 and r["plain_images_s"] > 0 and r["tflops_plain"] > 0 for r in training)
        assert "| tiny | joint | 64 | 2 | bf16 | eager |" in Path(f"{out}.md").read_text()
    elif script.stem == "train_throughput":  # both stages, both precisions, ours and the plain step
        expected = {(f"stage {k}", precision) for k in (1, 2) for precision in ("fp32", "bf16")}
        assert {(r["phase"], r["precision"]) for r in rows} == expected
        assert all(r["ours_it_s"] > 0 and r["plain_it_s"] > 0 and r["data_images_s"] > 0 for r in rows)
    elif script.stem == "video_flicker":  # flicker, jitter and speed, per-frame against ours; table and plot
        flicker = {r["method"]: r["warp_error"] for r in rows if r["kind"] == "flicker"}
        assert set(flicker) == {"input frames", "per-frame", "ours, no colour smoothing", "ours"}
        assert all(v > 0 for v in flicker.values())
        assert {r["method"] for r in rows if r["kind"] == "jitter"} == {"per-frame", "ours"}
        assert all(r["fps"] > 0 for r in rows if r["kind"] == "speed")
        (parts,) = [r for r in rows if r["kind"] == "parts"]  # each step of a frame timed alone
        assert all(ms > 0 for ms in parts["ms"].values()) and parts["ours_fps"] > 0
        assert "| ours |" in Path(f"{out}.md").read_text()
        assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif script.stem == "infer_latency":  # every engine, every part of the pipeline timed
        assert {r["engine"] for r in rows} == {"fp32", "bf16", "onnxruntime"}
        assert all(r[k] > 0 for r in rows for k in ("detect_ms", "landmarks_ms", "translate_ms", "paste_ms"))
        assert all({"square", "seamless"} <= set(r["paste_ms_by_kind"]) for r in rows)
    elif script.stem == "seams":  # every blend kind on every group of photos; table and picture
        from scan.align import blend_kinds

        kinds = set(blend_kinds()) - {"parsing"}  # parsing needs the user's network
        for group in ("astronaut", "held-out photos", "clip frames"):
            measured = {r["kind"]: r for r in rows if r["photos"] == group}
            assert set(measured) == kinds and all(r["count"] > 0 and r["gradient"] > 0 for r in measured.values())
            assert measured["square"]["gradient_vs_square"] == 1.0
        assert "| astronaut (1) | seamless |" in Path(f"{out}.md").read_text()
        assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    elif script.stem == "contention":  # quiet and beside busy processes, the slowdown against the fair share
        (row,) = rows
        assert row["quiet_s"] > 0 and row["slowdown"] == pytest.approx(row["loaded_s"] / row["quiet_s"])
        cpus = json.loads(Path(f"{out}.json").read_text())["meta"]["cpus"]
        assert row["fair"] == pytest.approx((cpus + 2) / cpus)  # beside 2 busy processes
        assert row["vs_fair"] == pytest.approx(row["slowdown"] / row["fair"])
        assert "| image | scan |" in Path(out).with_suffix(".md").read_text()
    else:
        pytest.fail(f"{words[1]}: nothing here checks its output; teach tests/test_readme.py")


def test_the_readme_shows_the_commands_this_file_checks():
    programs = {w[0] if w[0] != "python" else " ".join(w[:2]) for w in shell_commands()}
    assert {"make", "python train.py", "python infer.py", "scan-align", "scan-export", "tensorboard"} <= programs
    benchmarks = {w[1] for w in shell_commands() if w[1:2] and w[1].startswith("benchmarks/")}
    assert benchmarks == {f"benchmarks/{p.name}" for p in (ROOT / "benchmarks").glob("*.py")}  # each one shown
    assert sum(w[:2] == ["make", "demo"] for w in shell_commands()) >= 1
    assert "scan-web" in programs


def distinct_commands() -> list[list[str]]:
    """The README's commands, each run once: ``quality.py --mapping cartoon`` is ``quality.py`` (its default)."""
    seen, kept = set(), []
    for words in shell_commands():
        key = tuple(w for i, w in enumerate(words) if not (words[i - 1:i] == ["--mapping"] and w == "cartoon")
                    and not (w == "--mapping" and words[i + 1:i + 2] == ["cartoon"]))
        if key not in seen:
            seen.add(key)
            kept.append(words)
    return kept


# The benchmark commands run their scripts (tens of seconds each): `slow`.
@pytest.mark.parametrize("words", [pytest.param(w, marks=pytest.mark.slow) if w[1:2] and w[1].startswith("benchmarks/")
                                   else w for w in distinct_commands()], ids=lambda w: shlex.join(w)[:60])
def test_readme_command_parses_and_runs_where_it_can(words, workdir, capsys):
    check(words, capsys)


def test_a_misspelt_option_would_be_caught(workdir, capsys):
    with pytest.raises(pytest.fail.Exception, match="refused"):
        check(["python", "infer.py", "--checkpoint", "m.pt", "--input", "a.jpg", "--output", "b.png", "--algn", "ffhq"],
              capsys)
    with pytest.raises(pytest.fail.Exception, match="refused"):
        check(["python", "train.py", "fit", "--config", "configs/selfie2anime.yaml", "--data.rooot", "x"], capsys)


@pytest.mark.slow
def test_readme_python_blocks_run(workdir):
    # The files the snippets name beyond the fixture's: an aligned crop, a CycleGAN generator.
    Image.fromarray(skdata.astronaut()[40:296, 130:386]).save(workdir / "aligned_crop.png")
    torch.save(ResnetGenerator(3, 3, ngf=8, n_blocks=2).state_dict(), workdir / "latest_net_G_A.pth")
    python = blocks("python")
    assert len(python) >= 3
    for code in python:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert Image.open(workdir / "me_anime.png").size == (512, 512)


def test_readme_schedule_is_the_shipped_selfie2anime_config():
    (shown,) = [yaml.safe_load(b) for b in blocks("yaml") if "schedule" in b]
    shipped = yaml.safe_load((ROOT / "configs" / "selfie2anime.yaml").read_text())
    assert shown["schedule"] == shipped["model"]["schedule"]
