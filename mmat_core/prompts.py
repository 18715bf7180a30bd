"""Prompts and dialogue templates.

Two kinds of text live here:

* **Format facts** of the released MMAT-1M data (user-turn templates, tags, ORR markers). They
  are reproduced exactly as the paper's data has them and must never be reworded.
* **Prompts in the project's own words** (generator and system prompts) that ask for what the
  paper's prompts ask for. Each has a version string; it enters the cache key, so editing a
  prompt re-asks only the calls that use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmat_core.components import ToolInfo

# ---- exact format facts (MMAT-SPEC.md, stage 2 and 4) ---------------------------------------

FIRST_TURN = "{question}{constraint} Please start your reasoning."
TOOL_RESULT = "Here are {tool} results from the previous step: {result}"
CONTINUE = " Please continue your reasoning."
NO_TOOL = "No additional operator or rag results were selected in the previous step. Please continue your reasoning."
FINAL_TURN = "Based on the above information, please summarize and give the answer to the initial question: {question}"
REFLECTION_TURN = "No additional operator or rag results were selected in the previous step. Please make a reflection."
RAG_LABEL = "rag"

ORR_API_HEADER = " Use the following API outputs to help answer the question:"
ORR_API_BLOCK = "<|begin_api_invoke|>{operator}<|end_api_invoke|><|begin_result_of_api|>{result}<|end_result_of_api|>"
ORR_ANSWER = "<ANSWER>The answer is: {answer}</ANSWER>"

RESPONSE_CONSTRAINTS = {
    "short": "Give a short answer",
    "word_or_phrase": "Answer the question using a single word or phrase.",
    "option_letter": "Answer with the option's letter from the given choices directly.",
}


def constraint_suffix(constraint: str | None) -> str:
    """A response-style constraint as stored in ``SourceSample.constraint``: the text after a new
    line (as the sources write it), unless it already starts with its own separator."""
    if not constraint:
        return ""
    return constraint if constraint.startswith((" ", "\n")) else "\n" + constraint


def first_turn(question: str, constraint: str) -> str:
    """The first user turn of a dialogue."""
    return FIRST_TURN.format(question=question, constraint=constraint)


def observation(results: Sequence[tuple[str, str]]) -> str:
    """The user turn after a step: one "Here are ..." sentence per tool/RAG result, or the
    no-tool sentence. ``results`` holds (label, result text) pairs in the order they were chosen."""
    if not results:
        return NO_TOOL
    return " ".join(TOOL_RESULT.format(tool=label, result=text) for label, text in results) + CONTINUE


def final_turn(question: str) -> str:
    """The last user turn, asking for the bare answer."""
    return FINAL_TURN.format(question=question)


# ---- the project's own prompts ---------------------------------------------------------------

GENERATOR_PROMPT_VERSION = "gen-3"
# Each prompt is the exact text the model reads: a line break only where the text means one
# (before a list, a format example, a new paragraph), never from the width of this source file.
# tests/formats/test_prompt_text.py fails on a break inside a sentence.
GENERATOR_SYSTEM = (
    "You write step-by-step visual reasoning that a smaller model will learn from.\n"
    "You are shown an image, a question about it and, for your eyes only, the correct answer: {answer}\n"
    "Reason towards that answer one step at a time, as if you did not know it. Never state, quote or hint at the "
    "known answer before your reasoning has actually established it, never mention that an answer was given to you, "
    "and never use it as a reason for anything. If the evidence does not support it, say what is missing and "
    "gather more.\n"
    "\n"
    "At every step you may call operators that inspect the image{rag_intro}:\n"
    "{operators}\n"
    "{rag_line}"
    "Reply to every turn with one JSON object and nothing else:\n"
    '{{"thought": "<this step\'s reasoning>", "operators": [<zero or more operator names>], '
    '"rag": {{"needed": <true|false>, "query": <"search text" or null>}}, "next_action": "continue" | "final_answer"}}\n'
    'An operator that takes arguments may be written as {{"name": "<operator>", "args": {{...}}}} instead of its '
    "bare name. The results of the operators{rag_results} arrive in the next user message. Use them in your next "
    'thought. Choose "final_answer" once the reasoning is complete; you will then be asked for the answer alone.'
)
GENERATOR_RAG_LINE = "- rag: a text web search. Ask for it only when outside knowledge is needed, with a short query.\n"
GENERATOR_NO_RAG_LINE = "Web search is not available in this run: always set rag to {\"needed\": false, \"query\": null}.\n"

STEP_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "minLength": 1},
        "operators": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "object",
                        "properties": {"name": {"type": "string", "minLength": 1}, "args": {"type": "object"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                ]
            },
        },
        "rag": {
            "type": "object",
            "properties": {"needed": {"type": "boolean"}, "query": {"type": ["string", "null"]}},
            "required": ["needed", "query"],
            "additionalProperties": False,
        },
        "next_action": {"type": "string", "enum": ["continue", "final_answer"]},
    },
    "required": ["thought", "operators", "rag", "next_action"],
    "additionalProperties": False,
}

REPAIR_PROMPT = (
    "Your last reply was not a valid step: {error}. Reply again with exactly one JSON object with the "
    'keys "thought", "operators", "rag" and "next_action", and nothing else.'
)

ANSWER_REPAIR_PROMPT = "Your last reply cannot be used: {error}. Reply again with the answer alone, as plain text."


def operator_lines(tools: Sequence[ToolInfo], arguments: dict[str, str] | None = None) -> str:
    """One line per enabled operator, for the generator and RR system prompts. ``arguments``
    (generator prompt only) adds each tool's argument hint."""
    hints = arguments or {}
    lines = [f"- {tool.name}: {tool.description}" + (f" Arguments: {hints[tool.name]}." if hints.get(tool.name) else "")
             for tool in tools]
    return "\n".join(lines) or "- (no operators are enabled)"


def generator_system(answer: str, tools: Sequence[ToolInfo], rag_enabled: bool = True,
                     arguments: dict[str, str] | None = None) -> str:
    """The generator's system prompt for one sample; operators come from the run's enabled tools."""
    return GENERATOR_SYSTEM.format(
        answer=answer,
        operators=operator_lines(tools, arguments),
        rag_intro=", and you may search the web" if rag_enabled else "",
        rag_line=GENERATOR_RAG_LINE if rag_enabled else GENERATOR_NO_RAG_LINE,
        rag_results=" and of the search" if rag_enabled else "",
    )


RR_SYSTEM_VERSION = "rr-sys-2"
RR_SYSTEM = (
    "You are a visual assistant that answers questions about images by reasoning in steps and calling operators "
    "when they help. The operators available are:\n"
    "{operators}\n"
    "{rag}Write every step in this form:\n"
    "<THOUGHT>your reasoning</THOUGHT><OPERATOR>operator names, comma separated</OPERATOR><RAG>search query</RAG>"
    "<SIGNAL>continue</SIGNAL>\n"
    "Leave out <OPERATOR> when you call no operator and <RAG> when you need no search. The results come back in "
    "the next message. Use <SIGNAL>reflection</SIGNAL> to stop and re-check your reasoning, and <SIGNAL>end</SIGNAL> "
    "when the reasoning is complete. When asked for the answer, reply with the answer alone."
)
RR_RAG_LINE = "You can also search the web for outside knowledge: write the query in <RAG>.\n"


def rr_system(tools: Sequence[ToolInfo], rag_enabled: bool = True) -> str:
    """The RR system prompt; its operator list comes from the run's enabled tools."""
    return RR_SYSTEM.format(operators=operator_lines(tools), rag=RR_RAG_LINE if rag_enabled else "")


ORR_SYSTEM_VERSION = "orr-sys-2"
ORR_SYSTEM = (
    "You are a visual assistant. Answer the question about the image. The outputs of image operators may be given "
    "with the question; use them where they help. Reply in exactly this form: "
    "<THOUGHT>your reasoning</THOUGHT><ANSWER>The answer is: your answer</ANSWER>"
)

def orr_system() -> str:
    """The ORR system prompt."""
    return ORR_SYSTEM
