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


def mmat(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `mmat` entry point (``code``: extra Python run first, e.g. to add a command)."""
    import os

    prelude = (code or "") + "\nimport sys\nfrom mmat_core.cli import run\nsys.argv = ['mmat', *sys.argv[1:]]\nrun()\n"
    return subprocess.run([sys.executable, "-c", prelude, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


# A command that fails the way a test asks, added to COMMANDS from the -c code (module __main__).
FAILING_COMMAND = (
    "import click, os\n"
    "from mmat_core import cli\n"
    "from mmat_core.errors import ConfigError\n"
    "@click.command()\n"
    "@click.argument('kind')\n"
    "def fail(kind):\n"
    "    if kind == 'user':\n"
    "        raise ConfigError('bad value ' + os.environ.get('OPENAI_API_KEY', ''), file='x.yaml', key='llm.model')\n"
    "    if kind == 'disk':\n"
    "        raise OSError(28, 'No space left on device', 'out/rr.jsonl')\n"
    "    raise KeyError('a bug')\n"
    "cli.COMMANDS['fail'] = ('__main__:fail', 'fails on purpose')\n"
)


def test_an_unknown_plugin_in_the_global_allow_list_stops_with_a_suggestion() -> None:
    result = mmat("--plugins", "llmz", "sources")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: unknown plugin 'llmz'") and "Did you mean 'llms'?" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_an_unknown_plugin_in_the_block_list_stops_with_a_suggestion() -> None:
    result = mmat("-p", "no:critcs", "sources")
    assert result.returncode == 2 and "Did you mean 'critics'?" in result.stderr


def test_subcommands_accept_the_plugin_options() -> None:
    result = mmat("build", "--plugins", "x", "--dry-run")
    assert result.returncode == 2
    assert "unknown plugin 'x'" in result.stderr and "No such option" not in result.stderr
    listing = mmat("sources", "-p", "no:critics")
    assert listing.returncode == 0 and "cauldron" in listing.stdout


def test_a_user_error_is_one_error_line_and_the_traceback_needs_debug() -> None:
    result = mmat("fail", "user", code=FAILING_COMMAND)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["Error: x.yaml: llm.model: bad value"]
    debug = mmat("--debug", "fail", "user", code=FAILING_COMMAND)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and debug.stderr.rstrip().splitlines()[-1].startswith("Error:")


def test_an_unexpected_exception_shows_its_traceback_and_asks_for_a_report() -> None:
    result = mmat("fail", "bug", code=FAILING_COMMAND)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError: 'a bug'" in result.stderr and "please report it" in result.stderr


def test_a_key_in_an_error_message_is_scrubbed_from_the_terminal() -> None:
    key = "sk-test-0f3a9c1e7b5d4a2c8e6f0b1d3c5a7e9f-CLI"
    result = mmat("fail", "user", code=FAILING_COMMAND, env={"OPENAI_API_KEY": key})
    assert result.returncode == 2 and "bad value ***" in result.stderr
    assert key[4:20] not in result.stderr


def test_an_os_error_is_one_error_line_naming_the_file() -> None:
    result = mmat("fail", "disk", code=FAILING_COMMAND)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: No space left on device: out/rr.jsonl  (run with --debug for the traceback)"]
