"""``mmat stats`` on a run folder another process holds (a build resuming into it): the figures
are printed but run.json is left alone. Writing it then could put the previous manifest back
over the one the build writes as it finishes (a read-modify-write race), with stats of a
half-built store inside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mmat_core.stats import run_stats, write_stats
from tests.scale.test_run_integrity import dataset, jsonl_build

HOLD = "import sys, time; from pathlib import Path; from mmat_core.rundir import RunDirLock; " \
       "lock = RunDirLock(Path(sys.argv[1]), 'mmat build').acquire(); print('locked', flush=True); time.sleep(120)"


def built_run(tmp_path: Path) -> Path:
    data = dataset(tmp_path / "data", [{"id": "a", "question": "What colour is it?", "answer": "white"}])
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "mmat_core", *jsonl_build(data, out)], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_stats_leave_run_json_alone_while_another_process_holds_the_run(tmp_path: Path) -> None:
    run = built_run(tmp_path)
    before = (run / "run.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = subprocess.run([sys.executable, "-m", "mmat_core", "stats", str(run)], capture_output=True,
                                text=True, timeout=120, check=False)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert "Samples" in result.stdout or "samples" in result.stdout  # the figures are still printed
    assert "in use by another mmat process" in result.stderr and "not stored" in result.stderr
    assert (run / "run.json").read_bytes() == before


def test_stats_are_written_once_the_holder_is_gone(tmp_path: Path) -> None:
    run = built_run(tmp_path)
    manifest = json.loads((run / "run.json").read_text())
    del manifest["stats"]
    (run / "run.json").write_text(json.dumps(manifest))
    assert write_stats(run, run_stats(run)) == run / "run.json"
    assert "stats" in json.loads((run / "run.json").read_text())
