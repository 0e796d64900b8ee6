"""Mutation check: would the test suite notice three deliberate bugs in the core claims?

For each mutation below, the project is copied into a temporary folder, one line of the copy's
source is changed, and the tests that guard that claim run against the copy (the copy's package is
what every Python process started with this environment imports; this is checked). The unmutated
copy runs the same tests first and must pass. A mutation is *caught* when at least one test fails.

    python tests/mutation_check.py             # all three, a minute or two on 2 cores
    python tests/mutation_check.py --only cycle

Exit status 0 only if the baseline passes and every mutation is caught. Not a pytest module (its
name does not start with ``test_``): it runs pytest itself, several times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the tests need of the project; the four package folders are mapped to `scan.*` as setup.cfg does.
COPIED = ["scan", "stages", "fusion", "datasets", "tests", "configs", "setup.cfg", "pyproject.toml", "README.md",
          "train.py", "infer.py"]
PACKAGES = {"scan": "scan", "scan.stages": "stages", "scan.fusion": "fusion", "scan.datasets": "datasets"}


@dataclass
class Mutation:
    key: str
    name: str
    path: str
    before: str
    after: str
    tests: list[str]


MUTATIONS = [
    Mutation("fusion", "fusion alpha ignored (fixed 0.5 mix)", "fusion/adaptive.py",
             "return alpha * new + (1.0 - alpha) * previous_up", "return 0.5 * new + 0.5 * previous_up",
             ["tests/test_fusion.py", "tests/test_model.py"]),
    Mutation("cycle", "cycle loss weight dropped", "scan/model.py",
             'cfg.lambda_cycle * (terms["cycle_a"] + terms["cycle_b"])', '(terms["cycle_a"] + terms["cycle_b"])',
             ["tests/test_model.py"]),
    Mutation("paste", "paste-back mask inverted", "scan/align/paste.py",
             "mask * face + (1 - mask) * region", "(1 - mask) * face + mask * region",
             ["tests/test_align.py"]),
]

# Installed through PYTHONPATH into every Python process the tests start: `scan` and its mapped
# subpackages come from the copy, ahead of the editable install's finder.
SITECUSTOMIZE = '''
import importlib.abc, importlib.machinery, importlib.util, os, sys

_ROOT = os.environ["SCAN_MUTATION_COPY"]
_PACKAGES = {packages!r}


class _CopyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in _PACKAGES:
            folder = os.path.join(_ROOT, _PACKAGES[name])
            return importlib.util.spec_from_file_location(
                name, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])
        parent = name.rpartition(".")[0]
        if parent.split(".")[0] == "scan" and parent in sys.modules:
            return importlib.machinery.PathFinder.find_spec(name, sys.modules[parent].__path__)
        return None


sys.meta_path.insert(0, _CopyFinder())
'''

WHERE_FROM = ("import scan, scan.stages, scan.fusion, scan.datasets, scan.training, scan.align, sys; "
              "print('\\n'.join(m.__file__ for n, m in sorted(sys.modules.items()) "
              "if (n == 'scan' or n.startswith('scan.')) and getattr(m, '__file__', None)))")


def make_copy(workdir: Path, mutation: Mutation | None) -> tuple[Path, dict[str, str]]:
    copy = workdir / "project"
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, copy / name)
    if mutation is not None:
        target = copy / mutation.path
        text = target.read_text()
        if text.count(mutation.before) != 1:
            raise SystemExit(f"{mutation.path}: expected exactly one {mutation.before!r}; update this script")
        target.write_text(text.replace(mutation.before, mutation.after))
    boot = workdir / "boot"
    boot.mkdir()
    (boot / "sitecustomize.py").write_text(SITECUSTOMIZE.format(packages=PACKAGES))
    env = {**os.environ, "SCAN_MUTATION_COPY": str(copy), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(boot), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # The copy, not the checkout, must be what gets imported.
    files = subprocess.run([sys.executable, "-c", WHERE_FROM], cwd=copy, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    strays = [f for f in files if not Path(f).resolve().is_relative_to(copy.resolve())]
    if not files or strays:
        raise SystemExit(f"the copy's package is not the one imported: {strays or 'nothing imported'}")
    return copy, env


def run_tests(mutation: Mutation | None, tests: list[str]) -> tuple[int, list[str]]:
    """(number of tests run, names of the failed ones) for ``tests`` on a (mutated) copy."""
    with tempfile.TemporaryDirectory(prefix="scan-mutation-") as tmp:
        copy, env = make_copy(Path(tmp), mutation)
        report = Path(tmp) / "report.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests],
            cwd=copy, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not report.exists():
            raise SystemExit(f"pytest wrote no report for {mutation.name if mutation else 'the baseline'}")
        cases = ET.parse(report).getroot().iter("testcase")
        ran, failed = 0, []
        for case in cases:
            ran += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}")
        return ran, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=[m.key for m in MUTATIONS], nargs="+", help="a subset of the mutations")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.key in args.only]

    all_tests = sorted({t for m in chosen for t in m.tests})
    ran, failed = run_tests(None, all_tests)
    rows = [("none (baseline)", " ".join(all_tests), ran, failed, not failed)]
    for m in chosen:
        ran, failed = run_tests(m, m.tests)
        rows.append((m.name, " ".join(m.tests), ran, failed, bool(failed)))

    width = max(len(tests) for _, tests, *_ in rows)
    print(f"{'mutation':38} {'tests run':{width}} {'ran':>4} {'failed':>6}  result")
    print("-" * (38 + width + 22))
    for i, (name, tests, ran, failed, ok) in enumerate(rows):
        verdict = ("passes" if ok else "FAILS") if i == 0 else ("caught" if ok else "NOT CAUGHT")
        print(f"{name:38} {tests:{width}} {ran:>4} {len(failed):>6}  {verdict}")
    for name, _, _, failed, _ in rows:
        if failed:
            print(f"\n{name}: failing tests")
            print("\n".join(f"  {t}" for t in failed))
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
