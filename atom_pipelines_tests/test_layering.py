"""The package's layering cannot silently rot: `.importlinter` (the Dagster layer on top, the domain
packages below it, settings at the bottom; no import cycle between the modules of any package; deployment/
apart) holds for the code as it is, and the same check fails when a module imports upwards or a cycle
appears, so a green result means something.

`lint-imports` also runs in scripts/test before pytest; this test keeps the contract honest in pytest too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from atom_pipelines_tests.conftest import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: grimp must read the package under `root`, not the editable install.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_layers_and_has_no_cycles() -> None:
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO_ROOT / "atom_pipelines", tmp_path / "atom_pipelines", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO_ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _append(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # extraction is below entity_graph: importing it back is the cycle the layers were cut to remove.
        ("extraction/keys.py", "from atom_pipelines.entity_graph import links  # noqa", "BROKEN"),
        # the store is below the mail packages: it must not reach up into the Graph client.
        ("store/schema.py", "import atom_pipelines.mail.msgraph  # noqa", "BROKEN"),
        # config is the bottom layer.
        ("config.py", "import atom_pipelines.definitions  # noqa", "BROKEN"),
    ],
)
def test_an_upward_import_breaks_the_layers(package_copy: Path, module: str, line: str, contract: str) -> None:
    _append(package_copy / "atom_pipelines" / module, line)
    result = _lint_imports(package_copy)
    assert result.returncode != 0
    assert f"Dagster layer on top, domain packages below it, settings at the bottom {contract}" in result.stdout


def test_a_cycle_inside_a_package_breaks_the_acyclic_contract(package_copy: Path) -> None:
    # budget.py imports nothing of extraction; session.py imports budget. Budget importing session closes a cycle.
    _append(
        package_copy / "atom_pipelines" / "extraction" / "budget.py", "import atom_pipelines.extraction.session  # noqa"
    )
    result = _lint_imports(package_copy)
    assert result.returncode != 0
    assert "No import cycle between the modules of any package BROKEN" in result.stdout
