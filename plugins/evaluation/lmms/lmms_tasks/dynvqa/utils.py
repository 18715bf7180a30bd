"""Dyn-VQA as an lmms-eval task: documents, prompt and the F1-Recall metric.

lmms-eval imports this file by path (``!function utils.NAME`` in the task YAMLs), inside its own
environment, so it imports nothing from mmat: only the standard library and Pillow.

F1-Recall (the metric Dyn-VQA reports, Li et al. 2024, arXiv 2411.02937; named "token F1-Recall"
in the OmniSearch repository's README): the share of a reference answer's tokens that the model's
response contains, i.e. the recall half of SQuAD-style token F1. A long response is not punished
for its extra words, which suits the agents' verbose answers. Dyn-VQA gives several reference
answers per question (English and Chinese phrasings); a response scores the best of them.
Normalisation follows SQuAD's answer normalisation (lower case, punctuation and English articles
removed); Chinese text, which has no spaces, counts each character as a token. See
docs/evaluation.md for what is and is not taken from the original script.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Any

#: Characters of the CJK ideograph blocks: each is a token of its own.
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    """Lower case, punctuation (ASCII and Unicode P* classes) and English articles removed, spaces collapsed."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = "".join(" " if ch in _PUNCTUATION or unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """The normalised text's tokens: words, and single CJK characters."""
    return _TOKEN.findall(normalize(text))


def token_recall(response: str, reference: str) -> float:
    """Share of the reference's tokens found in the response (multiset overlap / reference length)."""
    wanted = tokens(reference)
    if not wanted:
        return 0.0
    common = Counter(tokens(response)) & Counter(wanted)
    return sum(common.values()) / len(wanted)


def f1_recall(response: str, references: list[Any]) -> float:
    """F1-Recall of one response: the best token recall over the reference answers (0.0 without any)."""
    return max((token_recall(response, str(ref)) for ref in references), default=0.0)


def dynvqa_doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """The question's image, read from the path mmat wrote when it prepared the released file."""
    from PIL import Image

    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def _text(doc: dict[str, Any], field: str, kwargs: dict[str, Any] | None) -> str:
    kwargs = kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc[field]}{kwargs.get('post_prompt', '')}"


def dynvqa_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question as the user asked it (refers to the image: 'When did he ...')."""
    return _text(doc, "question", lmms_eval_specific_kwargs)


def dynvqa_golden_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The golden query: the question rewritten with the entity named (the released key is ``gloden_query``)."""
    return _text(doc, "gloden_query", lmms_eval_specific_kwargs)


def dynvqa_doc_to_target(doc: dict[str, Any]) -> str:
    """The first reference answer (shown in logs; the metric uses them all)."""
    return str(doc["answer"][0]) if doc["answer"] else ""


def dynvqa_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """F1-Recall of the model's response against every reference answer."""
    return {"f1_recall": f1_recall(results[0] if results else "", list(doc["answer"]))}
