"""The run directory as a resource: one writer at a time, and never someone else's folder.

Two guards, both taken before anything is written into a run directory:

- :func:`check_run_dir`: the folder given as ``out`` must be new, empty, or a run directory mmat
  made (it holds mmat's lock file or run store). A folder of the user's own files is refused,
  unless ``force``: mmat would replace their ``rr.jsonl`` or ``run.json`` without a word.
- :class:`RunDirLock`: an exclusive ``flock`` on ``.mmat.lock`` in the folder, held for the life
  of the command. A second ``mmat build`` (or an ``export`` / ``critique`` writing into the run) is
  refused at once, naming the holder's pid, instead of paying for every call a second time. The
  kernel drops the lock when its holder exits however it exits (``kill -9`` included), so a
  crashed run never leaves a stale lock behind; the file itself stays, harmless.

Readers (``mmat status``, ``mmat view``) take no lock: SQLite's WAL lets them read while a run
writes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
from pathlib import Path
from types import TracebackType

from mmat_core.errors import OutputDirError, RunInUseError

#: The lock file in every run directory (also what marks a folder as a run directory).
LOCK_FILE = ".mmat.lock"
#: Files whose presence says that mmat made the folder.
RUN_MARKERS = (LOCK_FILE, "run.sqlite")


def check_run_dir(path: Path, *, force: bool = False) -> None:
    """Refuse an output folder that is a file (or a dangling link), or that holds files mmat did not write;
    with ``force`` write there anyway, with a warning naming those files."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{path} is a file, not a folder: give `out` (or --out) a folder path, new or empty")
    if path.is_symlink() and not path.exists():
        raise OutputDirError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: give `out` "
                             "(or --out) a folder path, new or empty, or create the folder the link points to")
    if not path.is_dir() or any((path / marker).exists() for marker in RUN_MARKERS):
        return
    foreign = sorted(entry.name for entry in path.iterdir())
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if force:
        # Asked for, but never silent: the user learns which of their files may be replaced.
        logging.getLogger(__name__).warning(
            "--force: writing into %s, which holds files mmat did not write (%s); any of them named like an output "
            "(rr.jsonl, orr.jsonl, run.json, quarantine.jsonl, ...) is replaced", path, shown)
        return
    raise OutputDirError(f"{path} is not an mmat run folder and is not empty (it holds {shown}); mmat would "
                         "overwrite files there: give a new or empty folder, or pass --force to write into it anyway")


def _holder(path: Path) -> str:
    """What the lock file says about its holder (pid and command), best effort."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "unknown"
    pid, _, command = text.partition(" ")
    return f"pid {pid}" + (f", `{command}`" if command else "") if pid.isdigit() else "unknown pid"


class RunDirLock:
    """An exclusive, non-blocking lock on a run directory, held until :meth:`release` (or exit).

    ``what`` names the command for the message the *other* process reads (``mmat build``)."""

    def __init__(self, run_dir: Path, what: str = "mmat build") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        """Take the lock or raise :class:`RunInUseError` at once (never waits)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            os.close(fd)
            raise RunInUseError(f"{self.run_dir} is in use by another mmat process ({_holder(self.path)}): wait for "
                                "it to finish or stop it; two runs into one folder would pay for every call twice") from None
        # Who holds it, for the refused process's message (written after locking: never a race).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it could let two processes lock two files)."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def command_line() -> str:
    """This process's command line, shortened, for the lock file."""
    args = " ".join(sys.argv[1:])[:200]
    return f"mmat {args}".strip() if args else "mmat (Python API)"
