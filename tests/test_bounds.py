"""Model configs that ask for too much (issue 24, resource bombs): refused by bounds on every field and a
parameter count on the meta device, before anything is allocated; a model file from anywhere cannot
make scan allocate terabytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import scan
from scan.checkpoint import CheckpointError
from scan.model import MAX_PARAMETERS, ModelTooLargeError, count_parameters


@pytest.mark.parametrize(("overrides", "message"), [
    ({"stages": [{"generator": {"ngf": 200_000}}, None]}, "GeneratorConfig.ngf must be in 1..4096, got 200000"),
    ({"stages": [{"generator": {"n_blocks": 1000}}, None]}, "GeneratorConfig.n_blocks must be in 0..64"),
    ({"stages": [{"discriminator": {"ndf": 0}}, None]}, "DiscriminatorConfig.ndf must be in 1..4096, got 0"),
    ({"stages": [{"discriminator": {"n_layers": 50}}, None]}, "DiscriminatorConfig.n_layers must be in 1..8"),
    ({"stages": [None, {"fusion": {"hidden_channels": 10**9}}]}, "FusionConfig.hidden_channels must be in 1..4096"),
    ({"base_size": 8192}, "would train at 16384 px (base_size 8192, 2 stages); at most 8192"),
    ({"channels": 4096}, "SCANConfig.channels must be in 1..16"),
    ({"loss": {"pool_size": 10**9}}, "LossConfig.pool_size must be in 0..10000, got 1000000000"),
    ({"loss": {"lambda_cycle": -1.0}}, "LossConfig.lambda_cycle must be in 0..10000, got -1.0"),
    ({"loss": {"lambda_identity": float("nan")}}, "LossConfig.lambda_identity must be in 0..10000, got nan"),
])
def test_each_field_has_a_sane_bound(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        scan.create_config("tiny", **overrides)


def test_the_parameter_count_is_taken_on_the_meta_device_and_bounded():
    built = scan.create_model("tiny")
    assert count_parameters(scan.create_config("tiny")) == sum(p.numel() for p in built.parameters())
    wide = scan.create_config("tiny", stages=[{"generator": {"ngf": 2048, "n_blocks": 40}}, None])  # each field sane
    with pytest.raises(ModelTooLargeError, match=r"asks for [\d,]+ M parameters .* at most 1,000 M"):
        count_parameters(wide)
    with pytest.raises(ModelTooLargeError):
        scan.create_model("tiny", stages=[{"generator": {"ngf": 2048, "n_blocks": 40}}, None])
    assert MAX_PARAMETERS >= 10 * count_parameters(scan.create_config("scan-256-512"))  # presets stay far below


def _model_file(path, **overrides) -> None:
    """A model file whose config asks for ``overrides``, weights left out (they would be as large)."""
    config = scan.create_config("tiny").to_dict()
    config["stages"][0]["generator"].update(overrides)
    torch.save({"format": "scan-model", "format_version": 1, "config": config, "state_dict": {}}, path)


def test_a_model_file_asking_for_too_much_is_refused_under_a_memory_limit(tmp_path):
    """Each command loads the file in a process limited to 3 GB of address space: a refusal is one line
    and exit 2, where building the model first would die of a MemoryError (or the machine would swap)."""
    _model_file(tmp_path / "wide.pt", ngf=200_000)
    _model_file(tmp_path / "deep.pt", ngf=2048, n_blocks=40)
    script = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from scan.export import main
        sys.exit(main(["--checkpoint", sys.argv[1], "--format", "scan", "--output", sys.argv[2]]))
    """)
    for name, expected in [("wide", "GeneratorConfig.ngf must be in 1..4096, got 200000"),
                           ("deep", "asks for 98,149 M parameters (392.6 GB of weights); at most 1,000 M")]:
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{name}.pt"), str(tmp_path / "out.pt")],
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
        assert lines[0].startswith(f"error: {tmp_path / name}.pt: invalid model config")
    with pytest.raises(CheckpointError, match="invalid model config"):
        scan.load_model(tmp_path / "deep.pt")


def test_training_counts_and_rates_are_refused_before_a_run_starts():
    from scan.datasets import UnpairedDataModule
    from scan.training import SCANModule

    for options, message in [({"num_workers": 100000}, "num_workers 100000 is outside 0..64"),  # 100000 processes
                             ({"num_workers": -1}, "num_workers -1 is outside"),
                             ({"batch_size": 0}, "batch_size 0 is outside 1..4096")]:
        with pytest.raises(ValueError, match=message):
            UnpairedDataModule(root="anywhere", **options)
    for options in ({"lr": -1.0}, {"lr": 0.0}, {"lr": float("nan")}, {"beta1": 1.0}, {"joint_lr_scale": float("inf")}):
        with pytest.raises(ValueError, match="Adam needs 0 < lr"):
            SCANModule("tiny", **options)


def test_a_built_in_stage_kind_refuses_options_it_would_ignore():
    with pytest.raises(ValueError, match="stage kind 'resnet' takes no options .*; got width"):
        scan.create_model("tiny", stages=[{"generator": {"options": {"width": 1_000_000}}}, None])
    with pytest.raises(ValueError, match="stage kind 'refine' takes no options"):
        scan.create_model("tiny", stages=[None, {"generator": {"options": {"depth": 3}}}])
