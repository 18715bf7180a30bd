"""The runnable blocks of the documentation: find them, read their markers, run them.

A ``bash``, ``sh``, ``shell``, ``console`` or ``python`` block in README.md, CONTRIBUTING.md or
docs/**/*.md carries a marker on the line right before its fence (CONTRIBUTING.md, "Runnable
docs", is the reference)::

    <!-- doc-test: run -->                     run as written
    <!-- doc-test: run with=fake-openai -->    ... with OPENAI_BASE_URL / OPENAI_API_KEY set to a fake server
    <!-- doc-test: run exit=2 -->              ... and expect it to stop with exit status 2
    <!-- doc-test: run until="mmat viewer on" -->  ... a server: passes once that text is printed, then stopped
    <!-- doc-test: run file=my_plugin.py -->   ... written to that file first (python: then run from it)
    <!-- doc-test: run timeout=60 -->          ... seconds it may take (default 120)
    <!-- doc-test: skip REASON [words] -->     not run; REASON is one of SKIP_REASONS

Two more markers stand on a line of their own (not right before a runnable fence):

    <!-- doc-test: setup sample-run -->        copy runs/sample, as `.venv/bin/mmat build --out runs/sample`
                                               leaves it, into the working copy (built once per session)
    <!-- doc-test: setup COMMAND ... -->       run a bash command there (a file a block expects, ...)
    <!-- doc-test: file PATH -->               right before any fence (yaml, json, ...): write the
                                               block's text to PATH in the working copy

The blocks of one file run in document order in one temporary copy of the repository, so a block
may use what an earlier one made. ``.venv`` there is the test environment (``.venv/bin/mmat`` is
the mmat under test) and its ``bin`` comes first on ``PATH``, so ``mmat`` alone resolves to it too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Languages whose blocks must carry a marker: the ones a reader pastes into a shell or Python.
RUNNABLE_LANGUAGES = {"bash", "sh", "shell", "console", "python"}
#: Why a block may be left out, and what each means.
SKIP_REASONS = {
    "gpu": "needs a GPU",
    "api-key": "needs a real API key (a paid or hosted model)",
    "internet": "downloads a model, a dataset or calls a web service",
    "data": "needs a dataset that is not bundled (a local copy of a collection)",
    "long": "takes longer than the documentation test may",
    "installs": "installs packages or system software",
    "illustration": "a fragment or an outline, not a complete program or command",
}
#: Options of ``run``.
RUN_OPTIONS = {"with", "exit", "until", "file", "timeout"}
#: Services ``run with=NAME`` starts for a block.
SERVICES = {"fake-openai"}
DEFAULT_TIMEOUT_S = 120.0
#: Folders of the checkout that a working copy leaves out: history, environments, outputs, caches.
NOT_COPIED = (".git", ".venv", ".consumers", "runs", "build", "dist", "__pycache__", "*.egg-info",
              ".pytest_cache", ".ruff_cache", ".mypy_cache", "node_modules", "*.pyc")

_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^`]*$")


class MarkerError(ValueError):
    """A marker that cannot be read, or a runnable block without one (the message names the line)."""


@dataclass
class Marker:
    """A parsed ``<!-- doc-test: ... -->`` line."""

    verb: str  # run, skip, setup, file
    line: int
    options: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # skip: REASON and the words after it
    command: str = ""  # setup: what to do; file: the path


@dataclass
class Block:
    """One fenced block of a documentation file, with the marker before it (if any)."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"

    @property
    def runnable_language(self) -> bool:
        return self.language in RUNNABLE_LANGUAGES


@dataclass
class Step:
    """What running one file does, in document order: a block or a stand-alone setup marker."""

    block: Block | None = None
    setup: Marker | None = None


def parse_marker(body: str, line: int) -> Marker:
    """The marker whose text (between ``doc-test:`` and ``-->``) is ``body``; a MarkerError names
    the line and what is allowed when it is not one."""
    verb, _, rest = body.partition(" ")
    rest = rest.strip()
    if verb == "run":
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise MarkerError(f"line {line}: doc-test run: {exc}") from None
        options = {}
        for word in words:
            key, eq, value = word.partition("=")
            if not eq or key not in RUN_OPTIONS:
                raise MarkerError(f"line {line}: doc-test run: unknown option {word!r}; options: "
                                  f"{', '.join(sorted(o + '=' for o in RUN_OPTIONS))}")
            options[key] = value
        if "with" in options and options["with"] not in SERVICES:
            raise MarkerError(f"line {line}: doc-test run: with={options['with']}: services: {', '.join(sorted(SERVICES))}")
        for key in ("exit", "timeout"):
            if key in options and not re.fullmatch(r"\d+", options[key]):
                raise MarkerError(f"line {line}: doc-test run: {key}= takes a whole number, not {options[key]!r}")
        return Marker("run", line, options=options)
    if verb == "skip":
        reason = rest.split(" ", 1)[0] if rest else ""
        if reason not in SKIP_REASONS:
            raise MarkerError(f"line {line}: doc-test skip needs a reason, one of: {', '.join(SKIP_REASONS)} "
                              f"(then any words), not {reason or 'nothing'!r}")
        return Marker("skip", line, reason=rest)
    if verb in ("setup", "file"):
        if not rest:
            raise MarkerError(f"line {line}: doc-test {verb} needs {'a command' if verb == 'setup' else 'a path'}")
        return Marker(verb, line, command=rest)
    raise MarkerError(f"line {line}: unknown doc-test marker {body!r}: use run, skip, setup or file")


def read_blocks(path: Path, text: str | None = None) -> tuple[list[Step], list[str]]:
    """The steps of one documentation file (its fenced blocks and stand-alone setup markers, in
    order) and its problems: markers that cannot be read, runnable blocks without a marker, run or
    skip markers before no runnable block."""
    lines = (text if text is not None else path.read_text(encoding="utf-8")).splitlines()
    steps: list[Step] = []
    problems: list[str] = []
    pending: Marker | None = None  # a marker on the line just read, waiting for its fence
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _FENCE.match(line)
        if opening:
            fence, indent = opening["fence"], len(opening["indent"])
            language = opening["lang"].lower()
            body: list[str] = []
            index += 1
            while index < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[index]):
                body.append(lines[index][indent:] if lines[index][:indent].strip() == "" else lines[index].lstrip())
                index += 1
            marker = pending
            pending = None
            block = Block(path, index - len(body), language, "\n".join(body) + "\n", marker)
            if block.runnable_language:
                if marker is None:
                    problems.append(f"{block.where}: a {language} block without a doc-test marker on the line before "
                                    f"its fence (<!-- doc-test: run --> or <!-- doc-test: skip REASON -->)")
                elif marker.verb not in ("run", "skip"):
                    problems.append(f"{block.where}: a {language} block takes a run or skip marker, not {marker.verb}")
                steps.append(Step(block=block))
            elif marker is not None:
                if marker.verb == "file":
                    steps.append(Step(block=block))
                elif marker.verb != "skip":  # skip says what is already so: harmless
                    problems.append(f"{block.where}: a doc-test {marker.verb} marker before a {language or 'plain'} "
                                    f"block, which is never run (only file PATH or skip may stand there)")
            index += 1
            continue
        if pending is not None:  # the marker was not right before a fence
            if pending.verb == "setup":
                steps.append(Step(setup=pending))
            else:
                problems.append(f"{path.name}:{pending.line}: doc-test {pending.verb} marker not right before a fence")
            pending = None
        found = _MARKER.match(line)
        if found:
            try:
                pending = parse_marker(found["body"], index + 1)
            except MarkerError as exc:
                problems.append(f"{path.name}: {exc}")
        index += 1
    if pending is not None:
        if pending.verb == "setup":
            steps.append(Step(setup=pending))
        else:
            problems.append(f"{path.name}:{pending.line}: doc-test {pending.verb} marker at the end, before no fence")
    return steps, problems


def documentation_files() -> list[Path]:
    """The files whose blocks are checked: README.md, CONTRIBUTING.md and every docs/**/*.md."""
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [path for path in files if path.is_file()]


def console_commands(text: str) -> str:
    """The commands of a ``console`` block as a script: lines after a ``$ `` prompt (with their
    backslash continuations); the other lines are output and are not run."""
    commands: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing:
            commands.append(line)
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


# ---- running ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one block ran."""

    block: Block
    status: int | None  # None: stopped by the harness (until= seen, or timed out)
    stdout: str
    stderr: str
    seconds: float
    problem: str = ""  # empty when the block did what its marker says


def make_working_copy(folder: Path) -> Path:
    """A copy of the checkout in ``folder`` (code, docs, examples, sample data; no history,
    environment or outputs) with ``.venv`` standing for the test environment."""
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(*NOT_COPIED), dirs_exist_ok=True)
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return folder


def block_environment(folder: Path, services: dict[str, dict[str, str]], wanted: str | None) -> dict[str, str]:
    """The environment a block runs in: the test environment's ``bin`` first on PATH, no API key
    or token and no mmat plugin selection inherited from the caller, model hubs offline (a block
    that would download fails at once rather than retrying), and the variables of the service
    ``with=`` asks for."""
    drop = re.compile(r"(_API_KEY|_TOKEN|_CSE_ID|_SECRET|_BASE_URL)$|^MMAT_")
    env = {key: value for key, value in os.environ.items() if not drop.search(key)}
    env["PATH"] = os.pathsep.join([str(folder / ".venv" / "bin"), env.get("PATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("VIRTUAL_ENV", None)
    if wanted:
        env.update(services[wanted])
    return env


def _script(block: Block, folder: Path, number: int) -> list[str]:
    """The command line that runs ``block`` in ``folder`` (its text written under .doc-test/ or
    to the marker's ``file=``)."""
    scripts = folder / ".doc-test"
    scripts.mkdir(exist_ok=True)
    target = (block.marker.options.get("file") if block.marker else None)
    if block.language == "python":
        path = folder / target if target else scripts / f"block{number}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.text, encoding="utf-8")
        if target:
            return [str(folder / ".venv" / "bin" / "python"), target]
        # -c keeps the working copy first on sys.path, as `python` started there would
        return [str(folder / ".venv" / "bin" / "python"), "-c", block.text]
    text = console_commands(block.text) if block.language == "console" else block.text
    if target:
        (folder / target).write_text(block.text, encoding="utf-8")
    path = scripts / f"block{number}.sh"
    path.write_text("set -eo pipefail\n" + text, encoding="utf-8")
    return ["bash", str(path)]


def run_block(block: Block, folder: Path, number: int, env: dict[str, str]) -> Outcome:
    """Run one ``run`` block in ``folder`` and judge it by its marker."""
    assert block.marker is not None and block.marker.verb == "run"
    options = block.marker.options
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT_S))
    argv = _script(block, folder, number)
    started = time.monotonic()
    if "until" in options:
        return _run_until(block, argv, folder, env, options["until"], timeout, started)
    # A session of its own, so that a block that overstays is stopped with what it started.
    process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        stdout, stderr = process.communicate()
        return Outcome(block, None, stdout, stderr, time.monotonic() - started,
                       f"did not finish in {timeout:.0f} s (raise it with timeout=, or mark the block skip long)")
    expected = int(options.get("exit", "0"))
    problem = "" if process.returncode == expected else f"exit status {process.returncode}, expected {expected}"
    return Outcome(block, process.returncode, stdout, stderr, time.monotonic() - started, problem)


def _run_until(block: Block, argv: list[str], folder: Path, env: dict[str, str], text: str, timeout: float,
               started: float) -> Outcome:
    """Run a block that serves until stopped: it passes once ``text`` appears in its output; then
    its process group (it and what it started) gets SIGINT, as Ctrl-C would, then SIGKILL."""
    process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    output: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if text in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while not seen.is_set() and process.poll() is None and time.monotonic() - started < timeout:
        seen.wait(0.1)
    stopped = process.poll() is None
    if stopped:
        _stop_group(process)
    reader.join(5)
    joined = "".join(output)
    seconds = time.monotonic() - started
    if seen.is_set():
        return Outcome(block, None if stopped else process.returncode, joined, "", seconds)
    if not stopped:
        return Outcome(block, process.returncode, joined, "", seconds,
                       f"exited with status {process.returncode} before printing {text!r}")
    return Outcome(block, None, joined, "", seconds, f"did not print {text!r} in {timeout:.0f} s")


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the process group this harness started for one block: SIGINT, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_setup(marker: Marker, folder: Path, env: dict[str, str], sample_run: Callable[[], Path]) -> str:
    """Do what a setup marker says in ``folder``; the problem as text, or ''."""
    if marker.command == "sample-run":
        target = folder / "runs" / "sample"
        if not target.exists():
            shutil.copytree(sample_run(), target)
        return ""
    done = subprocess.run(["bash", "-c", "set -eo pipefail\n" + marker.command], check=False, cwd=folder, env=env,
                          capture_output=True, text=True, timeout=DEFAULT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return f"setup {marker.command!r} (line {marker.line}) failed with status {done.returncode}: {tail(done.stderr)}"
    return ""


def tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of ``text``."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join(kept)


def report(outcome: Outcome) -> str:
    """A failed block as the test prints it: where, what, the block and its output's tail."""
    marker = outcome.block.marker
    label = "run" + "".join(f" {k}={v}" for k, v in (marker.options.items() if marker else ()))
    heading = (f"{outcome.block.where} ({outcome.block.language} block, doc-test: {label}): {outcome.problem} "
               f"after {outcome.seconds:.1f} s")
    parts = [heading, "--- block ---", outcome.block.text.rstrip()]
    if outcome.stderr.strip():
        parts += ["--- stderr (tail) ---", tail(outcome.stderr)]
    if outcome.stdout.strip():
        parts += ["--- stdout (tail) ---", tail(outcome.stdout, 15)]
    return "\n".join(parts)


def iter_runnable(steps: list[Step]) -> Iterator[Step]:
    """The steps that do something: setups, run blocks and file blocks."""
    for step in steps:
        if step.setup is not None or (step.block and step.block.marker and step.block.marker.verb in ("run", "file")):
            yield step
