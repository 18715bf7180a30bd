"""The example plugin's components: the image_stats tool and the thought_length critic.

Kept apart from the hook module (``__init__.py``) so that loading the plugin, which ``mmat --help``
does to list commands, imports neither pydantic nor mmat's component bases.
"""

from __future__ import annotations

import io
from typing import Any

from pydantic import Field

from mmat_core import (
    ComponentOptions,
    Critic,
    CriticContext,
    Tool,
    ToolContext,
    ToolOutput,
    Trace,
    Verdict,
)
from mmat_plugin_example import __version__


class ImageStatsTool(Tool):
    """Reports the image's size and mean brightness (0 = black, 255 = white)."""

    name = "image_stats"
    version = __version__
    label = "image stats"
    description = "measure the image's width, height and mean brightness"

    @staticmethod
    def measure(data: bytes) -> dict[str, Any]:
        """Size and mean brightness of an encoded image."""
        from PIL import Image, ImageStat  # imported on use, like any heavy dependency

        with Image.open(io.BytesIO(data)) as image:
            brightness = ImageStat.Stat(image.convert("L")).mean[0]
            return {"width": image.width, "height": image.height, "brightness": round(brightness, 1)}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Measure the sample's image off the event loop."""
        if ctx.image is None:
            return ToolOutput(text="There is no image.")
        stats = await ctx.blocking(self.measure, ctx.images.load(ctx.image))
        text = f"The image is {stats['width']}x{stats['height']} pixels with mean brightness {stats['brightness']}."
        return ToolOutput(text=text, data=stats)


class ThoughtLengthOptions(ComponentOptions):
    """Options of the thought_length critic."""

    min_words: int = Field(6, ge=1, description="steps with fewer words ask for a reflection")


class ThoughtLengthCritic(Critic):
    """Asks for a reflection when a reasoning step is too short to teach anything."""

    name = "thought_length"
    version = __version__
    description = "reflect on reasoning steps shorter than min_words; reject empty thoughts"
    order = 40
    Options = ThoughtLengthOptions

    async def review(self, trace: Trace, ctx: CriticContext) -> Verdict:
        """Count the words of each rationale step."""
        lengths = [len(step.thought.split()) for step in trace.steps if step.kind == "rationale"]
        if not lengths or min(lengths) == 0:
            return Verdict(critic=self.name, verdict="reject", reason="a reasoning step is empty")
        shortest = min(lengths)
        if shortest < self.options.min_words:
            return Verdict(
                critic=self.name,
                verdict="fix",
                reason=f"a reasoning step has only {shortest} words; explain how the evidence leads on",
                data={"shortest": shortest},
            )
        return Verdict(critic=self.name, verdict="pass", data={"shortest": shortest})
