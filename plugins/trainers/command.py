"""``mmat tiny-model DIR``: a tiny random vision-language model to try ``mmat train`` on a CPU.

Added by the trainers plugin through ``register_commands``. The model is the one the tests train
(:func:`mmat_plugins.trainers.tiny.build_tiny_vlm`, about 0.2M parameters, nothing downloaded);
``--data`` trains its tokenizer on the texts of RR/ORR files so samples tokenise short.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mmat_core.errors import ConfigError, OutputDirError

_TRAINING_FILES = ("rr.jsonl", "orr.jsonl")


def data_texts(paths: tuple[Path, ...]) -> list[str]:
    """Every message text of the given JSONL files (a run folder stands for its rr/orr files)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [path / name for name in _TRAINING_FILES if (path / name).is_file()]
            if not found:
                raise ConfigError(f"no {' or '.join(_TRAINING_FILES)} in {path}", key="data")
            files.extend(found)
        else:
            files.append(path)
    texts: list[str] = []
    for file in files:
        with open(file, encoding="utf-8") as lines:
            for line in lines:
                try:
                    messages = json.loads(line).get("messages", [])
                except (ValueError, AttributeError):
                    continue  # a bad line only costs the tokenizer a few texts
                texts.extend(m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str))
    return texts


@click.command("tiny-model")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="rr.jsonl / orr.jsonl or a run folder: train the tokenizer on its texts (repeatable).")
def tiny_model(folder: Path, data: tuple[Path, ...]) -> None:
    """Write a tiny random vision-language model (about 0.2M parameters) to FOLDER, for CPU checks."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputDirError(f"{folder} already exists and is not an empty folder; pick a new folder for the tiny model")
    from mmat_plugins.trainers.model_source import require_training_packages

    require_training_packages("mmat tiny-model", ("torch", "transformers", "tokenizers"))
    from mmat_plugins.trainers.tiny import DEFAULT_TEXTS, build_tiny_vlm
    from transformers.utils import logging as transformers_logging

    texts = data_texts(data) if data else list(DEFAULT_TEXTS)
    transformers_logging.disable_progress_bar()  # a bar for a 1 MB file is only noise in a terminal
    build_tiny_vlm(folder, texts)
    click.echo(f"Wrote a tiny random model to {folder} (for checks only: its answers are noise); "
               f"train on it with --model {folder}")
