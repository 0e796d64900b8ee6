"""Where scan runs: the device (:func:`resolve_device`), and the CPU threads it keeps busy, fair on
a busy machine.

On a laptop CPU with other work on it (a browser, a build), the math library's threads are what makes
a job cost more than its share. torch's CPU build runs its intra-op parallelism on GNU OpenMP, whose
idle threads by default *spin* for a while before they sleep; on a machine whose cores are all busy
they spin against the other work and against scan's own pipeline threads, and a translation that takes
3.5 s quiet took 20 s beside two busy loops on two cores (6x, where a fair share is 2x). With
``OMP_WAIT_POLICY=PASSIVE`` they sleep at once. OpenMP reads that variable once, when torch loads it:
:func:`prefer_passive_waiting` sets it, unless the user did, and ``import scan`` calls it before
importing torch (so for the CLIs, the web page and any program that imports scan before torch; a
program that imported torch first keeps torch's default, and :func:`describe` says so).

:func:`budget_threads` then shares the CPUs scan may use between torch's intra-op threads and the
pipeline's worker threads (decoding, face detection, paste-back), and keeps OpenCV's own thread pool
out of it: ``--threads N`` of ``infer.py`` and ``scan-web``, ``Translator(threads=N)``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scan.errors import DeviceError

if TYPE_CHECKING:
    import torch

__all__ = ["prefer_passive_waiting", "available_cpus", "idle_cpus", "budget_threads", "ThreadBudget", "describe",
           "WAIT_POLICY_ENV", "MAX_THREADS", "MAX_WORKERS", "available_devices", "resolve_device"]

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# Bounds of the thread and worker counts a user may ask for: each thread or process holds images (and
# a stack) in memory, and 100000 threads end in "can't start new thread" and a crash, not in speed.
MAX_THREADS = 256
MAX_WORKERS = 64


def prefer_passive_waiting() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is loaded already.

    Returns:
        What holds now: ``"set"`` (by this call), ``"user"`` (the user's value, kept; an empty value
        keeps OpenMP's own default) or ``"too late"`` (torch was imported first: OpenMP has read the
        environment already).
    """
    if WAIT_POLICY_ENV in os.environ:
        return "user"
    if "torch" in sys.modules:
        return "too late"
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return "set"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. ``taskset`` or a container's
    cpuset), not every CPU of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadBudget:
    """How the CPU threads are shared.

    Attributes:
        total: the threads scan may keep busy at once.
        torch: torch's intra-op threads (``torch.set_num_threads``).
        workers: the pipeline's worker threads.
    """

    total: int
    torch: int
    workers: int


def idle_cpus(sample_s: float = 0.03) -> float | None:
    """How many of this process's CPUs are idle right now: ``/proc/stat`` read twice, ``sample_s``
    apart (``None`` where there is no ``/proc/stat``: not Linux)."""
    def times() -> dict[str, tuple[int, int]]:
        found = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    values = [int(v) for v in fields[:8]]
                    found[name] = (values[3] + values[4], sum(values))  # idle + iowait, all
        return found

    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        before = times()
        time.sleep(sample_s)
        after = times()
    except (OSError, AttributeError, ValueError):
        return None
    idle = 0.0
    for name in cpus & before.keys() & after.keys():
        waited, total = (a - b for a, b in zip(after[name], before[name]))
        idle += waited / total if total > 0 else 1.0
    return idle


def budget_threads(threads: int | None = None, workers: int | None = None) -> ThreadBudget:
    """Share ``threads`` CPU threads between torch and the pipeline's workers, and apply it.

    Without ``threads``, as many as there are idle CPUs now (at least 1): on a busy machine a torch op
    split over two threads waits at its end for whichever thread the other work preempted, so beside
    two busy processes on two cores a portrait took 6.6x its quiet time with two threads and 2.5x with
    one (``benchmarks/contention.py``); on a quiet machine every CPU is used. ``OMP_NUM_THREADS``, where
    the user set it, is kept. torch gets the whole budget (the translation is the busiest step), the
    workers at most as many threads, and OpenCV one thread per call (it runs inside the workers: its own
    pool on top would oversubscribe).

    Args:
        threads: the threads scan may use; ``None``: the idle CPUs, as above.
        workers: the worker threads asked for; ``None``: as many as the budget, at most 4.

    Returns:
        The budget applied.

    Raises:
        ValueError: ``threads`` outside 1..``MAX_THREADS`` or ``workers`` below 0.

    Example:
        >>> budget = budget_threads(2, workers=8)
        >>> (budget.torch, budget.workers)
        (2, 2)
    """
    import torch

    if threads is not None and (not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS):
        raise ValueError(f"threads must be a whole number from 1 to {MAX_THREADS}, got {threads!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a whole number >= 0, got {workers!r}")
    if threads is not None:
        total = threads
    elif os.environ.get("OMP_NUM_THREADS"):
        total = torch.get_num_threads()  # the user's
    else:
        idle = idle_cpus()
        total = available_cpus() if idle is None else max(1, min(available_cpus(), round(idle)))
    kept_workers = min(4, total) if workers is None else min(workers, total)
    if torch.get_num_threads() != total:
        torch.set_num_threads(total)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # OpenCV comes with face-alignment; a bare install may lack it
        pass
    return ThreadBudget(total, total, kept_workers)


def describe() -> str:
    """One line: the wait policy and torch's threads (for ``--debug`` and bug reports)."""
    import torch

    policy = os.environ.get(WAIT_POLICY_ENV)
    shown = "unset (OpenMP's default: idle threads spin)" if policy is None else repr(policy)
    return f"{WAIT_POLICY_ENV}={shown}, torch intra-op threads {torch.get_num_threads()}, CPUs {available_cpus()}"


# ------------------------------------------------------------------------------------------ devices
def available_devices() -> list[str]:
    import torch

    """The devices this machine can run on: ``cpu``, then ``cuda:0``, ``cuda:1``, ... and ``mps``."""
    devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: the first CUDA GPU when there is one, else the CPU; otherwise the named device,
    checked to exist here.

    Raises:
        DeviceError: not a device name, or no such device on this machine (the message lists those
            there are).
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = available_devices()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {device!r} is not a device name; available here: {', '.join(available)}") from None
    name = f"cuda:{resolved.index or 0}" if resolved.type == "cuda" else resolved.type
    if name not in available:
        raise DeviceError(f"device {device!r} is not available on this machine; available: {', '.join(available)}")
    return resolved
