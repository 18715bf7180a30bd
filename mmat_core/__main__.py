"""``python -m mmat_core`` runs the command line."""

from mmat_core.cli import run

run()
