"""Curation: seeded sampling, quotas in dialogues, dedup and image checks."""

from __future__ import annotations

from dataclasses import dataclass

from mmat_core.config import CurationSettings
from mmat_core.curation import Curator, normalise_question
from mmat_core.models import ImageRef, Rejected, SourceSample


def make(i: int, *, subset: str = "a", turn: int = 0, question: str | None = None, image: str | None = None,
         size: tuple[int, int] = (64, 64), fmt: str = "PNG") -> SourceSample:
    return SourceSample(id=f"s/{subset}/{i}/{turn}", source="s", subset=subset, question=question or f"question {i} of {subset}, turn {turn}?",
                        answers=["x"], images=[ImageRef(sha256=image or f"{subset}{i:063x}", width=size[0], height=size[1], format=fmt)],
                        meta={"dialogue": f"s/{subset}/{i}", "turn": turn})


@dataclass
class Plan:
    quota: int | None = None
    ratio: float | None = None


class FakeSource:
    """Only what the Curator reads of a source: its name and its plan."""

    name = "s"

    def __init__(self, plan: dict[str | None, Plan]) -> None:
        self.plan = plan

    def curation_plan(self) -> dict[str | None, Plan]:
        return self.plan


def kept_ids(curator: Curator, rows: list[SourceSample]) -> list[str]:
    return [r.id for r in curator(rows) if isinstance(r, SourceSample)]


def test_sampling_with_the_same_seed_keeps_the_same_rows() -> None:
    rows = [make(i) for i in range(400)]
    first = kept_ids(Curator(CurationSettings(seed=3, sample_rate=0.25)), rows)
    again = kept_ids(Curator(CurationSettings(seed=3, sample_rate=0.25)), list(reversed(rows)))
    assert sorted(first) == sorted(again)
    assert 60 < len(first) < 140


def test_a_different_seed_keeps_different_rows() -> None:
    rows = [make(i) for i in range(400)]
    assert kept_ids(Curator(CurationSettings(seed=1, sample_rate=0.5)), rows) != kept_ids(Curator(CurationSettings(seed=2, sample_rate=0.5)), rows)


def test_sampling_keeps_or_drops_a_dialogues_turns_together() -> None:
    rows = [make(i, turn=t) for i in range(200) for t in range(3)]
    kept = kept_ids(Curator(CurationSettings(seed=0, sample_rate=0.5)), rows)
    dialogues = {k.rsplit("/", 1)[0] for k in kept}
    assert len(kept) == 3 * len(dialogues)


def test_quota_counts_dialogues_per_sub_dataset() -> None:
    rows = [make(i, subset=sub, turn=t) for sub in ("a", "b") for i in range(10) for t in range(2)]
    curator = Curator(CurationSettings(), [FakeSource({"a": Plan(quota=3)})])
    kept = kept_ids(curator, rows)
    assert [k for k in kept if "/a/" in k] == ["s/a/0/0", "s/a/0/1", "s/a/1/0", "s/a/1/1", "s/a/2/0", "s/a/2/1"]
    assert len([k for k in kept if "/b/" in k]) == 20
    assert curator.skipped[("s/a", "over_quota")] == 14


def test_ratio_keeps_a_seeded_share_of_one_sub_dataset() -> None:
    rows = [make(i, subset=sub) for sub in ("a", "b") for i in range(400)]
    curator = Curator(CurationSettings(seed=5), [FakeSource({"b": Plan(ratio=0.1)})])
    kept = kept_ids(curator, rows)
    assert curator.kept_by["s/a"] == 400
    assert 20 < curator.kept_by["s/b"] < 70
    assert curator.skipped[("s/b", "not_sampled")] == 400 - curator.kept_by["s/b"]
    assert len(kept) == curator.kept


def test_same_image_and_normalised_question_is_a_duplicate() -> None:
    rows = [make(1, question="What colour is the car?", image="f" * 64), make(2, question="what colour is the  car", image="f" * 64),
            make(3, question="What colour is the car?", image="e" * 64)]
    out = list(Curator(CurationSettings())(rows))
    assert [type(r).__name__ for r in out] == ["SourceSample", "Rejected", "SourceSample"]
    assert isinstance(out[1], Rejected) and out[1].reason == "duplicate" and out[1].stage == "curation"


def test_image_checks_reject_small_large_and_unlisted_formats() -> None:
    settings = CurationSettings(min_side=32, max_side=1000, formats=["PNG"])
    rows = [make(1, size=(16, 64)), make(2, size=(2000, 64)), make(3, fmt="GIF"), make(4)]
    out = list(Curator(settings)(rows))
    assert [r.reason if isinstance(r, Rejected) else "kept" for r in out] == ["image_too_small", "image_too_large", "image_format", "kept"]


def test_rejections_are_counted_per_sub_dataset_and_reason() -> None:
    curator = Curator(CurationSettings())
    upstream = Rejected(source="s", subset="a", row="f:1", reason="image_missing")
    # Two rows (different ids) with the same image and question: the second is a duplicate.
    list(curator([upstream, make(1, image="a" * 64, question="Same?"), make(2, image="a" * 64, question="Same?")]))
    assert curator.rejected == {("s/a", "image_missing"): 1, ("s/a", "duplicate"): 1}


def test_limit_stops_the_stream() -> None:
    def endless():  # a source that never ends: the limit must stop reading it
        i = 0
        while True:
            i += 1
            yield make(i)

    assert len(kept_ids(Curator(CurationSettings(limit=5)), endless())) == 5  # type: ignore[arg-type]


def test_normalised_question_ignores_case_punctuation_and_spacing() -> None:
    assert normalise_question("  What's   THE total?! ") == "whats the total"
