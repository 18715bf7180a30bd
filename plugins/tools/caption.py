"""The ``image_caption`` operator: a question-focused scene graph, then a caption written from it.

Both are VLM calls made through the engine's client (so they are scheduled, cached and counted).
The scene graph is kept in the sample's scratch space for ``label_bbox``.
"""

from __future__ import annotations

import json
from typing import Any

from mmat_core.components import ContentPart, LLMRequest, Message, Tool, ToolContext, ToolOutput

SCENE_GRAPH_VERSION = "scene-graph-1"
SCENE_GRAPH_PROMPT = """Build a scene graph of this image that focuses on what the question needs.
Question: {question}
Reply with one JSON object: {{"objects": [names], "attributes": [{{"name": object, "value": attribute}}],
"relationships": [{{"<object>": {{"<relation>": ["<other object>"]}}}}]}}. Only list what you can see."""
SCENE_GRAPH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "objects": {"type": "array", "items": {"type": "string"}},
        "attributes": {"type": "array", "items": {"type": "object"}},
        "relationships": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["objects", "attributes", "relationships"],
}
CAPTION_VERSION = "caption-1"
CAPTION_PROMPT = """Using this scene graph of the image as context:
{graph}
write one concise caption of the image (one or two sentences) that describes what matters for the
question: {question}"""


def parse_scene_graph(text: str) -> dict[str, Any]:
    """The scene graph in a reply; a reply that is not JSON gives an empty graph."""
    start, end = text.find("{"), text.rfind("}")
    try:
        graph = json.loads(text[start : end + 1]) if start >= 0 else {}
    except json.JSONDecodeError:
        graph = {}
    if not isinstance(graph, dict):
        graph = {}
    objects = [str(o) for o in graph.get("objects", []) if isinstance(o, (str, int, float))]
    return {"objects": objects, "attributes": graph.get("attributes", []) or [], "relationships": graph.get("relationships", []) or []}


class ImageCaptionTool(Tool):
    """Two VLM calls: scene graph, then caption."""

    name = "image_caption"
    version = "1"
    label = "image caption"
    description = "describe the image in a short caption focused on the question"

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Caption the sample's image."""
        if ctx.llm is None:
            raise RuntimeError("image_caption needs an LLM backend")
        image = ctx.image
        sample = ctx.sample
        parts = [ContentPart(type="image", image=image)] if image else []
        size = [image.width, image.height] if image and image.width else None
        graph_request = LLMRequest(
            purpose="scene_graph",
            messages=[Message(role="user", content=parts + [ContentPart(type="text", text=SCENE_GRAPH_PROMPT.format(question=sample.question))])],
            prompt_version=SCENE_GRAPH_VERSION,
            response_schema=SCENE_GRAPH_SCHEMA,
            sample_id=sample.id,
            context={"question": sample.question, "image_size": size},
        )
        graph_response, graph_call = await ctx.llm.complete(graph_request)
        graph = parse_scene_graph(graph_response.text)
        ctx.scratch["scene_graph"] = graph
        caption_request = LLMRequest(
            purpose="caption",
            messages=[Message(role="user", content=parts + [ContentPart(type="text", text=CAPTION_PROMPT.format(graph=json.dumps(graph), question=sample.question))])],
            prompt_version=CAPTION_VERSION,
            sample_id=sample.id,
            context={"question": sample.question, "scene_graph": graph, "image_size": size},
        )
        caption_response, caption_call = await ctx.llm.complete(caption_request)
        usage = graph_call.usage.model_copy()
        usage.add(caption_call.usage)
        return ToolOutput(text=caption_response.text.strip(), data={"scene_graph": graph}, usage=usage,
                          model_calls=[graph_call, caption_call])
