"""The mutation check (tests/mutation_check.py) plants its bugs by replacing text: that text must
still be in the code, once, or the check would test nothing the day the code is rewritten."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "tests" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutation_check", mutation_check)  # its dataclasses look their module up there
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("mutation", mutation_check.MUTATIONS, ids=lambda m: m.key)
def test_each_planted_bug_finds_its_code_once(mutation):
    assert (ROOT / mutation.path).read_text().count(mutation.before) == 1
    assert all((ROOT / test).is_file() for test in mutation.tests)
