"""Model files: round trip, and loading never runs code from the file."""

import pickle
from pathlib import Path

import pytest
import torch

import scan


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = scan.create_model("tiny", loss={"lambda_cycle": 7.0}).eval()
    path = scan.save_model(model, tmp_path / "model.pt")
    loaded = scan.load_model(path)
    assert loaded.config == model.config
    assert not loaded.training
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for direction in ("a2b", "b2a"):
            a, b = model.translate(x, direction), loaded.translate(x, direction)
            assert all(torch.equal(p, q) for p, q in zip(a.outputs, b.outputs))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def _leave_marker(path):
    Path(path).write_text("code from the file ran")


class _RunsCode:
    """Unpickling this calls ``_leave_marker``: proof that a loader ran code from the file,
    without running a shell."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (_leave_marker, (str(self.marker),))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"format": "scan-model", "format_version": 1, "config": {}, "state_dict": {},
               "evil": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    with pytest.raises(scan.CheckpointError, match="refused"):
        scan.load_model(path)
    assert not marker.exists()
    with open(path, "rb") as f:  # the same file through plain pickle does run the code: the test is real
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(scan.CheckpointError):
        scan.load_model(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # plain pickle runs it: the test is real
    assert marker.exists()


def test_foreign_corrupt_and_mismatched_files_fail_clearly(tmp_path):
    with pytest.raises(scan.CheckpointError, match="no such checkpoint"):
        scan.load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(scan.CheckpointError, match="not a readable PyTorch checkpoint"):
        scan.load_model(corrupt)
    foreign = tmp_path / "latest_net_G_A.pth"
    torch.save({"model.1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(scan.CheckpointError, match="load_cyclegan_generator"):
        scan.load_model(foreign)
    model = scan.create_model("tiny")
    path = scan.save_model(model, tmp_path / "m.pt")
    data = torch.load(path, weights_only=True)
    data["config"]["stages"][0]["generator"]["n_blocks"] = 2  # config no longer matches weights
    torch.save(data, path)
    with pytest.raises(scan.CheckpointError, match="missing .*G_ab.stages.0.model.11"):
        scan.load_model(path)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    from scan.checkpoint import atomic_save

    path = scan.save_model(scan.create_model("tiny"), tmp_path / "m.pt")
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
