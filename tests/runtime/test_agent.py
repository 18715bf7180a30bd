"""The RR/ORR agent runtime against a scripted OpenAI-compatible server, with real tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mmat_plugins.agent import AgentRuntime, OpenAIChatModel

from mmat_core import formatting, prompts
from mmat_core.cli import main
from mmat_core.errors import ConfigError
from tests.fakes.hub_server import FakeHub, closed_port, use_fake_hub
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply
from tests.runtime.conftest import assistant_turns, scripted, user_texts

QUESTION = "How many people are in the photo?"
CONSTRAINT = "Answer the question using a single word or phrase."


def runtime(server: FakeOpenAIServer, tools: list[str], **kwargs: Any) -> AgentRuntime:
    return AgentRuntime.from_names(OpenAIChatModel("tuned-rr", server.base_url), tools=tools, **kwargs)


def test_rr_runs_the_named_operator_and_answers_with_the_training_template(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted([
        "<THOUGHT>I should look for faces.</THOUGHT><OPERATOR>face_detection</OPERATOR><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>The detector found one face, so one person.</THOUGHT><SIGNAL>end</SIGNAL>",
        "1",
    ])
    result = runtime(server, ["face_detection"]).run(photos["astronaut"], QUESTION, constraint=CONSTRAINT)
    calls = server.completions()
    observation = user_texts(calls[1])[-1]
    face = result.trace.steps[0].tool_calls[0]
    assert result.answer == "1"
    assert face.name == "face_detection" and face.error is None and face.result.startswith("There is one face with a coordinate: [")
    assert observation == prompts.observation([("face detection", face.result)])
    assert user_texts(calls[2])[-1] == prompts.final_turn(QUESTION)
    assert [s.signal for s in result.trace.steps] == ["continue", "end"]


def test_first_request_carries_system_prompt_image_and_first_turn(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted(["<THOUGHT>Nothing to do.</THOUGHT><SIGNAL>end</SIGNAL>", "1"])
    agent = runtime(server, ["face_detection", "ocr"])
    agent.run(photos["astronaut"], QUESTION, constraint=CONSTRAINT)
    messages = server.completions()[0].body["messages"]
    assert messages[0] == {"role": "system", "content": formatting.rr_system_prompt(agent.infos(agent.tools), False)}
    parts = messages[1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": prompts.first_turn(QUESTION, "\n" + CONSTRAINT)}


def test_rag_query_is_answered_from_the_search_backend(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted([
        "<THOUGHT>Who first piloted the shuttle?</THOUGHT><RAG>first woman to pilot the Space Shuttle</RAG><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>It was Eileen Collins.</THOUGHT><SIGNAL>end</SIGNAL>",
        "Eileen Collins",
    ])
    result = runtime(server, [], search="local").run(photos["astronaut"], "Which woman first piloted this kind of spacecraft?")
    observation = user_texts(server.completions()[1])[-1]
    assert result.trace.steps[0].rag.query == "first woman to pilot the Space Shuttle"
    assert observation.startswith("Here are rag results from the previous step: [1] Eileen Collins:")
    assert "- rag" not in server.completions()[0].body["messages"][0]["content"]
    assert "<RAG>" in server.completions()[0].body["messages"][0]["content"]


def test_reflection_signal_gets_the_reflection_turn(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted([
        "<THOUGHT>It is a cat.</THOUGHT><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>Wait, let me re-check.</THOUGHT><SIGNAL>reflection</SIGNAL>",
        "<THOUGHT>Yes, a ginger cat.</THOUGHT><SIGNAL>end</SIGNAL>",
        "cat",
    ])
    result = runtime(server, []).run(photos["chelsea"], "What animal is this?")
    calls = server.completions()
    assert user_texts(calls[1])[-1] == prompts.NO_TOOL
    assert user_texts(calls[2])[-1] == prompts.REFLECTION_TURN
    assert [s.kind for s in result.trace.steps] == ["rationale", "reflection", "rationale"]
    assert result.answer == "cat"


def test_turn_cap_stops_the_loop_and_asks_for_the_answer(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = lambda request: Reply.text(  # type: ignore[call-arg]
        "cat" if prompts.final_turn("What is it?") in user_texts(request)[-1] else "<THOUGHT>Hmm.</THOUGHT><SIGNAL>continue</SIGNAL>")
    result = runtime(server, [], max_turns=2).run(photos["chelsea"], "What is it?")
    assert len(server.completions()) == 3
    assert "turn_cap_reached" in result.trace.notes
    assert result.trace.steps[-1].signal == "end" and result.answer == "cat"
    roles = [m["role"] for m in server.completions()[-1].body["messages"]]
    assert ["user", "user"] not in [roles[i:i + 2] for i in range(len(roles) - 1)]


def test_unknown_operator_becomes_an_error_observation(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted([
        "<THOUGHT>Count pixels.</THOUGHT><OPERATOR>pixel_counter</OPERATOR><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>That failed.</THOUGHT><SIGNAL>end</SIGNAL>",
        "1",
    ])
    result = runtime(server, ["face_detection"]).run(photos["astronaut"], QUESTION)
    call = result.trace.steps[0].tool_calls[0]
    assert call.error is not None and "unknown operator 'pixel_counter'" in call.error
    assert "The pixel_counter operator failed" in user_texts(server.completions()[1])[-1]


def test_announced_new_operator_is_described_and_run(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted([
        "<THOUGHT>Read the receipt.</THOUGHT><OPERATOR>ocr</OPERATOR><SIGNAL>continue</SIGNAL>",
        "<THOUGHT>Found the total.</THOUGHT><SIGNAL>end</SIGNAL>",
        "done",
    ])
    result = runtime(server, ["face_detection"], extra_operators=["ocr"]).run(photos["receipt"], "What is the total?")
    first_turn = user_texts(server.completions()[0])[0]
    system = server.completions()[0].body["messages"][0]["content"]
    ocr = result.trace.steps[0].tool_calls[0]
    assert "You can also call these new operators with <OPERATOR>: ocr (" in first_turn
    assert first_turn.endswith("Please start your reasoning.")
    assert "- ocr:" not in system  # the trained operator list stays as it was
    assert ocr.error is None and ocr.result.strip()


def test_orr_runs_the_operators_first_and_prepends_their_outputs(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted(["<THOUGHT>The detector saw one face.</THOUGHT><ANSWER>The answer is: 1</ANSWER>"])
    result = runtime(server, ["face_detection"], mode="orr").run(photos["astronaut"], QUESTION, constraint=CONSTRAINT)
    calls = server.completions()
    face = result.trace.steps[0].tool_calls[0]
    assert len(calls) == 1
    assert calls[0].body["messages"][0]["content"] == prompts.orr_system()
    assert user_texts(calls[0])[0] == (f"{QUESTION}\n{CONSTRAINT}{prompts.ORR_API_HEADER}"
                                       + prompts.ORR_API_BLOCK.format(operator="face_detection", result=face.result))
    assert result.answer == "1" and result.trace.steps[0].thought == "The detector saw one face."


def test_plain_mode_sends_the_question_alone(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = scripted(["2"])
    result = runtime(server, ["face_detection"], mode="plain").run(photos["astronaut"], QUESTION)
    messages = server.completions()[0].body["messages"]
    assert [m["role"] for m in messages] == ["user"] and user_texts(server.completions()[0]) == [QUESTION]
    assert result.answer == "2" and result.trace.steps == []


def test_image_caption_asks_the_runtime_model_itself(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    def respond(request: RecordedRequest) -> Reply:
        text = user_texts(request)[-1]
        if "scene graph" in text.lower() and "Using this scene graph" not in text:
            return Reply.json({"objects": ["astronaut", "flag"], "attributes": [], "relationships": []})
        if "Using this scene graph" in text:
            return Reply.text("An astronaut in a white suit stands before a flag.")  # type: ignore[call-arg]
        return scripted(["<THOUGHT>Describe it.</THOUGHT><OPERATOR>image_caption</OPERATOR><SIGNAL>continue</SIGNAL>",
                         "<THOUGHT>An astronaut.</THOUGHT><SIGNAL>end</SIGNAL>", "astronaut"])(request)

    server.responder = respond
    result = runtime(server, ["image_caption"]).run(photos["astronaut"], "Who is this?")
    caption = result.trace.steps[0].tool_calls[0]
    assert caption.error is None and caption.result == "An astronaut in a white suit stands before a flag."
    assert len(server.completions()) == 5  # step, scene graph, caption, step, answer
    assert result.answer == "astronaut"


def test_a_failing_endpoint_fails_the_trace_not_the_caller(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    server.responder = lambda request: Reply.status(400, "model not found")
    result = runtime(server, []).run(photos["chelsea"], "What is it?")
    assert result.trace.status == "failed" and "model not found" in (result.trace.failure or "")
    assert result.answer == ""


def test_trace_is_a_valid_record_with_provenance(server: FakeOpenAIServer, photos: dict[str, Path]) -> None:
    from mmat_core.models import Trace

    server.responder = scripted(["<THOUGHT>One face.</THOUGHT><SIGNAL>end</SIGNAL>", "1"])
    result = runtime(server, ["face_detection"]).run(photos["astronaut"], QUESTION)
    again = Trace.model_validate(json.loads(result.trace.model_dump_json()))
    assert again.provenance.generator == "runtime:tuned-rr"
    assert again.final_answer == "1" and again.sample.images[0].path == str(photos["astronaut"])
    assert assistant_turns(server.completions()[-1]) == 1


# -- a local model that cannot be found fails at once (the fake Hub on 127.0.0.1) ------------------


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The fake Hub as this process's Hub (holds only org/present), an empty Hub cache."""
    with use_fake_hub(monkeypatch, tmp_path / "hub-cache") as fake:
        yield fake


def test_a_local_model_the_hub_lacks_is_refused_after_one_request_naming_the_tiny_model_command(hub: FakeHub) -> None:
    from mmat_plugins.agent import open_chat_model

    with pytest.raises(ConfigError, match=r"^model: 'tiny-vlm' .*has no model 'tiny-vlm'.*`mmat tiny-model tiny-vlm`"):
        open_chat_model("tiny-vlm", backend="transformers")
    assert hub.paths == ["/api/models/tiny-vlm"]  # one request, no retries


def test_a_local_model_the_hub_has_is_opened_without_loading(hub: FakeHub) -> None:
    from mmat_plugins.agent import TransformersChatModel, open_chat_model

    model = open_chat_model("org/present")
    assert isinstance(model, TransformersChatModel) and model._model is None
    assert hub.paths == ["/api/models/org/present"]


def test_a_model_folder_is_opened_without_asking_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    from mmat_plugins.agent import open_chat_model

    (tmp_path / "model").mkdir()
    open_chat_model(str(tmp_path / "model"), backend="transformers")
    assert hub.paths == []


def test_a_missing_adapter_folder_is_refused_naming_the_adapter(hub: FakeHub, tmp_path: Path) -> None:
    from mmat_plugins.agent import open_chat_model

    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError, match=r"^adapter: no folder 'runs/lora/adapter' \(and it is not a Hugging Face model id\)"):
        open_chat_model(str(tmp_path / "model"), adapter="runs/lora/adapter")
    assert hub.paths == []


def test_an_endpoint_model_name_is_not_checked_against_the_hub(hub: FakeHub) -> None:
    from mmat_plugins.agent import OpenAIChatModel, open_chat_model

    assert isinstance(open_chat_model("my-rr", endpoint="http://127.0.0.1:9/v1"), OpenAIChatModel)
    assert hub.paths == []


def test_an_unreachable_hub_fails_mmat_infer_at_once_in_one_line(hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
                                                                  photos: dict[str, Path]) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    result = CliRunner().invoke(main, ["infer", "--model", "org/model", "--image", str(photos["chelsea"]),
                                       "--question", "What is it?"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "'org/model' is not a folder here and the Hugging Face Hub cannot be reached" in message
    assert "mmat tiny-model" in message and "\n" not in message


def test_mmat_eval_with_a_missing_local_model_fails_before_scoring(hub: FakeHub, tmp_path: Path,
                                                                   photos: dict[str, Path]) -> None:
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "What is it?", "answer": "cat", "image": str(photos["chelsea"])}) + "\n")
    result = CliRunner().invoke(main, ["eval", "--data", str(bench), "--model", "tiny-vlm", "-o", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "has no model 'tiny-vlm'" in str(result.exception)
    assert hub.paths == ["/api/models/tiny-vlm"]
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
