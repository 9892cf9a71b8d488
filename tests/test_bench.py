"""bench/ as a suite: every benchmark, experiment and tool still starts (its --help, in a fresh
interpreter, run as the docs run it), and none leans on the tests."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("speed", "experiments", "tools")
SCRIPTS = sorted(p for group in GROUPS for p in (REPO / "bench" / group).glob("*.py")
                 if p.name != "__init__.py")


def test_the_suite_has_its_three_groups_and_imports_nothing_from_the_tests():
    assert {p.parent.name for p in SCRIPTS} == set(GROUPS)
    for path in [*SCRIPTS, REPO / "bench" / "common.py", REPO / "bench" / "browser.py"]:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (conftest|test_\w+)\b", text, re.M), path
        assert "sys.path.insert" not in text.replace('sys.path.insert(0, sys.argv[1])', ""), path


@pytest.mark.bench
def test_every_script_answers_help():
    def help_of(path: Path) -> tuple[Path, subprocess.CompletedProcess]:
        module = f"bench.{path.parent.name}.{path.stem}"
        return path, subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                                    text=True, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        for path, result in pool.map(help_of, SCRIPTS):
            assert result.returncode == 0 and "usage:" in result.stdout, (path, result.stderr[-1500:])
