"""Read RR JSON Lines (written by mmat, or by hand in the same layout) back into Traces.

Once imported into a run store, ORR and every export can be derived with ``mmat export``, and
RR -> Trace -> RR gives back the same bytes for lines in mmat's layout.

What the RR text carries is recovered exactly: the system prompt's operator list (or the prompt
verbatim, when it is not mmat's wording), the question and its response constraint, each step's
thought, operators, RAG query and signal, the observation turns (and from them each operator's
result, which ORR needs), the final prompt and the bare answer. What RR never showed (timings,
token counts, tool errors, structured tool data, verdicts) cannot come back.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mmat_core import prompts
from mmat_core.components import FormatContext, ToolInfo
from mmat_core.engine.tools import FAILURE_PREFIX
from mmat_core.errors import MmatError
from mmat_core.jsonl import BadLine, iter_jsonl
from mmat_core.models import ImageRef, Provenance, RagCall, Rejected, SourceSample, Step, ToolCall, Trace
from mmat_core.writers import loads

#: ``<THOUGHT>..</THOUGHT>[<OPERATOR>..</OPERATOR>][<RAG>..</RAG>]<SIGNAL>..</SIGNAL>``, whole message.
STEP_PATTERN = re.compile(
    r"<THOUGHT>(?P<thought>.*?)</THOUGHT>"
    r"(?:<OPERATOR>(?P<operators>.*?)</OPERATOR>)?"
    r"(?:<RAG>(?P<rag>.*?)</RAG>)?"
    r"<SIGNAL>(?P<signal>continue|end|reflection)</SIGNAL>",
    re.DOTALL,
)
_FIRST_SUFFIX = prompts.FIRST_TURN.split("{constraint}")[1]
_FINAL_PREFIX = prompts.FINAL_TURN.split("{question}")[0]
_NO_OPERATORS_LINE = "- (no operators are enabled)"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ImportProblem(MmatError, ValueError):
    """A line that is not in the RR layout; becomes a Rejected row with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _template_pieces() -> tuple[str, str, str]:
    """(before operators, between operators and rag, after rag) of the RR system template."""
    pieces = [(literal, name) for literal, name, _, _ in string.Formatter().parse(prompts.RR_SYSTEM)]
    names = [name for _, name in pieces if name]
    if names != ["operators", "rag"]:  # pragma: no cover - guards a future rewording
        raise RuntimeError(f"the RR system template's fields changed to {names}; update mmat_core.importer")
    return pieces[0][0], pieces[1][0], pieces[2][0] if len(pieces) > 2 else ""


def parse_rr_system(text: str, known: Mapping[str, ToolInfo] | None = None) -> FormatContext | None:
    """The formatter context that renders exactly ``text`` with mmat's RR template, or None when the
    text is not mmat's wording. ``known`` supplies result labels of installed tools by name."""
    before, between, after = _template_pieces()
    if not (text.startswith(before) and text.endswith(after)):
        return None
    middle = text[len(before): len(text) - len(after)]
    rag_enabled = middle.endswith(between + prompts.RR_RAG_LINE)
    lines_text = middle[: len(middle) - len(between + (prompts.RR_RAG_LINE if rag_enabled else ""))]
    tools: list[ToolInfo] = []
    if lines_text != _NO_OPERATORS_LINE:
        for line in lines_text.split("\n"):
            if not line.startswith("- ") or ": " not in line:
                return None
            name, description = line[2:].split(": ", 1)
            label = known[name].label if known and name in known else name.replace("_", " ")
            tools.append(ToolInfo(name=name, label=label, description=description))
    ctx = FormatContext(tools=tools, rag_enabled=rag_enabled)
    return ctx if prompts.rr_system(tools, rag_enabled) == text else None


def installed_tool_infos() -> dict[str, ToolInfo]:
    """Name -> ToolInfo of every installed tool plugin (for result labels)."""
    from mmat_core.plugins import get_plugin_manager

    infos = {}
    for name, cls in get_plugin_manager().registry("tool").items():
        infos[name] = ToolInfo(name=name, label=cls.result_label(), description=cls.description)
    return infos


def split_observation(text: str, labels: list[str]) -> list[str] | None:
    """The result texts in an observation turn built from ``labels`` in order, or None when the
    turn was not built that way."""
    if not labels:
        return [] if text == prompts.NO_TOOL else None
    if not text.endswith(prompts.CONTINUE):
        return None
    body = text[: len(text) - len(prompts.CONTINUE)]
    results: list[str] = []
    position = 0
    for i, label in enumerate(labels):
        head = prompts.TOOL_RESULT.format(tool=label, result="")
        if not body.startswith(head, position):
            return None
        start = position + len(head)
        if i + 1 == len(labels):
            results.append(body[start:])
            break
        following = " " + prompts.TOOL_RESULT.format(tool=labels[i + 1], result="")
        end = body.find(following, start)
        if end < 0:
            return None
        results.append(body[start:end])
        position = end + 1
    return results


def parse_step(text: str) -> Step:
    """A Step from one assistant turn in the RR step format."""
    match = STEP_PATTERN.fullmatch(text)
    if match is None:
        raise ImportProblem("bad_step", f"not <THOUGHT>..</THOUGHT>[<OPERATOR>..][<RAG>..]<SIGNAL>..</SIGNAL>: {text[:80]!r}")
    operators = match["operators"]
    return Step(
        thought=match["thought"],
        operators=operators.split(", ") if operators else [],
        rag_query=match["rag"] or None,
        signal=match["signal"],  # type: ignore[arg-type]
    )


def _attach_results(step: Step, observation: str, ctx: FormatContext, notes: list[str], index: int) -> None:
    """Recover tool and RAG results of ``step`` from the observation that followed it."""
    step.observation = observation
    labels_by_name = {t.name: t.label for t in ctx.tools}
    labels = [labels_by_name.get(name, name.replace("_", " ")) for name in step.operators]
    attempts = [labels + [prompts.RAG_LABEL], labels] if step.rag_query else [labels]
    for attempt in attempts:
        results = split_observation(observation, attempt)
        if results is None:
            continue
        step.tool_calls = [_tool_call(name, result) for name, result in zip(step.operators, results)]
        if len(attempt) > len(labels):
            step.rag = RagCall(query=step.rag_query or "", result=results[-1])
        return
    notes.append(f"observation_unparsed: step {index}")


def _tool_call(name: str, result: str) -> ToolCall:
    """A recovered operator result; the engine's failure sentence marks a failed call again, so
    ORR (which leaves failed calls out) comes out as the build wrote it."""
    prefix = FAILURE_PREFIX.format(name=name)
    error = result[len(prefix):] if result.startswith(prefix) else None
    return ToolCall(name=name, result=result, error=error)


def _images(paths: list[Any], image_root: Path | None, hash_images: bool) -> list[ImageRef]:
    from mmat_core.images import ImageError, read_regular_file, sha256_bytes

    refs = []
    for item in paths:
        if not isinstance(item, str):
            raise ImportProblem("bad_images", f"images must be strings, got {item!r}")
        candidate = Path(item) if image_root is None or Path(item).is_absolute() else image_root / item
        if hash_images and candidate.is_file():
            try:  # the one safe reader: regular files only, size-capped (see read_regular_file)
                data = read_regular_file(candidate)
            except ImageError as exc:
                raise ImportProblem(exc.reason, exc.detail) from None
            refs.append(ImageRef(sha256=sha256_bytes(data), path=item))
        elif _HEX64.fullmatch(item) and not candidate.exists():
            refs.append(ImageRef(sha256=item))  # mmat writes the hash when an image had no path
        else:
            refs.append(ImageRef(sha256="", path=item))
    return refs


def trace_from_rr(record: Mapping[str, Any], ctx: FormatContext, *, source: str = "imported",
                  image_root: Path | None = None, hash_images: bool = True, where: str = "") -> Trace:
    """One Trace from one RR record (``id``, ``messages``, ``images``, ``provenance``)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("messages"), list):
        raise ImportProblem("not_rr_layout", "expected an object with a `messages` list")
    sample_id = record.get("id")
    if not isinstance(sample_id, str) or not sample_id:
        raise ImportProblem("missing_id", "every line needs a non-empty string `id`")
    messages = record["messages"]
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    if any(not isinstance(m.get("content"), str) for m in messages if isinstance(m, Mapping)) or None in roles:
        raise ImportProblem("not_rr_layout", "every message needs a role and a string content")
    if len(messages) < 5 or roles[:2] != ["system", "user"] or roles[-2:] != ["user", "assistant"]:
        raise ImportProblem("not_rr_layout", f"expected system, user, steps..., user, assistant; got roles {roles}")
    first, final_prompt, final_answer = messages[1]["content"], messages[-2]["content"], messages[-1]["content"]
    notes = [f"imported: {where}"] if where else ["imported"]

    steps: list[Step] = []
    body = messages[2:-2]
    i = 0
    while i < len(body):
        if body[i]["role"] != "assistant":
            raise ImportProblem("not_rr_layout", f"message {i + 2} should be an assistant step")
        step = parse_step(body[i]["content"])
        if step.signal == "end":
            if i + 1 != len(body):
                raise ImportProblem("not_rr_layout", f"step {len(steps)} ends the reasoning but more turns follow")
            i += 1
        else:
            if i + 1 >= len(body) or body[i + 1]["role"] != "user":
                raise ImportProblem("no_end_signal", f"step {len(steps)} has <SIGNAL>{step.signal}</SIGNAL> but no observation "
                                    "follows; the last step before the final question must end with <SIGNAL>end</SIGNAL>")
            _attach_results(step, body[i + 1]["content"], ctx, notes, len(steps))
            i += 2
        steps.append(step)
    if not steps:
        raise ImportProblem("not_rr_layout", "no reasoning step between the first and the final question")
    for previous, step in zip([None, *steps], steps):
        if step.signal == "reflection":
            step.kind = "reflection"
        elif previous is not None and previous.signal == "reflection":
            step.kind = "correction"

    if final_prompt.startswith(_FINAL_PREFIX) and first.startswith(final_prompt[len(_FINAL_PREFIX):]) and first.endswith(_FIRST_SUFFIX):
        question = final_prompt[len(_FINAL_PREFIX):]
        constraint = first[len(question): len(first) - len(_FIRST_SUFFIX)]
    else:
        question = first[: len(first) - len(_FIRST_SUFFIX)] if first.endswith(_FIRST_SUFFIX) else first
        constraint = ""
        if not first.endswith(_FIRST_SUFFIX):
            raise ImportProblem("bad_first_turn", f"the first user turn must end with {_FIRST_SUFFIX!r}")

    raw_provenance = record.get("provenance")
    try:
        provenance = (Provenance.model_validate(raw_provenance) if raw_provenance is not None
                      else Provenance(mmat_version=_version(), generator="import:unknown", offline=False, source=source))
    except ValidationError as exc:
        raise ImportProblem("bad_provenance", str(exc).splitlines()[0]) from None
    images = record.get("images") or []
    if not isinstance(images, list):
        raise ImportProblem("bad_images", "`images` must be a list of paths")
    sample = SourceSample(
        id=sample_id, source=provenance.source, subset=provenance.subset, question=question,
        answers=[final_answer], constraint=constraint, images=_images(images, image_root, hash_images),
        licence=provenance.licence,
    )
    return Trace(id=sample_id, sample=sample, tools=[t.name for t in ctx.tools], steps=steps, final_prompt=final_prompt,
                 final_answer=final_answer, provenance=provenance, notes=notes,
                 status="reflected" if any(step.kind == "reflection" for step in steps) else "kept")


def _version() -> str:
    from mmat_core.plugins import mmat_version

    return mmat_version()


@dataclass
class RRReader:
    """Streams Traces (or Rejected rows) from RR JSONL files sharing one system prompt."""

    source: str = "imported"
    image_root: Path | None = None
    hash_images: bool = True
    #: The run-level context, fixed by the first line read.
    context: FormatContext | None = None
    _system: str | None = field(default=None, repr=False)
    _known: dict[str, ToolInfo] | None = field(default=None, repr=False)

    def _context_for(self, system: str) -> FormatContext:
        if self._system is None:
            if self._known is None:
                self._known = installed_tool_infos()
            ctx = parse_rr_system(system, self._known)
            if ctx is None:
                # Not mmat's wording: keep the prompt verbatim so RR is reproduced byte for byte.
                ctx = FormatContext()
                ctx.rr_system = system
            self._system, self.context = system, ctx
        elif system != self._system:
            raise ImportProblem("system_prompt_differs", "every line of an import must share one system prompt; "
                                "import files with different prompts into different run folders")
        assert self.context is not None
        return self.context

    def read(self, path: Path) -> Iterator[Trace | Rejected]:
        """Traces from one file; bad lines come out as Rejected rows with the reason."""
        for number, record in iter_jsonl(path, loads=loads):
            where = f"{path.name}:{number}"
            try:
                if isinstance(record, BadLine):
                    raise ImportProblem("bad_json", str(record.error))
                messages = record.get("messages") if isinstance(record, dict) else None
                if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "system":
                    raise ImportProblem("not_rr_layout", "the first message must be the system prompt")
                ctx = self._context_for(str(messages[0].get("content", "")))
                yield trace_from_rr(record, ctx, source=self.source, image_root=self.image_root,
                                    hash_images=self.hash_images, where=where)
            except ImportProblem as problem:
                yield Rejected(source=self.source, row=where, reason=problem.reason, detail=problem.detail, stage="import")
            except ValidationError as exc:
                yield Rejected(source=self.source, row=where, reason="invalid_record",
                               detail=str(exc).splitlines()[0], stage="import")


@dataclass
class ImportResult:
    """What an import wrote."""

    out_dir: Path
    imported: int = 0
    rejected: int = 0
    context: FormatContext | None = None


def import_rr(files: list[Path], out_dir: Path, *, source: str = "imported", image_root: Path | None = None,
              hash_images: bool = True) -> ImportResult:
    """Import RR JSONL files into a run store in ``out_dir`` (``seq`` follows file and line order).

    Bad lines go to ``out_dir/quarantine.jsonl`` with their reasons. Afterwards ``mmat export
    out_dir --format NAME`` writes ORR or any export.
    """
    from mmat_core.exporter import FORMAT_CONTEXT_KEY, context_to_meta, write_rejected
    from mmat_core.store import STORE_FILE, RunStore

    if (out_dir / STORE_FILE).exists():
        from mmat_core.errors import ConfigError

        raise ConfigError("already holds a run store; import into a new folder", file=str(out_dir))
    reader = RRReader(source=source, image_root=image_root, hash_images=hash_images)
    result = ImportResult(out_dir)
    rejected: list[Rejected] = []
    seen: set[str] = set()
    store = RunStore.open(out_dir)
    try:
        for path in files:
            for item in reader.read(path):
                if isinstance(item, Rejected):
                    rejected.append(item)
                    store.add_rejected(item)
                    continue
                if item.id in seen:
                    bad = Rejected(source=source, row=item.notes[0].removeprefix("imported: "), reason="duplicate_id",
                                   detail=f"id {item.id!r} was already imported", stage="import")
                    rejected.append(bad)
                    store.add_rejected(bad)
                    continue
                seen.add(item.id)
                result.imported += 1
                store.add_trace(result.imported, item)
                if result.imported % 1000 == 0:
                    store.flush()
        store.flush()
        result.context = reader.context or FormatContext()
        store.set_meta(FORMAT_CONTEXT_KEY, context_to_meta(result.context))
        store.set_meta("import", {"files": [str(p) for p in files], "imported": result.imported, "rejected": len(rejected)})
    finally:
        store.close()
    result.rejected = len(rejected)
    write_rejected(out_dir / "quarantine.jsonl", rejected)
    return result
