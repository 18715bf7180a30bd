"""Stage-1 curation: seeded sampling, dedup and image checks over a stream of source rows.

Everything here is streaming and deterministic: a row's fate depends on the seed and the row
itself (and, for dedup, on the rows before it), never on timing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from mmat_core.config import CurationSettings
from mmat_core.models import Rejected, SourceSample

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise_question(question: str) -> str:
    """Lowercase, no punctuation, single spaces: the question part of the dedup key."""
    return _SPACE.sub(" ", _PUNCT.sub("", question.lower())).strip()


def keep_probability(seed: int, sample_id: str) -> float:
    """A number in [0, 1) fixed by the seed and the sample id (order-independent sampling)."""
    digest = hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Curator:
    """Filters a stream of samples; rejected rows come out as :class:`Rejected` with a reason."""

    def __init__(self, settings: CurationSettings) -> None:
        self.settings = settings
        self._seen: set[bytes] = set()
        self.kept = 0

    def _reject(self, sample: SourceSample, reason: str, detail: str = "") -> Rejected:
        return Rejected(source=sample.source, subset=sample.subset, row=sample.id, reason=reason, detail=detail, stage="curation")

    def check(self, sample: SourceSample) -> Rejected | None:
        """Image and text checks on one sample."""
        s = self.settings
        if not sample.question.strip():
            return self._reject(sample, "empty_question")
        if not sample.answer.strip():
            return self._reject(sample, "empty_answer")
        for image in sample.images:
            if image.width is not None and image.height is not None:
                if min(image.width, image.height) < s.min_side:
                    return self._reject(sample, "image_too_small", f"{image.width}x{image.height} < {s.min_side}")
                if max(image.width, image.height) > s.max_side or image.width * image.height > s.max_pixels:
                    return self._reject(sample, "image_too_large", f"{image.width}x{image.height}")
            if s.formats and image.format and image.format.upper() not in {f.upper() for f in s.formats}:
                return self._reject(sample, "image_format", f"{image.format} not in {', '.join(s.formats)}")
        return None

    def dedup_key(self, sample: SourceSample) -> bytes:
        """(first image hash, normalised question) as 16 bytes."""
        image = sample.images[0].sha256 if sample.images else ""
        return hashlib.blake2b(f"{image}\0{normalise_question(sample.question)}".encode(), digest_size=16).digest()

    def __call__(self, rows: Iterable[SourceSample | Rejected]) -> Iterator[SourceSample | Rejected]:
        """Curate a stream."""
        s = self.settings
        for row in rows:
            if isinstance(row, Rejected):
                yield row
                continue
            if s.limit is not None and self.kept >= s.limit:
                return
            if s.sample_rate < 1.0 and keep_probability(s.seed, row.id) >= s.sample_rate:
                continue
            problem = self.check(row)
            if problem is not None:
                yield problem
                continue
            if s.dedup:
                key = self.dedup_key(row)
                if key in self._seen:
                    yield self._reject(row, "duplicate", "same image and normalised question as an earlier row")
                    continue
                self._seen.add(key)
            self.kept += 1
            yield row
