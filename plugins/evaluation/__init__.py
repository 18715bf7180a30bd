"""Evaluation: score a model (plain, RR runtime or ORR) on a QA file with answers.

A built-in plugin beside the core: it adds ``mmat eval`` through the ``register_commands`` hook.
From Python (see :mod:`mmat_plugins.evaluation.scoring`)::

    from mmat_plugins.agent import AgentRuntime, open_chat_model
    from mmat_plugins.evaluation import evaluate, summary_table

    runtime = AgentRuntime.from_names(open_chat_model("base", endpoint="http://127.0.0.1:8000/v1"), mode="plain")
    result = evaluate(runtime, Path("bench.jsonl"), Path("eval-out"))
    print(summary_table(result, runtime.mode, runtime.model.name))

The names below are imported on first use, so loading the plugin does not import the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmat_core import hookimpl

if TYPE_CHECKING:
    import click
    from mmat_plugins.evaluation.scoring import EvalResult, evaluate, evaluate_async, read_bench, summary_table

__all__ = ["EvalResult", "evaluate", "evaluate_async", "read_bench", "register_commands", "summary_table"]

_LAZY = {"EvalResult", "evaluate", "evaluate_async", "read_bench", "summary_table"}


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``mmat eval``."""
    from mmat_plugins.evaluation.command import evaluate_command

    cli.add_command(evaluate_command)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mmat_plugins.evaluation' has no attribute {name!r}")
    from mmat_plugins.evaluation import scoring

    return getattr(scoring, name)
