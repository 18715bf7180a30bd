"""The ``image_caption`` operator: a question-focused scene graph, then a caption written from it.

Both are VLM calls made through the engine's client (so they are scheduled, cached and counted).
The scene graph is normalised to the paper's shape (``objects``, ``attributes`` as
``[{name, value}]``, ``relationships`` as ``[{obj1: {relation: [obj2]}}]``) and kept in the
sample's scratch space, where ``label_bbox`` finds the object names to detect.
"""

from __future__ import annotations

import json
from typing import Any

from mmat_plugins.tools.base import ToolOptions
from pydantic import Field

from mmat_core.components import ContentPart, LLMRequest, Message, Tool, ToolContext, ToolOutput
from mmat_core.replies import ReplyJSONError, extract_json_object

# Each prompt is the exact text the model reads: a line break only where the text means one (around
# the question and the scene graph inserted into it), never from the width of this source file.
# tests/formats/test_prompt_text.py fails on a break inside a sentence.
SCENE_GRAPH_VERSION = "scene-graph-2"
SCENE_GRAPH_PROMPT = (
    "Build a scene graph of this image that focuses on what the question needs.\n"
    "Question: {question}\n"
    'Reply with one JSON object: {{"objects": [names], "attributes": [{{"name": object, "value": attribute}}], '
    '"relationships": [{{"<object>": {{"<relation>": ["<other object>"]}}}}]}}. Only list what you can see.'
)
SCENE_GRAPH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "objects": {"type": "array", "items": {"type": "string"}},
        "attributes": {"type": "array", "items": {"type": "object"}},
        "relationships": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["objects", "attributes", "relationships"],
}
CAPTION_VERSION = "caption-2"
CAPTION_PROMPT = (
    "Using this scene graph of the image as context:\n"
    "{graph}\n"
    "Write one concise caption of the image (one or two sentences) that describes what matters for the question: "
    "{question}"
)

#: Where the scene graph is kept in ``ToolContext.scratch`` for ``label_bbox``.
SCENE_GRAPH_KEY = "scene_graph"


def _name(value: Any) -> str | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = " ".join(str(value).split())
        return text or None
    return None


def normalise_scene_graph(graph: Any, max_objects: int = 32) -> dict[str, Any]:
    """Coerce a model's scene graph into the paper's shape, dropping what does not fit.

    Objects named only in attributes or relationships are added to ``objects`` so the detector
    sees every object the graph talks about.
    """
    if not isinstance(graph, dict):
        graph = {}
    objects: list[str] = []

    def add(name: str | None) -> None:
        if name and name not in objects:
            objects.append(name)

    for item in graph.get("objects") or []:
        add(_name(item["name"] if isinstance(item, dict) and "name" in item else item))
    attributes = []
    for item in graph.get("attributes") or []:
        if isinstance(item, dict) and _name(item.get("name")) and _name(item.get("value")):
            attributes.append({"name": _name(item["name"]), "value": _name(item["value"])})
            add(_name(item["name"]))
    relationships = []
    for item in graph.get("relationships") or []:
        if not isinstance(item, dict):
            continue
        for subject, relations in item.items():
            if not (_name(subject) and isinstance(relations, dict)):
                continue
            clean = {}
            for relation, targets in relations.items():
                targets = targets if isinstance(targets, list) else [targets]
                names = [t for t in (_name(t) for t in targets) if t]
                if _name(relation) and names:
                    clean[_name(relation)] = names
                    for target in names:
                        add(target)
            if clean:
                relationships.append({_name(subject): clean})
                add(_name(subject))
    return {"objects": objects[:max_objects], "attributes": attributes, "relationships": relationships}


def parse_scene_graph(text: str) -> dict[str, Any]:
    """The scene graph in a reply (code fences and prose around the JSON tolerated); a reply
    that holds no JSON object gives an empty graph."""
    try:
        graph = extract_json_object(text)
    except ReplyJSONError:
        graph = {}
    return normalise_scene_graph(graph)


class CaptionOptions(ToolOptions):
    """Options of the caption operator."""

    max_caption_chars: int = Field(600, ge=40, description="captions longer than this are cut at a sentence end")
    max_objects: int = Field(32, ge=1, description="objects kept from the scene graph")


def trim_caption(text: str, limit: int) -> str:
    """A caption on one line, cut at the last sentence end within ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > limit // 3 else cut.rstrip() + "..."


class ImageCaptionTool(Tool):
    """Two VLM calls: scene graph, then caption."""

    name = "image_caption"
    version = "3"  # in the tool-result cache key: raised with each prompt version
    label = "image caption"
    description = "describe the image in a short caption focused on the question"
    Options = CaptionOptions
    timeout_s = 300.0  # two model calls, each already bounded by the scheduler's own timeout

    def cache_extra(self, ctx: ToolContext) -> dict[str, Any]:
        """The caption depends on the question and on the model, not only on the image."""
        return {"question": ctx.sample.question, "model": getattr(ctx.llm, "identity", None)}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutput:
        """Caption the sample's image."""
        if ctx.llm is None:
            raise RuntimeError("image_caption needs an LLM backend (the run's `llm`)")
        image = ctx.image
        sample = ctx.sample
        parts = [ContentPart(type="image", image=image)] if image else []
        size = [image.width, image.height] if image and image.width else None
        graph_request = LLMRequest(
            purpose="scene_graph",
            messages=[Message(role="user", content=parts + [
                ContentPart(type="text", text=SCENE_GRAPH_PROMPT.format(question=sample.question))])],
            prompt_version=SCENE_GRAPH_VERSION,
            response_schema=SCENE_GRAPH_SCHEMA,
            sample_id=sample.id,
            context={"question": sample.question, "image_size": size},
        )
        graph_response, graph_call = await ctx.llm.complete(graph_request)
        graph = normalise_scene_graph(parse_scene_graph(graph_response.text), self.options.max_objects)
        ctx.scratch[SCENE_GRAPH_KEY] = graph
        caption_request = LLMRequest(
            purpose="caption",
            messages=[Message(role="user", content=parts + [
                ContentPart(type="text", text=CAPTION_PROMPT.format(graph=json.dumps(graph), question=sample.question))])],
            prompt_version=CAPTION_VERSION,
            sample_id=sample.id,
            context={"question": sample.question, "scene_graph": graph, "image_size": size},
        )
        caption_response, caption_call = await ctx.llm.complete(caption_request)
        usage = graph_call.usage.model_copy()
        usage.add(caption_call.usage)
        caption = trim_caption(caption_response.text, self.options.max_caption_chars)
        return ToolOutput(text=caption or "No caption was produced.", data={"scene_graph": graph}, usage=usage,
                          model_calls=[graph_call, caption_call])
