"""``mmat view``: browse a run (finished or running) or an exported JSONL file in a web page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Browse a run or an exported JSONL file in a local web page (samples, boxes, dashboard).")
@click.argument("target", type=click.Path(exists=True, path_type=Path), metavar="RUN_DIR_OR_FILE")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Keep the loopback default unless others must reach it: the viewer has no login.")
@click.option("--index-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to keep the viewer's index (default: viewer-index.sqlite in the run directory, "
                   "or a temporary folder when that is not writable or TARGET is a file).")
@click.option("--image-root", "image_roots", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A JSONL file's images are served only from its own folder; add a folder they may also come "
                   "from (repeatable), e.g. the source dataset's image folder.")
@click.option("--open/--no-open", "open_browser", default=False, help="Open the page in the default browser.")
@click.option("--verbose", is_flag=True, help="Log every request.")
def view(target: Path, port: int, host: str, index_dir: Path | None, image_roots: tuple[Path, ...], open_browser: bool,
         verbose: bool) -> None:
    """Serve a local page over RUN_DIR_OR_FILE: sample list with filters and search, each sample's
    image with its boxes, dialogue, verdicts, RR and ORR, and a dashboard. Ctrl-C stops it."""
    from mmat_plugins.viewer.server import ViewerServer

    if target.is_file():
        click.echo(f"Indexing {target} ...")
    try:
        server = ViewerServer.open(target, host=host, port=port, index_dir=index_dir, verbose=verbose,
                                   image_roots=list(image_roots))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another with --port") from None
    click.echo(f"mmat viewer on {server.url}  ({server.dataset.label}; Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
