"""``mmat stats``: the figures equal what the stored traces hold (counted here independently, from
validated Trace objects), ``--compare paper`` sets the paper's beside them, ``--plot`` draws a PNG."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mmat_core import paper_figures as paper
from mmat_core.engine.reflection import current_verdicts
from mmat_core.models import Trace
from mmat_core.stats import RunStats, compare_to_paper, departs, run_stats
from mmat_core.store import RunStore
from tests.stats.conftest import SampleRun


def mmat(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "mmat_core", *args], capture_output=True, text=True, timeout=120)


def traces(run: Path) -> list[Trace]:
    store = RunStore.open(run)
    try:
        return list(store.traces())
    finally:
        store.close()


@pytest.fixture(scope="module")
def stored(sample_run: SampleRun) -> list[Trace]:
    return traces(sample_run.out)


@pytest.fixture(scope="module")
def printed(sample_run: SampleRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``mmat stats RUN --compare paper --json`` on a copy of the run (the command writes run.json)."""
    copy = tmp_path_factory.mktemp("stats-copy") / "run"
    shutil.copytree(sample_run.out, copy)
    result = mmat("stats", str(copy), "--compare", "paper", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kept(stored: list[Trace]) -> list[Trace]:
    return [t for t in stored if t.kept]


def test_the_run_holds_reflections_quality_scores_and_dropped_samples(stored: list[Trace]) -> None:
    # The premise of the tests below: every figure has something to count.
    assert {t.status for t in stored} >= {"kept", "reflected", "dropped"}


def test_sources_and_subsets_count_generated_and_kept_samples(printed: dict[str, Any], stored: list[Trace]) -> None:
    expected: dict[str, list[int]] = {}
    for trace in stored:
        for key in (trace.sample.source, f"{trace.sample.source}/{trace.sample.subset}"):
            counts = expected.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += trace.kept
    got = {k: [v["generated"], v["kept"]] for k, v in printed["stats"]["by_source"].items()}
    assert got == expected
    assert printed["stats"]["generated"] == len(stored) and printed["stats"]["kept"] == len(kept(stored))


def test_operator_calls_count_every_call_in_the_kept_samples(printed: dict[str, Any], stored: list[Trace]) -> None:
    expected = Counter(call.name for t in kept(stored) for step in t.steps for call in step.tool_calls)
    assert printed["stats"]["operator_calls"] == dict(expected)
    assert sum(expected.values()) > 0


def test_rag_calls_count_the_retrievals_of_the_kept_samples(printed: dict[str, Any], stored: list[Trace]) -> None:
    expected = sum(1 for t in kept(stored) for step in t.steps if step.rag is not None)
    assert printed["stats"]["rag_calls"] == expected > 0


def test_reflections_are_counted_per_critic_that_had_one_spliced(printed: dict[str, Any], stored: list[Trace]) -> None:
    expected = Counter(v.critic for t in kept(stored) for v in current_verdicts(t) if v.data.get("spliced"))
    assert printed["stats"]["reflections"] == dict(expected)
    assert expected["stats_recheck"] == sum(1 for t in kept(stored) if t.sample.subset == "chart")
    assert expected["stats_recheck"] == sum(1 for t in kept(stored) for s in t.steps if s.kind == "reflection")


def test_steps_histogram_counts_the_rationale_steps_of_each_kept_sample(printed: dict[str, Any], stored: list[Trace]) -> None:
    expected = Counter(str(sum(1 for s in t.steps if s.kind == "rationale")) for t in kept(stored))
    assert printed["stats"]["steps"] == dict(expected)


def test_quality_histogram_holds_each_kept_samples_score(printed: dict[str, Any], stored: list[Trace]) -> None:
    scores = [[v.score for v in current_verdicts(t) if v.critic == "quality"][-1] for t in kept(stored)]
    assert printed["stats"]["quality_scores"] == dict(Counter(f"{s:.1f}" for s in scores))


def test_tokens_and_cost_per_kept_sample_divide_everything_spent(printed: dict[str, Any], stored: list[Trace]) -> None:
    tokens = sum(t.usage.prompt_tokens + t.usage.completion_tokens for t in stored)  # dropped ones spent too
    assert printed["stats"]["prompt_tokens"] + printed["stats"]["completion_tokens"] == tokens
    assert printed["stats"]["tokens_per_kept"] == round(tokens / len(kept(stored)), 1)
    assert printed["stats"]["cost_per_kept_usd"] == round(sum(t.usage.cost_usd for t in stored) / len(kept(stored)), 6)


def test_every_build_writes_the_figures_into_run_json(sample_run: SampleRun) -> None:
    manifest = json.loads((sample_run.out / "run.json").read_text(encoding="utf-8"))
    # counted in the build's own pass over the store: the same as a pass of its own
    assert RunStats.model_validate(manifest["stats"]) == run_stats(sample_run.out)


def test_stats_command_stores_the_figures_and_keeps_the_rest_of_run_json(sample_run: SampleRun, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(sample_run.out, copy)
    manifest = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    del manifest["stats"]
    (copy / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert mmat("stats", str(copy)).returncode == 0
    after = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    assert after.pop("stats") == run_stats(copy).model_dump(mode="json")
    assert after == manifest
    assert [p.name for p in copy.glob(".run.json*")] == []  # written through a temporary file, renamed


def test_stats_prints_each_figure(sample_run: SampleRun) -> None:
    result = mmat("stats", str(sample_run.out), "--no-write")
    assert result.returncode == 0, result.stderr
    for heading in ("Samples", "Operator calls", "Reflections", "Rationale steps", "Quality scores", "per kept sample"):
        assert heading in result.stdout
    assert "stats_recheck" in result.stdout


def test_compare_paper_puts_the_papers_shares_beside_the_builds(printed: dict[str, Any]) -> None:
    rows = {(r["section"], r["figure"]): r for r in printed["comparison"]}
    assert rows["collections", "visual_cot"]["paper"] == pytest.approx(434_265 / 902_965)
    assert rows["collections", "visual_cot"]["build"] == 0 and rows["collections", "visual_cot"]["departs"]
    assert rows["collections", "sample"]["paper"] is None and rows["collections", "sample"]["departs"]
    assert rows["operators", "image_caption"]["paper"] == pytest.approx(620_644 / 1_090_263)
    assert rows["operators", "rag"]["paper"] == pytest.approx(205_682 / 1_090_263)
    assert rows["reflections", "general"]["paper"] == pytest.approx(46_508 / 1_090_263)
    assert rows["steps", "3"]["paper"] == 0.70
    assert rows["quality", "score >= 0.8"]["paper"] == 0.89


def test_compare_shares_are_the_builds_counts_over_its_kept_samples(printed: dict[str, Any], stored: list[Trace]) -> None:
    rows = {(r["section"], r["figure"]): r for r in printed["comparison"]}
    n = len(kept(stored))
    ocr = sum(1 for t in kept(stored) for s in t.steps for c in s.tool_calls if c.name == "ocr")
    assert rows["operators", "ocr"]["build"] == pytest.approx(ocr / n)
    three = sum(1 for t in kept(stored) if sum(s.kind == "rationale" for s in t.steps) == 3)
    assert rows["steps", "3"]["build"] == pytest.approx(three / n)
    assert rows["collections", "sample"]["build"] == 1.0
    assert rows["quality", "score >= 0.8"]["build"] == 1.0  # the offline judge gives every sample 0.8


def test_compare_paper_text_marks_where_the_build_departs(sample_run: SampleRun) -> None:
    result = mmat("stats", str(sample_run.out), "--compare", "paper", "--no-write")
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("visual_cot"))
    assert "48.1%" in line and line.rstrip().endswith("<<")
    assert "arXiv 2507.21924" in result.stdout


@pytest.mark.parametrize(("build", "published", "far"), [
    (0.70, 0.70, False), (0.0, 0.007, False), (0.20, 0.14, False), (0.30, 0.14, True),
    (1.0, 0.70, True), (0.0, 0.018, True), (None, 0.89, True), (0.5, None, False),
])
def test_a_figure_departs_when_far_in_ratio_or_in_points(build: float | None, published: float | None, far: bool) -> None:
    assert departs(build, published) is far


def test_plot_writes_a_png_image(sample_run: SampleRun, tmp_path: Path) -> None:
    from PIL import Image

    target = tmp_path / "figures.png"
    result = mmat("stats", str(sample_run.out), "--compare", "paper", "--plot", str(target), "--no-write")
    assert result.returncode == 0, result.stderr
    with Image.open(target) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 400


def test_plot_without_matplotlib_says_how_to_install_it(sample_run: SampleRun, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['mmat', 'stats', sys.argv[1], '--plot', sys.argv[2]]; "
            "from mmat_core.cli import run; run()")
    result = subprocess.run([sys.executable, "-c", code, str(sample_run.out), str(tmp_path / "x.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "pip install 'mmat[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_folder_without_a_run_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = mmat("stats", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {tmp_path} is not a run directory: it has no run.sqlite. Give a directory written by `mmat build --out DIR`."


def test_an_empty_run_compares_without_dividing_by_zero() -> None:
    rows = compare_to_paper(RunStats())
    assert all(r.build is None for r in rows if r.section != "collections" or r.paper is not None)
    assert all("no kept samples" in r.note for r in rows if r.section != "cost")


def test_paper_collections_sum_to_the_published_dialogue_count() -> None:
    assert sum(c.dialogues for c in paper.COLLECTIONS.values()) == paper.DIALOGUES


def test_paper_sub_datasets_match_the_source_plugins_paper_mix() -> None:
    from mmat_plugins.sources import cauldron, llava_cot, visual_cot

    for module, name in ((visual_cot, "visual_cot"), (llava_cot, "llava_cot"), (cauldron, "cauldron")):
        assert {k: n for k, (_, n) in paper.COLLECTIONS[name].subsets.items()} == module.PAPER_MIX


def test_a_run_without_run_json_yet_is_counted_and_left_without_one(sample_run: SampleRun, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(sample_run.out, copy)
    (copy / "run.json").unlink()  # as while a build is still running
    result = mmat("stats", str(copy), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stats"] == run_stats(sample_run.out).model_dump(mode="json")
    assert "run.json does not exist yet" in result.stderr
    assert not (copy / "run.json").exists()
