"""The benchmark scripts still run (tiny settings; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_model_cost_writes_a_row_per_preset_and_size(tmp_path):
    out = tmp_path / "cost.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "model_cost.py"), "--sizes", "64", "--presets", "tiny",
         "mobile-256", "--repeats", "1", "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert "cyclegan-256" in result.stdout and "target mobile-256@256" not in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {(r["preset"], r["size"]) for r in rows} == {("cyclegan-256", 64), ("tiny", 64), ("mobile-256", 64)}
    ref = next(r for r in rows if r["preset"] == "cyclegan-256")
    assert ref["gflops_vs_ref"] == 1.0
    assert all(r["gflops"] > 0 and r["params_m"] > 0 for r in rows)


def test_quality_benchmark_writes_table_plot_and_traces(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--variants", "cyclegan", "scan",
         "--out", str(tmp_path), "--data", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "quality.json").read_text())
    assert set(report["results"]) == {"cyclegan", "scan"}
    (scan_run,) = report["results"]["scan"]
    assert [p["stage"] for p in scan_run["trace"]][0] == 1 and scan_run["trace"][-1]["stage"] == 2
    assert all(p["psnr"] > 0 and -1 <= p["ssim"] <= 1 for p in scan_run["trace"])
    assert scan_run["gflops"] > 0 and scan_run["latency_ms"] > 0
    table = (tmp_path / "quality.md").read_text()
    assert "| untranslated photo |" in table and "| scan | 2 |" in table and "| cyclegan | 1 |" in table
    assert (tmp_path / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_check_runs():
    result = subprocess.run([sys.executable, "-m", "scan"], capture_output=True, text=True, check=True)
    assert "outputs identical = True" in result.stdout
