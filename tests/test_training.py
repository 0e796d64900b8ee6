"""Training: phases, freezing, logging, non-finite losses, precision options, resume, DDP, learning."""

import glob
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.overrides import TorchFunctionMode

import scan
from scan.checkpoint import read_checkpoint
from scan.config import SCANConfig
from scan.datasets import UnpairedDataModule
from scan.datasets.demo import build_demo_set
from scan.training import NonFiniteLossError, OptimizerSpec, Phase, SCANModule
from scan.training.callbacks import EvaluationCallback
from scan.training.cli import main as train_main
from scan.training.progress import throttled

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_set(tmp_path_factory.mktemp("data") / "demo", train=24, test=4, size=72)


def _trainer(tmp_path, max_epochs, batches=3, **kwargs) -> pl.Trainer:
    defaults = dict(
        max_epochs=max_epochs, limit_train_batches=batches, limit_val_batches=1, accelerator="cpu", devices=1,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="run"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def _datamodule(root, **kwargs) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), size=64, batch_size=2, num_workers=0, **kwargs)


class Snapshots(pl.Callback):
    """Parameters and learning rates at every epoch's start and end."""

    def __init__(self):
        self.start, self.end, self.lrs = {}, {}, {}

    @staticmethod
    def _params(module):
        return {n: p.detach().clone() for n, p in module.model.named_parameters()}

    def on_train_epoch_start(self, trainer, module):
        self.start[trainer.current_epoch] = self._params(module)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        # Callbacks' epoch-start hooks run before the module's, which sets the rate: read it here.
        if batch_idx == 0:
            index, _ = module.phase_at(trainer.current_epoch)
            g = module._optimizer(index, "generator")
            self.lrs[trainer.current_epoch] = [group["lr"] for group in g.param_groups]

    def on_train_epoch_end(self, trainer, module):
        self.end[trainer.current_epoch] = self._params(module)

    def changed(self, epoch, prefix):
        names = [n for n in self.start[epoch] if n.startswith(prefix)]
        assert names, prefix
        return [not torch.equal(self.start[epoch][n], self.end[epoch][n]) for n in names]


@pytest.mark.slow
def test_every_phase_trains_its_part_and_logs_to_tensorboard(tmp_path, demo_root):
    # Bad files in the training folder are reported and skipped; the run is fine.
    bad = tmp_path / "with_bad"
    shutil.copytree(demo_root, bad)
    (bad / "trainA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (bad / "trainB" / "empty.jpg").write_bytes(b"")
    module = SCANModule(
        "tiny",
        schedule=[Phase(1, 1, 0), Phase(2, 1, 1), Phase("joint", 1, 0)],
        lr=1e-3,
        joint_lr_scale=0.1,
        image_log_every_n_steps=2,
    )
    snapshots = Snapshots()
    trainer = _trainer(tmp_path, max_epochs=4, callbacks=[snapshots, EvaluationCallback(metrics=["psnr", "cycle"],
                                                                                         max_images=2, image_rows=2)])
    with pytest.warns(UserWarning) as record:
        trainer.fit(module, _datamodule(bad))
    reported = "\n".join(str(w.message) for w in record)
    assert "broken.png" in reported and "empty.jpg" in reported

    # Phase 1 (epoch 0): stage 1 and D_1 learn; stage 2 and D_2 are untouched.
    assert all(snapshots.changed(0, "G_ab.stages.0")) and all(snapshots.changed(0, "D_a.0"))
    assert not any(snapshots.changed(0, "G_ab.stages.1")) and not any(snapshots.changed(0, "D_b.1"))
    # Phase 2 (epochs 1-2): stage 1 frozen, stage 2 and its fusion block learn.
    for epoch in (1, 2):
        assert not any(snapshots.changed(epoch, "G_ab.stages.0")) and not any(snapshots.changed(epoch, "D_a.0"))
        assert all(snapshots.changed(epoch, "G_ba.stages.1")) and all(snapshots.changed(epoch, "G_ab.fusions.0"))
    # Joint (epoch 3): every generator stage learns, the earlier one at a tenth of the rate.
    assert all(snapshots.changed(3, "G_ab.stages.0")) and all(snapshots.changed(3, "G_ab.stages.1"))
    # Learning rates: constant, then CycleGAN's linear decay within phase 2 (1 - 1/2 at its 2nd epoch).
    assert snapshots.lrs[0] == [1e-3] and snapshots.lrs[1] == [1e-3]
    assert snapshots.lrs[2] == pytest.approx([0.5e-3])
    assert snapshots.lrs[3] == pytest.approx([1e-4, 1e-3])

    (event_file,) = glob.glob(str(tmp_path / "run" / "version_0" / "events.out.tfevents.*"))
    events = EventAccumulator(event_file, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for stage in (1, 2):
        for term in ("G_ab_gan", "G_ba_gan", "cycle_a", "cycle_b", "idt_a", "idt_b", "G_total", "D_a", "D_b"):
            assert f"train/stage{stage}/{term}" in scalars
        assert f"lr/stage{stage}" in scalars
        assert {f"val/stage{stage}/psnr_a2b", f"val/stage{stage}/cycle_a2b", f"val/stage{stage}/cycle_b2a"} <= scalars
        assert {f"train/stage{stage}", f"val/stage{stage}"} <= images
    grid = events.Images("val/stage2")[-1]
    # two samples; 6 images + 2 alpha heat maps of 64 px per row
    assert (grid.height, grid.width) == (2 + 2 * 66, 2 + 8 * 66)


def _generator_loss_always_nan(module: SCANModule, monkeypatch) -> None:
    real_step = module.model.generator_step

    def nan_step(*args, **kwargs):
        step = real_step(*args, **kwargs)
        step.loss = step.loss * float("nan")
        return step

    monkeypatch.setattr(module.model, "generator_step", nan_step)


@pytest.mark.slow
def test_nonfinite_loss_skips_the_step_then_stops_the_run(tmp_path, demo_root, monkeypatch):
    module = SCANModule("tiny", schedule=[Phase(1, 5, 0)], max_nonfinite_steps=3, image_log_every_n_steps=0)
    _generator_loss_always_nan(module, monkeypatch)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match="generator loss was NaN/inf for 3 steps in a row"):
        _trainer(tmp_path, max_epochs=5, batches=10).fit(module, _datamodule(demo_root))
    after = dict(module.model.named_parameters())
    assert not torch.equal(before["D_b.0.model.0.weight"], after["D_b.0.model.0.weight"])  # D went on learning...
    assert all(torch.equal(before[f"G_ab.{n}"], p) for n, p in module.model.G_ab.named_parameters())  # ...G not


@pytest.mark.slow
def test_a_nonfinite_step_is_skipped_whole_and_reported_at_the_next_check(tmp_path, demo_root, monkeypatch):
    """One NaN step among finite ones: Adam leaves parameters, moments and step count as the step
    before found them (on the device, no host decision), the run goes on, and the next check warns."""
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], max_nonfinite_steps=4, image_log_every_n_steps=0)
    real_step, calls, seen = module.model.generator_step, [], {}

    def nan_on_second_batch(real_a, real_b, stage):
        step = real_step(real_a, real_b, stage)
        calls.append(1)
        if len(calls) == 2:
            opt = module.optimizers()[0].optimizer
            seen["params"] = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
            seen["moments"] = [opt.state[p]["exp_avg"].clone() for g in opt.param_groups for p in g["params"]]
            seen["step"] = [opt.state[p]["step"].clone() for g in opt.param_groups for p in g["params"]]
            step.loss = step.loss * float("inf")
        elif len(calls) == 3:  # the third step starts where the skipped one found things
            opt = module.optimizers()[0].optimizer
            params = [p for g in opt.param_groups for p in g["params"]]
            now = {"params": params, "moments": [opt.state[p]["exp_avg"] for p in params],
                   "step": [opt.state[p]["step"] for p in params]}
            seen["unchanged"] = all(torch.equal(a, b) for key in now for a, b in zip(seen[key], now[key]))
        return step

    monkeypatch.setattr(module.model, "generator_step", nan_on_second_batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, max_epochs=1, batches=5, limit_val_batches=0).fit(module, _datamodule(demo_root))
    assert seen["unchanged"] is True
    assert sum("1 of the last 4 generator steps skipped" in str(w.message) for w in caught) == 1
    opt = module.optimizers()[0].optimizer
    assert {float(opt.state[p]["step"]) for g in opt.param_groups for p in g["params"]} == {4.0}  # 5 batches, 1 skipped


# Tensor methods that make the host wait for the device (on a GPU; on the CPU they are cheap).
_HOST_SYNCS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero",
               "unique", "masked_select"}


class _HostSyncs(TorchFunctionMode):
    """Records every call of a :data:`_HOST_SYNCS` method, with the repository function that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _HOST_SYNCS:
            ours = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(str(ROOT))
                    and "/tests/" not in f.filename]
            self.calls.append((name, f"{Path(ours[-1].filename).name}:{ours[-1].name}" if ours else "elsewhere"))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("stage", [1, "joint"])
def test_the_training_step_waits_for_the_device_only_at_the_nonfinite_check(tmp_path, demo_root, stage):
    """Issue 12: no host synchronisation in the step: not the non-finite guard, not the logging."""
    module = SCANModule("tiny", schedule=[Phase(stage, 1, 0)], max_nonfinite_steps=3, image_log_every_n_steps=0)
    real_step, per_batch = module.training_step, []

    def recorded(batch, batch_idx):
        with _HostSyncs() as syncs:
            real_step(batch, batch_idx)
        per_batch.append([call for call in syncs.calls if call[1] != "losses.py:query"])

    # The image pool's coin flips are drawn from torch's CPU generator: no device involved.
    module.training_step = recorded
    _trainer(tmp_path, max_epochs=1, batches=6, limit_val_batches=0, logger=False).fit(module, _datamodule(demo_root))
    check = [("tolist", "module.py:_check_nonfinite")]
    assert per_batch == [[], [], check, [], [], check]


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_train(tmp_path, demo_root):
    """bf16-mixed really runs the convolutions in bf16 (on fp32 master weights), and channels_last
    really reaches the conv weights and the batches the convs see."""
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], channels_last=True, image_log_every_n_steps=0)
    convs = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    seen = []  # per conv call: (output dtype, input in channels_last)

    def record(conv, inputs, output):
        seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    for conv in convs:
        conv.register_forward_hook(record)
    trainer = _trainer(tmp_path, max_epochs=1, batches=2, precision="bf16-mixed")
    trainer.fit(module, _datamodule(demo_root))
    assert trainer.global_step == 4  # 2 batches x (generator + discriminator step)
    assert seen and {dtype for dtype, _ in seen} == {torch.bfloat16}  # every conv call, in bf16
    assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed: the weights stay fp32
    # Every conv weight is laid out channels-last (a 3x3 conv's is then no longer NCHW-contiguous) ...
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(c.weight.is_contiguous() for c in convs if c.kernel_size != (1, 1) and c.in_channels > 1)
    # ... and the channels-last batch reaches convs (some layers, e.g. padding, hand on NCHW tensors).
    assert any(channels_last for _, channels_last in seen)
    assert torch.isfinite(trainer.callback_metrics["train/stage1/G_total"])


def _train_cmd(data_root, *extra):
    return [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs" / "demo.yaml"),
        # tiny at its own 32/64 px (the demo doubles it), the size the in-process checks below build
        "--model.model_overrides", "null",
        "--data.root", str(data_root), "--data.num_workers", "0", "--data.batch_size", "2",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", *extra,
    ]


@pytest.mark.slow
def test_resume_after_a_killed_run_continues_phase_step_lr_and_pools(tmp_path, demo_root):
    schedule = "[{stage: 1, epochs: 1, decay_epochs: 0}, {stage: 2, epochs: 1, decay_epochs: 8}]"
    cmd = _train_cmd(
        demo_root, "--model.schedule", schedule, "--trainer.limit_train_batches", "4",
        "--checkpoint.every_n_train_steps", "2", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    )
    process = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "runs" / "demo" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if last.exists() and read_checkpoint(last)["epoch"] >= 3:  # in phase 2, lr decaying
                break
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint in phase 2 within the time limit")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = read_checkpoint(last)  # a kill never leaves a corrupt last.ckpt (atomic writes)
    assert scan.load_model(last).num_stages == 2  # training checkpoints are model files too
    epoch, step = saved["epoch"], saved["global_step"]

    seen = {}

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if not seen:
                index, in_phase = module.phase_at(trainer.current_epoch)
                g = module._optimizer(index, "generator")
                seen.update(step=trainer.global_step, epoch=trainer.current_epoch, phase=index,
                            lr=g.param_groups[0]["lr"], pools={k: len(p) for k, p in module.pools.items()})

    module = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 8)], image_log_every_n_steps=0)
    trainer = _trainer(tmp_path, max_epochs=epoch + 2, batches=4, callbacks=[Probe()])
    trainer.fit(module, _datamodule(demo_root), ckpt_path=str(last))
    assert seen["step"] == step
    assert seen["epoch"] in (epoch, epoch + 1)  # mid-epoch checkpoints resume that epoch, end-of-epoch the next
    assert seen["phase"] == 1  # still phase 2 (stage 2)
    expected_lr = 2e-4 * Phase(2, 1, 8).lr_factor(seen["epoch"] - 1)
    assert seen["lr"] == pytest.approx(expected_lr)
    assert seen["pools"]["stage2_a"] == len(saved["image_pools"]["stage2_a"]["images"][0]) > 0
    assert seen["pools"]["stage1_a"] == len(saved["image_pools"]["stage1_a"]["images"][0]) > 0


@pytest.mark.slow
@pytest.mark.parametrize(("sent", "code", "cause"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signalled_run_exits_non_zero_and_names_the_checkpoint_to_resume(tmp_path, demo_root, sent, code, cause):
    """SIGTERM (what schedulers send) and Ctrl-C end train.py with 143 and 130, never 0 or 1: no model.pt,
    and a last.ckpt to resume from (SIGTERM writes a fresh one where the loop stopped)."""
    cmd = _train_cmd(demo_root, "--model.schedule", "[{stage: 1, epochs: 50, decay_epochs: 0}]",
                     "--checkpoint.every_n_train_steps", "2",
                     "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"))
    # SIGINT as a terminal sends it: a shell starts background jobs with SIGINT ignored, and a child
    # would inherit that (pytest run with `&`), so the child gets the default disposition back.
    process = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run = tmp_path / "runs" / "demo" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists():
        assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.2)
    before = read_checkpoint(last)["global_step"]
    time.sleep(1.0)  # a few more steps, so that a fresh last.ckpt can be told from the scheduled one
    process.send_signal(sent)
    _, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"stopped by {cause} at step ") and message.endswith(f"--ckpt_path {last}"), message
    assert "Traceback" not in err and not (run / "model.pt").exists()
    saved = read_checkpoint(last)  # whole, and resumable
    assert saved["global_step"] >= before
    if sent == signal.SIGTERM:  # written where the loop stopped: the step the message names
        assert f"at step {saved['global_step']}:" in message


@pytest.mark.slow
def test_ddp_with_two_processes_on_cpu(tmp_path, demo_root):
    runs = tmp_path / "runs"
    cmd = _train_cmd(
        demo_root,
        "--model.schedule", "[{stage: 1, epochs: 1, decay_epochs: 0}, {stage: 2, epochs: 1, decay_epochs: 0}]",
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.limit_train_batches", "3",
        "--trainer.logger.init_args.save_dir", str(runs), "--checkpoint.every_n_train_steps", "2",
        "--trainer.log_every_n_steps", "1",
    )
    env = {**os.environ, "PL_DISABLE_FORK": "1"}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs / "demo" / "version_0"
    saved = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["epoch"] == 1 and saved["global_step"] == 2 * 3 * 2  # 2 epochs x 3 batches x 2 optimisers
    pools = saved["image_pools"]["stage2_a"]["images"]
    assert pools.shape[0] == 2 and pools.shape[1] == 3 * 2  # both ranks' pools: 3 batches of 2 images
    assert not torch.equal(pools[0], pools[1])  # ranks saw different data (DistributedSampler)
    (event_file,) = glob.glob(str(run / "events.out.tfevents.*"))  # rank 0 alone writes logs
    events = EventAccumulator(event_file)
    events.Reload()
    assert "train/stage2/G_total" in events.Tags()["scalars"]
    assert (run / "config.yaml").exists()
    assert scan.load_model(run / "model.pt").num_stages == 2  # the trained model, written once by rank 0


@pytest.mark.slow
def test_train_cli_reports_a_missing_folder_in_one_line(tmp_path, commands):
    result = commands.run(_train_cmd(tmp_path / "nowhere", "--trainer.max_epochs", "1")[1:], cwd=tmp_path)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "nowhere/trainA: no such folder" in last_line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_model_learns_the_demo_mapping(tmp_path):
    """Trained briefly on the demo set, the stack translates held-out photos measurably closer to their
    true cartoon than the photos themselves are (PSNR), at stage 1 and through stage 2."""
    root = build_demo_set(tmp_path / "demo", train=300, test=16, size=72)
    pl.seed_everything(0, verbose=False)
    module = SCANModule("tiny", schedule=[Phase(1, 5, 0), Phase(2, 2, 0)], image_log_every_n_steps=0)
    dm = UnpairedDataModule(root=str(root), size=64, batch_size=4, num_workers=1)
    # scored at the end of each phase
    evaluation = EvaluationCallback(metrics=["psnr"], directions=["a2b"], every_n_epochs=100)
    trainer = _trainer(tmp_path, max_epochs=7, batches=1.0, logger=False, callbacks=[evaluation])
    trainer.fit(module, dm)
    metrics = trainer.callback_metrics
    gain_stage1 = float(metrics["val/stage1/psnr_a2b"] - metrics["val/input/psnr_a2b"])
    gain_stage2 = float(metrics["val/stage2/psnr_a2b"] - metrics["val/input/psnr_a2b"])
    assert gain_stage1 > 0.5, dict(metrics)
    assert gain_stage2 > 0.5, dict(metrics)


def test_phase_learning_rate_rule_matches_cyclegan_and_never_goes_negative():
    phase = Phase(1, epochs=3, decay_epochs=3)
    assert [phase.lr_factor(e) for e in range(6)] == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25])
    assert phase.lr_factor(10) == 0.0  # past the schedule (a larger --trainer.max_epochs): stays at 0
    module = SCANModule("tiny", schedule=[Phase(1, 2, 0), Phase(2, 1, 1), Phase("joint", 1, 0)])
    assert [module.phase_at(e) for e in range(6)] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert module.total_epochs == 5
    with pytest.raises(ValueError, match="stage must be 1..2 or 'joint'"):
        SCANModule("tiny", schedule=[Phase(3, 1, 0)])


def test_a_plain_trainer_stops_when_the_schedule_is_done(tmp_path, demo_root, caplog):
    """No max_epochs and no CLI: the module ends the run with its schedule (3 epochs), and says so."""
    class RunawayGuard(pl.Callback):  # fail fast, not after Lightning's default of 1000 epochs
        def on_train_epoch_start(self, trainer, module):
            assert trainer.current_epoch < module.total_epochs, "trained past the schedule"

    module = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 1)], image_log_every_n_steps=0)
    trainer = _trainer(tmp_path, max_epochs=None, batches=1, limit_val_batches=0, logger=False,
                       callbacks=[RunawayGuard()])
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's "max_epochs was not set": the schedule sets it
        trainer.fit(module, _datamodule(demo_root))
    assert trainer.current_epoch == module.total_epochs == 3
    assert trainer.global_step == 3 * 2  # one batch per epoch, generator + discriminator steps
    assert "training stops when the schedule is done, after 3 epochs" in caplog.text
    assert "schedule done" in caplog.text

    # An explicit limit still wins: shorter than the schedule here.
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 1)], image_log_every_n_steps=0)
    trainer = _trainer(tmp_path, max_epochs=1, batches=1, limit_val_batches=0, logger=False)
    trainer.fit(module, _datamodule(demo_root))
    assert trainer.current_epoch == 1


def test_model_is_a_preset_name_or_a_config_and_saved_as_plain_data():
    by_name = SCANModule("tiny", {"loss": {"lambda_cycle": 5.0}}, schedule=[Phase(1, 1, 0)])
    by_config = SCANModule(scan.create_config("tiny"), {"loss": {"lambda_cycle": 5.0}}, schedule=[Phase(1, 1, 0)])
    assert by_name.config == by_config.config and by_name.config.loss.lambda_cycle == 5.0
    # Stored resolved, as plain data: torch.load(weights_only=True) reads it, and it rebuilds the same model.
    hparams = dict(by_config.hparams)
    assert isinstance(hparams["model"], dict) and hparams["model_overrides"] is None
    buffer = io.BytesIO()
    torch.save(hparams, buffer)
    buffer.seek(0)
    assert SCANModule(**torch.load(buffer, weights_only=True)).config == by_config.config


def test_optimisers_are_named_by_phase_and_role_in_a_fixed_order():
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 0), Phase("joint", 1, 0)])
    specs = module.optimizer_specs()
    assert [s.name for s in specs] == [
        "phase0/generator", "phase0/discriminator", "phase1/generator", "phase1/discriminator",
        "phase2/generator", "phase2/discriminator",
    ]
    optimizers = module.configure_optimizers()
    assert len(optimizers) == len(specs)
    # The joint phase's generator optimiser: both stages, the earlier one at joint_lr_scale x lr.
    assert [g["lr"] for g in optimizers[4].param_groups] == pytest.approx([0.1 * module.lr, module.lr])
    stage2_discs = {id(p) for d in (module.model.D_a[1], module.model.D_b[1]) for p in d.parameters()}
    assert {id(p) for g in optimizers[3].param_groups for p in g["params"]} == stage2_discs


class _WithALearnedLoss(SCANModule):
    """A loss with a network of its own (as CUT's PatchNCE head): it declares its optimiser, nothing more."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_head = torch.nn.Linear(3, 1)
        generator_step = self.model.generator_step

        def with_extra_term(real_a, real_b, stage):
            step = generator_step(real_a, real_b, stage)
            step.loss = step.loss + self.loss_head(step.fake_b.mean((2, 3))).pow(2).mean()
            return step

        self.model.generator_step = with_extra_term

    def optimizer_specs(self):
        head = [{"params": list(self.loss_head.parameters()), "lr": self.lr}]
        return super().optimizer_specs() + [OptimizerSpec(i, "loss_head", head) for i in range(len(self.phases))]


@pytest.mark.slow
def test_a_loss_with_parameters_trains_by_declaring_its_optimiser(tmp_path, demo_root):
    module = _WithALearnedLoss("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=0)
    before = module.loss_head.weight.detach().clone()
    generator_before = module.model.G_ab.stages[0].model[1].weight.detach().clone()
    _trainer(tmp_path, max_epochs=1, batches=2).fit(module, _datamodule(demo_root))
    assert not torch.equal(module.loss_head.weight, before)  # stepped on the generator's loss
    assert not torch.equal(module.model.G_ab.stages[0].model[1].weight, generator_before)
    assert module.loss_head.weight.requires_grad  # untoggle gave it back its state


def test_print_config_lists_every_model_field(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI sees only the arguments given here
    with pytest.raises(SystemExit) as exit_info:
        train_main(["fit", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for field in ("lambda_cycle", "n_blocks", "initial_alpha", "gan_mode", "spectral_norm"):
        assert f"{field}:" in printed
    model = yaml.safe_load(printed)["model"]["model"]
    assert SCANConfig.from_dict(model) == scan.create_config("scan-128-256")  # the default preset, in full


def _parameters_with_gradients(module: SCANModule, tmp_path, demo_root) -> set[str]:
    """Names of the model's parameters that received a gradient during one training step."""
    touched: set[str] = set()
    for name, p in module.model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, name=name: touched.add(name))
    _trainer(tmp_path, max_epochs=1, batches=1).fit(module, _datamodule(demo_root))
    return touched


@pytest.mark.slow
def test_a_joint_step_trains_every_stage_and_every_discriminator(tmp_path, demo_root):
    module = SCANModule("tiny", schedule=[Phase("joint", 1, 0)], stage_weights=[0.5, 1.0], image_log_every_n_steps=0)
    touched = _parameters_with_gradients(module, tmp_path, demo_root)
    assert touched == {name for name, _ in module.model.named_parameters()}
    assert module.judged_stages(module.phases[0]) == [(1, 0.5), (2, 1.0)]
    logged = set(module.trainer.logged_metrics)
    assert {"train/stage1/D_a", "train/stage1/cycle_a", "train/stage2/D_b", "train/stage2/G_ab_gan"} <= logged


@pytest.mark.slow
def test_a_stage_phase_leaves_the_frozen_stage_and_other_discriminators_without_gradients(tmp_path, demo_root):
    module = SCANModule("tiny", schedule=[Phase(2, 1, 0)], image_log_every_n_steps=0)
    touched = _parameters_with_gradients(module, tmp_path, demo_root)
    stage2 = {n for n, _ in module.model.named_parameters()
              if n.startswith(("G_ab.stages.1", "G_ba.stages.1", "G_ab.fusions.0", "G_ba.fusions.0", "D_a.1", "D_b.1"))}
    assert touched == stage2  # nothing of stage 1, nor its discriminators


def test_stage_weights_need_one_non_negative_weight_per_stage():
    for weights in ([1.0], [1.0, -1.0], [float("nan"), 1.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="stage_weights needs 2 finite non-negative weights"):
            SCANModule("tiny", stage_weights=weights)


def _train_tiny(tmp_path, demo_root, **module_kwargs) -> SCANModule:
    pl.seed_everything(0, verbose=False)
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0), Phase(2, 1, 0)], image_log_every_n_steps=0, **module_kwargs)
    _trainer(tmp_path, max_epochs=2, batches=2, limit_val_batches=1).fit(module, _datamodule(demo_root))
    return module


def test_compiled_training_learns_what_eager_training_learns(tmp_path, demo_root, monkeypatch):
    """``--model.compile true``: the same run, the same weights (the graph capture is torch.compile's own;
    the aot_eager backend skips code generation, which takes minutes on a CPU), the same parameter names."""
    monkeypatch.setenv("SCAN_COMPILE_BACKEND", "aot_eager")
    eager = _train_tiny(tmp_path / "eager", demo_root)
    compiled = _train_tiny(tmp_path / "compiled", demo_root, compile=True)
    assert all(getattr(m, "_compiled_call_impl", None) is not None
               for m in [*compiled.model.G_ab.stages, *compiled.model.G_ba.fusions, *compiled.model.D_b])
    assert list(eager.model.state_dict()) == list(compiled.model.state_dict())
    # Compared by what the networks compute: the bias of a conv that feeds an instance norm has a zero
    # gradient up to rounding, which Adam scales to full steps of either sign, so those differ. So do
    # the residual refiner's weights in its first steps (its output gain starts at 0, so their gradients
    # are zero up to rounding too): stage 2 agrees to a small fraction of what training changed.
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    pl.seed_everything(0, verbose=False)
    untrained = SCANModule("tiny").model
    with torch.no_grad():
        for direction in ("a2b", "b2a"):
            expected, got = eager.model.translate(x, direction), compiled.model.translate(x, direction)
            before = untrained.translate(x, direction)
            torch.testing.assert_close(got.outputs[0], expected.outputs[0], atol=1e-4, rtol=1e-4,
                                       msg=f"{direction} stage 1")
            for stage, (e, g, u) in enumerate(zip(expected.outputs, got.outputs, before.outputs), start=1):
                trained_by = (e - u).abs().max()
                assert trained_by > 1e-2, f"{direction} stage {stage}: the run did not train"
                assert (g - e).abs().max() < 0.02 * trained_by, f"{direction} stage {stage}"


def test_compile_unavailable_is_one_line_and_exit_2(tmp_path, demo_root, capsys, monkeypatch):
    monkeypatch.setenv("SCAN_COMPILE_BACKEND", "no-such-backend")
    code = train_main(["fit", "--model.model", "tiny", "--model.compile", "true", "--data.root", str(demo_root),
                       "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                       "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("error: torch.compile failed on this machine") and "--model.compile" in err[-1]


@pytest.mark.parametrize("kind", [TQDMProgressBar, RichProgressBar])
def test_lightnings_progress_bars_read_the_losses_by_the_clock(tmp_path, demo_root, monkeypatch, kind):
    redraws = []
    monkeypatch.setattr(kind, "on_train_batch_end", lambda self, *args: redraws.append(args[-1]))
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=0)
    trainer = _trainer(tmp_path, max_epochs=1, batches=5, limit_val_batches=0, enable_progress_bar=True,
                       callbacks=[kind(leave=True)])
    trainer.fit(module, _datamodule(demo_root))
    bar = trainer.progress_bar_callback
    assert isinstance(bar, kind) and type(bar) is not kind and bar._leave  # replaced, settings kept
    assert redraws[-1] == 4  # the last batch always (the others as the clock allows: see below)
    slow = throttled(kind(), min_interval_s=3600)
    redraws.clear()
    for batch_idx in range(3):
        slow.on_train_batch_end(trainer, module, None, None, batch_idx)
    assert redraws == [0]
    assert throttled(None) is None and throttled(type("Own", (TQDMProgressBar,), {})()) is None


def test_a_checkpoint_from_before_the_fused_optimiser_resumes_fused(tmp_path, demo_root, monkeypatch):
    """Checkpoints saved before the device-side skip hold non-fused Adam states; a resumed run steps
    them with the fused kernel, its step counts continuing."""
    import scan.training.module as module_file

    with monkeypatch.context() as patch:
        patch.setattr(module_file, "_fused_adam_supported", lambda device: False)
        old = SCANModule("tiny", schedule=[Phase(1, 2, 0)], image_log_every_n_steps=0)
        trainer = _trainer(tmp_path, max_epochs=1, batches=2, limit_val_batches=0)
        trainer.fit(old, _datamodule(demo_root))
        trainer.save_checkpoint(tmp_path / "old.ckpt")
    assert not any(g["fused"] for g in old.optimizers()[0].optimizer.param_groups)
    resumed = SCANModule("tiny", schedule=[Phase(1, 2, 0)], image_log_every_n_steps=0)
    _trainer(tmp_path, max_epochs=2, batches=2, limit_val_batches=0).fit(
        resumed, _datamodule(demo_root), ckpt_path=str(tmp_path / "old.ckpt"))
    opt = resumed.optimizers()[0].optimizer
    assert all(g["fused"] for g in opt.param_groups)
    steps = {(opt.state[p]["step"].dtype, float(opt.state[p]["step"])) for g in opt.param_groups for p in g["params"]}
    assert steps == {(torch.float32, 4.0)}  # 2 batches before the checkpoint, 2 after


def test_a_run_diverging_in_epochs_shorter_than_the_check_interval_still_stops(tmp_path, demo_root, monkeypatch):
    """The non-finite counters are read at every epoch's end too: 3-batch epochs never reach a
    periodic check at 4 batches, and the run must stop all the same."""
    module = SCANModule("tiny", schedule=[Phase(1, 8, 0)], max_nonfinite_steps=4, image_log_every_n_steps=0)
    _generator_loss_always_nan(module, monkeypatch)
    with pytest.raises(NonFiniteLossError, match="for 6 steps in a row"):
        _trainer(tmp_path, max_epochs=8, batches=3, limit_val_batches=0).fit(module, _datamodule(demo_root))
    assert module.current_epoch == 1  # stopped at the end of the second epoch, not after all eight


def test_fp16_with_a_grad_scaler_steps_through_the_scaler(tmp_path, demo_root):
    """Under 16-mixed the GradScaler gives the fused kernel its own found_inf; ours stays out of its way."""
    from pytorch_lightning.plugins import MixedPrecision

    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=0)
    before = [p.detach().clone() for p in module.model.G_ab.parameters()]
    trainer = _trainer(tmp_path, max_epochs=1, batches=3, limit_val_batches=0,
                       plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])
    trainer.fit(module, _datamodule(demo_root))
    assert trainer.precision_plugin.scaler is not None
    assert any(not torch.equal(b, p) for b, p in zip(before, module.model.G_ab.parameters()))


def test_a_resumed_run_keeps_this_commands_run_options_and_says_what_the_checkpoint_replaced(
        tmp_path, demo_root, capsys, monkeypatch):
    monkeypatch.setenv("SCAN_COMPILE_BACKEND", "aot_eager")
    module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=0)
    trainer = _trainer(tmp_path, max_epochs=1, batches=2, limit_val_batches=0)
    trainer.fit(module, _datamodule(demo_root))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    runs = tmp_path / "runs"
    code = train_main(["fit", "--model.model", "tiny", "--model.schedule", "[{stage: 1, epochs: 1, decay_epochs: 0}]",
                       "--model.lr", "0.001", "--model.compile", "true", "--data.root", str(demo_root),
                       "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                       "--trainer.logger.init_args.save_dir", str(runs), "--ckpt_path", str(tmp_path / "run.ckpt")])
    assert code == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: resuming from")]
    assert len(notes) == 1 and "--model.lr" in notes[0] and "--model.model " not in notes[0], err
    assert "--model.schedule" not in notes[0]  # the same schedule as the checkpoint's: nothing replaced
    (config,) = runs.glob("*/version_*/config.yaml")
    saved = yaml.safe_load(config.read_text())["model"]
    assert saved["compile"] is True and saved["lr"] == pytest.approx(2e-4)


def test_bad_compile_mode_and_kernel_type_are_refused_in_words():
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        SCANModule("tiny", compile=True, compile_mode="bogus")
    with pytest.raises(ValueError, match="GeneratorConfig.outer_kernel must be int, got '3'"):
        scan.create_model("scan-128-256", stages=[None, {"generator": {"outer_kernel": "3"}}])
