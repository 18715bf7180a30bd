"""Fixtures for the core tests: a plugin manager without entry points, tiny in-test plugins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mmat_core import hookimpl
from mmat_core.components import Source, Tool, ToolContext, ToolOutput
from mmat_core.images import image_ref_from_file
from mmat_core.models import Rejected, SourceSample
from mmat_core.plugins import PluginManager, set_plugin_manager


def make_png(path: Path, text: str = "TOTAL 42", size: tuple[int, int] = (320, 160)) -> Path:
    """A small rendered image with text, as a real PNG file."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((16, size[1] // 3), text, fill="black", font=ImageFont.load_default(size=36))
    image.save(path)
    return path


class EchoTool(Tool):
    """A test tool that answers with a fixed text."""

    name = "echo"
    version = "1"
    description = "repeat a fixed text"

    async def run(self, args: dict, ctx: ToolContext) -> ToolOutput:
        return ToolOutput(text="echo says hello")


@pytest.fixture
def manager() -> Iterator[PluginManager]:
    """A plugin manager with the installed plugins, made the process default for the test."""
    pm = PluginManager()
    set_plugin_manager(pm)
    yield pm
    set_plugin_manager(None)


@pytest.fixture
def tiny_source(tmp_path: Path) -> Callable[[PluginManager], str]:
    """Registers a two-sample source over real images; returns its name."""
    image = make_png(tmp_path / "receipt.png")

    class TinySource(Source):
        name = "tiny"
        description = "two QA pairs for tests"
        licence = "CC0-1.0"

        def iter_rows(self) -> Iterator[SourceSample | Rejected]:
            ref = image_ref_from_file(image)
            yield SourceSample(id="tiny/1", source="tiny", question="What is the total?", answers=["42"],
                               task_type="docvqa", images=[ref], licence=self.licence)
            yield SourceSample(id="tiny/2", source="tiny", question="What word is written before the number?",
                               answers=["TOTAL"], task_type="docvqa", images=[ref], licence=self.licence)
            yield Rejected(source="tiny", row="tiny/3", reason="image_missing", detail="gone.png")

    class Plugin:
        @staticmethod
        @hookimpl
        def register_sources(register: Callable) -> None:
            register(TinySource)

    def install(pm: PluginManager) -> str:
        pm.register(Plugin, "tiny-plugin")
        return "tiny"

    return install
