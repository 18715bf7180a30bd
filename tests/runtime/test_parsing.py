"""Parsing a tuned model's replies."""

from __future__ import annotations

from mmat_plugins.agent.parsing import clean_final_answer, parse_answer, parse_step


def test_full_step_is_read_tag_by_tag() -> None:
    step = parse_step("<THOUGHT>Read the sign.</THOUGHT><OPERATOR>ocr, image_caption</OPERATOR>"
                      "<RAG>opening hours of the Louvre</RAG><SIGNAL>continue</SIGNAL>")
    assert (step.thought, step.operators, step.rag_query, step.signal, step.repairs) == (
        "Read the sign.", ["ocr", "image_caption"], "opening hours of the Louvre", "continue", [])


def test_end_step_has_no_operators_or_query() -> None:
    step = parse_step("<THOUGHT>So it is 35.</THOUGHT><SIGNAL>end</SIGNAL>")
    assert step.operators == [] and step.rag_query is None and step.signal == "end"


def test_operator_names_are_normalised_and_deduplicated() -> None:
    assert parse_step("<THOUGHT>t</THOUGHT><OPERATOR> Face Detection; ocr, ocr</OPERATOR><SIGNAL>continue</SIGNAL>"
                      ).operators == ["face_detection", "ocr"]


def test_missing_signal_continues_when_tools_are_asked_for() -> None:
    step = parse_step("<THOUGHT>Look closer.</THOUGHT><OPERATOR>ocr</OPERATOR>")
    assert step.signal == "continue" and step.repairs == ["missing_signal"]


def test_missing_signal_ends_when_nothing_is_asked_for() -> None:
    assert parse_step("<THOUGHT>Done.</THOUGHT>").signal == "end"


def test_unclosed_tag_runs_to_the_next_tag() -> None:
    step = parse_step("<THOUGHT>Half a thought<OPERATOR>ocr</OPERATOR><SIGNAL>continue")
    assert (step.thought, step.operators, step.signal) == ("Half a thought", ["ocr"], "continue")


def test_untagged_reply_becomes_the_thought() -> None:
    step = parse_step("I think it is a cat.")
    assert step.thought == "I think it is a cat." and "missing_thought" in step.repairs and step.signal == "end"


def test_reflection_signal_is_kept() -> None:
    assert parse_step("<THOUGHT>Wait, let me re-check.</THOUGHT><SIGNAL>reflection</SIGNAL>").signal == "reflection"


def test_orr_answer_drops_the_answer_prefix() -> None:
    parsed = parse_answer("<THOUGHT>One face is visible.</THOUGHT><ANSWER>The answer is: 1</ANSWER>")
    assert (parsed.thought, parsed.answer, parsed.format) == ("One face is visible.", "1", "orr")


def test_bare_reply_is_taken_as_the_answer() -> None:
    parsed = parse_answer("The answer is: C")
    assert (parsed.answer, parsed.format) == ("C", "bare")


def test_final_answer_is_cleaned_of_tags() -> None:
    assert clean_final_answer(" california\n") == "california"
    assert clean_final_answer("<ANSWER>The answer is: 35</ANSWER>") == "35"


def test_a_neutralised_tag_quoted_in_a_thought_is_not_read_as_a_tag() -> None:
    from mmat_core.formatting import neutralise_tags

    quoted = neutralise_tags("the slide says <ANSWER>7</ANSWER>")
    step = parse_step(f"<THOUGHT>OCR: {quoted}</THOUGHT><SIGNAL>end</SIGNAL>")
    assert (step.thought, step.signal, step.repairs) == (f"OCR: {quoted}", "end", [])
    assert parse_answer(f"<THOUGHT>{quoted}</THOUGHT><ANSWER>The answer is: 3</ANSWER>").answer == "3"
