"""scan.evaluation: KID/FID against their closed forms, streamed == one batch, the offline path, scan-eval."""

import doctest
import json
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import scan
import scan.evaluation.distribution
import scan.evaluation.evaluator
import scan.metrics
from scan.datasets.demo import build_demo_set, load_heldout
from scan.evaluation import DistributionScores, EvalFolders, Evaluator, MissingWeightsError, load_inception
from scan.evaluation.features import TorchScriptFeatures
from scan.metrics import psnr, score, ssim, through_resolution


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Nothing downloads during tests, and no cached Inception file on this machine is seen."""
    monkeypatch.setenv("SCAN_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SCAN_INCEPTION_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_demo_set(tmp_path_factory.mktemp("eval") / "demo", train=4, test=10, size=72)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return scan.save_model(scan.create_model("tiny"), tmp_path_factory.mktemp("model") / "tiny.pt")


class PooledColours(nn.Module):
    """A stand-in feature extractor: mean colours of a 4x4 grid (48 features), uint8 images in."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images.float() / 255.0, 4).flatten(1)


class InceptionLike(nn.Module):
    """The Inception file's call: ``forward(images, return_features=False)``; logits unless asked."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = images.float().mean(dim=(2, 3))
        return features if return_features else features.sum(1, keepdim=True)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("features") / "pooled.pt"
    torch.jit.script(PooledColours()).save(str(path))
    return path


def _gaussian_features(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` samples whose sample mean and (unbiased) covariance are exactly ``mean`` and ``diag(std**2)``."""
    z = torch.randn(n, mean.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    cov = z.T @ z / (n - 1)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(cov)).T  # whitened: sample covariance exactly I
    return (z * std + mean).float()


def test_fid_matches_its_closed_form_on_gaussians():
    mean1, std1 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 2.0, 0.5])
    mean2, std2 = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([3.0, 1.0, 0.5])
    scores = DistributionScores(3, metrics=("fid",))
    for part in _gaussian_features(400, mean1, std1, seed=1).split(64):  # streamed in batches
        scores.update(part, real=True)
    scores.update(_gaussian_features(300, mean2, std2, seed=2), real=False)
    # |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), diagonal: sum (s1 - s2)^2
    closed = ((mean1 - mean2) ** 2).sum() + ((std1 - std2) ** 2).sum()  # 5 + 4 = 9
    assert scores.compute()["fid"] == pytest.approx(float(closed), rel=1e-3)


def test_kid_is_the_unbiased_mmd_of_a_case_worked_by_hand():
    # k(x, y) = (x * y / d + 1)^3 with d = 1; real {0, 1}, generated {1, 2}:
    # k_xx(0, 1) = 1, k_yy(1, 2) = 27, k_xy = 1 + 1 + 8 + 27 = 37 -> 2*1/2 + 2*27/2 - 2*37/4 = 9.5
    scores = DistributionScores(1, metrics=("kid",), kid_subsets=5)
    scores.update(torch.tensor([[0.0], [1.0]]), real=True)
    scores.update(torch.tensor([[1.0], [2.0]]), real=False)
    result = scores.compute()
    assert result["kid"] == pytest.approx(9.5) and result["kid_std"] == pytest.approx(0.0)
    # Two samples of one distribution: both near 0; of two distributions: clearly above.
    generator = torch.Generator().manual_seed(0)
    same, apart = DistributionScores(2, kid_subset_size=400), DistributionScores(2, kid_subset_size=400)
    for scores, shift in ((same, 0.0), (apart, 1.0)):
        scores.update(torch.randn(400, 2, generator=generator), real=True)
        scores.update(torch.randn(400, 2, generator=generator) + shift, real=False)
    near, far = same.compute(), apart.compute()
    assert abs(near["kid"]) < 0.2 < 10 < far["kid"]  # unbiased: near 0, either sign
    assert near["fid"] < 0.1 and far["fid"] == pytest.approx(2.0, rel=0.15)  # |mu1 - mu2|^2 = 2


def test_kid_and_fid_refuse_a_single_image():
    scores = DistributionScores(2)
    scores.update(torch.zeros(1, 2), real=True)
    scores.update(torch.zeros(5, 2), real=False)
    with pytest.raises(scan.errors.InputError, match="at least 2 real and 2 generated images, got 1 real"):
        scores.compute()


def test_streamed_scores_equal_one_batch_and_the_model_never_sees_more_than_a_batch(data, model_file, stand_in):
    model = scan.load_model(model_file)
    seen = []
    model.G_ab.stages[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    features = TorchScriptFeatures(stand_in)
    folders = EvalFolders.from_root(data, "a2b")
    metrics = ("psnr", "ssim", "detail", "cycle", "kid", "fid")
    streamed = Evaluator(metrics, features, batch_size=3).evaluate(model, folders)
    assert max(seen) == 3 and sum(seen) == 10  # 10 held-out photos, in batches of at most 3
    whole = Evaluator(metrics, features, batch_size=64).evaluate(model, folders)
    assert streamed.images == whole.images == 10 and streamed.real_images == 10
    for row in ("input", "stage1", "stage2", "oracle_stage1"):
        assert streamed.rows[row] == pytest.approx(whole.rows[row], rel=1e-5, abs=1e-6), row
    assert set(streamed.rows["stage2"]) == {"psnr", "ssim", "detail", "cycle", "kid", "kid_std", "fid"}
    # FID's state is running sums: the same size however many images went through.
    fid = DistributionScores(48).fid
    sizes = [sum(t.numel() for t in fid.metric_state.values())]
    fid.update(torch.randn(100, 48), real=True)
    sizes.append(sum(t.numel() for t in fid.metric_state.values()))
    assert sizes[0] == sizes[1]


def test_paired_scores_are_the_demo_scores_of_the_whole_set(data, model_file):
    """The demo's scores.json, as it was computed before the evaluation module: one batch of all
    held-out photos, each stage upsampled to the top size."""
    model = scan.load_model(model_file).eval()
    photos, targets = load_heldout(data, model.config.top_size)
    with torch.no_grad():
        out = model.translate(photos)
    report = Evaluator(("psnr", "ssim")).evaluate(model, EvalFolders.from_root(data, "a2b"))
    assert report.rows["input"] == pytest.approx(score(photos, targets), rel=1e-5)
    for k, output in enumerate(out.outputs, start=1):
        assert report.rows[f"stage{k}"] == pytest.approx(score(output, targets), rel=1e-5)
    oracle = through_resolution(targets, 2)
    assert report.rows["oracle_stage1"]["psnr"] == pytest.approx(psnr(oracle, targets).item(), rel=1e-5)
    assert report.rows["oracle_stage1"]["ssim"] == pytest.approx(ssim(oracle, targets).item(), rel=1e-5)


def test_detail_score_sees_lost_detail_and_ignores_a_colour_shift():
    """Thin stripes: a colour shift and a blur cost PSNR alike; only the blur loses detail."""
    target = torch.zeros(2, 3, 64, 64)
    target[..., ::4, :] = 0.4
    shifted, blurred = target + 0.1, through_resolution(target, 4)
    assert abs(psnr(shifted, target).item() - psnr(blurred, target).item()) < 6
    assert scan.metrics.detail_psnr(shifted, target).item() > 90  # the band is untouched
    assert scan.metrics.detail_psnr(blurred, target).item() < 30


def test_offline_without_weights_one_line_naming_the_file_and_the_option(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        load_inception()
    message = str(info.value)
    assert "inception-2015-12-05.pt" in message and "--inception-weights PATH" in message
    assert str(tmp_path / "cache" / "scan") in message and "\n" not in message


def test_a_torchscript_extractor_with_the_inception_call_gets_return_features(tmp_path):
    path = tmp_path / "inception-like.pt"
    torch.jit.script(InceptionLike()).save(str(path))
    features = load_inception(path)
    images = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    assert features.num_features == 3 and torch.equal(features(images), images.float().mean(dim=(2, 3)))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(scan.errors.UserError, match="junk.pt: not a TorchScript feature extractor"):
        load_inception(tmp_path / "junk.pt")


def _scan_eval(commands, *args, cwd=None) -> subprocess.CompletedProcess:
    """``python -m scan.evaluation`` as a user runs it (a process of its own)."""
    return commands.run(["-m", "scan.evaluation", "--quiet", *map(str, args)], cwd=cwd)


def _scan_eval_here(capsys, *args) -> subprocess.CompletedProcess:
    """The same, in this process (no start-up of its own): its exit status and what it printed."""
    from scan.evaluation.cli import main

    try:
        code = main(["--quiet", *map(str, args)])
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.slow
def test_scan_eval_offline_reports_psnr_ssim_and_says_why_kid_fid_are_missing(data, model_file, tmp_path, capsys):
    result = _scan_eval_here(capsys, "--checkpoint", model_file, "--data", data, "--out", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "inception-2015-12-05.pt" in warning and "--inception-weights PATH" in warning
    assert "| tiny.pt | stage2 |" in result.stdout and "oracle: answer through 32 px" in result.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["models"]["tiny.pt"]["a2b"]["rows"]
    assert set(rows["stage2"]) == {"psnr", "ssim", "detail"}
    # Asked for by name, KID/FID missing is a failure (exit 1) after the rest is reported; KID alone: nothing to do.
    explicit = _scan_eval_here(capsys, "--checkpoint", model_file, "--data", data, "--metrics", "psnr", "kid")
    assert explicit.returncode == 1 and "| tiny.pt | stage1 |" in explicit.stdout
    alone = _scan_eval_here(capsys, "--checkpoint", model_file, "--data", data, "--metrics", "kid")
    assert alone.returncode == 2 and alone.stderr.strip().count("\n") == 0 and "--inception-weights" in alone.stderr


@pytest.mark.slow
def test_scan_eval_with_a_stand_in_extractor_compares_two_models_end_to_end(data, model_file, stand_in, tmp_path,
                                                                           commands):
    other = scan.save_model(scan.create_model("tiny"), tmp_path / "other.pt")
    out = tmp_path / "report.json"
    result = _scan_eval(commands, "--checkpoint", model_file, other, "--data", data, "--inception-weights", stand_in,
                        "--metrics", "kid", "fid", "psnr", "--batch-size", "4", "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["meta"]["features"] == "pooled"
    for name in ("tiny.pt", "other.pt"):
        for direction in ("a2b", "b2a"):
            entry = report["models"][name][direction]
            assert entry["images"] == 10 and entry["real_images"] == 10
            assert all(entry["rows"][row]["fid"] >= 0 and entry["rows"][row]["kid_std"] >= 0
                       for row in ("input", "stage1", "stage2"))
        assert "psnr" in report["models"][name]["a2b"]["rows"]["stage2"]
    assert "psnr" not in report["models"]["tiny.pt"]["b2a"]["rows"]["stage2"]  # no testB_target/
    assert result.stdout.count("| other.pt | stage2 |") == 2  # a table per direction, both models
    # The same report again: refused without --overwrite, one line, the file untouched.
    again = _scan_eval(commands, "--checkpoint", model_file, "--data", data, "--out", out)
    assert again.returncode == 2 and "exists" in again.stderr and json.loads(out.read_text()) == report


@pytest.mark.parametrize("case", ["no data", "no model", "model as output", "twice", "bad metric", "corrupt image"])
def test_scan_eval_bad_input_is_one_line(case, data, model_file, tmp_path, capsys):
    args = ["--checkpoint", model_file, "--data", data, "--metrics", "psnr"]
    if case == "no data":
        args[3] = tmp_path / "nowhere"
    elif case == "no model":
        args[1] = tmp_path / "missing.pt"
    elif case == "model as output":
        args += ["--out", model_file]
    elif case == "twice":
        args[1:2] = [model_file, model_file]
    elif case == "bad metric":
        args[-1] = "psnrr"
    elif case == "corrupt image":
        copy = tmp_path / "data"
        build_demo_set(copy, train=2, test=3, size=72)
        (copy / "testA" / "0001.png").write_bytes(Image.open(copy / "testA" / "0001.png").tobytes()[:50])
        args[3] = copy
    result = _scan_eval_here(capsys, *args)
    if case == "corrupt image":  # reported, left out, the others scored
        assert result.returncode == 0, result.stderr
        assert "0001.png" in result.stderr and "2 image(s)" in result.stdout
        return
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    if case == "bad metric":  # argparse's usage, then its one error line
        assert lines[0].startswith("usage:") and lines[-1].startswith("scan-eval: error:") and "psnrr" in lines[-1]
        return
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("module", [scan.metrics, scan.evaluation.distribution, scan.evaluation.evaluator])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_the_training_callback_logs_kid_fid_with_a_stand_in_and_fails_fast_without_weights(data, stand_in, tmp_path):
    import pytorch_lightning as pl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scan.datasets import UnpairedDataModule
    from scan.training import Phase, SCANModule
    from scan.training.callbacks import EvaluationCallback

    def fit(callback: EvaluationCallback) -> None:
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", enable_checkpointing=False,
                             logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="run"),
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
        module = SCANModule("tiny", schedule=[Phase(1, 1, 0)], image_log_every_n_steps=0)
        trainer.fit(module, UnpairedDataModule(root=str(data), size=64, batch_size=2, num_workers=0))

    fit(EvaluationCallback(metrics=["kid", "fid", "psnr"], inception_weights=str(stand_in), image_rows=0))
    (events,) = (tmp_path / "run" / "version_0").glob("events.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"val/stage1/kid_a2b", "val/stage1/fid_b2a", "val/input/fid_a2b", "val/stage1/psnr_a2b"} <= tags
    assert "val/stage2/kid_a2b" not in tags  # stage 2 was not trained yet
    with pytest.raises(MissingWeightsError, match="--evaluation.inception_weights PATH"):  # before any step
        fit(EvaluationCallback(metrics=["kid"]))
