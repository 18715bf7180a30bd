"""The ``mmat`` command line: thin click commands over the programmatic API.

The core's subcommands live in their own modules and are imported only when run. Applications
beside the core (the viewer, the agent runtime, evaluation, the ``rag`` commands) and any third
party's commands come from plugins through the ``register_commands(cli)`` hook, collected only
when a name that is not a core command is asked for, or when ``mmat --help`` lists them. To add a
core command, add a row to ``COMMANDS``; to add any other, write a plugin.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mmat_core.plugins import PluginManager

#: command name -> ("module:function", one-line help shown by ``mmat --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("mmat_core.cli.build:build", "Build RR/ORR training data (the whole pipeline)."),
    "cache": ("mmat_core.cli.cache:cache", "Inspect the result cache: `mmat cache stats`, `mmat cache explain SAMPLE_ID`."),
    "critique": ("mmat_core.cli.critique:critique", "Run critics over existing traces without regenerating them."),
    "export": ("mmat_core.cli.export:export", "Write any format (RR, ORR, ms-swift, LLaMA-Factory, ...) from a run's stored traces."),
    "import-rr": ("mmat_core.cli.export:import_rr", "Read RR JSONL back into traces (then export ORR or any format)."),
    "recipes": ("mmat_core.cli.recipes:recipes", "List the shipped recipes (`mmat recipes show NAME` prints one to copy)."),
    "plugins": ("mmat_core.cli.info:plugins", "List plugins with their versions, hooks and components."),
    "validate": ("mmat_core.cli.info:validate", "Check a JSON/JSONL file against its schema."),
    "schemas": ("mmat_core.cli.info:schemas", "Print, write or check the JSON Schemas of mmat's records."),
    "sources": ("mmat_core.cli.sources:sources", "List the sources with their options, sub-datasets and licences."),
    "stats": ("mmat_core.cli.stats:stats", "A run's figures (sources, operators, reflections, steps, quality, cost); `--compare paper`."),
    "status": ("mmat_core.cli.status:status", "Show a run's progress, failures by reason and whether it is complete."),
    "tools": ("mmat_core.cli.tools:tools", "List the operators (tools) with their argument schemas."),
    "tool": ("mmat_core.cli.tools:tool", "Run one operator on one image for debugging (`mmat tool run NAME IMAGE`)."),
    "train": ("mmat_core.cli.train:train", "Fine-tune a VLM on RR/ORR data (hf-lora, or the paper's ms-swift run)."),
}


#: ``ctx.meta`` keys: the plugin manager of this invocation and the commands its plugins added.
_MANAGER_KEY = "mmat.plugin_manager"
_PLUGIN_COMMANDS_KEY = "mmat.plugin_commands"


def plugin_manager_for(ctx: click.Context) -> PluginManager:
    """The plugin manager of this invocation, made once from the global ``--plugins`` and ``-p``
    options (or the one passed as ``obj`` by a program that embeds the CLI)."""
    root = ctx.find_root()
    manager = root.meta.get(_MANAGER_KEY)
    if manager is None:
        from mmat_core.plugins import PluginManager

        options = _plugin_args(root.params.get("plugins"), root.params.get("block") or ())
        if isinstance(root.obj, PluginManager):
            manager = root.obj
            if options["allow"] is not None:
                manager.allow = set(options["allow"])
            manager.block |= set(options["block"])
        else:
            manager = PluginManager(**options)
        root.meta[_MANAGER_KEY] = manager
    return manager


def collect_plugin_commands(manager: PluginManager) -> dict[str, click.Command]:
    """The commands plugins add through ``register_commands``, by name.

    Each plugin fills a group of its own, so one that fails halfway adds nothing: it is reported
    as a warning naming it (an error under ``MMAT_STRICT_PLUGINS=1``) and the others go on. A
    name taken by a core command or by two plugins is an error naming both.

    Only the plugins' hooks are loaded (:meth:`PluginManager.load_hooks`), not their components:
    listing commands must not import every component class (and pydantic) of every plugin.
    """
    from mmat_core.errors import DuplicateComponentError, PluginError
    from mmat_core.plugins import PluginWarning

    manager.load_hooks()
    commands: dict[str, click.Command] = {}
    owners: dict[str, str] = {}
    for impl in manager.pm.hook.register_commands.get_hookimpls():
        plugin = impl.plugin_name
        staging = click.Group(name=plugin)
        try:
            impl.function(cli=staging)
        except Exception as exc:  # a broken plugin must not take `mmat --help` down with it
            info = manager.plugins.get(plugin)
            label = f"'{plugin}' ({info.distribution} {info.version})" if info else f"'{plugin}'"
            text = f"mmat: plugin {label} added no commands: register_commands failed: {type(exc).__name__}: {exc}"
            if manager.strict:
                raise PluginError(text + " (MMAT_STRICT_PLUGINS=1)") from exc
            warnings.warn(text, PluginWarning, stacklevel=2)
            continue
        for name, command in staging.commands.items():
            if name in COMMANDS:
                raise DuplicateComponentError(
                    f"command '{name}' is a core command of mmat; plugin '{plugin}' may not add it. Block it with -p no:{plugin}.")
            if name in owners:
                raise DuplicateComponentError(
                    f"command '{name}' is added by two plugins: '{owners[name]}' and '{plugin}'. Block one with -p no:NAME.")
            commands[name] = command
            owners[name] = plugin
    return commands


class LazyGroup(click.Group):
    """A group whose core subcommands are imported on use (help text from ``COMMANDS``) and whose
    other subcommands come from plugins, collected only when needed."""

    def plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        """Commands added by the plugins of this invocation (collected once)."""
        root = ctx.find_root()
        if _PLUGIN_COMMANDS_KEY not in root.meta:
            root.meta[_PLUGIN_COMMANDS_KEY] = collect_plugin_commands(plugin_manager_for(ctx))
        commands: dict[str, click.Command] = root.meta[_PLUGIN_COMMANDS_KEY]
        return commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.plugin_commands(ctx)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return self.plugin_commands(ctx).get(name)
        module_name, attr = target[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = {name: help_text for name, (_target, help_text) in COMMANDS.items()}
        limit = formatter.width - 6 - max(len(name) for name in rows)
        for name, command in self.plugin_commands(ctx).items():
            if not command.hidden:
                rows[name] = command.get_short_help_str(limit)
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows.items()))

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `mmat build --plugins a,b` and `mmat view -p no:x ...` mean the global options: move
        # them to the front (no subcommand has a --plugins or -p of its own), where they are read
        # before --help lists the commands of the plugins they allow.
        return super().parse_args(ctx, hoist_plugin_options(args))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and name not in COMMANDS and not name.startswith("-"):
            known = self.list_commands(ctx)
            if name not in known:
                import difflib

                guess = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean '{guess[0]}'?" if guess else ""
                raise click.UsageError(f"Unknown command '{name}'.{hint} Available: {', '.join(known)}", ctx)
        return super().resolve_command(ctx, args)


#: Set by ``--debug`` (or MMAT_DEBUG=1): errors show their traceback.
_debug = False


def _set_debug(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    global _debug
    _debug = _debug or bool(value)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from mmat_core.plugins import mmat_version

    click.echo(f"mmat {mmat_version()} (Python {sys.version.split()[0]})")
    manager = plugin_manager_for(ctx)
    for info in manager.info():
        state = f"  [not loaded: {info.error}]" if info.error else ""
        click.echo(f"  {info.name} {info.version} ({info.distribution}){state}")
    ctx.exit()


def hoist_plugin_options(args: list[str]) -> list[str]:
    """``args`` with every ``--plugins X`` / ``--plugins=X`` / ``-p no:X`` moved to the front,
    wherever it was given (arguments after ``--`` are left alone)."""
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        following = args[index + 1] if index + 1 < len(args) else None
        if arg == "--plugins" and following is not None:
            moved += [arg, following]
            index += 2
            continue
        if arg.startswith("--plugins="):
            moved.append(arg)
        elif arg == "-p" and following is not None and following.startswith("no:"):
            moved += [arg, following]
            index += 2
            continue
        elif arg.startswith("-pno:"):
            moved.append(arg)
        else:
            rest.append(arg)
        index += 1
    return moved + rest if moved else args


def _plugin_args(allow: str | None, block: tuple[str, ...]) -> dict[str, Any]:
    blocked = []
    for item in block:
        if not item.startswith("no:"):
            raise click.BadParameter(f"expected -p no:NAME, got -p {item}", param_hint="-p")
        blocked.append(item[3:])
    return {"allow": [p.strip() for p in allow.split(",") if p.strip()] if allow else None, "block": blocked}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--plugins", "plugins", metavar="A,B", is_eager=True,
              help="Load only these plugins (entry-point names; 'builtins' = all built-ins). Env: MMAT_PLUGINS.")
@click.option("-p", "block", multiple=True, metavar="no:NAME", is_eager=True,
              help="Do not load plugin NAME (repeatable). Env: MMAT_DISABLE_PLUGINS=a,b.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=False, callback=_version,
              help="Show the version and the loaded plugins, then exit.")
@click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=_set_debug,
              help="Show the full traceback of an error (env: MMAT_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, plugins: str | None, block: tuple[str, ...]) -> None:
    """mmat: build multimodal agent-tuning data the MMAT-1M way.

    Curate visual QA pairs, have a VLM reason towards each answer with tools and retrieval, catch
    cheating with reflection, and write RR / ORR training data.
    """
    from mmat_core.plugins import set_plugin_manager

    manager = plugin_manager_for(ctx)
    manager.check_names()  # a misspelt --plugins or -p no:NAME stops here, before any work
    set_plugin_manager(manager)


#: Where to report a bug (printed under an unexpected traceback).
REPORT_HINT = "This is a bug in mmat or a plugin: please report it with the traceback above and the output of `mmat --version`."


def _print_error(message: str) -> None:
    """One scrubbed ``Error:`` line on stderr (a key echoed in an error never reaches a terminal)."""
    from mmat_core.secrets import scrub

    click.echo(f"Error: {scrub(message)}", err=True)


def _print_traceback(exc: BaseException) -> None:
    import traceback

    from mmat_core.secrets import scrub

    click.echo(scrub("".join(traceback.format_exception(exc))).rstrip(), err=True)


def _install_log_scrubber() -> None:
    """Log records reach the terminal through one handler that scrubs credentials."""
    import logging

    from mmat_core.secrets import ScrubFilter

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    for handler in root.handlers:
        handler.addFilter(ScrubFilter())


def run() -> None:
    """Entry point: every error a user can cause ends in one ``Error: ...`` line (exit 2), with
    the traceback only under ``--debug``; an unexpected exception is a bug and prints its
    traceback with a hint to report it (exit 1)."""
    import os

    from mmat_core.errors import MmatError
    from mmat_core.telemetry import silence_telemetry

    global _debug
    _debug = os.environ.get("MMAT_DEBUG", "") not in ("", "0")
    silence_telemetry()  # before any plugin loads a library that phones home (onnxruntime, ...)
    _install_log_scrubber()
    from mmat_core.cli.build import plain_warnings

    try:
        with plain_warnings():  # mmat's own warnings as one `Warning: ...` line, in every command
            main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except MmatError as exc:
        if _debug:
            _print_traceback(exc)
        _print_error(str(exc))
        sys.exit(2)
    except OSError as exc:
        # A file that cannot be read or written (permissions, a missing folder, a full disk):
        # the user's to fix, so one line naming the file; the traceback under --debug.
        if _debug:
            _print_traceback(exc)
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _print_error(f"{exc.strerror or exc}{where}" + ("" if _debug else "  (run with --debug for the traceback)"))
        sys.exit(2)
    except Exception as exc:  # anything else is a bug: show everything
        _print_traceback(exc)
        click.echo(REPORT_HINT, err=True)
        sys.exit(1)
