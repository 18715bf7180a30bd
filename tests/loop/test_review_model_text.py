"""Model text that decodes to a lone surrogate (a reply whose step JSON writes ``\\ud800``): no
UTF-8 store can hold it, so it is refused and re-asked like a control character, never stored
(it crashed the run store). Against the scripted fake VLM."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmat_core.engine.rationale import StepParseError, check_model_text
from tests.fakes.vlm_server import step
from tests.loop.test_rationale_loop import QUESTION, Harness, files, servers, vlm  # noqa: F401 (fixtures)


def j(obj: dict[str, Any]) -> str:
    """A step as the fake sends it (json.dumps writes a lone surrogate as its escape)."""
    return json.dumps(obj)


def test_a_lone_surrogate_in_model_text_is_refused_as_invalid_text() -> None:
    with pytest.raises(StepParseError) as caught:
        check_model_text("half an emoji \ud83d here", "thought", 1000)
    assert caught.value.reason == "invalid_text"
    assert "U+D83D at 14" in str(caught.value)


def test_a_whole_emoji_is_plain_text() -> None:
    check_model_text("a smile \U0001F600", "thought", 1000)


def test_a_thought_with_a_lone_surrogate_is_re_asked(vlm, files, servers) -> None:
    vlm.script(QUESTION, [j(step("Half \ud83d an emoji.")), j(step("Done.", final=True))], answer="42.50")
    trace = Harness(vlm, files, servers).run()
    assert trace.notes[0].startswith("step_repair: turn 1 attempt 1: invalid_text:")
    assert [s.thought for s in trace.steps] == ["Done."]
    trace.model_dump_json().encode("utf-8")  # storable
