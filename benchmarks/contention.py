"""Fair under load: image, folder, video and training throughput, quiet and beside busy processes.

A job on a machine whose cores are busy with other work should take about its fair share: with C
CPUs, a job that keeps C threads busy beside N busy processes gets C / (C + N) of the machine, so it
should take (C + N) / C times as long as quiet (2x beside 2 busy processes on 2 cores). Every row is
timed quiet and beside ``--busy`` busy loops (``while True: pass`` processes), each workload in a
fresh process, under two settings side by side:

  before            as scan ran before it set its threading: ``OMP_WAIT_POLICY`` empty (GNU
                    OpenMP's own default: idle threads spin first), torch's own thread count
  scan              nothing set by the user: ``import scan`` sets ``OMP_WAIT_POLICY=PASSIVE``, and
                    the inference workloads budget their threads as ``infer.py`` does
                    (``scan.runtime.budget_threads``: torch gets the CPUs idle at the start)
  scan, 1 torch thread   the same with ``OMP_NUM_THREADS=1``: one intra-op thread always (its ops
                    never wait at a barrier for a thread the other work has preempted)

Workloads (timed inside the process, after the model is loaded and one warm-up item):
  image     ``Translator.portrait`` of the astronaut (512x512, dlib landmarks), ``--items`` times
  folder    ``Translator.portraits`` over ``--items`` astronaut photos (batch 4, default workers)
  video     ``Translator.video`` over 75 frames at 480x360 (the astronaut's face moving)
  training  ``--items`` training steps (generator and discriminator) of ``tiny`` at 64 px, batch 4

The ratio to the fair share is (loaded / quiet) / ((C + N) / C): 1 is fair, the target <= 1.2.

Usage:
    python benchmarks/contention.py [--preset mobile-256] [--busy 2] [--out FILE]
    python benchmarks/contention.py --quick      # seconds; checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a clone

WORKLOADS = ("image", "folder", "video", "training")
SETTINGS = {"before": {"OMP_WAIT_POLICY": "", "SCAN_CONTENTION_AS_BEFORE": "1"}, "scan": {},
            "scan, 1 torch thread": {"OMP_NUM_THREADS": "1"}}
RESULTS = Path(__file__).parent / "results"


def _frames(count: int, width: int = 480, height: int = 360):
    """The astronaut's face moving across a 480x360 frame."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((640, 640)))
    return [Image.fromarray(photo[4 * i:4 * i + height, 2 * i:2 * i + width]) for i in range(count)]


def run_workload(name: str, preset: str, items: int) -> float:
    """Seconds for one workload, in this process (the timed part only)."""
    import torch
    from PIL import Image
    from skimage import data

    import scan
    from scan.runtime import budget_threads
    from scan.translator import Translator

    torch.manual_seed(0)
    if name == "training":
        model = scan.create_model("tiny")
        opt_g = torch.optim.Adam([p for g in (model.G_ab, model.G_ba) for p in g.parameters()], 2e-4)
        opt_d = torch.optim.Adam([*model.D_a.parameters(), *model.D_b.parameters()], 2e-4)
        a, b = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1

        def step() -> None:
            out = model.generator_step(a, b, stage=2)
            opt_g.zero_grad()
            out.loss.backward()
            opt_g.step()
            loss, _ = model.discriminator_step(real_a=a, real_b=b, fake_a=out.fake_a.detach(),
                                               fake_b=out.fake_b.detach(), stage=2)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()

        step()
        began = time.perf_counter()
        for _ in range(items):
            step()
        return time.perf_counter() - began
    if not os.environ.get("SCAN_CONTENTION_AS_BEFORE"):
        budget_threads()  # as infer.py and scan-web do: torch threads = the CPUs idle now
    translator = Translator(scan.create_model(preset).eval(), device="cpu")
    photo = Image.fromarray(data.astronaut())
    options = {"landmarks": "dlib"}
    translator.portrait(photo, **options)  # warm-up: the landmark model loads
    began = time.perf_counter()
    if name == "image":
        for _ in range(items):
            translator.portrait(photo, **options)
    elif name == "folder":
        for _ in translator.portraits([photo] * items, batch_size=4, **options):
            pass
    elif name == "video":
        frames = _frames(75)
        began = time.perf_counter()
        for _ in translator.video(iter(frames), **options):
            pass
    else:
        raise ValueError(f"unknown workload {name!r}")
    return time.perf_counter() - began


def timed_in_subprocess(name: str, preset: str, items: int, setting: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | setting
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--preset", preset, "--items", str(items)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobile-256", help="the model of the inference workloads")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the job")
    parser.add_argument("--items", type=int, default=12, help="photos (image, folder) or steps (training)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=RESULTS / "contention.json")
    parser.add_argument("--quick", action="store_true", help="tiny, 2 items, image and training only")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({"seconds": run_workload(args.worker, args.preset, args.items)}))
        return
    if args.quick:  # one workload, one setting: checks the script end to end in seconds
        args.preset, args.items, args.workloads, args.settings = "tiny", 1, ["image"], ["scan"]
    from scan.runtime import available_cpus

    cpus = available_cpus()
    fair = (cpus + args.busy) / cpus
    rows = []
    for workload in args.workloads:
        for setting_name in args.settings:
            setting = SETTINGS[setting_name]
            quiet = timed_in_subprocess(workload, args.preset, args.items, setting)
            busy = busy_processes(args.busy)
            try:
                loaded = timed_in_subprocess(workload, args.preset, args.items, setting)
            finally:
                for p in busy:
                    p.kill()
                    p.wait()
            row = {"workload": workload, "setting": setting_name, "quiet_s": quiet, "loaded_s": loaded,
                   "slowdown": loaded / quiet, "fair": fair, "vs_fair": loaded / quiet / fair}
            rows.append(row)
            print(f"{workload:9} {setting_name:21} quiet {quiet:7.2f} s  beside {args.busy} busy {loaded:7.2f} s  "
                  f"x{row['slowdown']:.2f}  (fair x{fair:.2f}: {row['vs_fair']:.2f})", flush=True)
    lines = [f"| workload | setting | quiet (s) | beside {args.busy} busy (s) | slowdown | vs fair share |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['setting']} | {r['quiet_s']:.2f} | {r['loaded_s']:.2f} | "
              f"{r['slowdown']:.2f}x | {r['vs_fair']:.2f} |" for r in rows]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    meta = {"cpus": cpus, "busy": args.busy, "preset": args.preset, "items": args.items,
            "machine": platform.machine(), "python": platform.python_version()}
    from scan.outputs import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)))
    atomic_write(args.out.with_suffix(".md"), lambda tmp: tmp.write_text(markdown))
    print(f"wrote {args.out} (and .md)")


if __name__ == "__main__":
    main()
