"""The command line itself: help, version, fast start, errors."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "onnxruntime", "ray", "cv2", "openai", "anthropic", "pyarrow")


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from mmat_core.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "build" in result.stdout and "validate" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_plugins_listing_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from mmat_core.plugins import PluginManager\n"
        "PluginManager().load()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_version_lists_plugins_with_versions() -> None:
    result = subprocess.run([sys.executable, "-m", "mmat_core", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("mmat ")
    assert "llms 0.1.0 (mmat)" in result.stdout


def test_unknown_command_suggests_the_closest() -> None:
    result = subprocess.run([sys.executable, "-m", "mmat_core", "biuld"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Did you mean 'build'?" in result.stderr


def test_plugins_json_is_machine_readable() -> None:
    result = subprocess.run([sys.executable, "-m", "mmat_core", "plugins", "--json"], capture_output=True, text=True, timeout=60)
    listing = json.loads(result.stdout)
    assert all({"name", "version", "hooks", "components"} <= set(p) for p in listing)
