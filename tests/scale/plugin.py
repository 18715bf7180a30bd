"""Components for scale and fault tests and for ``bench/million.py``: a generated source, a
fixed-cost stub tool and an offline backend that counts the calls it really answers.

They are an ordinary mmat plugin (``register_*`` hooks below), so a subprocess can load them
through an entry point (see :func:`install_entry_point`) exactly as a third-party plugin loads.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmat_plugins.llms.offline import OfflineBackend
from pydantic import Field

from mmat_core import hookimpl
from mmat_core.components import (
    ComponentOptions,
    LLMBackend,
    LLMRequest,
    LLMResponse,
    Source,
    Tool,
    ToolContext,
    ToolOutput,
)
from mmat_core.engine.cache import key_of, model_key_document
from mmat_core.images import ImageStore, image_ref_from_file
from mmat_core.models import ImageRef, Rejected, SourceSample

_TEMPLATES = (
    ("What is the total written on the receipt?", "docvqa"),
    ("How many people are in the picture?", "vqa"),
    ("What colour is the largest object?", "vqa"),
    ("What value does the chart show for {n}?", "chart"),
)


class GeneratedOptions(ComponentOptions):
    """Options of the generated source."""

    count: int = Field(1000, ge=0, description="number of QA pairs to generate")
    reject_every: int = Field(0, ge=0, description="every Nth row is a rejected row (0: none)")
    image: str | None = Field(None, description="a real image file every row shows (default: a made-up reference)")


class GeneratedSource(Source):
    """QA pairs made up on the fly from the row number: deterministic, no files, no images read."""

    name = "generated"
    version = "1"
    description = "synthetic QA pairs for scale tests and benchmarks"
    licence = "CC0-1.0"
    Options = GeneratedOptions

    def iter_rows(self) -> Iterator[SourceSample | Rejected]:
        """Yield ``count`` samples (and a rejected row every ``reject_every`` rows)."""
        every = self.options.reject_every
        real = image_ref_from_file(Path(self.options.image)) if self.options.image else None
        for n in range(self.options.count):
            if every and n % every == every - 1:
                yield Rejected(source=self.name, row=f"gen/{n}", reason="synthetic_bad_row", detail=f"row {n}")
                continue
            question, task = _TEMPLATES[n % len(_TEMPLATES)]
            # A fake image reference: the stub tool never reads bytes, the hash keeps dedup honest.
            digest = hashlib.blake2b(str(n).encode(), digest_size=32).hexdigest()
            yield SourceSample(
                id=f"gen/{n}",
                source=self.name,
                subset=task,
                question=question.format(n=n) + f" (item {n})",
                answers=[str(n % 97)],
                task_type=task,
                images=[real or ImageRef(sha256=digest, width=640, height=480, format="PNG")],
                licence=self.licence,
            )


class StubToolOptions(ComponentOptions):
    """Options of the stub tool."""

    cost_ms: float = Field(0.0, ge=0, description="CPU time each call burns, in milliseconds")
    timeout_s: float | None = Field(None, gt=0)


class StubTool(Tool):
    """An operator with a fixed cost and a deterministic answer (stands in for OCR)."""

    name = "ocr"
    version = "stub-1"
    description = "fixed-cost stub standing in for OCR in scale tests"
    Options = StubToolOptions

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Burn ``cost_ms`` of CPU and answer with text derived from the image alone (like OCR, so
        the result is a function of the cache key)."""
        deadline = time.perf_counter() + self.options.cost_ms / 1000
        while time.perf_counter() < deadline:
            pass
        image = ctx.image
        return ToolOutput(text=f"TOTAL {int(image.sha256[:6], 16) % 97 if image else 0}")


class CountingOptions(ComponentOptions):
    """Options of the counting offline backend."""

    model: str = "offline-protocol-v1"
    log: str | None = Field(None, description="file that gets one line per call really answered "
                            "(default: $MMAT_TEST_CALL_LOG, so the log can change between runs of one config)")
    delay_s: float = Field(0.0, ge=0, description="seconds each call waits (to give a kill -9 room)")


class CountingOfflineBackend(OfflineBackend):
    """The offline backend, writing one line per answered call (purpose and cache-relevant text)."""

    name = "counting_offline"
    Options = CountingOptions  # type: ignore[assignment]

    async def complete(self, request: LLMRequest, images: ImageStore) -> LLMResponse:
        """Answer like ``offline``, after recording the call."""
        import asyncio

        if self.options.delay_s:
            await asyncio.sleep(self.options.delay_s)
        response = await super().complete(request, images)
        log = self.options.log or os.environ.get("MMAT_TEST_CALL_LOG")
        if log:
            key = key_of(model_key_document(self.name, self.model, request))  # the engine's cache key
            # O_APPEND writes of one short line are atomic, so a kill -9 never leaves half a line.
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{request.sample_id}\t{request.purpose}\t{key}\n".encode())
            finally:
                os.close(fd)
        return response


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    """Register the generated source."""
    register(GeneratedSource)


@hookimpl
def register_llms(register: Callable[[type[LLMBackend]], None]) -> None:
    """Register the counting offline backend."""
    register(CountingOfflineBackend)


@hookimpl
def register_tools(register: Callable[[type[Tool]], None]) -> None:
    """Register the stub tool (under the name ``ocr``; block the built-in tools plugin beside it)."""
    register(StubTool)


def install_entry_point(directory: Path, name: str = "scale-stubs") -> dict[str, str]:
    """Write a tiny ``*.dist-info`` declaring this module as an ``mmat`` plugin into ``directory``;
    return the environment a subprocess needs to load it (PYTHONPATH with the repository root)."""
    dist = directory / "mmat_scale_stubs-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmat-scale-stubs\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(f"[mmat]\n{name} = tests.scale.plugin\n")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(directory), str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
