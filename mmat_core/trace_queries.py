"""Questions asked of a finished Trace: which rationale attempt it is on, which verdicts are about
that attempt, which critics put a reflection into it.

Pure functions over :mod:`mmat_core.models` (and over the notes of a trace's JSON), so the run
store, the yield and stats tallies and the reflection stage all answer them the same way without
the bottom layers importing the engine (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Iterable

from mmat_core.models import Trace, Verdict

#: The note the reflection stage adds to a trace each time it regenerates the rationale.
REGENERATED_NOTE = "regenerated (attempt {attempt}) after {failure}"


def attempt_of_notes(notes: Iterable[str]) -> int:
    """How many regenerations a trace's notes record (0 for the first rationale)."""
    prefix = REGENERATED_NOTE.split("{", 1)[0]
    return sum(1 for note in notes if note.startswith(prefix))


def attempt_of(trace: Trace) -> int:
    """How many times the trace's rationale was regenerated (0 for the first one)."""
    return attempt_of_notes(trace.notes)


def current_verdicts(trace: Trace) -> list[Verdict]:
    """The verdicts on the trace's current rationale (earlier attempts' verdicts left out)."""
    attempt = attempt_of(trace)
    return [v for v in trace.verdicts if int(v.data.get("attempt", 0)) == attempt]


def reflected_by(trace: Trace) -> list[str]:
    """Critics whose finding put a reflection into the current rationale, in order, unique."""
    return list(dict.fromkeys(v.critic for v in current_verdicts(trace) if v.data.get("spliced")))


def reflection_count(trace: Trace) -> int:
    """How many reflections the trace holds."""
    return sum(1 for step in trace.steps if step.kind == "reflection")
