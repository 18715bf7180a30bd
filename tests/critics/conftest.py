"""Fixtures of the critic tests: the scripted judge on 127.0.0.1, engine clients that call it,
and hand-made traces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from mmat_core import prompts
from mmat_core.components import LLMBackend
from mmat_core.engine.client import EngineClient
from mmat_core.engine.prices import Price, PriceTable
from mmat_core.engine.scheduler import Scheduler, SchedulerSettings
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import Provenance, SourceSample, Step, Trace
from mmat_plugins.sources.sample import SAMPLE_DIR
from tests.critics.judge import JUDGE_PRICE, JudgeScript
from tests.fakes.openai_server import FakeOpenAIServer


@dataclass
class Judge:
    """The running fake server and its script."""

    server: FakeOpenAIServer
    script: JudgeScript

    def backend(self) -> LLMBackend:
        """A fresh ``openai`` backend (the real plugin, over aiohttp) pointed at the server."""
        from mmat_plugins.llms.openai_backend import OpenAIBackend

        return OpenAIBackend(model="judge-1", base_url=self.server.base_url, api_key_env=None)

    def client(self) -> EngineClient:
        """An engine client (scheduler, no cache) over a fresh backend; one attempt per call so an
        error reply surfaces at once."""
        scheduler = Scheduler(SchedulerSettings(concurrency=8, max_attempts=1, adaptive=False))
        prices = PriceTable({"judge-1": Price(**JUDGE_PRICE)})
        return EngineClient(self.backend(), scheduler, ImageStore(), None, prices=prices)


@pytest.fixture
def judge() -> Iterator[Judge]:
    """A fake OpenAI server on 127.0.0.1 answering from a fresh JudgeScript."""
    script = JudgeScript()
    server = FakeOpenAIServer()
    server.responder = script
    with server:
        yield Judge(server, script)


def make_trace(
    question: str = "How many books did Ann and Chloe read in all?",
    answers: tuple[str, ...] = ("27",),
    final_answer: str | None = "27",
    *,
    source: str = "tabmwp",
    subset: str | None = None,
    task_type: str = "math",
    choices: list[str] | None = None,
    tags: list[str] | None = None,
    sample_id: str = "t/1",
    thoughts: tuple[str, ...] = ("Ann read 12 books and Chloe read 15 books according to the table.",
                                 "Adding them gives the total."),
) -> Trace:
    """A finished three-turn trace: one step that read OCR, then the ending step."""
    sample = SourceSample(
        id=sample_id, source=source, subset=subset, question=question, answers=list(answers), choices=choices,
        constraint="\nAnswer the question using a single word or phrase.", task_type=task_type, tags=tags or [],
        images=[image_ref_from_file(SAMPLE_DIR / "images" / "table_books_read.png")],
    )
    steps = [Step(thought=thoughts[0], operators=["ocr"], signal="continue",
                  observation="Here are ocr results from the previous step: Ann 12 Chloe 15" + prompts.CONTINUE)]
    steps += [Step(thought=t, signal="continue", observation=prompts.NO_TOOL) for t in thoughts[1:-1]]
    steps.append(Step(thought=thoughts[-1], signal="end"))
    return Trace(
        id=sample_id, sample=sample, tools=["ocr"], steps=steps,
        final_prompt=prompts.final_turn(question), final_answer=final_answer,
        provenance=Provenance(mmat_version="test", generator="test_chat:judge-1", offline=False,
                              source=source, subset=subset),
    )


@pytest.fixture
def trace_factory() -> Callable[..., Trace]:
    """:func:`make_trace` as a fixture."""
    return make_trace
