"""ChatEngine against a demanding user and hostile input: rows of the wrong kind, broken text,
replies that miss their format, interruptions, a cache shared between processes, images that
change, credentials. Real fake servers on 127.0.0.1, real subprocesses, real files."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from mmat_core import ChatEngine, ChatRowError, ConfigError
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.llm.test_chat_engine import engine, png, sent_images
from tests.signals import default_sigint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI server that echoes the last user text (``echo: ...``)."""
    with FakeOpenAIServer() as fake:
        yield fake


def wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it holds (a deadline, not a timing: it fails only when stuck)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


# -- rows of the wrong kind --------------------------------------------------------------------


def test_one_string_given_as_rows_is_refused_not_sent_letter_by_letter(server):
    with engine(server) as chat, pytest.raises(ConfigError, match=r"rows: .*got one str; give \[row\]"):
        chat.run("What is 2+2?")
    assert server.completions() == []


def test_one_dict_given_as_rows_is_refused_not_sent_key_by_key(server):
    with engine(server) as chat, pytest.raises(ConfigError, match="got one dict"):
        asyncio.run(chat.arun({"prompt": "hi"}))  # type: ignore[arg-type]
    assert server.completions() == []


def test_a_dataframe_given_as_rows_is_refused_not_sent_column_name_by_column_name(server):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"prompt": ["a", "b"]})
    with engine(server) as chat, pytest.raises(ConfigError, match=r"df\['prompt'\]"):
        chat.run(frame)
    with engine(server) as chat:
        assert chat.run(frame.to_dict("records")).texts() == ["echo: a", "echo: b"]
    assert len(server.completions()) == 2


def test_a_generator_that_raises_midway_keeps_the_answers_it_gave_for_a_rerun(server, tmp_path):
    def rows() -> Iterator[str]:
        for n in range(5):
            yield f"row {n}"
        raise OSError("the data file went away")

    with engine(server, cache=tmp_path / "cache") as chat, pytest.raises(OSError, match="went away"):
        chat.run(rows())
    with engine(server, cache=tmp_path / "cache") as chat:
        again = chat.run([f"row {n}" for n in range(5)])
    assert again.texts() == [f"echo: row {n}" for n in range(5)]
    # Rows in flight when the error came are cancelled, the ones answered stay answered: over
    # both runs each row is paid for once.
    assert sorted(r.user_text() for r in server.completions()) == [f"row {n}" for n in range(5)]


def test_a_generator_over_a_sqlite_cursor_is_read_in_the_callers_thread(server):
    import sqlite3

    db = sqlite3.connect(":memory:")  # its objects may be used only in this thread
    db.execute("CREATE TABLE questions (text TEXT)")
    db.executemany("INSERT INTO questions VALUES (?)", [(f"q{n}",) for n in range(30)])
    with engine(server, concurrency=2) as chat:
        answers = chat.run(text for (text,) in db.execute("SELECT text FROM questions ORDER BY rowid"))
    assert answers.texts() == [f"echo: q{n}" for n in range(30)]


# -- broken text ---------------------------------------------------------------------------------


def test_a_lone_surrogate_fails_its_row_by_name_and_the_others_keep_their_places(server):
    with engine(server) as chat:
        answers = chat.run(["first", "cut emoji \ud83d here", "third \U0001f600 ok"])
    assert [a.index for a in answers] == [0, 1, 2]
    assert answers[1].error_type == "RowError"
    assert "lone surrogate '\\ud83d' at character 10" in (answers[1].error or "")
    assert answers.texts() == ["echo: first", None, "echo: third \U0001f600 ok"]
    assert len(server.completions()) == 2


def test_an_error_that_is_no_rows_fault_stops_the_run_naming_the_row(server):
    # A schema no request body can carry: the cache key cannot be made. Before, the row
    # vanished from the results silently and the run reported success.
    schema = {"type": "object", "description": "bad \udc80"}
    with engine(server, response_format=schema) as chat, pytest.raises(ChatRowError, match="row 0: UnicodeEncodeError"):
        chat.run(["a"])


# -- replies that miss their format ----------------------------------------------------------


class Colour(BaseModel):
    name: str
    hex: str


def test_a_reply_that_is_not_json_is_reasked_by_the_backend_then_parsed(server):
    server.queue(Reply.text("Sure! The colour is red."), Reply.json({"name": "red", "hex": "#f00"}))  # type: ignore[call-arg]
    with engine(server, response_format=Colour) as chat:
        [answer] = chat.run(["Name a colour."])
    assert answer.parsed == Colour(name="red", hex="#f00")
    messages = server.completions()[1].body["messages"]
    assert messages[-2] == {"role": "assistant", "content": "Sure! The colour is red."}
    assert messages[-1]["role"] == "user"


def test_a_reply_still_not_json_after_the_reasks_is_the_rows_error_not_a_crash(server):
    server.responder = lambda request: Reply.text("not json {")  # type: ignore[call-arg]
    with engine(server, response_format=Colour, schema_repair_attempts=2) as chat:
        answers = chat.run(["Name a colour.", "Another."])
    assert [a.error_type for a in answers] == ["ResponseFormatError"] * 2
    assert "no JSON object found" in (answers[0].error or "")
    assert answers[0].text == "not json {"  # kept: it was paid for
    assert len(server.completions()) == 6  # the first ask and two re-asks, each row


# -- interruptions ----------------------------------------------------------------------------

#: Rows 0-6 are answered, row 7 hangs; one call at a time, so when the server sees row 7 the
#: answers to rows 0-6 are in the engine (put in the cache, not yet committed).
HANG_FROM = 7


def answer_until_row_7(request):  # type: ignore[no-untyped-def]
    return Reply.hang() if int(request.user_text().split()[1]) >= HANG_FROM else Reply.text(f"echo: {request.user_text()}")


def rerun_requests(server: FakeOpenAIServer, cache: Path) -> int:
    """Requests a rerun of rows 0-9 with ``cache`` sends, all answered now."""
    server.responder = lambda request: Reply.text(f"echo: {request.user_text()}")  # type: ignore[call-arg]
    before = len(server.completions())
    with engine(server, cache=cache) as chat:
        answers = chat.run([f"row {n}" for n in range(10)])
    assert all(a.ok for a in answers)
    return len(server.completions()) - before


CHILD = """
import sys
from mmat_core import ChatEngine
engine = ChatEngine("openai", model="gpt-4o", base_url=sys.argv[1], api_key_env=None, cache=sys.argv[2],
                    concurrency=1, timeout_s=120, progress=False)
rows = (f"row {n}" for n in range(10))
engine.run(list(rows) if sys.argv[3] == "list" else rows)  # no `with`, no close(): Ctrl-C ends the program
"""


@pytest.mark.parametrize("given_as", ["list", "generator"])
def test_ctrl_c_in_run_commits_the_answers_so_far_so_a_rerun_pays_only_the_rest(server, tmp_path, given_as):
    server.responder = answer_until_row_7
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.base_url, str(tmp_path / "cache"), given_as], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        wait_for(lambda: any(r.user_text() == f"row {HANG_FROM}" for r in server.completions()))
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert "KeyboardInterrupt" in err
    assert rerun_requests(server, tmp_path / "cache") == 10 - HANG_FROM


def test_a_cancelled_arun_keeps_its_answers_for_a_rerun(server, tmp_path):
    server.responder = answer_until_row_7
    chat = engine(server, cache=tmp_path / "cache", concurrency=1, timeout_s=120)

    async def start_and_cancel() -> None:
        task = asyncio.ensure_future(chat.arun([f"row {n}" for n in range(10)]))
        while not any(r.user_text() == f"row {HANG_FROM}" for r in server.completions()):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_and_cancel())
    chat.close()  # at once: the cancelled run commits before the cache closes
    assert rerun_requests(server, tmp_path / "cache") == 10 - HANG_FROM


def test_run_works_inside_a_running_event_loop(server):
    async def notebook_cell() -> list[str | None]:
        with engine(server) as chat:
            return chat.run(["from a notebook"]).texts() + chat.run(f"gen {n}" for n in range(3)).texts()

    assert asyncio.run(notebook_cell()) == ["echo: from a notebook", "echo: gen 0", "echo: gen 1", "echo: gen 2"]


def test_arun_reads_a_generator_too(server):
    with engine(server) as chat:
        answers = asyncio.run(chat.arun(f"gen {n}" for n in range(3)))
    assert answers.texts() == ["echo: gen 0", "echo: gen 1", "echo: gen 2"]


# -- one cache, two processes, files that change ------------------------------------------------

SHARER = """
import json, sys
from mmat_core import ChatEngine
start = int(sys.argv[3])
with ChatEngine("openai", model="gpt-4o", base_url=sys.argv[1], api_key_env=None, cache=sys.argv[2],
                concurrency=8, progress=False) as engine:
    answers = engine.run([f"row {n}" for n in range(start, start + 200)])
print(json.dumps({"answered": answers.summary.answered, "errors": answers.summary.errors}))
"""


def test_two_processes_share_one_cache_folder_at_once(server, tmp_path):
    # Overlapping rows (100-199 in both): neither fails on the shared SQLite file, and a rerun
    # of all of them is answered from it.
    children = [subprocess.Popen([sys.executable, "-c", SHARER, server.base_url, str(tmp_path / "cache"), str(start)],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for start in (0, 100)]
    outputs = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert json.loads(out) == {"answered": 200, "errors": {}}
    sent = len(server.completions())
    assert 300 <= sent <= 400  # an overlapping row may be asked by both at the same moment
    with engine(server, cache=tmp_path / "cache") as chat:
        answers = chat.run([f"row {n}" for n in range(300)])
    assert len(server.completions()) == sent
    assert answers.texts() == [f"echo: row {n}" for n in range(300)]


def test_an_image_file_that_changes_between_runs_is_asked_again(server, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png((200, 0, 0)))
    row = {"prompt": "What colour?", "images": [path]}
    with engine(server, cache=tmp_path / "cache") as chat:
        first = chat.run([row])
    path.write_bytes(png((0, 0, 200)))  # the same path, other bytes
    with engine(server, cache=tmp_path / "cache") as chat:
        second = chat.run([row])
    assert not second[0].cached
    assert second[0].cache_key != first[0].cache_key
    assert sent_images(server.completions()[1]) == [path.read_bytes()]


# -- credentials -------------------------------------------------------------------------------

KEY = "sk-proj-ChatEngineTestKey0123456789abcdefXYZ"


def test_the_api_key_reaches_no_cache_file_and_no_error(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MMAT_TEST_CHAT_KEY", KEY)
    # The server echoes the key in an answer and in a refusal, as real ones do in error bodies.
    server.responder = lambda request: (Reply.status(401, f"Incorrect API key provided: {KEY}") if "refuse" in request.user_text()
                                        else Reply.text(f"your key is {KEY}"))  # type: ignore[call-arg]
    with ChatEngine("openai", model="gpt-4o", base_url=server.base_url, api_key_env="MMAT_TEST_CHAT_KEY",
                    cache=tmp_path / "cache", progress=False, llm_engine={"backoff_base_s": 0.0}) as chat:
        answers = chat.run([f"echo the key {KEY}", "refuse me"])
        text = repr(chat)
    assert server.completions()[0].headers["authorization"] == f"Bearer {KEY}"  # it was used
    assert KEY not in (answers[1].error or "") and "***" in (answers[1].error or "")
    assert KEY not in text
    files = list((tmp_path / "cache").iterdir())
    assert files and all(KEY.encode() not in f.read_bytes() for f in files)
    assert all(KEY[8:30].encode() not in f.read_bytes() for f in files)  # nor a long part of it


def test_a_run_that_stops_early_stops_reading_a_generator(server):
    read: list[int] = []

    def rows() -> Iterator[str]:
        for n in range(10_000):
            read.append(n)
            yield "refuse" if n == 3 else f"row {n}"

    server.responder = lambda request: (Reply.status(400, "no") if request.user_text() == "refuse"
                                        else Reply.text(f"echo: {request.user_text()}"))  # type: ignore[call-arg]
    with engine(server, concurrency=1, on_error="raise") as chat, pytest.raises(ChatRowError, match="row 3"):
        chat.run(rows())
    assert len(read) < 100  # the rows in flight and those waiting for room, not all 10,000


def test_a_password_in_the_base_url_reaches_no_cache_file(server, tmp_path):
    # The backend's identity (its base_url) is part of each cache entry's key document.
    url = server.base_url.replace("http://", "http://alice:Hunter2SecretPw99@")
    with ChatEngine("openai", model="gpt-4o", base_url=url, api_key_env=None, cache=tmp_path / "cache",
                    progress=False) as chat:
        assert chat.run(["hi"])[0].ok
    data = b"".join(f.read_bytes() for f in (tmp_path / "cache").iterdir())
    assert b"Hunter2SecretPw99" not in data
    assert b"alice:***@" in data
