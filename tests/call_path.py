"""How far a reader must follow ``infer.py --paste-back``: the modules of scan its call passes through.

    python tests/call_path.py                  # the astronaut through a tiny model, dlib landmarks
    python tests/call_path.py --save-stages    # and its stage strip

Runs ``infer.py --paste-back`` on scikit-image's astronaut (a freshly initialised ``tiny`` model,
dlib landmarks) under a profiler hook and follows every Python call made in a module
of scan (imports excluded: only what the command does once its modules are loaded). It prints, in the
order they are first entered, the modules the call passes through, and every *climb back up*: a call
into a module that is already active further down the call stack (``A -> B -> A``), the moment a
reader following the code must go back to a file they left. ``--out`` writes the same as JSON.

Issue 22's targets: fewer modules than before (20, climbing back twice), and no climb back up;
tests/test_layout.py keeps them. Not a pytest module (its name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any


@dataclass
class CallPath:
    """What one traced call went through.

    Attributes:
        modules: the scan modules entered, in order of first entry.
        entries: calls that entered a module from another one (``(caller, callee)``), every time.
        climbs: entries into a module already active further down the stack, ``(caller, callee)``.
    """

    modules: list[str] = field(default_factory=list)
    entries: list[tuple[str, str]] = field(default_factory=list)
    climbs: list[tuple[str, str]] = field(default_factory=list)


def _is_scan(name: str | None) -> bool:
    return name is not None and (name == "scan" or name.startswith("scan."))


def trace_modules(fn: Callable[[], Any]) -> CallPath:
    """Run ``fn`` in this thread and record the scan modules its calls pass through (see the module's
    docstring); code run by imports is left out."""
    path = CallPath()
    stack: list[tuple[str | None, bool]] = []  # per active Python frame: its module, whether it imports

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            module = frame.f_globals.get("__name__")
            importing = frame.f_code.co_name == "<module>" or (bool(stack) and stack[-1][1])
            stack.append((module, importing))
            if importing or not _is_scan(module):
                return
            active = [m for m, _ in stack[:-1] if _is_scan(m)]
            caller = active[-1] if active else None
            assert module is not None
            if module not in path.modules:
                path.modules.append(module)
            if caller is not None and caller != module:
                path.entries.append((caller, module))
                if module in active:
                    path.climbs.append((caller, module))
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return path


def infer_paste_back(folder: Path, save_stages: bool = False) -> Callable[[], Any]:
    """``infer.py --paste-back`` on the astronaut (with ``--save-stages``: and its stage strip), ready
    to run: its model and photo written, its modules imported."""
    import torch
    from PIL import Image
    from skimage import data

    import scan
    from scan.infer_cli import main

    torch.manual_seed(0)
    scan.save_model(scan.create_model("tiny"), folder / "tiny.pt")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")

    def argv(name: str) -> list[str]:
        strips = ["--save-stages", str(folder / f"{name}_strips")] if save_stages else []
        return ["--checkpoint", str(folder / "tiny.pt"), "--input", str(folder / "astronaut.png"), "--output",
                str(folder / f"{name}.png"), "--landmarks", "dlib", "--paste-back", *strips]

    assert main(argv("warm")) == 0  # every lazy import done before the traced run

    def run() -> None:
        assert main(argv("traced")) == 0

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--save-stages", action="store_true", help="trace infer.py --paste-back --save-stages")
    parser.add_argument("--out", type=Path, default=None, help="also write the modules and climbs as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = trace_modules(infer_paste_back(Path(tmp), args.save_stages))
    command = "infer.py --paste-back" + (" --save-stages" if args.save_stages else "")
    print(f"{command} passes through {len(path.modules)} scan modules "
          f"({len(path.entries)} calls between modules, {len(path.climbs)} climbs back up):")
    for module in path.modules:
        print(f"  {module}")
    for caller, callee in dict.fromkeys(path.climbs):
        print(f"climbs back up: {caller} -> {callee}")
    if args.out is not None:
        args.out.write_text(json.dumps({"command": command, "modules": path.modules, "entries": len(path.entries),
                                        "climbs": [list(c) for c in path.climbs]}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
