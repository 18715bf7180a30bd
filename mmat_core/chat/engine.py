"""Many chat requests through mmat's engine, from Python: :class:`ChatEngine`.

::

    from mmat_core import ChatEngine

    with ChatEngine("openai", model="gpt-4o-mini", cache="chat-cache", concurrency=32, rpm=500) as engine:
        answers = engine.run(["What is 2+2?", {"prompt": "What is in the picture?", "images": ["cat.png"]}])
    print(answers[0].text, answers.summary)

Every request goes the way a build's model calls go (:class:`~mmat_core.engine.client.EngineClient`):
the cache first, an identical request in flight is awaited rather than sent again, then the
scheduler with its limits (calls in flight, requests and tokens per minute, adaptive admission,
circuit breaker), retries with backoff that honour ``Retry-After``, and the price table. A row
that fails (an image that cannot be read, a refused request, retries exhausted) gets its error on
its result and the other rows go on, unless ``on_error="raise"``.

The engine runs on its own event loop in a background thread, so :meth:`ChatEngine.run` works the
same in a script, in a notebook (whose loop is already running) and from several threads, and
:meth:`ChatEngine.arun` can be awaited from any loop: the limits and the cache are the engine's,
shared by all its runs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmat_core.chat.feed import RowFeed
from mmat_core.chat.progress import ChatProgress
from mmat_core.chat.rows import ChatRequest, PreparedRow, RowDefaults, needs_io, prepare_row
from mmat_core.components import LLMBackend
from mmat_core.engine.cache import Cache
from mmat_core.engine.client import EngineClient, build_client
from mmat_core.engine.errors import LLMCallError
from mmat_core.engine.schemacheck import schema_errors
from mmat_core.engine.settings import SAMPLES_PER_CALL_SLOT, LLMEngineSettings
from mmat_core.errors import ConfigError, MmatError, first_validation_problem
from mmat_core.images import DEFAULT_MAX_BYTES, ImageStore
from mmat_core.models import ImageRef, Usage
from mmat_core.replies import extract_json_object, strip_code_fence

if TYPE_CHECKING:
    from mmat_core.plugins import PluginManager


class ChatResult(BaseModel):
    """The answer to one row, at the row's place in the input."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    index: int = Field(description="the row's position in the input")
    text: str | None = Field(None, description="the reply's text (None when the row failed before an answer)")
    parsed: Any = Field(None, description="with a response_format: the reply as that pydantic model, or as JSON data")
    model: str | None = Field(None, description="the model that answered, as the server named it")
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage, description="tokens and estimated USD of this row (0 when cached)")
    cached: bool = Field(False, description="answered from the cache, or by an identical row in flight")
    attempts: int = Field(0, description="attempts the scheduler made for the answer (0 when cached or failed)")
    cache_key: str | None = Field(None, description="the request's cache key (`mmat cache explain` reads it)")
    error: str | None = Field(None, description="why the row has no usable answer")
    error_type: str | None = Field(None, description="the error's kind: RateLimited, ImageError, RowError, ...")

    @property
    def ok(self) -> bool:
        """Whether the row has an answer (and, with a response_format, a parsed one)."""
        return self.error is None


class ChatSummary(BaseModel):
    """What one run did and cost."""

    rows: int = 0
    answered: int = 0
    failed: int = 0
    requests: int = Field(0, description="HTTP requests the engine sent during the run, failed attempts included")
    cached: int = Field(0, description="rows answered from the cache or by an identical row in flight")
    retries: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    errors: dict[str, int] = Field(default_factory=dict, description="failed rows by error type")
    binding: str = Field("", description="what bounded throughput, with the setting to change")
    unpriced: list[str] = Field(default_factory=list, description="backend:model pairs with no price (cost shows 0)")

    def __str__(self) -> str:
        failed = f", {self.failed} failed ({', '.join(f'{k} {v}' for k, v in sorted(self.errors.items()))})" if self.failed else ""
        return (f"{self.rows} rows: {self.answered} answered{failed} | {self.requests} requests, {self.cached} from cache, "
                f"{self.retries} retries | {self.prompt_tokens + self.completion_tokens:,} tokens | "
                f"${self.cost_usd:.4f} estimated | {self.elapsed_s:.1f}s")


class ChatResults(list[ChatResult]):
    """The results of a run in input order, with the run's :class:`ChatSummary` as ``summary``."""

    def __init__(self, results: Iterable[ChatResult], summary: ChatSummary) -> None:
        super().__init__(results)
        self.summary = summary

    def texts(self) -> list[str | None]:
        """Each row's reply text (None for a failed row)."""
        return [result.text if result.ok else None for result in self]


class ChatRowError(MmatError):
    """A row failed and the engine was told ``on_error="raise"``, or a row met an error that is
    no row's fault (a cache that cannot be written, a bug): the run stops rather than lose the
    row. ``index`` is the row, the original error is ``__cause__``."""

    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        super().__init__(f"row {index}: {type(error).__name__}: {error}")


class _HeldImages(ImageStore):
    """The bytes of the images of rows in flight, by hash (rows given as bytes or PIL images have
    no file to read again); released when their row is answered."""

    def __init__(self) -> None:
        super().__init__(None)
        self._held: dict[str, list[Any]] = {}

    def hold(self, images: dict[str, bytes]) -> None:
        for digest, data in images.items():
            entry = self._held.setdefault(digest, [data, 0])
            entry[1] += 1

    def release(self, images: dict[str, bytes]) -> None:
        for digest in images:
            entry = self._held.get(digest)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._held[digest]

    def load(self, ref: ImageRef) -> bytes:
        entry = self._held.get(ref.sha256)
        return entry[0] if entry is not None else super().load(ref)


def _reply_data(text: str, schema: dict[str, Any], model: type[BaseModel] | None) -> Any:
    """The reply as the pydantic ``model``, or as JSON data checked against ``schema``."""
    body = strip_code_fence(text)
    try:
        data = json.loads(body)
    except ValueError:
        data = extract_json_object(body)  # a ReplyJSONError (a ValueError) names what is wrong
    if model is not None:
        return model.model_validate(data)
    errors = schema_errors(schema, data)
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(root)"
        raise ValueError(f"{where}: {errors[0].message}")
    return data


def _shut_down(loop: asyncio.AbstractEventLoop, cache: Cache) -> None:
    """What an engine dropped without :meth:`ChatEngine.close` (or left open at exit) still owes:
    its loop stopped and its cache committed and closed."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
    try:
        cache.close()
    except (sqlite3.Error, RuntimeError):  # closed already, or its writer is gone at exit
        pass


def _check_rows(rows: Any) -> None:
    """One row given where rows are expected would be iterated: a string as its characters, a
    dict as its keys, each sent (and paid for) as a row."""
    if isinstance(rows, (str, bytes, dict, ChatRequest)) or not isinstance(rows, Iterable):
        raise ConfigError(f"expected an iterable of rows (a list, a generator), got one {type(rows).__name__}; "
                          "give [row] to send one row", key="rows")
    if hasattr(rows, "columns") and hasattr(rows, "iterrows"):  # a pandas DataFrame iterates its column names
        raise ConfigError("a DataFrame iterates its column names, not its rows: give one column (df['prompt']) "
                          "or df.to_dict('records') with ChatRequest fields as columns", key="rows")


async def _numbered(rows: Iterable[Any] | AsyncIterable[Any]) -> Any:
    """``enumerate`` over plain or async rows."""
    index = 0
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            yield index, row
            index += 1
    else:
        for row in rows:
            yield index, row
            index += 1


#: How long a run interrupted by Ctrl-C may take to cancel its rows and commit the answers so far.
CLEANUP_WAIT_S = 30.0


#: The scheduler limits that ChatEngine takes as keyword arguments of their own.
_LIMIT_ARGUMENTS = ("concurrency", "rpm", "tpm", "max_attempts", "timeout_s")


class ChatEngine:
    """Sends many chat requests through mmat's cache, scheduler and LLM backends.

    ``backend`` is a backend name (``"openai"``, ``"anthropic"``, ``"offline"`` or a plugin's), a
    ``{"name": ..., **options}`` dict or a ready :class:`~mmat_core.LLMBackend`; further keyword
    arguments are that backend's options (``model``, ``base_url``, ``api_key_env``, ...,
    docs/llms.md), validated at once.

    ``concurrency`` (model calls in flight), ``rpm``, ``tpm``, ``max_attempts`` and ``timeout_s``
    are the scheduler's limits; ``llm_engine`` takes any other setting of the build's
    ``llm_engine`` section (backoff, adaptive admission, breaker, ``prices``, ``mode: batch``).

    ``cache`` is a directory (its ``cache.sqlite``, so a build's run directory shares the build's
    answers) or a ``.sqlite`` file: a rerun then makes no request for rows answered before. Left
    None, answers are cached in memory for the engine's lifetime only.

    ``system``, ``temperature``, ``max_tokens`` and ``response_format`` (a pydantic model class or
    a JSON Schema dict) apply to every row that does not set its own. ``on_error`` is
    ``"record"`` (a failed row gets its error, the rest go on) or ``"raise"`` (the first failure
    stops the run: rows in flight are cancelled and :class:`ChatRowError` is raised). A reply that
    misses the ``response_format`` is re-asked by the backend (its ``schema_repair_attempts``
    option, 1 by default) before it is the row's error.
    ``progress`` shows the run as ``mmat build`` does (default: ``llm_engine.progress``).
    Rows longer than ``max_row_chars`` fail before any request (``row_too_long``).
    """

    def __init__(self, backend: str | dict[str, Any] | LLMBackend = "offline", *,
                 cache: str | Path | None = None,
                 concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
                 max_attempts: int | None = None, timeout_s: float | None = None,
                 llm_engine: LLMEngineSettings | dict[str, Any] | None = None,
                 system: str | None = None, temperature: float | None = None, max_tokens: int | None = 1024,
                 response_format: Any = None,
                 on_error: Literal["record", "raise"] = "record", progress: bool | None = None,
                 max_row_chars: int | None = 1_000_000, max_image_bytes: int = DEFAULT_MAX_BYTES,
                 plugins: PluginManager | None = None, **options: Any) -> None:
        from mmat_core.config import validation_error
        from mmat_core.run.assembly import create_component

        if on_error not in ("record", "raise"):
            raise ConfigError(f"on_error must be 'record' or 'raise', not {on_error!r}", key="on_error")
        settings = llm_engine.model_dump() if isinstance(llm_engine, LLMEngineSettings) else dict(llm_engine or {})
        given = {"concurrency": concurrency, "rpm": rpm, "tpm": tpm, "max_attempts": max_attempts, "timeout_s": timeout_s}
        for key in _LIMIT_ARGUMENTS:
            if given[key] is None:
                continue
            if key in settings and settings[key] != given[key]:
                raise ConfigError(f"{key} is given twice (as an argument and in llm_engine); give it once", key=key)
            settings[key] = given[key]
        try:
            self.settings = LLMEngineSettings.model_validate(settings)
        except ValidationError as exc:
            raise validation_error(exc, LLMEngineSettings, None, prefix="llm_engine.") from None
        if isinstance(backend, LLMBackend):
            if options:
                raise ConfigError(f"options {sorted(options)} were given with a ready backend object; set them on it",
                                  key="backend")
            spec: Any = backend
        else:
            spec = {"name": backend} if isinstance(backend, str) else dict(backend)
            spec.update(options)
        self.backend: LLMBackend = create_component("llm", spec, key="backend", plugins=plugins)  # type: ignore[assignment]
        self.defaults = RowDefaults(system=system, response_format=response_format, temperature=temperature,
                                    max_tokens=max_tokens, max_row_chars=max_row_chars, max_image_bytes=max_image_bytes)
        prepare_row("check", self.defaults)  # a bad response_format fails here, not on every row
        self.on_error = on_error
        self.progress = self.settings.progress if progress is None else progress
        self.cache_path = self._cache_file(cache)
        if self.settings.mode == "batch" and self.cache_path is None:
            raise ConfigError("batch mode keeps its journal of submitted batches beside the cache: give cache=DIR",
                              key="llm_engine.mode")
        self.images = _HeldImages()
        self._cache = self._open_cache(self.cache_path)  # a path that cannot hold a cache fails here
        self._client: EngineClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer: weakref.finalize[Any, Any] | None = None
        #: The runs going on in the engine's loop (close() lets them commit before the cache closes).
        self._runs: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        cache = str(self.cache_path) if self.cache_path is not None else "memory"
        return (f"ChatEngine({self.backend.name}:{self.backend.model}, concurrency={self.settings.concurrency}, "
                f"rpm={self.settings.rpm}, tpm={self.settings.tpm}, mode={self.settings.mode}, cache={cache})")

    # -- set-up and tear-down ---------------------------------------------------------------

    @staticmethod
    def _cache_file(cache: str | Path | None) -> Path | None:
        if cache is None:
            return None
        path = Path(cache).expanduser()
        if path.suffix in (".sqlite", ".db") or path.is_file():
            return path
        return path / "cache.sqlite"

    @property
    def rows_in_flight(self) -> int:
        """Rows prepared and waiting or being answered at once: twice the call slots online (as a
        build keeps twice as many samples in flight), ``batch_max_requests`` in batch mode."""
        if self.settings.mode == "batch":
            return self.settings.batch_max_requests
        return SAMPLES_PER_CALL_SLOT * self.settings.call_slots(self.backend.name, self.backend.model)

    def _loop_running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise MmatError("this ChatEngine is closed; create a new one")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="mmat-chat-engine", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
                # An engine dropped without close(), or left open when the program ends, must not
                # leave its thread running nor its last answers uncommitted.
                self._finalizer = weakref.finalize(self, _shut_down, loop, self._cache)
            return self._loop

    @staticmethod
    def _open_cache(path: Path | None) -> Cache:
        if path is None:
            return Cache(Path(":memory:"))  # SQLite in memory: the engine's lifetime only
        try:
            # Writes gather for a quarter of a second, as in a build; each run commits at its end.
            return Cache(path, commit_after_s=0.25)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot use it as a cache: {exc}", file=str(path), key="cache") from None

    def _client_ready(self) -> EngineClient:
        """The engine client, created in the engine's loop on first use (a batch runner resumes
        the batches an earlier engine left in flight there)."""
        if self._client is None:
            run_dir = self.cache_path.parent if self.cache_path is not None else Path(".")
            self._client = build_client(self.backend, self.settings, self.images, self._cache, run_dir)
        return self._client

    def close(self) -> None:
        """Commit the cache, close the backend's connections and stop the engine's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:  # never ran: nothing in flight, no connection open
            self._cache.close()
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout=60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()

    async def _aclose(self) -> None:
        try:
            # A run still going (another thread's, or a cancelled arun cleaning up) stops and
            # commits its answers before the cache closes under it.
            for task in self._runs:
                task.cancel()
            await asyncio.gather(*self._runs, return_exceptions=True)
            if self._client is not None:
                await self._client.aclose()
            await self.backend.aclose()
        finally:
            self._cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running ----------------------------------------------------------------------------

    def run(self, rows: Iterable[Any]) -> ChatResults:
        """Answer every row; returns the results in input order, with ``.summary``.

        A list or tuple is read by the engine; any other iterable (a generator) is advanced in
        the calling thread (:mod:`mmat_core.chat.feed`), so one over a SQLite cursor works."""
        _check_rows(rows)
        loop = self._loop_running()  # first: a closed engine raises before a coroutine is made
        finished = threading.Event()
        feed = None if isinstance(rows, (list, tuple)) else RowFeed(rows, loop, self.rows_in_flight)
        future: Future[ChatResults] = asyncio.run_coroutine_threadsafe(
            self._run(rows if feed is None else feed, finished), loop)
        try:
            if feed is not None:
                feed.pump(future)
            return future.result()
        except KeyboardInterrupt:
            # The rows in flight are cancelled; the answers so far are committed to the cache
            # before Ctrl-C goes on (the program may end now), so a rerun pays only for the rest.
            if feed is not None:
                feed.stopped.set()
            future.cancel()
            finished.wait(CLEANUP_WAIT_S)
            raise

    async def arun(self, rows: Iterable[Any]) -> ChatResults:
        """:meth:`run` for async code: awaitable from any event loop (cancelling it cancels the run,
        and the answers so far stay in the cache). The rows are read in the engine's thread: give
        a list, or a generator that any thread may advance."""
        _check_rows(rows)
        loop = self._loop_running()
        future = asyncio.run_coroutine_threadsafe(self._run(rows), loop)
        return await asyncio.wrap_future(future)

    def _counters(self, client: EngineClient) -> dict[str, int]:
        stats = client.scheduler.stats
        return {"requests": client.calls_made, "cached": client.cached_calls + client.coalesced_calls,
                "retries": stats.retries, "rate_limited": stats.rate_limited}

    async def _run(self, rows: Iterable[Any] | RowFeed, finished: threading.Event | None = None) -> ChatResults:
        task = asyncio.current_task()
        assert task is not None
        self._runs.add(task)
        try:
            return await self._run_rows(rows)
        finally:
            self._runs.discard(task)
            if finished is not None:
                finished.set()

    async def _run_rows(self, rows: Iterable[Any] | RowFeed) -> ChatResults:
        client = self._client_ready()
        before = self._counters(client)
        started = time.monotonic()
        results: list[ChatResult | None] = []
        usage = Usage()
        failures: list[tuple[int, BaseException]] = []  # rows that stop the run (on_error="raise", or no row's fault)
        total = rows.total if isinstance(rows, RowFeed) else len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]

        def snapshot() -> dict[str, Any]:
            data = client.scheduler.snapshot()
            now = self._counters(client)
            data.update({key: now[key] - before[key] for key in now}, tokens=usage.prompt_tokens + usage.completion_tokens,
                        cost_usd=usage.cost_usd)
            return data

        progress = ChatProgress(total, snapshot) if self.progress else None
        slots = asyncio.Semaphore(self.rows_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(index: int, row: Any) -> None:
            try:
                try:
                    result, error = await self._answer(client, index, row)
                except Exception as exc:  # noqa: BLE001 - no row's fault (a cache write failed, a bug): stop, lose no row
                    failures.append((index, exc))
                    return
                results[index] = result
                usage.add(result.usage)
                if error is not None and self.on_error == "raise":
                    failures.append((index, error))
                if progress is not None:
                    progress.update(failed=not result.ok)
            finally:
                slots.release()

        try:
            async for index, row in _numbered(rows):
                if failures:
                    break
                results.append(None)
                await slots.acquire()
                task = asyncio.create_task(answer(index, row))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
                if failures:
                    break
        finally:
            if tasks:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await self._cache.commit()
            if progress is not None:
                progress.close()
        if failures:
            index, error = failures[0]
            raise ChatRowError(index, error) from error
        done = [r for r in results if r is not None]
        now = self._counters(client)
        errors: dict[str, int] = {}
        for result in done:
            if not result.ok:
                errors[result.error_type or "error"] = errors.get(result.error_type or "error", 0) + 1
        summary = ChatSummary(
            rows=len(done), answered=sum(r.ok for r in done), failed=sum(not r.ok for r in done),
            requests=now["requests"] - before["requests"], cached=sum(r.cached for r in done),
            retries=now["retries"] - before["retries"], rate_limited=now["rate_limited"] - before["rate_limited"],
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
            elapsed_s=time.monotonic() - started, errors=errors, binding=client.scheduler.describe_binding(),
            unpriced=sorted(client.prices.unpriced),
        )
        return ChatResults(done, summary)

    async def _answer(self, client: EngineClient, index: int, row: Any) -> tuple[ChatResult, BaseException | None]:
        """One row's result and, when it failed, its error: every failure a row can cause ends on
        its result."""
        try:
            prepared: PreparedRow = (await asyncio.to_thread(prepare_row, row, self.defaults) if needs_io(row)
                                     else prepare_row(row, self.defaults))
        except MmatError as exc:  # RowError, ImageError: the row, not the engine
            return ChatResult(index=index, error=str(exc), error_type=type(exc).__name__), exc
        self.images.hold(prepared.images)
        try:
            return await self._ask(client, index, prepared)
        finally:
            self.images.release(prepared.images)

    async def _ask(self, client: EngineClient, index: int, prepared: PreparedRow) -> tuple[ChatResult, BaseException | None]:
        try:
            response, call = await client.complete(prepared.request)
        except LLMCallError as exc:
            return ChatResult(index=index, error=str(exc), error_type=type(exc).__name__), exc
        result = ChatResult(index=index, text=response.text, model=response.model, finish_reason=response.finish_reason,
                            usage=call.usage, cached=call.cached, attempts=0 if call.cached else call.attempts,
                            cache_key=call.cache_key)
        schema = prepared.request.response_schema
        if schema is not None:
            try:
                result.parsed = _reply_data(response.text, schema, prepared.schema_model)
            except ValueError as exc:  # ReplyJSONError and pydantic's ValidationError are ValueErrors
                problem = first_validation_problem(exc) if isinstance(exc, ValidationError) else str(exc)
                result.error = f"the reply does not match response_format: {problem}"
                result.error_type = "ResponseFormatError"
                return result, exc
        return result, None
