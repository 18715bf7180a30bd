"""A writer killed mid-write leaves a hidden temporary file; the next writer of the same file removes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmat_core.writers import AtomicFile


def test_temporary_of_a_dead_writer_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    target = tmp_path / "rr.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".rr.jsonl.{dead.stdout.strip()}.tmp"
    stale.write_text("half a record")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        busy = tmp_path / f".rr.jsonl.{live.pid}.tmp"
        busy.write_text("being written")
        with AtomicFile(target) as out:
            out.write("{}\n")
        assert not stale.exists() and busy.exists()
        assert target.read_text() == "{}\n"
    finally:
        live.kill()
        live.wait()
