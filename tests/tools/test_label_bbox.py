"""The ``label_bbox`` operator: tiny random OWL-ViT and Grounding DINO through transformers, and a detection server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mmat_plugins.tools.detectors import (
    DEFAULT_DETECTOR_MODEL,
    Detection,
    detector_names,
    make_detector,
    weights_on_this_machine,
)
from mmat_plugins.tools.label_bbox import LabelBoxTool, normalise_boxes, question_objects

from mmat_core import Detector, hookimpl
from mmat_core.errors import ConfigError
from mmat_core.plugins import PluginManager, set_plugin_manager
from tests.fakes.search_servers import API_KEY
from tests.tools.conftest import run_tool

GRAPH = {"scene_graph": {"objects": ["person", "helmet"], "attributes": [], "relationships": []}}


def test_transformers_detector_boxes_every_scene_graph_object_in_normalised_coordinates(
        tiny_owlvit: Path, photos: dict[str, Path]) -> None:
    tool = LabelBoxTool(detector={"name": "transformers", "model": str(tiny_owlvit), "threshold": 0.0})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH))
    assert call.error is None, call.error
    boxes = call.data["boxes"]
    assert set(boxes) == {"person", "helmet"}
    for box in (b for name in boxes for b in boxes[name]):
        assert len(box) == 4 and 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0


def test_transformers_detector_returns_labelled_pixel_boxes_from_the_model(tiny_owlvit: Path,
                                                                          photos: dict[str, Path]) -> None:
    detector = make_detector({"name": "transformers", "model": str(tiny_owlvit), "threshold": 0.0})
    detections = detector.detect_blocking(photos["astronaut"].read_bytes(), ["person", "helmet"])
    # One candidate per image patch and label: 4x4 patches of the 64-pixel tiny model.
    assert len(detections) == 16
    assert {d.label for d in detections} <= {"person", "helmet"}
    assert all(0.0 <= d.score <= 1.0 for d in detections)


def test_result_text_is_the_name_to_boxes_dict_as_json(tiny_owlvit: Path, photos: dict[str, Path]) -> None:
    import json

    tool = LabelBoxTool(detector={"name": "transformers", "model": str(tiny_owlvit), "threshold": 0.0})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH))
    assert json.loads(call.result) == call.data["boxes"]


def test_objects_argument_overrides_the_scene_graph(tiny_owlvit: Path, photos: dict[str, Path]) -> None:
    tool = LabelBoxTool(detector={"name": "transformers", "model": str(tiny_owlvit), "threshold": 1.0})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH), args={"objects": ["flag"]})
    assert call.data == {"boxes": {"flag": []}, "objects": ["flag"]}


def test_without_a_scene_graph_the_question_names_the_objects() -> None:
    assert question_objects("What color is the helmet of the astronaut?", 8) == ["helmet", "astronaut"]


def test_http_detector_normalises_pixel_boxes_by_the_image_size(fake_servers: Any, photos: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETECTOR_TOKEN", API_KEY)
    fake_servers.detections = {"person": [(0.9, [128, 64, 384, 512]), (0.2, [0, 0, 10, 10])]}
    tool = LabelBoxTool(detector={"name": "http", "url": fake_servers.url("/detect"), "threshold": 0.5,
                                  "api_key_env": "DETECTOR_TOKEN"})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH))
    assert call.data["boxes"] == {"person": [[0.25, 0.125, 0.75, 1.0]], "helmet": []}
    sent = fake_servers.requests[-1]
    assert sent.body["labels"] == ["person", "helmet"] and sent.headers["Authorization"] == f"Bearer {API_KEY}"


def test_detection_server_failure_becomes_an_error_observation(fake_servers: Any, photos: dict[str, Path]) -> None:
    fake_servers.fail_next("/detect", 503)
    tool = LabelBoxTool(detector={"name": "http", "url": fake_servers.url("/detect")})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH))
    assert call.error is not None and "HTTP 503" in call.error
    assert call.result.startswith("The label_bbox operator failed:")


def test_boxes_are_clipped_to_the_image_and_capped_per_name() -> None:
    detections = [Detection(label="cup", score=s, box=[-10, -10, 50, 50]) for s in (0.9, 0.8, 0.7)]
    assert normalise_boxes(detections, ["cup"], (100, 100), per_label=2) == {"cup": [[0.0, 0.0, 0.5, 0.5]] * 2}


def test_unknown_detector_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="Unknown detector 'transformer'. Did you mean 'transformers'"):
        make_detector({"name": "transformer", "model": "x"})
    assert detector_names() == ["http", "transformers"]


def test_default_detector_is_grounding_dino_tiny_downloaded_on_first_use() -> None:
    detector = LabelBoxTool().detector
    assert detector.name == "transformers"
    assert detector.options.model == DEFAULT_DETECTOR_MODEL == "IDEA-Research/grounding-dino-tiny"
    assert detector.options.local_files_only is False


def test_detector_options_without_a_name_are_the_transformers_backends(tiny_owlvit: Path) -> None:
    tool = LabelBoxTool(detector={"model": str(tiny_owlvit)})
    assert tool.detector.name == "transformers" and tool.detector.options.model == str(tiny_owlvit)


def test_bad_detector_option_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"label_bbox\.detector\.threshold: .*options of detector 'transformers'"):
        LabelBoxTool(detector={"name": "transformers", "threshold": 2})


def test_grounding_dino_detector_boxes_the_scene_graph_objects_in_normalised_coordinates(
        tiny_grounding_dino: Path, photos: dict[str, Path]) -> None:
    tool = LabelBoxTool(detector={"name": "transformers", "model": str(tiny_grounding_dino), "threshold": 0.0,
                                  "text_threshold": 0.0, "local_files_only": True})
    call = run_tool(tool, photos["astronaut"], scratch=dict(GRAPH))
    assert call.error is None, call.error
    boxes = call.data["boxes"]
    assert set(boxes) == {"person", "helmet"} and any(boxes.values())
    for box in (b for name in boxes for b in boxes[name]):
        assert len(box) == 4 and 0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0


def test_grounding_dino_phrases_map_back_to_the_requested_labels(tiny_grounding_dino: Path,
                                                                photos: dict[str, Path]) -> None:
    detector = make_detector({"name": "transformers", "model": str(tiny_grounding_dino), "threshold": 0.0,
                              "text_threshold": 0.0, "local_files_only": True})
    detections = detector.detect_blocking(photos["coffee"].read_bytes(), ["cup", "table"])
    assert len(detections) == 10  # one per query of the tiny model
    assert {d.label for d in detections} <= {"cup", "table"}


def test_weights_on_this_machine_reads_the_hub_cache_and_local_folders(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not weights_on_this_machine("IDEA-Research/grounding-dino-tiny")
    snapshot = tmp_path / "hub" / "models--IDEA-Research--grounding-dino-tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert weights_on_this_machine("IDEA-Research/grounding-dino-tiny")
    assert not weights_on_this_machine(str(tmp_path / "nowhere"))
    assert weights_on_this_machine(str(snapshot))


def test_a_detector_given_as_an_import_path_is_refused_with_how_to_register_one() -> None:
    with pytest.raises(ConfigError, match=r"label_bbox.detector.name: detector 'tests.tools.test_label_bbox:CornerDetector' "
                                          r"is an import path.*register_detectors hook.*available: http, transformers"):
        LabelBoxTool(detector={"name": "tests.tools.test_label_bbox:CornerDetector"})


def test_a_detector_registered_by_a_plugin_is_used_by_name(photos: dict[str, Path]) -> None:
    class CornerPlugin:
        @staticmethod
        @hookimpl
        def register_detectors(register: Callable) -> None:
            register(CornerDetector)

    pm = PluginManager()
    pm.register(CornerPlugin, "corner-plugin")
    set_plugin_manager(pm)
    try:
        tool = LabelBoxTool(detector="corner")
    finally:
        set_plugin_manager(None)
    call = run_tool(tool, photos["astronaut"], args={"objects": ["corner"]})
    assert call.data["boxes"] == {"corner": [[0.0, 0.0, 0.5, 0.5]]}
    assert CornerDetector.plugin == "corner-plugin"


class CornerDetector(Detector):
    """A third-party detector for the test above: always the top-left quarter."""

    name = "corner"

    async def detect(self, image: bytes, size: tuple[int, int], labels: list[str], ctx: Any) -> list[Detection]:
        """One box per label covering the top-left quarter."""
        return [Detection(label=label, score=1.0, box=[0, 0, size[0] / 2, size[1] / 2]) for label in labels]


def _singles_and_batch(tool: LabelBoxTool, calls: list[tuple[Path, dict[str, Any], dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """The outputs of each call run alone, then of all of them through ``run_batch``."""
    import asyncio

    from mmat_core.engine.tools import ToolRunner
    from mmat_core.images import ImageStore
    from tests.tools.conftest import sample_for

    runner = ToolRunner([tool], ImageStore(), workers=1)

    async def go() -> tuple[list[Any], list[Any]]:
        contexts = [(args, runner.context(sample_for(image), dict(scratch))) for image, args, scratch in calls]
        singles = [await tool.run(args, ctx) for args, ctx in contexts]
        return singles, await tool.run_batch(contexts)

    try:
        return asyncio.run(go())
    finally:
        runner.close()


def _batched_calls(photos: dict[str, Path], tmp_path: Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    from PIL import Image, ImageOps

    mirror = tmp_path / "astronaut_mirror.png"
    with Image.open(photos["astronaut"]) as picture:
        ImageOps.mirror(picture).save(mirror)  # the astronaut's size: batched with it
    return [(photos["astronaut"], {}, dict(GRAPH)), (mirror, {}, dict(GRAPH)),
            (photos["coffee"], {"objects": ["cup"]}, {}), (mirror, {"objects": ["person", "flag"]}, {}),
            (photos["astronaut"], {"objects": ["helmet", "suit"]}, {})]


@pytest.mark.parametrize("model", ["tiny_owlvit", "tiny_grounding_dino"])
def test_a_batch_of_detections_gives_each_call_what_it_gets_alone_in_fewer_forward_passes(
        model: str, photos: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from mmat_plugins.tools.detectors import TransformersDetector

    tool = LabelBoxTool(detector={"name": "transformers", "model": str(request.getfixturevalue(model)), "threshold": 0.0})
    detector = tool.detector
    assert isinstance(detector, TransformersDetector)
    passes: list[int] = []
    forward = detector._forward

    def counted(pictures: list[Any], label_lists: list[list[str]]) -> list[Any]:
        passes.append(len(pictures))
        return forward(pictures, label_lists)

    detector._forward = counted  # type: ignore[method-assign]
    calls = _batched_calls(photos, tmp_path)
    singles, batch = _singles_and_batch(tool, calls)
    assert [(o.text, o.data) for o in batch] == [(o.text, o.data) for o in singles]
    batched = passes[len(calls):]
    assert sum(batched) == len(calls) and max(batched) > 1  # some images shared a forward pass


def test_label_bbox_batch_answers_calls_without_an_image_or_names_as_single_calls(tiny_owlvit: Path,
                                                                                 photos: dict[str, Path]) -> None:
    tool = LabelBoxTool(detector={"name": "transformers", "model": str(tiny_owlvit), "threshold": 0.0})
    singles, batch = _singles_and_batch(tool, [(photos["coffee"], {"objects": []}, {}),
                                               (photos["coffee"], {"objects": ["cup"]}, {})])
    assert [o.text for o in batch] == [o.text for o in singles]
