"""RR and ORR exactly as MMAT-SPEC.md stage 4 describes them, pinned by golden files."""

from __future__ import annotations

import json

import pytest
from mmat_plugins.formatters.rr_orr import ORRFormatter, RRFormatter

from mmat_core import prompts
from mmat_core.formatting import orr_messages, rr_messages, rr_step_text
from mmat_core.models import Step
from mmat_core.writers import dumps_line
from tests.formats import cases


@pytest.mark.parametrize("name", sorted(cases.CASES))
@pytest.mark.parametrize("formatter", [RRFormatter, ORRFormatter], ids=["rr", "orr"])
def test_record_matches_golden_file(name: str, formatter: type) -> None:
    record = formatter().record(cases.CASES[name](), cases.context())
    golden = (cases.GOLDEN / f"{name}.{formatter.name}.jsonl").read_text(encoding="utf-8")
    assert dumps_line(record) == golden


def test_step_omits_operator_and_rag_tags_when_unused() -> None:
    assert rr_step_text(Step(thought="t")) == "<THOUGHT>t</THOUGHT><SIGNAL>continue</SIGNAL>"


def test_step_lists_operators_then_rag_then_signal() -> None:
    step = Step(thought="t", operators=["image_caption", "ocr"], rag_query="q", signal="continue")
    assert rr_step_text(step) == "<THOUGHT>t</THOUGHT><OPERATOR>image_caption, ocr</OPERATOR><RAG>q</RAG><SIGNAL>continue</SIGNAL>"


def test_step_text_is_the_same_from_a_model_and_from_its_dict() -> None:
    step = cases.rag_landmark().steps[1]
    assert rr_step_text(step) == rr_step_text(step.model_dump(mode="json"))


def test_rr_tool_results_arrive_in_the_following_user_turn() -> None:
    messages = rr_messages(cases.ocr_receipt(), cases.TOOLS)
    assert messages[2]["content"].endswith("<OPERATOR>ocr</OPERATOR><SIGNAL>continue</SIGNAL>")
    assert messages[3] == {"role": "user", "content": "Here are ocr results from the previous step: "
                           "SHOP 88 TOTAL 35.00 CASH 50.00 CHANGE 15.00 Please continue your reasoning."}


def test_rr_first_turn_carries_question_and_constraint() -> None:
    messages = rr_messages(cases.ocr_receipt(), cases.TOOLS)
    assert messages[1]["content"] == ("What is the total amount?\nAnswer the question using a single word or phrase."
                                      " Please start your reasoning.")


def test_rr_ends_with_the_summary_question_and_the_bare_answer() -> None:
    messages = rr_messages(cases.rag_landmark(), cases.TOOLS)
    assert messages[-2]["content"] == prompts.final_turn("In which year was this building completed?")
    assert messages[-1] == {"role": "assistant", "content": "1889"}


def test_rr_end_step_is_followed_directly_by_the_final_question() -> None:
    messages = rr_messages(cases.ocr_receipt(), cases.TOOLS)
    assert messages[-3]["content"].endswith("<SIGNAL>end</SIGNAL>")
    assert messages[-2]["content"].startswith("Based on the above information")


def test_rr_reflection_is_spliced_before_the_end() -> None:
    contents = [m["content"] for m in rr_messages(cases.math_reflection(), cases.TOOLS)]
    index = next(i for i, c in enumerate(contents) if c.endswith("<SIGNAL>reflection</SIGNAL>"))
    assert contents[index + 1] == prompts.REFLECTION_TURN
    assert contents[index + 2].endswith("<SIGNAL>end</SIGNAL>")


def test_rr_system_prompt_lists_exactly_the_enabled_tools() -> None:
    system = rr_messages(cases.ocr_receipt(), cases.TOOLS[1:2])[0]["content"]
    assert "- ocr: recognise the text" in system
    assert "image_caption" not in system and "face_detection" not in system


def test_rr_system_prompt_mentions_search_only_when_rag_is_enabled() -> None:
    with_rag = rr_messages(cases.ocr_receipt(), cases.TOOLS, rag_enabled=True)[0]["content"]
    without = rr_messages(cases.ocr_receipt(), cases.TOOLS, rag_enabled=False)[0]["content"]
    assert prompts.RR_RAG_LINE in with_rag and prompts.RR_RAG_LINE not in without


def test_orr_prepends_operator_outputs_in_order() -> None:
    question = orr_messages(cases.math_reflection())[1]["content"]
    assert question == (
        "How many stickers do the three children have in all? Use the following API outputs to help answer the question:"
        "<|begin_api_invoke|>image_caption<|end_api_invoke|><|begin_result_of_api|>A small table listing three children "
        "and how many stickers each has.<|end_result_of_api|><|begin_api_invoke|>ocr<|end_api_invoke|>"
        "<|begin_result_of_api|>Name | Stickers; Ann | 12; Bo | 9; Cy | 14<|end_result_of_api|>"
    )


def test_orr_drops_rag_results() -> None:
    question = orr_messages(cases.rag_landmark())[1]["content"]
    assert "1889" not in question and "image_caption" in question


def test_orr_leaves_out_failed_operator_calls() -> None:
    trace = cases.ocr_receipt()
    trace.steps[0].tool_calls[0].error = "timeout"
    assert "<|begin_api_invoke|>" not in orr_messages(trace)[1]["content"]


def test_orr_joins_every_thought_reflection_included_into_one_thought() -> None:
    answer = orr_messages(cases.math_reflection())[2]["content"]
    assert answer.count("<THOUGHT>") == 1
    assert "Wait, let me re-check the arithmetic" in answer
    assert answer.endswith("</THOUGHT><ANSWER>The answer is: 35</ANSWER>")


def test_orr_without_operator_outputs_is_the_bare_question() -> None:
    trace = cases.ocr_receipt()
    trace.steps[0].tool_calls = []
    assert orr_messages(trace)[1]["content"] == "What is the total amount?\nAnswer the question using a single word or phrase."


def test_record_keeps_id_image_paths_and_provenance() -> None:
    record = RRFormatter().record(cases.ocr_receipt(), cases.context())
    assert record["id"] == "viscot/sroie/0001"
    assert record["images"] == ["cot/sroie/X51005.jpg"]
    assert record["provenance"]["licence"] == "Apache-2.0"


def test_golden_lines_are_valid_rr_and_orr_records() -> None:
    from mmat_core.models import ORRRecord, RRRecord

    for name in cases.CASES:
        RRRecord.model_validate(json.loads((cases.GOLDEN / f"{name}.rr.jsonl").read_text()))
        ORRRecord.model_validate(json.loads((cases.GOLDEN / f"{name}.orr.jsonl").read_text()))


def test_a_flagged_sample_says_so_in_its_record_and_a_clean_one_does_not() -> None:
    from mmat_core.formatting import rr_messages, training_record

    clean = cases.ocr_receipt()
    flagged = clean.model_copy(update={"status": "flagged"})
    assert "status" not in training_record(clean, rr_messages(clean, cases.context().tools))
    assert training_record(flagged, rr_messages(flagged, cases.context().tools))["status"] == "flagged"
