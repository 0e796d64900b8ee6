"""CPU threads (scan/runtime.py, issue 25): OpenMP's wait policy set before torch loads unless the user
set it; the thread budget applied, from the idle CPUs or the user's --threads, and the user's
OMP_NUM_THREADS respected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

import scan
from scan import infer_cli, runtime
from scan.runtime import available_cpus, budget_threads, idle_cpus, prefer_passive_waiting


def _policy_after(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_scan_sets_a_passive_wait_policy_unless_the_user_set_one():
    show = "import os, scan; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _policy_after(show) == "PASSIVE"
    assert _policy_after(show, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # the user's, kept
    # torch loaded first: OpenMP has read its environment already; scan says so and sets nothing.
    late = ("import os, torch; from scan.runtime import prefer_passive_waiting as p; "
            "print(p(), os.environ.get('OMP_WAIT_POLICY'))")
    assert _policy_after(late) == "too late None"


def test_prefer_passive_waiting_reports_what_holds(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert prefer_passive_waiting() == "user"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert prefer_passive_waiting() == "too late"  # torch is loaded in this process
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_budget_is_applied_and_the_workers_fit_in_it(restore_threads):
    budget = budget_threads(1, workers=8)
    assert (budget.total, budget.torch, budget.workers) == (1, 1, 1) and torch.get_num_threads() == 1
    assert budget_threads(2, workers=0).workers == 0 and torch.get_num_threads() == 2
    for threads in (0, 100000):  # 100000 threads end in "can't start new thread" and a crash
        with pytest.raises(ValueError, match="threads must be a whole number from 1 to 256"):
            budget_threads(threads)
    with pytest.raises(ValueError, match="workers must be a whole number >= 0"):
        budget_threads(1, workers=-1)


def test_without_a_budget_torch_gets_the_idle_cpus(restore_threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "idle_cpus", lambda: 0.1)  # a busy machine: one thread, never none
    assert budget_threads().torch == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(runtime, "idle_cpus", lambda: 64.0)  # never more than this process may use
    assert budget_threads().torch == available_cpus()
    monkeypatch.setattr(runtime, "idle_cpus", lambda: None)  # no /proc/stat: every CPU
    assert budget_threads().torch == available_cpus()
    # The user's OMP_NUM_THREADS is theirs: the count torch took from it stays.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "idle_cpus", lambda: 64.0)
    assert budget_threads().torch == 1


def test_idle_cpus_is_a_share_of_this_process_s_cpus():
    idle = idle_cpus()
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0 <= idle <= available_cpus() + 1e-6


def test_infer_threads_option_sets_the_budget(tmp_path, restore_threads):
    scan.save_model(scan.create_model("tiny"), tmp_path / "tiny.pt")
    Image.new("RGB", (64, 64), "grey").save(tmp_path / "crop.png")
    assert infer_cli.main(["--checkpoint", str(tmp_path / "tiny.pt"), "--input", str(tmp_path / "crop.png"),
                           "--output", str(tmp_path / "out.png"), "--align", "none", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
