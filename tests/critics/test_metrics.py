"""answer_match's metrics on tables of known cases from the benchmarks' own definitions."""

from __future__ import annotations

import pytest

from mmat_core.models import SourceSample
from mmat_plugins.critics.metrics import (
    anls,
    choose_metric,
    clean_prediction,
    exact_match,
    infoseek_match,
    normalise_vqa,
    numeric_match,
    option_letter,
    option_match,
    parse_number,
    relaxed_accuracy,
    score_answer,
    vqa_accuracy,
)


def sample(**fields: object) -> SourceSample:
    base: dict = {"id": "s/1", "source": "test", "question": "q?", "answers": ["x"]}
    base.update(fields)
    return SourceSample(**base)


# ---- VQA accuracy (VQAv2 / TextVQA / OK-VQA) ------------------------------------------------

TEN = ["2"] * 3 + ["3"] * 7


@pytest.mark.parametrize(("prediction", "annotators", "expected"), [
    ("2", ["2"] * 3 + ["3"] * 7, 0.9),       # three of ten: 1.0 on 7 subsets, 2/3 on 3 -> 0.9
    ("2", ["2"] * 4 + ["3"] * 6, 1.0),       # four or more of ten always reach 3 matches
    ("2", ["2"] * 2 + ["3"] * 8, 0.6),
    ("2", ["2"] + ["3"] * 9, 0.3),
    ("4", TEN, 0.0),
    ("two", ["2"] * 4 + ["3"] * 6, 1.0),      # number words become digits
    ("Yes.", ["yes"] * 10, 1.0),              # case and a final period do not matter
])
def test_vqa_accuracy_counts_matching_annotators(prediction: str, annotators: list[str], expected: float) -> None:
    assert vqa_accuracy(prediction, annotators) == pytest.approx(expected)


@pytest.mark.parametrize(("raw", "normalised"), [
    ("The Dog", "dog"),
    ("a red car", "red car"),
    ("dont", "don't"),
    ("1,000", "1000"),
    ("3.5", "3.5"),
    ("black and white.", "black and white"),
    ("t-shirt", "t shirt"),
    ("ten", "10"),
])
def test_vqa_normalisation_follows_the_official_rules(raw: str, normalised: str) -> None:
    assert normalise_vqa(raw) == normalised


# ---- ANLS (DocVQA, InfographicsVQA, ST-VQA) --------------------------------------------------

@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    ("Lisbon", ["lisbon"], 1.0),                      # case-insensitive
    ("  Lisbon  ", ["Lisbon"], 1.0),                  # surrounding spaces ignored
    ("Lisbn", ["Lisbon"], 1 - 1 / 6),                 # one deletion out of six characters
    ("Paris", ["Lisbon"], 0.0),                       # distance 1.0 is past the threshold
    ("abc", ["abcdef"], 0.0),                         # distance exactly 0.5 scores 0
    ("abcd", ["abcdef"], 1 - 2 / 6),                  # distance 0.33 keeps its similarity
    ("INV-2041", ["INV-20417", "20417"], 1 - 1 / 9),  # the best of several answers
])
def test_anls_scores_normalised_edit_similarity(prediction: str, answers: list[str], expected: float) -> None:
    assert anls(prediction, answers) == pytest.approx(expected)


def test_anls_threshold_is_configurable() -> None:
    assert anls("abc", ["abcdef"], threshold=0.6) == pytest.approx(0.5)


# ---- relaxed accuracy (ChartQA) --------------------------------------------------------------

@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    ("10.4", ["10"], 1.0),
    ("10.5", ["10"], 1.0),        # exactly 5 % away
    ("10.6", ["10"], 0.0),
    ("9.5", ["10"], 1.0),
    ("12%", ["0.12"], 1.0),       # percentages compare as fractions
    ("1,200", ["1210"], 1.0),     # digit-grouping commas
    ("April", ["april"], 1.0),    # text: exact, ignoring case
    ("Apr", ["April"], 0.0),
    ("0", ["0"], 1.0),
    ("0.01", ["0"], 0.0),         # zero target: only exact
])
def test_relaxed_accuracy_allows_five_percent_on_numbers(prediction: str, answers: list[str], expected: float) -> None:
    assert relaxed_accuracy(prediction, answers) == expected


# ---- multiple choice -------------------------------------------------------------------------

CHOICES = ["Apple", "Banana", "Cherry", "Mango"]


@pytest.mark.parametrize(("reply", "letter"), [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B)", "B"), ("Option B", "B"), ("option b", "B"),
    ("Choice: B", "B"), ("B. Banana", "B"), ("(B) Banana", "B"), ("The answer is B", "B"),
    ("Banana", "B"), ("banana.", "B"), ("E", None), ("Kiwi", None), ("", None),
])
def test_option_letter_reads_the_usual_forms(reply: str, letter: str | None) -> None:
    assert option_letter(reply, CHOICES) == letter


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    ("C", ["C"], 1.0),
    ("Cherry", ["C"], 1.0),       # the option's text counts as its letter
    ("(C)", ["Cherry"], 1.0),     # and an answer given as text matches the letter
    ("B", ["C"], 0.0),
    ("Mango", ["C", "Cherry"], 0.0),
])
def test_option_match_compares_letters(prediction: str, answers: list[str], expected: float) -> None:
    assert option_match(prediction, answers, CHOICES) == expected


# ---- InfoSeek --------------------------------------------------------------------------------

RANGE = [{"wikidata": 1.0, "range": [0.9, 1.1]}]


@pytest.mark.parametrize(("prediction", "variants", "expected"), [
    ("1.05", RANGE, 1.0),
    ("0.9", RANGE, 1.0),                      # the range is inclusive
    ("1.2", RANGE, 0.0),
    ("about 1 metre", RANGE, 1.0),
    ("1,000", [{"wikidata": 1050.0}], 1.0),    # a single number: within 10 %
    ("900", [{"wikidata": 1050.0}], 0.0),
    ("The Eiffel Tower", ["Eiffel Tower", "Tour Eiffel"], 1.0),  # articles and case dropped
    ("tour eiffel!", ["Eiffel Tower", "Tour Eiffel"], 1.0),
    ("Louvre", ["Eiffel Tower"], 0.0),
    ("1889", ["1889"], 1.0),
])
def test_infoseek_accepts_variants_and_numeric_ranges(prediction: str, variants: list, expected: float) -> None:
    assert infoseek_match(prediction, variants) == expected


# ---- numbers, exact match and cleaning ---------------------------------------------------------

@pytest.mark.parametrize(("text", "number"), [
    ("42", 42.0), ("$1,234.50", 1234.5), ("3/4", 0.75), ("-2", -2.0), ("73 mm", 73.0), ("12%", 12.0),
    ("Room 305", None), ("2020-05-01", None), ("three", None), ("1 and 2", None),
])
def test_parse_number_reads_one_stated_number(text: str, number: float | None) -> None:
    assert parse_number(text) == number


@pytest.mark.parametrize(("prediction", "answers", "tolerance", "expected"), [
    ("$15.25", ["15.25"], 0.0, 1.0),       # TabMWP strips $ and commas
    ("1,000", ["1000"], 0.0, 1.0),
    ("0.333", ["1/3"], 0.0, 1.0),          # fractions to decimals rounded to 3 places
    ("0.33", ["1/3"], 0.0, 0.0),
    ("0.33", ["1/3"], 0.02, 1.0),          # within a configured relative tolerance
    ("Tuesday", ["Tuesday"], 0.0, 1.0),    # non-numeric answers: exact
    ("27 books", ["27"], 0.0, 1.0),
])
def test_numeric_match_follows_tabmwp(prediction: str, answers: list[str], tolerance: float, expected: float) -> None:
    assert numeric_match(prediction, answers, tolerance) == expected


@pytest.mark.parametrize(("prediction", "answers", "expected"), [
    ("The cat.", ["cat"], 1.0), ("CAT", ["a cat"], 1.0), ("3.0", ["3"], 1.0), ("dog", ["cat"], 0.0),
])
def test_exact_match_normalises(prediction: str, answers: list[str], expected: float) -> None:
    assert exact_match(prediction, answers) == expected


@pytest.mark.parametrize(("raw", "clean"), [
    ("The answer is: 35", "35"), ("Answer: California.", "California"), ('"C"', "C"), ("3.", "3."), ("  B  ", "B"),
])
def test_clean_prediction_strips_answer_prefixes(raw: str, clean: str) -> None:
    assert clean_prediction(raw) == clean


@pytest.mark.parametrize(("raw", "clean"), [
    ("Answers", "Answers"),                      # VQA: a word that starts with "answer" is an answer
    ("answering machine", "answering machine"),
    ("answer", "answer"),
    ("Answer: B", "B"),                          # multiple choice
    ("The answer is 35", "35"),
    ("Final answer - 12", "12"),
    ("The answer is -3", "-3"),                  # a minus sign is not a separator
    ("answer is yes", "yes"),
    ("$1,234", "$1,234"),                        # TabMWP money
    ("3/4", "3/4"),                              # TabMWP fractions
    ("17.5", "17.5"),                            # ChartQA numbers
    ("INV-20417", "INV-20417"),                  # DocVQA strings
    ("Eiffel Tower", "Eiffel Tower"),            # InfoSeek entities
])
def test_clean_prediction_keeps_answers_that_only_start_with_the_word(raw: str, clean: str) -> None:
    assert clean_prediction(raw) == clean


@pytest.mark.parametrize(("prediction", "fields"), [
    ("Answers", {"answers": ["answers"], "source": "vqav2"}),
    ("answering machine", {"answers": ["answering machine"], "source": "vqav2"}),
    ("The answer is 2", {"answers": ["2"], "source": "vqav2"}),
    ("Answer: 17.5", {"answers": ["17.5"], "source": "llava_cot", "subset": "ChartQA"}),
    ("answer key", {"answers": ["Answer key"], "task_type": "docvqa"}),
    ("The answer is $1,234", {"answers": ["1234"], "source": "tabmwp"}),
    ("3/4", {"answers": ["0.75"], "source": "tabmwp"}),
    ("Answer: B", {"answers": ["B"], "choices": ["12", "15"], "source": "tabmwp"}),
    ("Answerville", {"answers": ["Answerville"], "source": "infoseek", "meta": {"answer_eval": ["Answerville"]}}),
])
def test_real_answers_of_each_source_match_themselves(prediction: str, fields: dict) -> None:
    assert score_answer(prediction, sample(**fields)).score == 1.0


# ---- choosing the metric -----------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "metric"), [
    ({"metric": "anls"}, "anls"),
    ({"metric": "relaxed_accuracy", "choices": ["a", "b"]}, "relaxed"),   # explicit wins over choices
    ({"choices": ["a", "b"], "source": "tabmwp"}, "option"),
    ({"source": "the_cauldron", "subset": "st_vqa"}, "anls"),
    ({"source": "llava_cot", "subset": "ChartQA"}, "relaxed"),
    ({"source": "visual_cot", "subset": "InfographicsVQA"}, "anls"),
    ({"source": "infoseek"}, "infoseek"),
    ({"source": "tabmwp"}, "numeric"),
    ({"source": "vqav2"}, "vqa"),
    ({"task_type": "docvqa"}, "anls"),
    ({"task_type": "chart"}, "relaxed"),
    ({"task_type": "math"}, "numeric"),
    ({"task_type": "caption"}, "exact"),
])
def test_choose_metric_uses_metric_then_choices_then_names_then_task(fields: dict, metric: str) -> None:
    assert choose_metric(sample(**fields)) == metric


def test_an_unknown_explicit_metric_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown metric 'bleu'; allowed: .*anls"):
        choose_metric(sample(metric="bleu"))


def test_vqa_uses_annotator_answers_from_meta() -> None:
    annotated = sample(answers=["2"], meta={"annotator_answers": ["2", "2", "3", "3", "3", "3", "3", "3", "3", "3"]})
    assert score_answer("2", annotated, "vqa").score == pytest.approx(0.6)


def test_vqa_with_a_few_accepted_answers_treats_each_as_correct() -> None:
    assert score_answer("a cat", sample(answers=["cat", "tabby cat"]), "vqa").score == 1.0


def test_infoseek_reads_answer_eval_from_meta() -> None:
    infoseek = sample(source="infoseek", answers=["1.0"], meta={"answer_eval": RANGE})
    assert score_answer("1.08", infoseek).score == 1.0
    assert score_answer("1.3", infoseek).score == 0.0


def test_score_answer_reports_the_matched_answer() -> None:
    result = score_answer("INV-20417", sample(answers=["20417", "INV-20417"], task_type="docvqa"))
    assert (result.metric, result.score, result.matched) == ("anls", 1.0, "INV-20417")
