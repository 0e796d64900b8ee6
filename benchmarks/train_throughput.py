"""Training throughput: our Lightning step vs a plain PyTorch CycleGAN step of the same networks,
per phase, size and precision; plus the data pipeline's images/s beside the step rate.

Rows: ``cyclegan-256`` (its one stage) and ``scan-128-256`` (stage 1 at half the size, stage 2 at the
size with stage 1 frozen), at each ``--sizes`` (the top resolution), fp32 and bf16 autocast. The
reference column is a hand-written training step (Adam, LSGAN, cycle + identity L1, image pools)
over the very same modules, timed in the same run, interleaved with ours.

Target (reported, not asserted): our step within 1.1x of the plain step.

Usage:
    python benchmarks/train_throughput.py [--sizes 64 128 256] [--steps 3] [--out FILE]
    python benchmarks/train_throughput.py --quick   # seconds; checks the script end to end

``--quick`` measures the ``tiny`` preset (both its stages) at 64 px for one step, in this process
(no fresh process per measurement, so its peak memory readings are not per measurement).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch
from gpu_throughput import PlainLoop  # benchmarks/ is the script's folder, so on sys.path
from torch.utils.data import DataLoader, Dataset

import scan
from scan.datasets import BatchAugment, UnpairedImageDataset, load_size_for
from scan.training import Phase, SCANModule

warnings.filterwarnings("ignore")


def reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RandomPairs(Dataset):
    """In-memory batches, so the step is timed without decoding."""

    def __init__(self, size: int, n: int) -> None:
        self.a, self.b = torch.rand(2, n, 3, size, size) * 2 - 1

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"a": self.a[i], "b": self.b[i]}


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self.start)


def lightning_step_times(module: SCANModule, size: int, steps: int, bf16: bool) -> list[float]:
    """Per-batch times of ``trainer.fit`` on the module's single-phase schedule."""
    timer = StepTimer()
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=steps + 1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        devices=1, callbacks=[timer], precision="bf16-mixed" if bf16 else "32-true",
    )
    trainer.fit(module, DataLoader(RandomPairs(size, steps + 1), batch_size=1))
    return timer.times[1:]  # the first step pays for lazy initialisation


def plain_step_times(model: scan.SCAN, stage: int, size: int, steps: int, bf16: bool) -> list[float]:
    """pytorch-CycleGAN-and-pix2pix's optimize_parameters, written out, on the same networks
    (``gpu_throughput.PlainLoop``), each step timed."""
    loop = PlainLoop(model, Phase(stage, 1, 0))
    top = size * 2 ** (model.num_stages - stage)  # the loop takes batches at the top size, like ours
    cpu = torch.device("cpu")
    times = []
    for _ in range(steps + 1):
        real_a, real_b = torch.rand(2, 1, 3, top, top) * 2 - 1
        start = time.perf_counter()
        loop.step(real_a, real_b, cpu, "bf16" if bf16 else "fp32")
        times.append(time.perf_counter() - start)
    model.requires_grad_(True)
    return times[1:]


def measure(kind: str, preset: str, stage: int, size: int, steps: int, bf16: bool) -> tuple[list[float], float]:
    """Step times and peak RSS (MB) of one training setup; meant to run in a fresh process."""
    pl.seed_everything(0, verbose=False)
    module = SCANModule(preset, schedule=[Phase(stage, 1, 0)], image_log_every_n_steps=0)
    reset_peak_rss()
    if kind == "ours":
        times = lightning_step_times(module, size, steps, bf16)
    else:
        stage_size = size // 2 ** (module.config.num_stages - stage)
        times = plain_step_times(module.model, stage, stage_size, steps, bf16)
    return times, peak_rss_mb()


def isolated(fn, *args):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def data_images_per_s(size: int, n: int = 48, workers: int = 0) -> float:
    """Decode (JPEG, 256 px like selfie2anime) + resize + batch augmentation, images per second."""
    from skimage import data as skdata
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        photo = Image.fromarray(skdata.astronaut())
        for domain in "AB":
            (Path(tmp) / domain).mkdir()
            for i in range(n):
                crop = photo.crop((i * 4, i * 2, i * 4 + 300, i * 2 + 300)).resize((256, 256))
                crop.save(Path(tmp) / domain / f"{i}.jpg", quality=90)
        dataset = UnpairedImageDataset(Path(tmp) / "A", Path(tmp) / "B", load_size_for(size))
        augment = BatchAugment(size)
        loader = DataLoader(dataset, batch_size=4, num_workers=workers)
        start = time.perf_counter()
        count = 0
        for batch in loader:
            augment(batch["a"])
            augment(batch["b"])
            count += 2 * batch["a"].shape[0]
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--presets", nargs="+", default=["cyclegan-256", "scan-128-256"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 64 px, 1 step, in-process")
    args = parser.parse_args()
    run = measure if args.quick else functools.partial(isolated, measure)
    images = 8 if args.quick else 48
    if args.quick:
        args.sizes, args.presets, args.steps = [64], ["tiny"], 1
    pl.seed_everything(0, verbose=False)
    rows = []
    for size in args.sizes:
        data_rate = data_images_per_s(size, images)
        for preset in args.presets:
            config = scan.create_config(preset)
            for stage in range(1, config.num_stages + 1):
                stage_size = size // 2 ** (config.num_stages - stage)
                for bf16 in (False, True):
                    # Each measurement in a fresh process: peak RSS is then that measurement's own.
                    # Ours and plain alternate, so drifts in machine load hit both alike.
                    ours, ours_mb = run("ours", preset, stage, size, args.steps, bf16)
                    plain, plain_mb = run("plain", preset, stage, size, args.steps, bf16)
                    row = {
                        "preset": preset, "phase": f"stage {stage}", "size": size, "stage_size": stage_size,
                        "precision": "bf16" if bf16 else "fp32",
                        "ours_it_s": 1 / statistics.median(ours), "plain_it_s": 1 / statistics.median(plain),
                        "ours_peak_rss_mb": ours_mb, "plain_peak_rss_mb": plain_mb,
                        "data_images_s": data_rate,
                    }
                    row["ours_vs_plain_time"] = row["plain_it_s"] / row["ours_it_s"]
                    row["step_images_s"] = 2 * row["ours_it_s"]  # one A and one B image per step
                    rows.append(row)
                    print(
                        f"{preset:13} {row['phase']:8} top {size:>4} (stage {stage_size:>4}) {row['precision']:5} "
                        f"ours {row['ours_it_s']:7.3f} it/s  plain {row['plain_it_s']:7.3f} it/s  "
                        f"x{row['ours_vs_plain_time']:.2f}  peak RSS {ours_mb:7.0f} / {plain_mb:7.0f} MB  "
                        f"data {data_rate:6.0f} img/s vs step {row['step_images_s']:6.2f} img/s",
                        flush=True,
                    )
    met = all(r["ours_vs_plain_time"] <= 1.1 for r in rows)
    slowest = max(rows, key=lambda r: r["ours_vs_plain_time"])
    print(f"\ntarget ours within 1.1x of plain: {'met' if met else 'NOT met'} "
          f"(worst x{slowest['ours_vs_plain_time']:.2f}: {slowest['preset']} {slowest['phase']} {slowest['size']} "
          f"{slowest['precision']})")
    print(f"data pipeline never the bottleneck: {all(r['data_images_s'] > r['step_images_s'] for r in rows)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
