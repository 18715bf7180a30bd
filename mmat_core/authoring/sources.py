"""Helpers for writing a source: options, turning raw records into SourceSample objects, resolving
and checking images, response-style constraints and sub-dataset names.

Every built-in source is written with them, and so can a third party's (all are importable from
:mod:`mmat_core`). A source subclasses :class:`RecordSource` and writes two methods:

* ``iter_records()`` yields ``(row_ref, subset, record)`` from a streaming reader; a record that
  could not be read arrives as a :class:`~mmat_core.errors.RowError` in place of the record;
* ``normalise(row_ref, subset, record)`` returns the samples of one record (one per QA pair),
  raising :class:`~mmat_core.errors.RowError` (or :class:`~mmat_core.images.ImageError`) for a bad row.

:meth:`RecordSource.iter_rows` joins the two and turns every failure into a
:class:`~mmat_core.models.Rejected` row with a reason, so no bad row ever stops a run.
"""

from __future__ import annotations

import difflib
import re
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from mmat_core import prompts
from mmat_core.components import ComponentOptions, Source, SubsetPlan
from mmat_core.errors import ConfigError, MmatError, RowError
from mmat_core.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_READ_TIMEOUT_S,
    ImageError,
    ImageStore,
    image_ref_from_bytes,
    image_ref_from_file,
    resolve_within,
)
from mmat_core.models import ImageRef, Rejected, SourceSample

ConstraintMode = Literal["auto", "none", "short", "word_or_phrase", "option_letter"]
SourceRecord = Mapping[str, Any]
RecordItem = tuple[str, str | None, "SourceRecord | RowError"]

#: Suffixes as SourceSample.constraint stores them: separator first, then the exact text.
CONSTRAINT_SUFFIX = {key: "\n" + text for key, text in prompts.RESPONSE_CONSTRAINTS.items()}
#: An answer of at most this many words gets "single word or phrase"; up to SHORT_WORDS, "short".
PHRASE_WORDS = 3
SHORT_WORDS = 10

# Answer instructions that some collections already put at the end of the question. They are
# removed so the sample carries the paper's constraint once, in the paper's words.
_TRAILING_INSTRUCTION = re.compile(
    r"\s*(?:answer with (?:the )?(?:option'?s? )?letter[^\n]*|answer the question using a single word or phrase\.?"
    r"|give a short answer\.?|answer (?:briefly|in a word)\.?|short answer\.?)\s*$",
    re.IGNORECASE,
)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.+?)\s*$")
_CHOICES_HEADER = re.compile(r"^\s*(?:choices|options)\s*:?\s*(.*)$", re.IGNORECASE)
_LETTER_ANSWER = re.compile(r"^\s*(?:[Aa]nswer\s*:\s*)?\(?([A-Z])\)?(?:[.):]\s.*|[.):]?)\s*$", re.DOTALL)
_ANSWER_PREFIX = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)
_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


# ---- options ---------------------------------------------------------------------------------


class SourceOptions(ComponentOptions):
    """Options every built-in source accepts."""

    limit: int | None = Field(None, ge=0, description="stop after this many samples (before curation)")
    check_images: bool = Field(True, description="decode each image once; rows whose image fails are quarantined")
    constraint: ConstraintMode = Field(
        "auto", description="response-style constraint: auto (by rule), none, or force one of short, word_or_phrase, option_letter"
    )
    licence: str | None = Field(None, description="override the licence carried into provenance")
    image_cache: int = Field(4096, ge=0, description="image references remembered by path (dialogues share images)")
    later_turns: Literal["context", "skip"] = Field(
        "context", description="a dialogue's turns after the first: context (earlier Q/A pairs go before the question, "
        "see docs/sources.md) or skip (quarantined as later_turn_skipped)"
    )


class SingleSetOptions(SourceOptions):
    """Options of collections without sub-datasets (TabMWP, InfoSeek): the paper's count, a cap, a share."""

    mix: Literal["all", "paper"] = Field("all", description="paper: the paper's question count as the quota; all: every row")
    quota: int | None = Field(None, ge=0, description="most questions kept (after curation)")
    ratio: float | None = Field(None, gt=0, le=1, description="share of questions kept (seeded)")


class QuotaOptions(SourceOptions):
    """Options of sources with sub-datasets: which ones, and how many of each."""

    subset: str | None = Field(None, description="read only this sub-dataset")
    subsets: list[str] | None = Field(None, description="read only these sub-datasets")
    mix: Literal["all", "paper"] = Field(
        "all", description="paper: the paper's sub-datasets with its dialogue counts as quotas; all: every row"
    )
    quotas: dict[str, int] = Field(default_factory=dict, description="sub-dataset -> most dialogues kept (after curation)")
    ratios: dict[str, float] = Field(default_factory=dict, description="sub-dataset -> share of dialogues kept (seeded)")


# ---- pure helpers ----------------------------------------------------------------------------


def check_names(given: Iterable[str], valid: Sequence[str], what: str, key: str) -> None:
    """Raise ConfigError for the first name not in ``valid``, with a suggestion and the list."""
    for name in given:
        if name not in valid:
            guess = difflib.get_close_matches(name, list(valid), n=1)
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            raise ConfigError(f"unknown {what} '{name}'.{hint} Valid: {', '.join(valid)}", key=key)


def choose_constraint(answer: str, has_choices: bool, mode: ConstraintMode = "auto") -> str:
    """The constraint suffix for a QA pair: by rule in ``auto`` mode (option letter for multiple
    choice, single word or phrase up to three words, short answer up to ten, none for long answers)."""
    if mode == "none":
        return ""
    if mode != "auto":
        return CONSTRAINT_SUFFIX[mode]
    if has_choices:
        return CONSTRAINT_SUFFIX["option_letter"]
    words = len(answer.split())
    if words <= PHRASE_WORDS:
        return CONSTRAINT_SUFFIX["word_or_phrase"]
    if words <= SHORT_WORDS:
        return CONSTRAINT_SUFFIX["short"]
    return ""


def strip_instruction(question: str) -> str:
    """The question without a trailing answer-style instruction the collection added."""
    # The regex is tried only when the end of the question can hold an instruction: scanning every
    # question with it was the largest cost of the hot path.
    tail = question[-90:].lower()
    if "answer" not in tail:
        return question
    return _TRAILING_INSTRUCTION.sub("", question)


def strip_image_tokens(text: str) -> str:
    """Remove LLaVA's ``<image>`` placeholders (the image travels as a reference instead)."""
    return _IMAGE_TOKEN.sub("\n", text).strip() if "<image>" in text else text.strip()


def parse_choices(question: str) -> list[str] | None:
    """Options listed as ``A. text`` lines (after ``Choices:`` / ``Options:`` or not), or None."""
    if "\n" not in question:
        return None
    choices: list[str] = []
    for line in question.splitlines():
        header = _CHOICES_HEADER.match(line)
        if header and not choices:
            line = header.group(1)
            if not line:
                continue
        match = _CHOICE_LINE.match(line)
        if match and ord(match.group(1)) - 65 == len(choices):
            choices.append(match.group(2))
        elif choices:
            break
    return choices if len(choices) >= 2 else None


def letter_answer(answer: str, choices: Sequence[str] | None) -> str | None:
    """The option letter an answer names (``B``, ``(B)``, ``Answer: B``, ``B. text``), or the letter of
    the option whose text equals the answer; None when it names none."""
    if not choices:
        return None
    match = _LETTER_ANSWER.match(answer)
    if match and ord(match.group(1)) - 65 < len(choices):
        return match.group(1)
    lowered = answer.strip().lower()
    for index, choice in enumerate(choices):
        if choice.strip().lower() == lowered:
            return chr(65 + index)
    return None


def option_answers(answer: str, choices: Sequence[str] | None) -> tuple[list[str], bool] | None:
    """The accepted answers of a multiple-choice turn, and whether its label is an option letter;
    None when the answer names no option.

    The dataset's answer stays first, unchanged (MMAT-SPEC: "the answer is kept unchanged"): a
    label given as a letter (``B``, ``(B)``, ``Answer: B``) is the letter, and the constraint asks
    for a letter; a label given as the option's text (``atlas``) stays the text, its letter is
    only an accepted variant, and the constraint does not ask for a letter."""
    letter = letter_answer(answer, choices)
    if letter is None:
        return None
    text = answer.strip()
    if _LETTER_ANSWER.match(text):
        return ([letter, text] if text != letter and not _ANSWER_PREFIX.match(text) else [letter]), True
    return [text, letter], False


def strip_answer_prefix(answer: str) -> str:
    """``Answer: 42`` -> ``42`` (The Cauldron writes answers this way)."""
    return _ANSWER_PREFIX.sub("", answer, count=1).strip() if answer[:7].lower() == "answer:" else answer.strip()


def text_field(record: SourceRecord, key: str, *, required: bool = True) -> str | None:
    """A string field, or RowError naming the field when it is missing or not a string."""
    value = record.get(key)
    if value is None:
        if required:
            raise RowError("missing_field", key)
        return None
    if not isinstance(value, str):
        raise RowError("field_type", f"{key} must be a string, got {type(value).__name__}")
    return value


def answers_field(value: Any, key: str) -> list[str]:
    """Accepted answers from a string, a number or a list of them."""
    if value is None:
        raise RowError("missing_field", key)
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list):
        raise RowError("field_type", f"{key} must be a string or a list of strings, got {type(value).__name__}")
    answers = []
    for item in value:
        if isinstance(item, (str, int, float)) and not isinstance(item, bool):
            text = str(item).strip()
            if text:
                answers.append(text)
        else:
            raise RowError("field_type", f"{key} holds a {type(item).__name__}, expected strings")
    if not answers:
        raise RowError("empty_answer", key)
    return answers


def row_key(ref: str) -> str:
    """The row identity inside a row reference (``file.jsonl:12`` -> ``12``, ``f.json#pid`` -> ``pid``)."""
    for mark in ("#", ":", "["):
        if mark in ref:
            return ref.rsplit(mark, 1)[1].rstrip("]")
    return ref


#: How earlier turns of a dialogue are written before a later turn's question (``later_turns: context``).
CONTEXT_HEADER = "Earlier in this conversation about the image:"
CONTEXT_QUESTION = "Now answer this follow-up question: "


def with_context(question: str, earlier: Sequence[tuple[str, str]]) -> str:
    """A later turn's question with the dialogue's earlier (question, answer) pairs before it, so
    that "And in 2019?" keeps what it refers to. The first turn (no earlier pairs) is unchanged."""
    if not earlier:
        return question
    lines = [CONTEXT_HEADER]
    for asked, answered in earlier:
        lines.append(f"Q: {asked.strip()}")
        lines.append(f"A: {answered.strip()}")
    return "\n".join(lines) + "\n\n" + CONTEXT_QUESTION + question.strip()


def dialogue_turns(turns: Any, *, role_key: str = "from", content_key: str = "value",
                   user_roles: Sequence[str] = ("human", "user"),
                   assistant_roles: Sequence[str] = ("gpt", "assistant")) -> list[tuple[str, str]]:
    """(question, answer) pairs of a conversation: each user turn with the assistant turn after it."""
    if not isinstance(turns, list):
        raise RowError("field_type", f"conversation must be a list, got {type(turns).__name__}")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in turns:
        if not isinstance(turn, dict):
            raise RowError("field_type", "a conversation turn is not an object")
        role = turn.get(role_key)
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise RowError("field_type", f"turn {content_key} must be a string, got {type(content).__name__}")
        if role in user_roles:
            pending = content
        elif role in assistant_roles:
            if pending is None:
                continue  # an assistant turn with no question before it (a system greeting)
            pairs.append((pending, content))
            pending = None
        elif role == "system":
            continue
        else:
            raise RowError("field_type", f"unknown role {role!r} (expected {', '.join((*user_roles, *assistant_roles))})")
    if not pairs:
        raise RowError("no_qa_pair", "no user turn followed by an assistant turn")
    return pairs


# ---- images ----------------------------------------------------------------------------------


class ImageResolver:
    """Turns image paths and embedded bytes into checked ImageRefs.

    Paths are resolved under ``root`` and refused when they escape it (``..``, absolute paths,
    symlinks out). Results, failures included, are remembered for the last ``cache_size`` paths:
    the turns of a dialogue, and many questions of a collection, share one image, and hashing it
    once is what keeps the source fast. Bytes are never kept.
    """

    def __init__(self, root: Path | None, *, check: bool = True, cache_size: int = 4096,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float | None = DEFAULT_READ_TIMEOUT_S) -> None:
        self.root = root
        self.check = check
        self.cache_size = cache_size
        #: Limits of each file read (see :func:`mmat_core.images.read_regular_file`); the source
        #: takes them from the run's image store, which the pipeline builds from ``curation``.
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._cache: OrderedDict[str, ImageRef | ImageError] = OrderedDict()

    def from_path(self, relative: Any) -> ImageRef:
        """The checked reference of the image at ``relative`` (under the root)."""
        if not isinstance(relative, str):
            raise RowError("field_type", f"image path must be a string, got {type(relative).__name__}")
        if not relative.strip():
            raise RowError("missing_field", "image")
        cached = self._cache.get(relative)
        if cached is None:
            try:
                if self.root is None:
                    raise ImageError("image_root_missing", "set image_root to the folder holding the images")
                cached = image_ref_from_file(resolve_within(self.root, relative), check=self.check,
                                             max_bytes=self.max_bytes, timeout_s=self.timeout_s)
            except ImageError as exc:
                cached = exc
            if self.cache_size:
                self._cache[relative] = cached
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if isinstance(cached, ImageError):
            raise cached
        return cached

    def from_bytes(self, data: Any, store: ImageStore | None) -> ImageRef:
        """The checked reference of embedded bytes, written to ``store`` when the run gives one."""
        if isinstance(data, dict):
            data = data.get("bytes")
        if data is None:
            raise ImageError("image_missing", "no bytes embedded")
        if not isinstance(data, (bytes, bytearray)):
            raise RowError("field_type", f"image bytes expected, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > self.max_bytes:
            raise ImageError("image_too_large", f"{len(data)} embedded bytes > {self.max_bytes}")
        ref = image_ref_from_bytes(data, None, check=self.check)
        if store is not None and store.blob_dir is not None:
            suffix = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}.get(ref.format or "", "")
            stored = store.put(data, suffix)
            ref = ref.model_copy(update={"path": stored.path})
        return ref


# ---- the base class --------------------------------------------------------------------------


class RecordSource(Source):
    """A source built from a streaming reader and a per-record normaliser (see the module doc)."""

    Options: ClassVar[type[ComponentOptions]] = SourceOptions
    #: The paper's dialogue count per sub-dataset (``mix: paper``); empty when the paper gives none.
    paper_mix: ClassVar[dict[str, int]] = {}

    def __init__(self, options: ComponentOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.selected: tuple[str, ...] = self._select_subsets()
        self.validate()

    # -- configuration -----------------------------------------------------------------------

    def _select_subsets(self) -> tuple[str, ...]:
        # ``getattr`` on the options: which keys exist depends on the Options model the source
        # picked (SourceOptions, SingleSetOptions or QuotaOptions).
        opts = self.options
        named = [*([opts.subset] if getattr(opts, "subset", None) else []), *(getattr(opts, "subsets", None) or [])]
        if self.subsets:
            check_names(named, self.subsets, f"{self.name} sub-dataset", "subsets")
            for key in ("quotas", "ratios"):
                check_names(getattr(opts, key, {}) or {}, self.subsets, f"{self.name} sub-dataset", key)
        if named:
            return tuple(dict.fromkeys(named))
        if getattr(opts, "mix", "all") == "paper" and self.paper_mix:
            return tuple(name for name in self.subsets if name in self.paper_mix) or tuple(self.paper_mix)
        return tuple(self.subsets)

    def validate(self) -> None:
        """Extra checks of the options, run at construction (raise ConfigError)."""

    def curation_plan(self) -> dict[str | None, SubsetPlan]:
        """Per-sub-dataset quotas and ratios for the Curator (key None: the whole source)."""
        opts = self.options
        plan: dict[str | None, SubsetPlan] = {}
        if getattr(opts, "mix", "all") == "paper":
            for subset, count in self.paper_mix.items():
                plan[subset if self.subsets else None] = SubsetPlan(quota=count)
        if not self.subsets:  # one set: `quota` and `ratio` apply to the whole source
            whole = plan.get(None, SubsetPlan())
            quota, ratio = getattr(opts, "quota", None), getattr(opts, "ratio", None)
            if quota is not None or ratio is not None:
                plan[None] = SubsetPlan(quota=quota if quota is not None else whole.quota,
                                        ratio=ratio if ratio is not None else whole.ratio)
        for subset, count in (getattr(opts, "quotas", None) or {}).items():
            plan[subset] = SubsetPlan(quota=count, ratio=plan.get(subset, SubsetPlan()).ratio)
        for subset, ratio in (getattr(opts, "ratios", None) or {}).items():
            plan[subset] = SubsetPlan(quota=plan.get(subset, SubsetPlan()).quota, ratio=ratio)
        return plan

    @property
    def licence_text(self) -> str | None:
        """The licence carried into each sample."""
        return self.options.licence or self.licence

    # -- rows --------------------------------------------------------------------------------

    @abstractmethod
    def iter_records(self) -> Iterator[RecordItem]:
        """Yield ``(row_ref, subset, record_or_RowError)`` one at a time."""

    @abstractmethod
    def normalise(self, ref: str, subset: str | None, record: SourceRecord) -> list[SourceSample | Rejected]:
        """The samples of one record (a turn the options skip as Rejected); raise RowError or
        ImageError for a bad one."""

    def iter_rows(self) -> Iterator[SourceSample | Rejected]:
        """Every QA pair as a SourceSample; every bad record as Rejected with its reason.

        A failure of any kind while turning one record into samples is that record's quarantine
        reason (the class of failure, not a list of known instances: a row must never stop a run,
        nor every resume of it). A reader that fails after its first record ends its source with
        one ``read_failed`` entry (a generator cannot go on after raising); one that fails before
        any record is a setup problem (a wrong Hub id, an unreadable file) and is raised.
        """
        limit = self.options.limit
        produced = 0
        # A subclass that reads image files keeps its resolver as ``self.images`` (by convention,
        # not a declared attribute: a text-only source has none).
        resolver = getattr(self, "images", None)
        if isinstance(resolver, ImageResolver) and self.image_store is not None:
            resolver.max_bytes, resolver.timeout_s = self.image_store.max_bytes, self.image_store.timeout_s
        records = self.iter_records()
        last_ref: str | None = None
        last_subset: str | None = None
        while True:
            try:
                ref, subset, record = next(records)
            except StopIteration:
                return
            except MmatError:
                raise
            except Exception as exc:
                if last_ref is None:
                    raise
                yield self.reject(f"{last_ref}+", last_subset, "read_failed",
                                  f"the reader stopped after this row: {type(exc).__name__}: {str(exc)[:300]}")
                return
            last_ref, last_subset = ref, subset
            if isinstance(record, RowError):
                yield self.reject(ref, subset, record.reason, record.detail)
                continue
            try:
                samples = self.normalise(ref, subset, record)
            except (RowError, ImageError) as exc:
                yield self.reject(ref, subset, exc.reason, exc.detail)
                continue
            except RecursionError:
                yield self.reject(ref, subset, "json_too_deep", "a field nests deeper than can be processed")
                continue
            except MmatError:
                raise  # a configuration problem is the user's to fix, not a row's fault
            except Exception as exc:  # noqa: BLE001 - see the docstring
                # Pydantic's ValidationError is a ValueError: a field of the wrong shape lands here.
                yield self.reject(ref, subset, "malformed_row", f"{type(exc).__name__}: {str(exc)[:300]}")
                continue
            for sample in samples:
                if isinstance(sample, Rejected):  # a turn the options skip (later_turns: skip)
                    yield sample
                    continue
                if limit is not None and produced >= limit:
                    return
                produced += 1
                yield sample

    def reject(self, ref: str, subset: str | None, reason: str, detail: str = "") -> Rejected:
        """A quarantine entry for one row."""
        return Rejected(source=self.name, subset=subset, row=ref, reason=reason, detail=detail)

    def later_turn(self, ref: str, subset: str | None, turn: int, question: str,
                   earlier: Sequence[tuple[str, str]]) -> str | Rejected:
        """The question of turn ``turn`` of a dialogue as ``later_turns`` says: with the earlier
        (question, answer) pairs before it (``context``), or a ``later_turn_skipped`` entry (``skip``)."""
        if turn == 0 or not earlier:
            return question
        if self.options.later_turns == "skip":
            return self.reject(f"{ref} turn {turn}", subset, "later_turn_skipped",
                               f"turn {turn} of a {turn + 1}+ turn dialogue (later_turns: skip)")
        return with_context(question, earlier)

    def dialogue_samples(self, ref: str, subset: str | None, row: str, turns: Iterable[tuple[str, str]], *,
                         images: list[ImageRef], task_type: str,
                         tags: list[str] | None = None) -> list[SourceSample | Rejected]:
        """One sample per (question, answer) turn of a dialogue, all sharing ``images``.

        An answer naming one of the question's options makes a multiple-choice sample (its
        constraint asks for a letter when the answer was one), any other a ``task_type`` sample;
        later turns are as ``later_turns`` says (:meth:`later_turn`). ``turns`` is read one turn at
        a time, so a generator that raises RowError for a bad turn fails the row where it stands."""
        samples: list[SourceSample | Rejected] = []
        earlier: list[tuple[str, str]] = []
        for turn, (question, answer) in enumerate(turns):
            choices = parse_choices(question)
            picked = option_answers(answer, choices)
            answers, by_letter = picked if picked else ([answer], False)
            asked = self.later_turn(ref, subset, turn, question, earlier)
            earlier.append((question, answer))
            if isinstance(asked, Rejected):
                samples.append(asked)
                continue
            samples.append(self.sample(subset=subset, row=row, turn=turn, question=asked, answers=answers,
                                       images=images, task_type="multiple_choice" if picked else task_type,
                                       choices=choices if picked else None, letter_constraint=by_letter,
                                       tags=list(tags) if tags else None,
                                       meta={"context_turns": turn} if turn else None))
        return samples

    def sample(
        self,
        *,
        subset: str | None,
        row: str,
        turn: int,
        question: Any,
        answers: Any,
        images: list[ImageRef],
        task_type: str,
        choices: list[str] | None = None,
        answer_key: str = "answer",
        tags: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        dialogue: str | None = None,
        letter_constraint: bool | None = None,
    ) -> SourceSample:
        """Build one sample: checks the question, picks the constraint, fixes the stable id
        ``source/subset/row/turn`` (the subset part is left out when the source has none).

        ``letter_constraint`` says whether the answer is an option letter (default: whenever there
        are ``choices``); a multiple-choice question whose label is the option's text (TabMWP)
        passes False, so the constraint does not ask for a letter the label is not."""
        if question is None:
            raise RowError("missing_field", "question")
        if not isinstance(question, str):
            raise RowError("field_type", f"question must be a string, got {type(question).__name__}")
        question = question.strip()
        if not question:
            raise RowError("empty_question", f"turn {turn}")
        accepted = answers if isinstance(answers, list) and answers and all(type(a) is str for a in answers) else answers_field(answers, answer_key)
        prefix = f"{self.name}/{subset}/{row}" if subset else f"{self.name}/{row}"
        extra = {"dialogue": dialogue or prefix, "turn": turn}
        if meta:
            extra.update(meta)
        return SourceSample(
            id=f"{prefix}/{turn}",
            source=self.name,
            subset=subset,
            question=question,
            answers=accepted,
            choices=choices,
            constraint=choose_constraint(accepted[0], bool(choices) if letter_constraint is None else letter_constraint,
                                         self.options.constraint),
            task_type=task_type,
            images=images,
            licence=self.licence_text,
            tags=tags or [],
            meta=extra,
        )


def local_root(path: str, what: str, key: str = "path") -> Path:
    """``path`` as an existing local folder or file, else a ConfigError saying what to do."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ConfigError(f"{resolved} does not exist; {what}", key=key)
    return resolved
