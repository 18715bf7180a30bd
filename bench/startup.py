"""Start-up time: how long ``mmat --help``, ``mmat plugins`` and friends take in a fresh process.

    .venv/bin/python bench/startup.py          # 21 runs of each command in each case (a few minutes)
    .venv/bin/python bench/startup.py --quick  # 5 runs of each, same measurement, under a minute

Every figure is one command in a fresh subprocess, started the way a user starts it (the ``mmat``
script of this environment), with the runs interleaved (command after command, case after case)
so that a burst of load from another process spreads over all of them. Each is reported as the
median and the fastest of N runs, in wall time and in CPU time (user + system of the child, from
``resource.getrusage(RUSAGE_CHILDREN)``): on a shared machine the wall time wanders with the
other processes, the CPU time much less, so the table says of each target whether the CPU median
and the wall median meet it (on an idle machine the two are within a few hundredths).

Two cases, because Python either finds a module's compiled ``.pyc`` or compiles the source again
(and under ``PYTHONDONTWRITEBYTECODE=1``, which this environment sets, it never writes one):

- ``pyc``: mmat's own packages compiled beforehand (``python -m compileall -q``), the case of an
  installed wheel or of any checkout after its first run without that variable;
- ``cold``: mmat's packages with no ``.pyc`` at all, so every run compiles each module it imports.

Both run from copies of ``mmat_core``, ``plugins`` (as ``mmat_plugins``) and ``schemas`` in a
temporary folder put first on ``PYTHONPATH`` (ahead of the editable install), one copy compiled
and one not, so the checkout itself is left as it was. Third-party libraries keep the ``.pyc``
pip wrote for them in both cases; installed third-party mmat plugins are loaded as installed.
Two reference rows show the floor: the bare interpreter and reading the ``mmat`` entry points
from the installed metadata (``importlib.metadata``), which mmat no longer pays (it reads the
distribution folders itself, see ``mmat_core.plugins.scan_entry_points``).

``--instructions`` also counts the instructions of one run of each command (``pyc`` case) under
valgrind's callgrind: unlike the times, the count does not move with the other processes of a
shared machine, so it is the figure to compare across changes there.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Package folder in the checkout -> the import name it is installed as.
PACKAGES = {"mmat_core": "mmat_core", "plugins": "mmat_plugins", "schemas": "mmat_schemas"}
#: The target of the listing commands (issue 20: under 0.3 s), read on the medians of the ``pyc`` case.
LISTING_TARGET_S = 0.3


@dataclass
class Case:
    """One command line, its target and the times of its runs in each case."""

    key: str
    label: str
    argv: list[str]
    target_s: float | None
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    #: Millions of instructions of one run in the ``pyc`` case (``--instructions``).
    instructions_m: float | None = None


def mmat_argv() -> list[str]:
    """How a user starts ``mmat`` here: the console script beside this interpreter."""
    script = Path(sys.executable).with_name("mmat")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mmat_core.cli import run; sys.argv[0] = 'mmat'; sys.exit(run())"]


def make_copies(tmp: Path) -> dict[str, Path]:
    """Two copies of mmat's packages: ``cold`` without any .pyc, ``pyc`` compiled beforehand."""
    folders = {}
    for case in ("cold", "pyc"):
        folder = tmp / case
        for source, name in PACKAGES.items():
            shutil.copytree(ROOT / source, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        folders[case] = folder
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folders["pyc"])], check=True)
    return folders


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv`` in a fresh process (its output discarded), run
    in ``cwd`` (not the checkout: ``python -c`` puts the current folder first on the path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, check=False, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def instructions(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Millions of instructions one run of ``argv`` executes, counted by valgrind's callgrind: a
    figure the other processes of a shared machine do not move (the times they do). A script is
    run through this interpreter, as its ``#!`` line would."""
    if Path(argv[0]).suffix == "" and argv[0] != sys.executable and Path(argv[0]).is_file():
        argv = [sys.executable, *argv]
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], check=False,
                          env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1]) / 1e6
    raise SystemExit(f"valgrind counted nothing for {' '.join(argv)}: {done.stderr[-2000:]}")


def child_env(folder: Path) -> dict[str, str]:
    """The environment of a measured run: the copy first on the path, no .pyc ever written (so a
    ``cold`` run stays cold), and no plugin selection inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if k not in ("MMAT_PLUGINS", "MMAT_DISABLE_PLUGINS", "MMAT_STRICT_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs of each command and case instead of 21")
    parser.add_argument("--runs", type=int, help="runs of each command and case (overrides --quick)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count the instructions of one run of each command (pyc case) with valgrind")
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    runs = args.runs or (5 if args.quick else 21)

    mmat = mmat_argv()
    python = [sys.executable]
    cases = [
        Case("help", "mmat --help", [*mmat, "--help"], LISTING_TARGET_S),
        Case("help_builtins", "mmat --help --plugins builtins", [*mmat, "--help", "--plugins", "builtins"], LISTING_TARGET_S),
        Case("plugins", "mmat plugins", [*mmat, "plugins"], LISTING_TARGET_S),
        Case("sources", "mmat sources", [*mmat, "sources"], LISTING_TARGET_S),
        Case("tools", "mmat tools", [*mmat, "tools"], LISTING_TARGET_S),
        Case("recipes", "mmat recipes", [*mmat, "recipes"], LISTING_TARGET_S),
        Case("validate_help", "mmat validate --help", [*mmat, "validate", "--help"], LISTING_TARGET_S),
        Case("build_help", "mmat build --help", [*mmat, "build", "--help"], LISTING_TARGET_S),
        Case("import", "python -c 'import mmat_core'", [*python, "-c", "import mmat_core"], 0.1),
        Case("entry_points", "python: read the mmat entry points",
             [*python, "-c", "import importlib.metadata as m; m.entry_points(group='mmat')"], None),
        Case("python", "python -c pass (the floor)", [*python, "-c", "pass"], None),
    ]
    with tempfile.TemporaryDirectory(prefix="mmat-startup-") as tmp:
        folders = make_copies(Path(tmp))
        envs = {name: child_env(folder) for name, folder in folders.items()}
        for name, folder in folders.items():  # the copy, not the editable install, must be imported
            where = subprocess.run([*python, "-c", "import mmat_core, mmat_plugins; print(mmat_core.__file__, mmat_plugins.__file__)"],
                                   env=envs[name], cwd=tmp, capture_output=True, text=True, check=True).stdout.split()
            if not all(Path(path).is_relative_to(folder) for path in where):
                raise SystemExit(f"the {name} copy is not the one imported: {where}")
        for case in cases:  # one unmeasured run each: the OS file cache is warm for every case alike
            run_once(case.argv, envs["pyc"], Path(tmp))
        for _ in range(runs):
            for case in cases:
                for name, env in envs.items():
                    wall, cpu = run_once(case.argv, env, Path(tmp))
                    case.wall.setdefault(name, []).append(wall)
                    case.cpu.setdefault(name, []).append(cpu)
        if args.instructions:
            for case in cases:
                case.instructions_m = instructions(case.argv, envs["pyc"], Path(tmp))

    print(f"{runs} runs of each, interleaved; seconds; median / fastest; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    header = ("command", "case", "CPU med", "CPU min", "wall med", "wall min", "instr (M)", "target (pyc medians)")
    rows = []
    for case in cases:
        for name in ("pyc", "cold"):
            cpu, wall = case.cpu[name], case.wall[name]
            target = ""
            if case.target_s is not None and name == "pyc":
                cpu_verdict = "ok" if statistics.median(cpu) < case.target_s else "MISSED"
                wall_verdict = "ok" if statistics.median(wall) < case.target_s else "MISSED"
                target = f"< {case.target_s:.2f}  CPU {cpu_verdict}, wall {wall_verdict}"
            counted = f"{case.instructions_m:.0f}" if case.instructions_m is not None and name == "pyc" else ""
            rows.append((case.label if name == "pyc" else "", name, f"{statistics.median(cpu):.3f}", f"{min(cpu):.3f}",
                         f"{statistics.median(wall):.3f}", f"{min(wall):.3f}", counted, target))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) if i < 2 or i == 7 else str(cell).rjust(width)
                        for i, (cell, width) in enumerate(zip(row, widths))).rstrip())
    figures = [f"runs={runs}"]
    for case in cases:
        for name in ("pyc", "cold"):
            figures.append(f"{case.key}_{name}_cpu_s={statistics.median(case.cpu[name]):.3f}")
            figures.append(f"{case.key}_{name}_wall_s={statistics.median(case.wall[name]):.3f}")
        if case.instructions_m is not None:
            figures.append(f"{case.key}_pyc_instructions_m={case.instructions_m:.0f}")
    print("RESULT " + " ".join(figures))


if __name__ == "__main__":
    main()
