"""What the viewer looks at: a run directory (read-only) or an exported JSONL file.

Both end up as an SQLite file with the run store's tables (``samples``, ``rejected``, ``meta``):
a run directory's own ``run.sqlite`` is opened read-only; a JSONL file (``rr.jsonl``,
``orr.jsonl``, ``quarantine.jsonl`` or a file of Traces) is imported once, streamed, into a
temporary store. This module also turns one stored row into the JSON the page draws.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_core.errors import MmatError
from mmat_core.models import KEPT_STATUSES
from mmat_core.store import STORE_FILE

if TYPE_CHECKING:
    from mmat_core.plugins import PluginManager

#: Trace statuses, plus the rows the source stage quarantined (the ``rejected`` table).
STATUSES = ("kept", "reflected", "flagged", "dropped", "failed")
QUARANTINED = "quarantined"
KEPT = KEPT_STATUSES

_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("THOUGHT", "OPERATOR", "RAG", "SIGNAL", "ANSWER")}
_API_BLOCK = re.compile(r"<\|begin_api_invoke\|>(.*?)<\|end_api_invoke\|><\|begin_result_of_api\|>(.*?)<\|end_result_of_api\|>", re.DOTALL)
_PIXEL_BOX = re.compile(r"\[(\d+), (\d+), (\d+), (\d+)\]")
_IMAGE_TYPES = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))


class ViewerError(MmatError):
    """The viewer cannot open what it was given; the message says what it expected."""


@dataclass
class Summary:
    """What the catalog keeps of one row: filter columns, counts and searchable text."""

    steps: int = 0
    reflections: int = 0
    tool_calls: dict[str, list[int]] = field(default_factory=dict)  # name -> [calls, errors]
    verdicts: set[tuple[str, str]] = field(default_factory=set)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    thoughts: str = ""
    answer: str = ""


# -- reading rows --------------------------------------------------------------------------------


def row_kind(obj: dict[str, Any]) -> str:
    """``trace``, ``rr``, ``orr`` or ``rejected``: what a stored or exported JSON object is."""
    if "steps" in obj and "sample" in obj:
        return "trace"
    if isinstance(obj.get("messages"), list):
        assistants = [m for m in obj["messages"] if isinstance(m, dict) and m.get("role") == "assistant"]
        last = str(assistants[-1].get("content", "")) if assistants else ""
        return "orr" if len(assistants) == 1 and "<ANSWER>" in last else "rr"
    if "reason" in obj and "row" in obj:
        return "rejected"
    raise ValueError("neither a Trace, an RR/ORR record nor a quarantined row")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _tag(name: str, text: str) -> str | None:
    found = _TAG[name].search(text)
    return found.group(1) if found else None


def rr_steps(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, str]:
    """Steps of an RR dialogue (assistant step + the user turn after it), the final prompt and
    the final answer, read back from the tags."""
    steps: list[dict[str, Any]] = []
    body = [m for m in messages if m.get("role") != "system"][1:]  # after the first user turn
    final_prompt = final_answer = ""
    i = 0
    while i < len(body):
        content = _text(body[i].get("content"))
        if body[i].get("role") == "assistant" and _tag("SIGNAL", content) is not None:
            signal = (_tag("SIGNAL", content) or "continue").strip()
            operators = [o.strip() for o in (_tag("OPERATOR", content) or "").split(",") if o.strip()]
            observation = ""
            if signal != "end" and i + 1 < len(body) and body[i + 1].get("role") == "user":
                observation = _text(body[i + 1].get("content"))
                i += 1
            steps.append({
                "kind": "reflection" if signal == "reflection" else ("correction" if steps and steps[-1]["signal"] == "reflection" else "rationale"),
                "thought": _tag("THOUGHT", content) or "",
                "operators": operators,
                "rag_query": _tag("RAG", content),
                "signal": signal,
                "observation": observation,
                "tool_calls": [{"name": name, "result": "", "data": _boxes_from_text(name, observation)} for name in operators],
            })
        elif body[i].get("role") == "user":
            final_prompt = content
        elif body[i].get("role") == "assistant":
            final_answer = content
        i += 1
    return steps, final_prompt, final_answer


def _boxes_from_text(tool: str, observation: str) -> dict[str, Any] | None:
    """Face boxes read back from an exported observation (the only pixel form fixed by the spec)."""
    if tool != "face_detection":
        return None
    boxes = [[int(v) for v in m.groups()] for m in _PIXEL_BOX.finditer(observation)]
    return {"boxes": boxes} if boxes else None


def summarise(obj: dict[str, Any], kind: str) -> Summary:
    """The catalog's summary of one row."""
    summary = Summary()
    if kind == "trace":
        steps = obj.get("steps") or []
        for step in steps:
            for call in step.get("tool_calls") or []:
                counts = summary.tool_calls.setdefault(_text(call.get("name")), [0, 0])
                counts[0] += 1
                counts[1] += call.get("error") is not None
        summary.verdicts = {(_text(v.get("critic")), _text(v.get("verdict"))) for v in obj.get("verdicts") or []}
        usage = obj.get("usage") or {}
        summary.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        summary.completion_tokens = int(usage.get("completion_tokens") or 0)
        summary.cost = float(usage.get("cost_usd") or 0.0)
        summary.latency = float(usage.get("latency_s") or 0.0)
        summary.answer = _text(obj.get("final_answer"))
    elif kind == "rr":
        steps, _, summary.answer = rr_steps(obj.get("messages") or [])
        for step in steps:
            for name in step["operators"]:
                summary.tool_calls.setdefault(name, [0, 0])[0] += 1
    elif kind == "orr":
        messages = obj.get("messages") or []
        user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
        answer = _text(messages[-1].get("content")) if messages else ""
        for name, _ in _API_BLOCK.findall(user):
            summary.tool_calls.setdefault(name, [0, 0])[0] += 1
        steps = [{"kind": "rationale", "thought": _tag("THOUGHT", answer) or ""}]
        summary.answer = (_tag("ANSWER", answer) or "").removeprefix("The answer is: ")
    else:
        return summary
    summary.steps = len(steps)
    summary.reflections = sum(1 for s in steps if s.get("kind") == "reflection")
    summary.thoughts = "\n".join(_text(s.get("thought")) for s in steps)
    return summary


def record_question(obj: dict[str, Any]) -> str:
    """The question of an RR/ORR record: its first user turn (ORR: before the API outputs)."""
    for message in obj.get("messages") or []:
        if message.get("role") == "user":
            text = _text(message.get("content"))
            return text.split(" Use the following API outputs", 1)[0]
    return ""


# -- the dataset ---------------------------------------------------------------------------------


class Dataset:
    """A run directory or an imported JSONL file, as an SQLite file opened read-only."""

    def __init__(self, *, kind: str, label: str, root: Path, store_path: Path, run_json: Path | None,
                 temp_dir: Path | None = None, plugins: PluginManager | None = None) -> None:
        self.kind = kind
        self.plugins = plugins
        self.label = label
        self.root = root
        self.store_path = store_path
        self.run_json = run_json
        self.temp_dir = temp_dir
        #: Folders besides :attr:`root` whose images a JSONL file's rows may name (``--image-root``).
        self.image_roots: list[Path] = []
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._format_lock = threading.Lock()
        self._tool_infos: dict[str, Any] = {}

    @classmethod
    def open(cls, target: Path, plugins: PluginManager | None = None, image_roots: list[Path] | None = None) -> Dataset:
        """Open a run directory (``run.sqlite`` inside) or a JSONL file. ``plugins`` describes the
        run's tools for the RR system prompt (default: the process's plugin manager);
        ``image_roots`` are further folders a JSONL file's image paths may point into."""
        dataset = cls._open(target, plugins)
        dataset.image_roots = [Path(root).expanduser().resolve() for root in image_roots or ()]
        return dataset

    @classmethod
    def _open(cls, target: Path, plugins: PluginManager | None) -> Dataset:
        target = target.expanduser()
        if target.is_dir():
            store = target / STORE_FILE
            if not store.exists():
                raise ViewerError(f"{target} is not a run directory: it has no {STORE_FILE}. "
                                  "Give a directory written by `mmat build --out DIR`, or an exported .jsonl file.")
            return cls(kind="run", label=str(target), root=target.resolve(), store_path=store, run_json=target / "run.json",
                       plugins=plugins)
        if target.is_file():
            if target.name == STORE_FILE:
                return cls.open(target.parent, plugins)
            temp = Path(tempfile.mkdtemp(prefix="mmat-view-"))
            try:
                store = import_jsonl(target, temp / STORE_FILE)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            return cls(kind="jsonl", label=str(target), root=target.resolve().parent, store_path=store, run_json=None,
                       temp_dir=temp, plugins=plugins)
        raise ViewerError(f"{target} does not exist: give a run directory or an exported .jsonl file")

    def connect(self) -> sqlite3.Connection:
        """This thread's read-only connection to the store (the viewer never writes to a run)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, check_same_thread=False)
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            self._connections.append(db)
        return db

    def version(self) -> str:
        """Changes whenever the run writes: the refresh token of the page and the caches."""
        parts = []
        for path in (self.store_path, self.store_path.with_name(self.store_path.name + "-wal"), self.run_json):
            if path is not None and path.exists():
                stat = path.stat()
                parts.append(f"{stat.st_mtime_ns}:{stat.st_size}")
        return "-".join(parts)

    def manifest(self) -> dict[str, Any] | None:
        """``run.json`` when the run has finished (it is written last, atomically)."""
        if self.run_json is None or not self.run_json.exists():
            return None
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # replaced while we read it: the next poll gets it

    def complete(self) -> bool:
        """Whether nothing more will be written (a finished run, or a JSONL file)."""
        if self.kind == "jsonl":
            return True
        manifest = self.manifest()
        return bool(manifest and manifest.get("complete"))

    def meta(self, key: str) -> Any | None:
        """A value of the store's ``meta`` table."""
        row = self.connect().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def format_context(self, trace_tools: list[str]) -> tuple[list[Any], bool, str]:
        """Tools (as :class:`ToolInfo`) and whether RAG was on, as the run's formatters saw them;
        plus a note when something had to be guessed.

        The tools are the trace's own list (the operators enabled in its run, in order). Whether
        retrieval was on comes from ``run.json``'s components, else from the stored config."""
        from mmat_core.components import ToolInfo
        from mmat_core.plugins import get_plugin_manager

        manager = self.plugins or get_plugin_manager()
        note = ""
        manifest = self.manifest()
        config = self.meta("config") if self.kind == "run" else None
        if manifest is not None and "search" in (manifest.get("components") or {}):
            rag = manifest["components"]["search"] is not None
        elif config is not None:
            rag = config.get("search") is not None
        else:
            rag = True
            note = "no run manifest here: RR assumes retrieval was enabled"
        tools = []
        for name in trace_tools:
            with self._format_lock:
                info = self._tool_infos.get(name)
            if info is None:
                try:
                    cls = manager.get("tool", name)
                    info = ToolInfo(name=name, label=cls.result_label(), description=cls.description)
                except MmatError:
                    info = ToolInfo(name=name, label=name.replace("_", " "), description="")
                with self._format_lock:
                    self._tool_infos[name] = info
            if not info.description:
                note = f"tool '{name}' is not installed here: its line of the RR system prompt is approximate"
            tools.append(info)
        return tools, rag, note

    def close(self) -> None:
        """Close every connection opened by any thread, and delete a JSONL import."""
        for db in self._connections:
            db.close()
        self._connections.clear()
        self._local = threading.local()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def import_jsonl(source: Path, store_path: Path) -> Path:
    """Stream a JSONL file into a store: records and Traces become ``samples`` rows in file
    order, quarantined rows and unreadable lines become ``rejected`` rows (with the line number)."""
    from mmat_core.store import RunStore

    store = RunStore(store_path)
    db = store.connection()
    rows: list[tuple[Any, ...]] = []
    rejected: list[tuple[Any, ...]] = []
    kinds: dict[str, int] = {}
    seq = 0

    def flush() -> None:
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT OR IGNORE INTO samples(seq, id, source, subset, status, failure, tools, question, "
                           "reflected_by, cost, trace) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            db.executemany("INSERT OR IGNORE INTO rejected(source, subset, row, reason, detail, stage) VALUES (?,?,?,?,?,?)", rejected)
        rows.clear()
        rejected.clear()

    with source.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("a JSON object was expected")  # noqa: TRY004 - handled with the JSON errors below
                if _ESCAPED_SURROGATE.search(line):
                    # A lone surrogate escape parses, but SQLite (UTF-8) cannot store the string:
                    # encoding the value finds it (a proper pair is one character by now).
                    json.dumps(obj, ensure_ascii=False).encode("utf-8")
                kind = row_kind(obj)
            except UnicodeEncodeError:
                rejected.append(("(file)", None, f"{source.name}:{number}", "viewer_unreadable_line",
                                 "a \\u escape names a lone surrogate, which UTF-8 cannot hold", "viewer"))
                continue
            except RecursionError:
                rejected.append(("(file)", None, f"{source.name}:{number}", "viewer_unreadable_line",
                                 "the line nests arrays or objects deeper than the JSON parser allows", "viewer"))
                continue
            except ValueError as exc:
                rejected.append(("(file)", None, f"{source.name}:{number}", "viewer_unreadable_line", str(exc)[:300], "viewer"))
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "rejected":
                rejected.append((_text(obj.get("source")), obj.get("subset"), f"{_text(obj.get('row'))}", _text(obj.get("reason")),
                                 _text(obj.get("detail")), _text(obj.get("stage")) or "source"))
            else:
                seq += 1
                rows.append(_import_row(seq, number, obj, kind, line.strip()))
            if len(rows) + len(rejected) >= 5000:
                flush()
    flush()
    store.set_meta("viewer_import", {"file": str(source), "kinds": kinds})
    store.close()
    return store_path


def _import_row(seq: int, number: int, obj: dict[str, Any], kind: str, text: str) -> tuple[Any, ...]:
    if kind == "trace":
        sample = obj.get("sample") or {}
        tools = sorted({c.get("name", "") for s in obj.get("steps") or [] for c in s.get("tool_calls") or []})
        reflected = sorted({v.get("critic", "") for v in obj.get("verdicts") or [] if v.get("verdict") == "fix"})
        return (seq, _text(obj.get("id")) or f"line-{number}", _text(sample.get("source")), sample.get("subset"),
                _text(obj.get("status")) or "kept", obj.get("failure"), ",".join(tools), _text(sample.get("question")),
                ",".join(reflected), float((obj.get("usage") or {}).get("cost_usd") or 0.0), text)
    provenance = obj.get("provenance") or {}
    summary = summarise(obj, kind)
    return (seq, _text(obj.get("id")) or f"line-{number}", _text(provenance.get("source")) or "(unknown)", provenance.get("subset"),
            "reflected" if summary.reflections else "kept", None, ",".join(sorted(summary.tool_calls)), record_question(obj),
            "", 0.0, text)


# -- images ----------------------------------------------------------------------------------------

#: The largest image file the viewer serves.
MAX_IMAGE_BYTES = 50 * 1024 * 1024
#: How long one image read may take in all (a stalled network mount must not hold a request).
IMAGE_READ_TIMEOUT_S = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: A JSON escape of a surrogate code point: the line may hold a lone surrogate.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _allowed_path(dataset: Dataset, name: str) -> Path | None:
    """Where a row's image path may be read from, or None when it may not.

    A run's traces were written by ``mmat build`` on this machine and name the dataset's own
    files wherever they are, so their paths are served as stored (still only regular files, capped).
    Anything else (a JSONL file)
    may come from anywhere: its paths, relative or absolute, must resolve (symlinks followed)
    to a place under the file's folder or under one of the ``--image-root`` folders."""
    path = Path(name)
    if dataset.kind == "run":
        return path  # as the build read it (a relative path: from where the viewer was started, as before)
    if not path.is_absolute():
        path = dataset.root / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop; a NUL byte or a lone surrogate in the name
        return None
    for root in (dataset.root, *dataset.image_roots):
        if resolved == root or root in resolved.parents:
            return resolved
    return None


def _read(path: Path) -> bytes | None:
    """A regular file's bytes under the size cap and deadline, else None."""
    from mmat_core.images import ImageError, read_regular_file

    try:
        return read_regular_file(path, MAX_IMAGE_BYTES, IMAGE_READ_TIMEOUT_S)
    except (ImageError, OSError):
        return None


def _trace_image(dataset: Dataset, ref: dict[str, Any]) -> bytes | None:
    """The bytes of a Trace's ImageRef: its path, else the blob of that hash in the ``images/``
    folder beside the data; only bytes that still hash to the reference are served."""
    from mmat_core.images import sha256_bytes

    digest = ref.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return None  # a "hash" like ../../x must never become part of a path
    candidates: list[Path] = []
    if isinstance(ref.get("path"), str) and ref["path"]:
        allowed = _allowed_path(dataset, ref["path"])
        if allowed is not None:
            candidates.append(allowed)
    blobs = dataset.root / "images" / digest[:2]
    if blobs.is_dir():
        for blob in sorted(blobs.glob(f"{digest}*")):
            allowed = _allowed_path(dataset, str(blob))
            if allowed is not None:
                candidates.append(allowed)
    for candidate in candidates:
        data = _read(candidate)
        if data is not None and sha256_bytes(data) == digest:
            return data
    return None


# -- one sample as the page draws it -----------------------------------------------------------


def _boxes(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Boxes to draw over the first image: ``label_bbox``-style ``{name: [[x1,y1,x2,y2], ...]}``
    (normalised when every coordinate is at most 1) and ``{"boxes": [...]}`` in pixels."""
    found: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        for call in step.get("tool_calls") or []:
            data = call.get("data")
            if not isinstance(data, dict):
                continue
            for key, value in data.items():
                if not isinstance(value, list):
                    continue
                boxes = [b for b in value if isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)]
                if not boxes or len(boxes) != len(value):
                    continue
                normalised = all(0 <= v <= 1 for b in boxes for v in b) and call.get("name") != "face_detection"
                label = call.get("name", "") if key == "boxes" else key
                for box in boxes:
                    found.append({"tool": call.get("name", ""), "label": label, "step": index, "box": box,
                                  "units": "norm" if normalised else "px"})
    return found


def sample_view(dataset: Dataset, seq: int) -> dict[str, Any] | None:
    """Everything the page shows of the sample at ``seq``: the trace (or the record read back
    into the same shape), image URLs, boxes, and the RR and ORR records exactly as exported."""
    row = dataset.connect().execute(
        "SELECT seq, id, source, subset, status, failure, tools, question, reflected_by, cost, trace FROM samples WHERE seq=?",
        (seq,),
    ).fetchone()
    if row is None:
        return None
    obj = json.loads(row[10])
    kind = row_kind(obj)
    view: dict[str, Any] = {"seq": row[0], "id": row[1], "source": row[2], "subset": row[3], "status": row[4],
                            "failure": row[5], "kind": kind, "notes": []}
    if kind == "trace":
        view["trace"] = obj
        images = obj.get("sample", {}).get("images") or []
        view["images"] = [{"url": f"/api/image/{seq}/{i}", "width": im.get("width"), "height": im.get("height"),
                           "path": im.get("path"), "sha256": im.get("sha256")} for i, im in enumerate(images)]
        view.update(_exports(dataset, obj, row[4]))
    else:
        view["trace"] = _record_as_trace(obj, kind, row)
        view["images"] = [{"url": f"/api/image/{seq}/{i}", "width": None, "height": None, "path": p, "sha256": None}
                          for i, p in enumerate(obj.get("images") or [])]
        view["rr"] = obj if kind == "rr" else None
        view["orr"] = obj if kind == "orr" else None
        view["export_note"] = f"this file holds {kind.upper()} records: the {'ORR' if kind == 'rr' else 'RR'} view is not in it"
    view["boxes"] = _boxes(view["trace"].get("steps") or [])
    return view


def _exports(dataset: Dataset, obj: dict[str, Any], status: str) -> dict[str, Any]:
    """RR and ORR records computed by the same functions the formatters call."""
    from mmat_core.formatting import orr_messages, rr_messages, training_record
    from mmat_core.models import Trace

    trace = Trace.model_validate(obj)
    tools, rag, note = dataset.format_context(trace.tools)
    result: dict[str, Any] = {
        "rr": training_record(trace, rr_messages(trace, tools, rag)),
        "orr": training_record(trace, orr_messages(trace)),
        "export_note": note,
    }
    if status not in KEPT:
        result["export_note"] = f"not exported: status is {status} (only kept, reflected and flagged samples are written)"
    else:
        config = dataset.meta("config") if dataset.kind == "run" else None
        if config is not None:
            names = {spec["name"] if isinstance(spec, dict) else str(spec) for spec in config.get("formatters") or []}
            missing = [name for name in ("rr", "orr") if name not in names]
            if missing:
                result["export_note"] = f"this run did not enable the {', '.join(missing)} formatter(s): shown as they would be written"
    return result


def _record_as_trace(obj: dict[str, Any], kind: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """An RR/ORR record read back into the Trace's shape, so one page draws both."""
    messages = obj.get("messages") or []
    if kind == "rr":
        steps, final_prompt, final_answer = rr_steps(messages)
    else:
        user = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
        answer = _text(messages[-1].get("content")) if messages else ""
        calls = [{"name": name, "result": result} for name, result in _API_BLOCK.findall(user)]
        steps = [{"kind": "rationale", "thought": _tag("THOUGHT", answer) or "", "operators": [c["name"] for c in calls],
                  "signal": "end", "tool_calls": calls, "observation": ""}]
        final_prompt, final_answer = "", (_tag("ANSWER", answer) or "").removeprefix("The answer is: ")
    return {"id": obj.get("id"), "sample": {"question": row[7], "answers": [], "source": row[2], "subset": row[3]},
            "steps": steps, "final_prompt": final_prompt, "final_answer": final_answer, "verdicts": [],
            "status": row[4], "provenance": obj.get("provenance"), "from_record": kind}


def image_bytes(dataset: Dataset, seq: int, index: int) -> tuple[bytes, str] | None:
    """The bytes and content type of image ``index`` of the sample at ``seq``.

    Only images a stored row refers to are ever served: the request names a row and a position,
    never a path. A row itself may be hostile (an exported file from anywhere), so what it names is
    checked too (:func:`_allowed_path`): in a JSONL file only regular files under the file's
    folder, or blobs of the ``images/`` folder beside it named by a 64-hex-digit SHA-256; every
    read goes through :func:`~mmat_core.images.read_regular_file` (no FIFO, device or directory,
    at most :data:`MAX_IMAGE_BYTES`, under :data:`IMAGE_READ_TIMEOUT_S`).
    """
    row = dataset.connect().execute("SELECT trace FROM samples WHERE seq=?", (seq,)).fetchone()
    if row is None:
        return None
    obj = json.loads(row[0])
    data: bytes | None = None
    if row_kind(obj) == "trace":
        images = (obj.get("sample") or {}).get("images") or []
        if not 0 <= index < len(images) or not isinstance(images[index], dict):
            return None
        data = _trace_image(dataset, images[index])
    else:
        paths = obj.get("images") or []
        if not 0 <= index < len(paths) or not isinstance(paths[index], str):
            return None
        path = _allowed_path(dataset, paths[index])
        data = _read(path) if path is not None else None
    if data is None:
        return None
    kind = next((ctype for magic, ctype in _IMAGE_TYPES if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "image/webp"
    if kind is None:
        return None  # not an image: never serve arbitrary bytes under an image URL
    return data, kind
