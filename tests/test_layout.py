"""The package's layout stays easy to follow: no import circle, small modules, configs that name the
networks without importing them, and a portrait's call path that never climbs back into a module it
left (tests/call_path.py)."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The import packages and their folders, as setup.cfg maps them.
PACKAGES = {"scan": ROOT / "scan", "scan.stages": ROOT / "stages", "scan.fusion": ROOT / "fusion",
            "scan.datasets": ROOT / "datasets"}
MAX_LINES = 400  # a module of scan/ longer than this holds more than one job (scan/training/ excepted)


def modules() -> dict[str, Path]:
    """Every module of the package: its dotted name and its file."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "scan" and parts[0] in ("stages", "fusion", "datasets"):
                continue  # those folders are only links in some layouts; their own entries count
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at its top or inside functions (what only type
    checkers read, under ``if TYPE_CHECKING:``, is left out: it never runs)."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for stmt in block.body for node in ast.walk(stmt)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets.update(submodules)
            if len(submodules) < len(node.names):
                targets.add(base)
    return {t for t in targets if t in known and t != name}


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's algorithm)."""
    known = modules()
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circle():
    assert "scan.infer_cli" in modules() and "scan.stages.resnet" in modules()
    assert import_cycles() == []


def test_a_circle_would_be_found(tmp_path, monkeypatch):
    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "a.py").write_text("from scan import b\n")
    (tmp_path / "scan" / "b.py").write_text("def f():\n    import scan.a\n")
    (tmp_path / "scan" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import scan.a\n")
    monkeypatch.setitem(PACKAGES, "scan", tmp_path / "scan")
    for package in ("scan.stages", "scan.fusion", "scan.datasets"):
        monkeypatch.setitem(PACKAGES, package, tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    assert import_cycles() == [["scan.a", "scan.b"]]


def test_modules_of_scan_stay_small():
    too_long = {name: lines for name, path in modules().items()
                if not name.startswith("scan.training") and (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}


def test_configs_name_the_networks_without_importing_them():
    known = modules()
    assert not {m for m in imported_modules("scan.config", known["scan.config"], known)
                if m.startswith(("scan.stages", "scan.fusion", "scan.losses"))}
    from scan.components import fusion_kinds, gan_losses, stage_kinds

    assert {"resnet", "refine", "mobile"} <= set(stage_kinds()) and fusion_kinds() and gan_losses()


def test_training_and_inference_read_images_through_one_module():
    import scan.datasets
    import scan.datasets.images
    import scan.imageio

    for name in ("IMAGE_EXTENSIONS", "NoImagesError", "find_images", "load_image", "to_rgb"):
        assert getattr(scan.datasets, name) is getattr(scan.imageio, name)
        assert getattr(scan.datasets.images, name) is getattr(scan.imageio, name)
    import scan.imageops
    import scan.strips

    assert scan.imageops.heatmap is scan.strips.heatmap and scan.imageops.pil_to_model is scan.imageio.pil_to_model


@pytest.mark.slow
def test_infer_paste_back_never_climbs_back_into_a_module():
    spec = importlib.util.spec_from_file_location("call_path", ROOT / "tests" / "call_path.py")
    call_path = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("call_path", call_path)  # its dataclasses look their module up there
    spec.loader.exec_module(call_path)
    with tempfile.TemporaryDirectory() as tmp:
        path = call_path.trace_modules(call_path.infer_paste_back(Path(tmp), save_stages=True))
    assert path.climbs == []
    # Before issue 22's restructuring the same call passed through 20 modules, and climbed back twice.
    assert len(path.modules) < 20
    assert {"scan.portrait", "scan.align.landmarks", "scan.align.crop", "scan.align.paste"} <= set(path.modules)
