"""``register_commands(cli)``: plugins add ``mmat`` subcommands; a broken one never takes the
command line down; clashes are errors naming both sides."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from mmat_core import hookimpl
from mmat_core.cli import main
from mmat_core.errors import DuplicateComponentError, PluginError
from mmat_core.plugins import PluginManager, PluginWarning, set_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


@click.command(short_help="Say hello (added by a plugin).")
@click.option("--name", default="world")
def hello(name: str) -> None:
    """Say hello."""
    click.echo(f"hello {name}")


def command_plugin(register_commands: Callable[[click.Group], None]) -> type:
    """A plugin object whose only hook is ``register_commands``."""
    return type("CommandPlugin", (), {"register_commands": staticmethod(hookimpl(register_commands))})


def adds_hello(cli: click.Group) -> None:
    cli.add_command(hello)


@pytest.fixture(autouse=True)
def _restore_default_manager() -> Iterator[None]:
    yield
    set_plugin_manager(None)  # the group installs the manager it used as the process default


def invoke(manager: PluginManager, *args: str) -> Result:
    """Run the real ``mmat`` group with ``manager`` (plugins registered in code) as its manager."""
    return CliRunner().invoke(main, list(args), obj=manager)


def manager_with(*plugins: tuple[str, type], strict: bool = False) -> PluginManager:
    manager = PluginManager(strict=strict)
    for name, plugin in plugins:
        manager.register(plugin, name)
    return manager


def test_register_commands() -> None:
    result = invoke(manager_with(("greeter", command_plugin(adds_hello))), "hello", "--name", "mmat")
    assert result.exit_code == 0, result.output
    assert result.output == "hello mmat\n"


def test_help_lists_a_plugin_command_with_its_short_help() -> None:
    result = invoke(manager_with(("greeter", command_plugin(adds_hello))), "--help")
    assert result.exit_code == 0
    # Not the exact spacing: click pads to the longest command name, which any plugin may change.
    assert "\n  hello " in result.output and " Say hello (added by a plugin).\n" in result.output
    assert "build" in result.output and "view" in result.output


def test_a_plugin_command_given_a_misspelt_name_gets_a_suggestion() -> None:
    result = invoke(manager_with(("greeter", command_plugin(adds_hello))), "helo")
    assert result.exit_code == 2
    assert "Did you mean 'hello'?" in result.output


def test_a_failing_register_commands_is_a_warning_naming_the_plugin_and_help_goes_on() -> None:
    def broken(cli: click.Group) -> None:
        cli.add_command(hello)  # added, then the hook fails: nothing of this plugin may remain
        raise RuntimeError("cannot import my_heavy_lib")

    manager = manager_with(("broken-cmds", command_plugin(broken)))
    with pytest.warns(PluginWarning, match=r"plugin 'broken-cmds' .*added no commands.*RuntimeError: cannot import my_heavy_lib"):
        result = invoke(manager, "--help")
    assert result.exit_code == 0
    assert "view" in result.output and "hello" not in result.output


def test_strict_mode_turns_a_failing_register_commands_into_an_error() -> None:
    def broken(cli: click.Group) -> None:
        raise RuntimeError("boom")

    result = invoke(manager_with(("broken-cmds", command_plugin(broken)), strict=True), "--help")
    assert isinstance(result.exception, PluginError)
    assert "plugin 'broken-cmds'" in str(result.exception) and "MMAT_STRICT_PLUGINS=1" in str(result.exception)


def test_two_plugins_adding_the_same_command_is_an_error_naming_both() -> None:
    manager = manager_with(("first", command_plugin(adds_hello)), ("second", command_plugin(adds_hello)))
    result = invoke(manager, "hello")
    assert isinstance(result.exception, DuplicateComponentError)
    assert "command 'hello' is added by two plugins: 'first' and 'second'" in str(result.exception)


def test_a_plugin_may_not_take_the_name_of_a_core_command() -> None:
    @click.command(name="build")
    def fake_build() -> None:
        """Not the real build."""

    manager = manager_with(("usurper", command_plugin(lambda cli: cli.add_command(fake_build))))
    result = invoke(manager, "view", "--help")
    assert isinstance(result.exception, DuplicateComponentError)
    assert "command 'build' is a core command of mmat; plugin 'usurper' may not add it" in str(result.exception)


def test_plugin_options_after_help_are_read_before_the_listing() -> None:
    result = invoke(PluginManager(), "--help", "-p", "no:viewer")
    assert result.exit_code == 0
    assert "validate" in result.output and "  view " not in result.output


def run_mmat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point of [project.scripts] (``mmat_core.cli:run``) in a fresh process."""
    code = "import sys\nfrom mmat_core.cli import run\nsys.argv = ['mmat', *sys.argv[1:]]\nrun()\n"
    return subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


def installed_third_party(site: Path, module_source: str) -> dict[str, str]:
    """A third-party distribution ``mmat-greeter`` as pip would leave it (a package and its
    ``.dist-info`` with an ``mmat`` entry point) in ``site``; returns the environment that puts
    it on the path."""
    (site / "mmat_greeter.py").write_text(module_source)
    info = site / "mmat_greeter-1.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmat-greeter\nVersion: 1.2.0\n")
    (info / "entry_points.txt").write_text("[mmat]\ngreeter = mmat_greeter\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


THIRD_PARTY = '''
import click
from mmat_core import hookimpl


@click.command(short_help="Greet from a third-party plugin.")
@click.argument("who")
def greet(who):
    """Greet WHO."""
    click.echo(f"greetings, {who}")


@hookimpl
def register_commands(cli):
    cli.add_command(greet)
'''


def test_a_third_party_distribution_adds_a_command_through_its_entry_point(tmp_path: Path) -> None:
    env = installed_third_party(tmp_path, THIRD_PARTY)
    result = run_mmat("greet", "you", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greetings, you\n"
    listing = run_mmat("--help", env=env)
    assert "\n  greet " in listing.stdout and " Greet from a third-party plugin.\n" in listing.stdout


def test_blocking_a_third_party_plugin_removes_its_command(tmp_path: Path) -> None:
    env = installed_third_party(tmp_path, THIRD_PARTY)
    result = run_mmat("greet", "you", "-p", "no:greeter", env=env)
    assert result.returncode == 2
    assert "Unknown command 'greet'" in result.stderr


def test_a_third_party_command_that_fails_to_register_leaves_help_working(tmp_path: Path) -> None:
    env = installed_third_party(tmp_path, THIRD_PARTY.replace("    cli.add_command(greet)", "    raise ImportError('no module named torchvision')"))
    result = run_mmat("--help", env=env)
    assert result.returncode == 0
    assert "build" in result.stdout and "greet" not in result.stdout
    assert "plugin 'greeter' (mmat-greeter 1.2.0) added no commands" in result.stderr
    strict = run_mmat("--help", env={**env, "MMAT_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert strict.stderr.startswith("Error: mmat: plugin 'greeter' (mmat-greeter 1.2.0) added no commands")


def test_a_core_command_does_not_collect_plugin_commands() -> None:
    code = (
        "import sys\n"
        "from mmat_core.cli import main\n"
        "try:\n    main(['validate', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('mmat_plugins')))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


@pytest.mark.parametrize(("command", "plugin"),
                         [("view", "viewer"), ("infer", "agent"), ("eval", "evaluation"), ("rag", "search")])
def test_the_applications_are_commands_of_built_in_plugins(command: str, plugin: str) -> None:
    present = run_mmat(command, "--help")
    assert present.returncode == 0 and f"Usage: mmat {command}" in present.stdout
    blocked = run_mmat("-p", f"no:{plugin}", command, "--help")
    assert blocked.returncode == 2 and f"Unknown command '{command}'" in blocked.stderr


def test_the_plugins_listing_names_register_commands_among_a_plugins_hooks() -> None:
    manager = manager_with(("greeter", command_plugin(adds_hello)))
    info = {plugin.name: plugin for plugin in manager.info()}
    assert info["greeter"].hooks == ["register_commands"]
    assert info["viewer"].hooks == ["register_commands"]
