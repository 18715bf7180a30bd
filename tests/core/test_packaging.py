"""Packaging: every sub-package is listed in pyproject, and a built wheel carries the data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def listed_packages() -> set[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def package_dirs() -> set[str]:
    found = set()
    for folder, import_name in (("mmat_core", "mmat_core"), ("plugins", "mmat_plugins"), ("schemas", "mmat_schemas")):
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((import_name, *relative)))
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    missing = package_dirs() - listed_packages()
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


def test_wheel_contains_sample_data_viewer_assets_and_recipes(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    egg_info = ROOT / "mmat.egg-info"
    existed = egg_info.exists()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        if not existed:
            # The build writes mmat.egg-info into the source tree; the tests run with the tree on
            # sys.path, where it would shadow the installed metadata (and its entry points).
            shutil.rmtree(egg_info, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("mmat-*.whl"))).namelist()
    assert "mmat_plugins/sources/sample_data/samples.jsonl" in names
    assert any(n.startswith("mmat_plugins/sources/sample_data/images/") for n in names)
    assert "mmat_plugins/viewer/static/index.html" in names
    assert {"mmat_core/recipes/paper.yaml", "mmat_core/recipes/sample.yaml"} <= set(names)
    assert "mmat_schemas/trace.schema.json" in names
    assert any(n.startswith("mmat_schemas/exports/") and n.endswith(".schema.json") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "[mmat]" in zipfile.ZipFile(next(tmp_path.glob("mmat-*.whl"))).read(entry_points).decode()
