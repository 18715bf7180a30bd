"""``mmat train``: fine-tune a model on built data with a trainer plugin. (``mmat infer`` and
``mmat eval`` are commands of the built-in plugins ``agent`` and ``evaluation``.)"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from mmat_core.errors import ConfigError


def _parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = yaml.safe_load(value) if value else ""
    return values


@click.command()
@click.option("--trainer", default="hf-lora", show_default=True, help="Trainer plugin (hf-lora, swift, ...).")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, path_type=Path),
              help="rr.jsonl / orr.jsonl, or a run folder holding one of them (repeat to mix files).")
@click.option("--model", required=True, help="Base model: a Hugging Face id or a local folder.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--preset", default="mmat-paper", show_default=True, help="Named settings: mmat-paper (Table 7) or smoke.")
@click.option("--set", "set_items", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. learning_rate=1e-4, max_steps=100, frobenius_lambda=1e-4.")
@click.option("--max-steps", type=int, help="Stop after N optimizer steps.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the output folder.")
@click.option("--resume-from", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Continue from this checkpoint.")
@click.option("--merge", is_flag=True, help="Also save the base model with the adapter merged in.")
def train(trainer: str, data: tuple[Path, ...], model: str, out: Path, preset: str, set_items: tuple[str, ...],
          max_steps: int | None, resume: bool, resume_from: Path | None, merge: bool) -> None:
    """Fine-tune a vision-language model on RR or ORR data (LoRA SFT)."""
    from mmat_core.plugins import get_plugin_manager

    overrides = _parse_set(set_items)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if merge:
        overrides["merge"] = True
    component = get_plugin_manager().create("trainer", trainer)

    def log(record: dict[str, Any]) -> None:
        click.echo(f"step {record['step']}/{record['total_steps']}  loss {record['loss']:.4f}  "
                   f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tokens/s")

    result = component.train(data=list(data), model=model, output_dir=out, preset=preset,  # type: ignore[attr-defined]
                             overrides=overrides, resume=resume_from or resume, log=log)
    extra = result.model_extra or {}
    if result.command and not extra.get("ran"):
        missing = any("not found on PATH" in note for note in extra.get("notes", []))
        click.echo(("ms-swift is not installed here; run this where it is" if missing else "Not run (run=false)")
                   + f" (also written to {extra.get('script')}):")
        click.echo(shlex.join(result.command))
        for note in extra.get("notes", []):
            click.echo(f"note: {note}", err=True)
        return
    click.echo(f"Trained {result.steps} steps, final loss {result.final_loss}" if result.final_loss is not None
               else f"Finished ({result.steps} steps)")
    for key in ("adapter_dir", "merged_dir", "checkpoint", "log_file"):
        if extra.get(key):
            click.echo(f"  {key.replace('_', ' ')}: {extra[key]}")
    if extra.get("rejected"):
        click.echo(f"  {extra['rejected']} record(s) quarantined: {out / 'quarantine.jsonl'}")
