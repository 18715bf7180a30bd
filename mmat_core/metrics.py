"""Answer-matching metrics of the benchmarks mmat's sources come from, as pure functions.

Each metric takes the model's final answer and the accepted answers and returns a score in
[0, 1]; :func:`score_answer` picks the metric a sample calls for and applies it. Nothing here calls
a model or touches the disk, so every rule is unit-tested on tables of known cases.

=============  ==============================================================================
metric         rule
=============  ==============================================================================
``vqa``        VQA accuracy: min(annotators who gave the answer / 3, 1), averaged over the ten
               leave-one-annotator-out subsets as the official evaluation does, after the
               official normalisation (punctuation, number words, articles, contractions)
``anls``       Average Normalised Levenshtein Similarity (DocVQA, InfographicsVQA, ST-VQA):
               1 - distance / longer length, 0 when that is at or above the threshold (0.5)
``relaxed``    ChartQA relaxed accuracy: numbers within 5 % of the target, otherwise exact
``option``     the option letter of a multiple-choice question ("B", "(B)", "B.", "Option B",
               or the option's text)
``infoseek``   InfoSeek: strings exact after normalisation against any accepted variant;
               numbers inside the accepted ``range``, or within 10 % of a single number
``numeric``    numbers equal after TabMWP's normalisation ($ and commas dropped, fractions to
               decimals rounded to 3 places), with an optional relative tolerance
``exact``      normalised exact match (lower case, no punctuation, no articles), the fallback
=============  ==============================================================================
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmat_core.models import SourceSample

#: Canonical metric names.
METRICS = ("vqa", "anls", "relaxed", "option", "infoseek", "numeric", "exact")

#: Names a source may write in ``SourceSample.metric`` -> canonical metric.
METRIC_ALIASES: dict[str, str] = {
    "vqa": "vqa", "vqa_accuracy": "vqa", "vqa_soft": "vqa", "soft_accuracy": "vqa",
    "anls": "anls",
    "relaxed": "relaxed", "relaxed_accuracy": "relaxed", "chartqa": "relaxed",
    "option": "option", "option_letter": "option", "multiple_choice": "option", "mc": "option", "choice": "option",
    "infoseek": "infoseek",
    "numeric": "numeric", "number": "numeric", "tabmwp": "numeric",
    "exact": "exact", "exact_match": "exact", "em": "exact", "accuracy": "exact",
}

#: Source or sub-dataset names (lower case, letters and digits only) -> metric (SOURCES.md).
NAME_METRICS: dict[str, str] = {
    "vqav2": "vqa", "vqa": "vqa", "textvqa": "vqa", "okvqa": "vqa",
    "docvqa": "anls", "infographicsvqa": "anls", "infographicvqa": "anls", "stvqa": "anls",
    "chartqa": "relaxed",
    "infoseek": "infoseek",
    "tabmwp": "numeric", "clevrmath": "numeric",
}

#: ``SourceSample.task_type`` -> metric, used when no name above matches.
TASK_METRICS: dict[str, str] = {
    "vqa": "vqa",
    "docvqa": "anls", "document": "anls", "infographic": "anls", "scene_text": "anls",
    "chart": "relaxed",
    "multiple_choice": "option",
    "math": "numeric", "table": "numeric", "math_table": "numeric", "counting": "numeric",
    "knowledge": "infoseek",
}


@dataclass(frozen=True)
class MetricResult:
    """The score of one answer, the metric that gave it and the accepted answer it matched best."""

    metric: str
    score: float
    matched: str | None = None


# ---- normalisation ------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalise_text(text: str) -> str:
    """Lower case, punctuation removed, articles removed, single spaces (SQuAD/InfoSeek style)."""
    text = text.lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# Contractions written without their apostrophe, as annotators and models often do; the VQA
# evaluation puts the apostrophe back so "dont" and "don't" count as one answer.
_CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "isnt": "isn't",
    "im": "i'm", "ive": "i've", "itll": "it'll", "lets": "let's", "shouldnt": "shouldn't", "thats": "that's",
    "theres": "there's", "theyre": "they're", "wasnt": "wasn't", "werent": "weren't", "whats": "what's",
    "wont": "won't", "wouldnt": "wouldn't", "youre": "you're", "youve": "you've",
}
_VQA_PUNCT = ";/[]\"{}()=+\\_-><@`,?!*#%^&$|~:"
_DIGIT_COMMA = re.compile(r"(\d),(\d)")
_LONE_PERIOD = re.compile(r"\.(?!\d)")


def normalise_vqa(text: str) -> str:
    """The VQA evaluation's answer normalisation.

    Punctuation that touches a space (or any punctuation, when the text holds a digit-grouping
    comma) is deleted, other punctuation becomes a space; a period is kept only before a digit;
    number words become digits; articles go; common contractions regain their apostrophe.
    """
    text = " ".join(text.replace("\n", " ").replace("\t", " ").strip().lower().split())
    has_digit_comma = _DIGIT_COMMA.search(text) is not None
    for mark in _VQA_PUNCT:
        if f"{mark} " in text or f" {mark}" in text or has_digit_comma:
            text = text.replace(mark, "")
        else:
            text = text.replace(mark, " ")
    text = _LONE_PERIOD.sub("", text)
    words = []
    for word in text.split():
        word = _NUMBER_WORDS.get(word, word)
        if word in ("a", "an", "the"):
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


#: "The answer is: X", "Final answer - X", "Answer: X", "answer is X"; never "Answers" or "answering".
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is\b(?:\s*:)?|\s*:|\s+[-\u2013\u2014](?=\s))\s*",
                            re.IGNORECASE)


def clean_prediction(text: str | None) -> str:
    """The bare answer: a leading "The answer is:" and surrounding quotes or a final period removed.

    The prefix counts only when a separator follows "answer" (a colon, a dash, or "is"): answers
    that merely start with the word ("Answers", "answering machine") are kept whole.
    """
    text = (text or "").strip()
    text = _ANSWER_PREFIX.sub("", text, count=1)
    text = text.strip().strip("\"'`").strip()
    if text.endswith(".") and not re.search(r"\d\.$", text):
        text = text[:-1].rstrip()
    return text


# ---- numbers ------------------------------------------------------------------------------

_NUMBER_TOKEN = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+(?:\.\d+)?)?")


def parse_number(text: str) -> float | None:
    """The one number a short answer states, or None.

    Currency signs, digit-grouping commas, a trailing percent sign and trailing units are allowed
    ("$1,234.50", "73 mm", "3/4", "12%"); an answer with several numbers or none gives None.
    A percentage stays in percent ("12%" -> 12.0).
    """
    text = text.strip().replace("\u2212", "-")
    tokens = _NUMBER_TOKEN.findall(text)
    if len(tokens) != 1:
        return None
    token = tokens[0]
    before = text[: text.find(token)].strip()
    if before not in ("", "$", "€", "£", "¥", "~", "about", "approximately"):
        return None
    token = token.replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            return float(numerator) / float(denominator) if float(denominator) else None
        return float(token)
    except ValueError:
        return None


def _close(value: float, target: float, rel_tol: float) -> bool:
    if target == 0:
        return value == 0  # no relative tolerance around zero (as ChartQA's evaluation)
    return abs(value - target) / abs(target) <= rel_tol


# ---- metrics ------------------------------------------------------------------------------


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised answer (or both state the same number)."""
    predicted = normalise_text(prediction)
    number = parse_number(prediction)
    for answer in answers:
        if predicted == normalise_text(answer):
            return 1.0
        target = parse_number(answer)
        if number is not None and target is not None and round(number, 6) == round(target, 6):
            return 1.0
    return 0.0


def vqa_accuracy(prediction: str, annotator_answers: Sequence[str]) -> float:
    """VQA accuracy over annotator answers (10 in VQAv2, TextVQA and OK-VQA).

    For each annotator left out, the prediction scores min(matches among the others / 3, 1); the
    result is the mean. A prediction given by three or more of the ten scores 1.0, by two 0.6,
    by one 0.3.
    """
    predicted = normalise_vqa(prediction)
    given = [normalise_vqa(a) for a in annotator_answers]
    if not given:
        return 0.0
    if len(given) == 1:
        return 1.0 if predicted == given[0] else 0.0
    total = 0.0
    for left_out in range(len(given)):
        matches = sum(1 for i, answer in enumerate(given) if i != left_out and answer == predicted)
        total += min(matches / 3, 1.0)
    return total / len(given)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS of one question: the best 1 - normalised edit distance over the answers, where a
    distance at or above ``threshold`` scores 0. Comparison ignores case and extra spaces."""
    predicted = " ".join(prediction.strip().lower().split())
    best = 0.0
    for answer in answers:
        target = " ".join(answer.strip().lower().split())
        longest = max(len(predicted), len(target))
        distance = levenshtein(predicted, target) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _chart_number(text: str) -> float | None:
    text = text.strip()
    if text.endswith("%"):
        value = parse_number(text[:-1])
        return value / 100 if value is not None else None
    return parse_number(text)


def relaxed_accuracy(prediction: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """ChartQA's relaxed accuracy: 1.0 when a numeric prediction is within ``tolerance`` (relative)
    of a numeric answer, otherwise case-insensitive exact match. Percentages compare as fractions."""
    predicted_number = _chart_number(prediction)
    for answer in answers:
        target = _chart_number(answer)
        if predicted_number is not None and target is not None:
            if _close(predicted_number, target, tolerance):
                return 1.0
        elif prediction.strip().lower() == answer.strip().lower():
            return 1.0
    return 0.0


_LETTER_ONLY = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:)]?$")
_LETTER_PREFIX = re.compile(r"^(?:option|choice|answer)?\s*[:\-]?\s*\(?([A-Za-z])\)?\s*[.:)]\s+\S", re.IGNORECASE)
_LETTER_NAMED = re.compile(r"^(?:option|choice)\s*[:\-]?\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE)


def option_letter(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The option letter a reply picks: "B", "(B)", "B.", "B) Cherry", "Option B", or the text of
    an option when ``choices`` are known. None when the reply names no option."""
    text = clean_prediction(text)
    letter = None
    for pattern in (_LETTER_ONLY, _LETTER_NAMED, _LETTER_PREFIX):
        found = pattern.match(text)
        if found:
            letter = found.group(1).upper()
            break
    if letter is None and choices:
        wanted = normalise_text(text)
        for index, choice in enumerate(choices):
            if wanted and wanted == normalise_text(choice):
                letter = chr(ord("A") + index)
                break
    if letter is not None and choices and ord(letter) - ord("A") >= len(choices):
        return None
    return letter


def option_match(prediction: str, answers: Sequence[str], choices: Sequence[str] | None = None) -> float:
    """1.0 when the prediction picks the option that an accepted answer names (letter or text)."""
    picked = option_letter(prediction, choices)
    if picked is None:
        return 0.0
    return 1.0 if any(option_letter(answer, choices) == picked for answer in answers) else 0.0


def infoseek_match(prediction: str, answer_eval: Sequence[Any], tolerance: float = 0.1) -> float:
    """InfoSeek: 1.0 when the prediction matches an accepted variant.

    String variants match after normalisation. A numeric variant is a dict with ``range``
    ([low, high], inclusive) or a single number (``wikidata``, or a numeric string), which the
    prediction must fall within ``tolerance`` (10 %) of.
    """
    predicted = normalise_text(prediction)
    number = parse_number(prediction)
    for variant in answer_eval:
        if isinstance(variant, dict):
            bounds = variant.get("range")
            if number is None:
                continue
            if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                low, high = sorted(float(b) for b in bounds)
                if low <= number <= high:
                    return 1.0
            elif isinstance(variant.get("wikidata"), (int, float)) and _close(number, float(variant["wikidata"]), tolerance):
                return 1.0
            continue
        variant_text = str(variant)
        if predicted and predicted == normalise_text(variant_text):
            return 1.0
        target = parse_number(variant_text)
        if number is not None and target is not None and _close(number, target, tolerance):
            return 1.0
    return 0.0


def numeric_match(prediction: str, answers: Sequence[str], tolerance: float = 0.0) -> float:
    """TabMWP-style numbers: equal after rounding to 3 decimals, or within ``tolerance`` (relative).
    Answers that are not numbers fall back to :func:`exact_match`."""
    number = parse_number(prediction)
    for answer in answers:
        target = parse_number(answer)
        if target is None:
            if exact_match(prediction, [answer]):
                return 1.0
            continue
        if number is None:
            continue
        if round(number, 3) == round(target, 3) or (tolerance and _close(number, target, tolerance)):
            return 1.0
    return 0.0


# ---- choosing and applying a metric --------------------------------------------------------


def _key(name: str | None) -> str:
    return re.sub(r"[^0-9a-z]+", "", (name or "").lower())


def canonical_metric(name: str) -> str | None:
    """The canonical name of a metric name or alias, or None when unknown."""
    return METRIC_ALIASES.get(name.strip().lower().replace("-", "_"))


def choose_metric(sample: SourceSample) -> str:
    """The metric a sample is scored with: its explicit ``metric``; else option letters when it has
    choices; else the metric of its sub-dataset or source name; else of its task type; else exact.

    Raises ValueError for an explicit metric that is unknown."""
    if sample.metric:
        metric = canonical_metric(sample.metric)
        if metric is None:
            raise ValueError(f"unknown metric {sample.metric!r}; allowed: {', '.join(sorted(METRIC_ALIASES))}")
        return metric
    if sample.choices:
        return "option"
    for name in (sample.subset, sample.source):
        metric = NAME_METRICS.get(_key(name))
        if metric:
            return metric
    return TASK_METRICS.get(sample.task_type, "exact")


@dataclass(frozen=True)
class MetricSettings:
    """Tunable constants of the metrics (defaults are the benchmarks' own)."""

    anls_threshold: float = 0.5
    relaxed_tolerance: float = 0.05
    numeric_tolerance: float = 0.0
    infoseek_tolerance: float = 0.1


def score_answer(prediction: str | None, sample: SourceSample, metric: str | None = None,
                 settings: MetricSettings | None = None) -> MetricResult:
    """Score a final answer against a sample's accepted answers with ``metric`` (or the sample's own).

    Annotator answers for VQA accuracy come from ``sample.meta["annotator_answers"]``, or from
    ``sample.answers`` when it holds ten or more (a full annotation); fewer answers are accepted
    variants, each worth 1.0. InfoSeek's variants come from ``sample.meta["answer_eval"]``.
    """
    settings = settings or MetricSettings()
    chosen = canonical_metric(metric) if metric else choose_metric(sample)
    if chosen is None:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(sorted(METRIC_ALIASES))}")
    predicted = clean_prediction(prediction)
    answers = list(sample.answers)

    def best(score_one: Any) -> MetricResult:
        scored = [(score_one(answer), answer) for answer in answers]
        score, answer = max(scored, key=lambda pair: pair[0])
        return MetricResult(chosen, score, answer if score > 0 else None)

    if chosen == "vqa":
        annotators = sample.meta.get("annotator_answers")
        if isinstance(annotators, list) and annotators:
            score = vqa_accuracy(predicted, [str(a) for a in annotators])
            return MetricResult(chosen, score, predicted if score > 0 else None)
        if len(answers) >= 10:
            score = vqa_accuracy(predicted, answers)
            return MetricResult(chosen, score, predicted if score > 0 else None)
        return best(lambda answer: 1.0 if normalise_vqa(predicted) == normalise_vqa(answer) else 0.0)
    if chosen == "anls":
        return best(lambda answer: anls(predicted, [answer], settings.anls_threshold))
    if chosen == "relaxed":
        return best(lambda answer: relaxed_accuracy(predicted, [answer], settings.relaxed_tolerance))
    if chosen == "option":
        return best(lambda answer: option_match(predicted, [answer], sample.choices))
    if chosen == "infoseek":
        variants = sample.meta.get("answer_eval")
        variants = variants if isinstance(variants, list) and variants else answers
        score = infoseek_match(predicted, variants, settings.infoseek_tolerance)
        return MetricResult(chosen, score, answers[0] if score else None)
    if chosen == "numeric":
        return best(lambda answer: numeric_match(predicted, [answer], settings.numeric_tolerance))
    return best(lambda answer: exact_match(predicted, [answer]))
