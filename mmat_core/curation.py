"""Stage-1 curation: seeded sampling, per-sub-dataset quotas and ratios, dedup and image checks
over a stream of source rows.

Everything here is streaming and deterministic: a row's fate depends on the seed and the row
itself (and, for dedup and quotas, on the rows before it), never on timing. Memory grows only with
the dedup set: one 64-bit key per kept sample (about 60 bytes each, so ~60 MB for a million).

Order of the checks, for each sample:

1. ``limit`` reached: the stream stops (nothing more is read);
   a row whose id an earlier row already used is quarantined as ``duplicate_id`` (the run store
   and every output are keyed by id: a second row would overwrite the first after being paid for);
2. ``sample_rate`` and the sub-dataset's ratio: a seeded draw per dialogue keeps or skips it, so
   the turns of one dialogue stay together and a rerun with the same seed keeps the same rows;
3. text and image checks: failures are quarantined (:class:`Rejected`, stage ``curation``);
4. dedup on (first image hash, normalised question): later copies are quarantined as ``duplicate``;
5. the sub-dataset's quota, counted in dialogues (the unit of the paper's counts): once full, later
   dialogues are skipped. Skipped rows are not faults, so they are counted in :attr:`Curator.skipped`
   and not quarantined.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Sequence

from mmat_core.components import Source
from mmat_core.config import CurationSettings
from mmat_core.models import Rejected, SourceSample
from mmat_core.text_checks import find_control_character  # re-exported: first defined here

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")
_blake2b = hashlib.blake2b


_ASCII_PUNCT = str.maketrans("", "", "".join(chr(c) for c in range(128) if not (chr(c).isalnum() or chr(c).isspace() or chr(c) == "_")))


def normalise_question(question: str) -> str:
    """Lowercase, no punctuation, single spaces: the question part of the dedup key."""
    if question.isascii():  # the common case, three times faster than the regexes
        return " ".join(question.lower().translate(_ASCII_PUNCT).split())
    return _SPACE.sub(" ", _PUNCT.sub("", question.lower())).strip()


def keep_probability(seed: int, sample_id: str) -> float:
    """A number in [0, 1) fixed by the seed and the id (order-independent sampling)."""
    digest = _blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def subset_key(source: str, subset: str | None) -> str:
    """``source/subset``, or ``source`` alone: the key of quotas and of the run report."""
    return f"{source}/{subset}" if subset else source


class Curator:
    """Filters a stream of samples; rejected rows come out as :class:`Rejected` with a reason.

    ``sources`` are the pipeline's sources: each one's :meth:`~mmat_core.components.Source.curation_plan`
    maps a sub-dataset (None for the whole source) to a :class:`~mmat_core.components.SubsetPlan`
    with ``quota`` (most dialogues kept) and ``ratio`` (share of dialogues kept by the seeded draw).
    """

    def __init__(self, settings: CurationSettings, sources: Sequence[Source] = (), *,
                 trusted: Container[str] | None = None, seen: Iterable[int] | None = None,
                 record_keys: bool = False, redo: Callable[[SourceSample], bool] | None = None,
                 stored_key: Callable[[str], int | None] | None = None) -> None:
        self.settings = settings
        #: Ids of samples a resumed run finished under these same settings: they were kept at
        #: this point of this same stream before, so only the state later rows depend on (dedup
        #: keys, quotas, counts) is updated for them; the checks and the sampling draw are skipped.
        #: On a resume at 900,000 finished samples this is most of the time to the first new one.
        self.trusted = trusted
        #: A trusted sample for which ``redo(row)`` is true (its source row changed and the run
        #: builds it again) is curated as a new row; ``stored_key(id)`` gives the dedup key stored
        #: with it, so the changed row is not taken for a duplicate of its own earlier version.
        self._redo = redo
        self._stored_key = stored_key
        #: Dedup keys of every trusted sample, when the run store kept them (see
        #: :meth:`dedup_key`): loaded at once, so trusted rows need not be hashed again.
        self._seen: set[int] = set(seen) if seen is not None else set()
        self._seen_loaded = seen is not None
        #: With ``record_keys``: id -> dedup key of each newly kept row, for the caller to take
        #: (the run stores it with the finished sample, for the next resume).
        self.keys: dict[str, int] = {}
        self._record_keys = record_keys
        self._formats = {f.upper() for f in settings.formats} if settings.formats else None
        self.kept = 0
        #: Samples kept, by ``source/subset``.
        self.kept_by: Counter[str] = Counter()
        #: Rows dropped without fault (``not_sampled``, ``over_quota``), by (``source/subset``, reason).
        self.skipped: Counter[tuple[str, str]] = Counter()
        #: Rows quarantined (source and curation), by (``source/subset``, reason).
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.quotas: dict[str, int] = {}
        self.ratios: dict[str, float] = {}
        for source in sources:
            for subset, entry in source.curation_plan().items():
                key = subset_key(source.name, subset)
                if entry.quota is not None:
                    self.quotas[key] = entry.quota
                if entry.ratio is not None:
                    self.ratios[key] = entry.ratio
        self._dialogues: Counter[str] = Counter()
        self._open: dict[str, str] = {}
        #: Every sample id met so far, whatever became of the row: ids are the run's keys.
        self._ids: set[str] = set()
        #: Repeats of an id so far (id -> copies after the first), for distinct quarantine rows.
        self._repeats: Counter[str] = Counter()

    def met(self, sample_id: str) -> bool:
        """Whether a row with this sample id has come through (kept, skipped or quarantined)."""
        return sample_id in self._ids

    def _reject(self, sample: SourceSample, reason: str, detail: str = "") -> Rejected:
        return Rejected(source=sample.source, subset=sample.subset, row=sample.id, reason=reason, detail=detail, stage="curation")

    def check(self, sample: SourceSample) -> Rejected | None:
        """Text and image checks on one sample (sizes come from the ImageRef the source filled)."""
        s = self.settings
        if not sample.question.strip():
            return self._reject(sample, "empty_question")
        if not sample.answer.strip():
            return self._reject(sample, "empty_answer")
        # Control characters (NUL, escape sequences, bell...) have no place in training text and
        # can corrupt terminals and tokenizers downstream; newlines and tabs are fine.
        for name, text in (("question", sample.question), ("answer", sample.answer)):
            bad = find_control_character(text)
            if bad:
                return self._reject(sample, "control_characters", f"{name} holds U+{ord(bad.group()):04X} at {bad.start()}")
        for image in sample.images:
            if image.width is not None and image.height is not None:
                if min(image.width, image.height) < s.min_side:
                    return self._reject(sample, "image_too_small", f"{image.width}x{image.height} < {s.min_side}")
                if max(image.width, image.height) > s.max_side or image.width * image.height > s.max_pixels:
                    return self._reject(sample, "image_too_large", f"{image.width}x{image.height}")
            if self._formats and image.format and image.format.upper() not in self._formats:
                return self._reject(sample, "image_format", f"{image.format} not in {', '.join(s.formats or [])}")
        return None

    def dedup_key(self, sample: SourceSample) -> int:
        """(first image hash, normalised question) as a signed 64-bit number (SQLite's INTEGER)."""
        image = sample.images[0].sha256 if sample.images else ""
        digest = _blake2b(f"{image}\0{normalise_question(sample.question)}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _admit(self, key: str, dialogue: str) -> bool:
        """Quota in dialogues: a dialogue already open passes; a new one needs room."""
        if self._open.get(key) == dialogue:
            return True
        quota = self.quotas.get(key)
        if quota is not None and self._dialogues[key] >= quota:
            return False
        self._dialogues[key] += 1
        self._open[key] = dialogue
        return True

    def __call__(self, rows: Iterable[SourceSample | Rejected]) -> Iterator[SourceSample | Rejected]:
        """Curate a stream."""
        s = self.settings
        rate = s.sample_rate
        ratios = self.ratios
        quotas = self.quotas
        trusted = self.trusted
        for row in rows:
            if isinstance(row, Rejected):
                self.rejected[(subset_key(row.source, row.subset), row.reason)] += 1
                yield row
                continue
            if s.limit is not None and self.kept >= s.limit:
                return
            key = subset_key(row.source, row.subset)
            # Before the trusted shortcut: on a resume the second copy's id is "finished" too.
            if row.id in self._ids:
                self._repeats[row.id] += 1
                copy = self._repeats[row.id] + 1
                self.rejected[(key, "duplicate_id")] += 1
                yield Rejected(source=row.source, subset=row.subset, row=f"{row.id} (copy {copy})", reason="duplicate_id",
                               detail=f"sample id {row.id!r} was already used by an earlier row; ids must be unique",
                               stage="curation")
                continue
            self._ids.add(row.id)
            dialogue = row.meta.get("dialogue") or row.id
            redo = False
            if trusted is not None and row.id in trusted and self._redo is not None and self._redo(row):
                redo = True
                if self._seen_loaded and self._stored_key is not None:
                    old = self._stored_key(row.id)
                    if old is not None:
                        self._seen.discard(old)  # kept keys are unique: none other holds it
            if trusted is not None and not redo and row.id in trusted:
                if s.dedup and not self._seen_loaded:
                    self._seen.add(self.dedup_key(row))
                if key in quotas:
                    self._admit(key, dialogue)
                self.kept += 1
                self.kept_by[key] += 1
                yield row
                continue
            share = ratios.get(key, 1.0) * rate
            if share < 1.0 and keep_probability(s.seed, dialogue) >= share:
                self.skipped[(key, "not_sampled")] += 1
                continue
            problem = self.check(row)
            dedup = None
            if problem is None and s.dedup:
                dedup = self.dedup_key(row)
                if dedup in self._seen:
                    problem = self._reject(row, "duplicate", "same image and normalised question as an earlier row")
                else:
                    self._seen.add(dedup)
            if problem is not None:
                self.rejected[(key, problem.reason)] += 1
                yield problem
                continue
            if key in quotas and not self._admit(key, dialogue):
                self.skipped[(key, "over_quota")] += 1
                continue
            self.kept += 1
            self.kept_by[key] += 1
            if self._record_keys and dedup is not None:
                self.keys[row.id] = dedup
            yield row
