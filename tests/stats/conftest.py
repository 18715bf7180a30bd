"""One real sample build for the stats tests: the bundled sample source, the offline backend, the
quality judge (a fixed score offline), and two test critics that reflect the chart questions once
and reject the table questions, so the run holds reflections, quality scores and dropped samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmat_core import hookimpl
from mmat_core.components import Critic, CriticContext
from mmat_core.models import Trace, Verdict
from mmat_core.pipeline import Pipeline
from mmat_core.plugins import PluginManager


class ChartRecheckCritic(Critic):
    """Asks once for a reflection on the sample's chart questions."""

    name = "stats_recheck"
    version = "1"
    description = "test critic: reflect chart questions once"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        if trace.sample.subset == "chart" and ctx.round == 0:
            return Verdict(critic=self.name, verdict="fix", reason="re-read the axis", round=ctx.round)
        return Verdict(critic=self.name, verdict="pass", round=ctx.round)


class TableRejectCritic(Critic):
    """Rejects the sample's table questions (they are generated, spent tokens, and are dropped)."""

    name = "stats_reject"
    version = "1"
    description = "test critic: reject table questions"

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        if trace.sample.subset == "table":
            return Verdict(critic=self.name, verdict="reject", reason="the table is unreadable", round=ctx.round)
        return Verdict(critic=self.name, verdict="pass", round=ctx.round)


class StatsTestPlugin:
    """Registers the two test critics."""

    @staticmethod
    @hookimpl
    def register_critics(register: Callable) -> None:
        register(ChartRecheckCritic)
        register(TableRejectCritic)


@dataclass
class SampleRun:
    """A finished build directory."""

    out: Path


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> SampleRun:
    """The sample built once with the offline backend (the tests only read it, or copy it)."""
    import cv2  # imported once here: two tool threads importing it at once can race (see tests/viewer)

    assert cv2.data.haarcascades
    manager = PluginManager()
    manager.register(StatsTestPlugin, "stats-test-plugin")
    out = tmp_path_factory.mktemp("stats-run") / "run"
    Pipeline(source="sample", llm="offline", critics=["answer_match", "quality", "stats_recheck", "stats_reject"],
             formatters=["rr", "orr"], plugins=manager).run(out)
    return SampleRun(out=out)
