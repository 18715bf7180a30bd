"""One suite run: ``mmat serve`` once, then one lmms-eval process per mode, then the table.

Why this shape (docs/evaluation.md has the measurements): lmms-eval pins packages that disagree
with mmat's (torchvision's CUDA wheels, transformers, datasets), so it runs in its own
interpreter (``--lmms-python``, default this one) and talks to the agent over HTTP with its own
OpenAI-compatible model. ``mmat serve`` answers ``NAME:rr``, ``NAME:orr`` and ``NAME:plain`` from
one process, so the model is loaded once for all three modes. One lmms-eval process per mode
covers every task, because each start of lmms-eval costs seconds of imports and task indexing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmat_plugins.evaluation.lmms import suite
from mmat_plugins.evaluation.lmms.suite import BenchmarkSpec, SuiteRow
from pydantic import BaseModel, ConfigDict, Field

from mmat_core import ConfigError, MmatError

#: Benchmarks whose lmms-eval scoring calls a judge model.
JUDGED = {"mathvista", "hallusionbench"}
_LISTENING = re.compile(r"listening on (http://\S+)")

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations are not evaluated at run time


class SuiteOptions(BaseModel):
    """What ``mmat eval --suite paper`` was asked (validated once, before anything starts)."""

    model_config = ConfigDict(extra="forbid")
    modes: list[str]
    out: Path
    #: ``mmat serve`` arguments that choose the model (``--model``, ``--endpoint``, ``--tools``, ...).
    serve_args: list[str] = Field(default_factory=list)
    #: An OpenAI-compatible server that already serves the agent (``mmat serve``); none: mmat starts one.
    serve_url: str | None = None
    served_name: str = "mmat-eval"
    benchmarks: list[str] = Field(default_factory=lambda: [spec.key for spec in suite.PAPER_BENCHMARKS])
    data_root: Path | None = None
    limit: int | None = None
    lmms_python: str = sys.executable
    concurrency: int = 4
    request_timeout_s: int = 600
    serve_start_timeout_s: float = 300.0
    judge: str | None = None
    judge_options: dict[str, Any] = Field(default_factory=dict)
    dynvqa: Path | None = None
    dynvqa_images: Path | None = None
    dynvqa_golden: bool = True
    label: str = "model"
    #: Extra lmms-eval arguments, appended as given (e.g. ``--gen_kwargs=max_new_tokens=32``).
    lmms_args: list[str] = Field(default_factory=list)


class ModeResult(BaseModel):
    """One mode's figures (benchmark key -> 0-100) and where lmms-eval wrote its files."""

    mode: str
    scores: dict[str, float]
    output_dir: Path
    judge_calls: int = 0


class EvalRunError(MmatError):
    """lmms-eval or ``mmat serve`` failed; the message names the log to read."""


def selected(keys: Sequence[str]) -> list[BenchmarkSpec]:
    """The benchmarks named in ``keys``, in the paper's column order; unknown names are a ConfigError."""
    known = {spec.key: spec for spec in suite.PAPER_BENCHMARKS}
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise ConfigError(f"--benchmarks: unknown {', '.join(unknown)}; allowed: {', '.join(known)}")
    return [spec for spec in suite.PAPER_BENCHMARKS if spec.key in keys]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class ServeProcess:
    """``mmat serve`` in a child process on a free loopback port (a context manager)."""

    def __init__(self, args: Sequence[str], served_name: str, log: Path, start_timeout_s: float) -> None:
        self.args = list(args)
        self.served_name = served_name
        self.log = log
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> Self:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-c", "from mmat_core.cli import run; run()", "serve", *self.args,
                   "--host", "127.0.0.1", "--port", "0", "--served-model-name", self.served_name,
                   # Every answer with its Trace (the tool calls behind each benchmark answer).
                   "--log", str(self.log.parent / "answers.jsonl")]
        handle = self.log.open("wb")
        self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log.read_text(encoding="utf-8", errors="replace"))
            if match:
                self.base_url = match.group(1).rstrip("/")
                return self
            if self.process.poll() is not None:
                raise EvalRunError(f"mmat serve stopped (exit {self.process.returncode}) before listening; "
                                   f"its log {self.log}:\n{_tail(self.log)}")
            time.sleep(0.2)
        self.__exit__()
        raise EvalRunError(f"mmat serve did not listen within {self.start_timeout_s:.0f} s; its log: {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


_FAILED_REQUEST = re.compile(r"All \d+ attempts failed\. Last error: (.*)")


def failed_requests(log: Path) -> list[str]:
    """The last error of every request lmms-eval gave up on (its OpenAI model logs one line each;
    it then scores an empty answer, so without this a broken agent would read as a score of 0)."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    return [match.group(1).strip() for match in _FAILED_REQUEST.finditer(text)]


def probe(base_url: str, model_name: str, timeout_s: float) -> None:
    """One short question to the agent before lmms-eval starts: a model that cannot answer fails the run
    here, in seconds, with the server's own message (``mmat serve`` listens before it loads the model)."""
    import httpx

    body = {"model": model_name, "max_tokens": 1, "messages": [{"role": "user", "content": "Reply with one word."}]}
    try:
        response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=timeout_s,
                              headers={"Authorization": "Bearer mmat-eval"})
    except httpx.HTTPError as exc:
        raise EvalRunError(f"the agent at {base_url} did not answer a first question: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise EvalRunError(f"the agent at {base_url} cannot answer (HTTP {response.status_code}): {message}")


def lmms_command(options: SuiteOptions, base_url: str, model_name: str, tasks: Sequence[str], include: Path,
                 output: Path) -> list[str]:
    """The lmms-eval command line of one mode (its OpenAI-compatible model pointed at the agent)."""
    model_args = ",".join([f"model_version={model_name}", f"base_url={base_url}", "api_key=mmat-eval",
                           f"timeout={options.request_timeout_s}", f"num_concurrent={options.concurrency}",
                           "max_retries=2"])
    command = [options.lmms_python, "-m", "lmms_eval", "--model", "openai", "--model_args", model_args,
               "--tasks", ",".join(tasks), "--include_path", str(include), "--output_path", str(output),
               "--log_samples", "--verbosity", "WARNING"]
    if options.limit is not None:
        command += ["--limit", str(options.limit)]
    return command + list(options.lmms_args)


def lmms_environment(options: SuiteOptions, judge_url: str | None, judge_model: str) -> dict[str, str]:
    """The environment of the lmms-eval process: the judge (relay URL and model), and for local data the
    offline switches and a dataset cache of this run's own."""
    env = {**os.environ, "PYTHONPATH": "", "API_TYPE": "openai", "MODEL_VERSION": judge_model,
           # The judge relay needs no key; lmms-eval's judge refuses to run without one.
           "OPENAI_API_KEY": "mmat-judge-relay", "OPENAI_API_URL": judge_url or "http://127.0.0.1:9/v1/chat/completions"}
    if options.data_root is not None:
        # datasets names the cache of a local parquet folder after the folder's name and the file
        # pattern, not its path or content (measured with datasets 5.2): two copies of MathVista would
        # share one cache and the second would read the first's rows. Each run gets its own cache.
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(options.out / "hf-datasets-cache"))
    return env


def run_mode(options: SuiteOptions, mode: str, base_url: str, task_names: dict[str, str], include: Path,
             judge_url: str | None, judge_model: str) -> dict[str, float]:
    """Run lmms-eval once for ``mode`` over every task; returns benchmark key -> figure (lmms-eval's metrics)."""
    output = options.out / mode / "lmms"
    log = options.out / mode / "lmms-eval.log"
    output.mkdir(parents=True, exist_ok=True)
    env = lmms_environment(options, judge_url, judge_model)
    command = lmms_command(options, base_url, f"{options.served_name}:{mode}", list(task_names.values()), include, output)
    with log.open("wb") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    # lmms-eval exits 0 even when evaluation failed, so its results file is the test of success.
    try:
        results = suite.read_results(output)
    except suite.ResultsError:
        raise EvalRunError(f"lmms-eval ({mode}) wrote no results (exit {done.returncode}); its log {log}:\n{_tail(log)}") from None
    failures = failed_requests(log)
    if failures:
        raise EvalRunError(f"{len(failures)} question(s) got no answer from the agent in mode {mode} (lmms-eval would "
                           f"score them as wrong); first error: {failures[0][:300]}; see {log} and {options.out / 'serve.log'}")
    specs = {spec.key: spec for spec in [*suite.PAPER_BENCHMARKS, suite.DYNVQA, suite.DYNVQA_QUESTION]}
    scores = {}
    for key, task in task_names.items():
        spec = specs[key] if key != "dynvqa" else (suite.DYNVQA if options.dynvqa_golden else suite.DYNVQA_QUESTION)
        scores[key] = suite.metric_value(results, spec, task)
    return scores


def run_suite(options: SuiteOptions) -> list[ModeResult]:
    """Every requested mode through lmms-eval against one ``mmat serve``; writes ``summary.json`` and ``table.md``."""
    from mmat_plugins.evaluation.lmms import tasks as task_files

    benchmarks = selected(options.benchmarks)
    options.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(options.out / "hf-datasets-cache", ignore_errors=True)  # see lmms_environment
    include = options.out / "tasks"
    tasks_dir = task_files.lmms_tasks_dir(options.lmms_python)  # also: is lmms-eval there at all
    if options.data_root is not None:
        names = task_files.write_local_tasks(include, tasks_dir, benchmarks, options.data_root)
    else:
        include.mkdir(parents=True, exist_ok=True)
        names = {spec.key: spec.task for spec in benchmarks}
    if options.dynvqa is not None:
        from mmat_plugins.evaluation.lmms.dynvqa import prepare_dynvqa

        prepared = prepare_dynvqa(options.dynvqa, options.dynvqa_images, options.out / "dynvqa.prepared.jsonl",
                                  golden=options.dynvqa_golden, limit=options.limit)
        names["dynvqa"] = task_files.write_dynvqa_task(include, prepared.path, options.dynvqa_golden)
    judged = any(key in JUDGED for key in names)
    results: list[ModeResult] = []
    with _judge(options if judged else None) as (judge_url, judge_model, relay), _server(options) as base_url:
        probe(base_url, f"{options.served_name}:plain", options.request_timeout_s)
        for mode in options.modes:
            scores = run_mode(options, mode, base_url, names, include, judge_url, judge_model)
            results.append(ModeResult(mode=mode, scores=scores, output_dir=options.out / mode / "lmms",
                                      judge_calls=relay.calls if relay else 0))
    write_summary(options, benchmarks, results)
    return results


class _Nothing:
    def __enter__(self) -> Any:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _judge:
    """The judge relay for this run, or nothing when no chosen benchmark is judged."""

    def __init__(self, options: SuiteOptions | None) -> None:
        self.options = options
        self.relay: Any = None

    def __enter__(self) -> tuple[str | None, str, Any]:
        if self.options is None:
            return None, "none", None
        from mmat_plugins.evaluation.lmms.judge import JudgeRelay, open_backend

        name = self.options.judge or "openai"
        judge_options = dict(self.options.judge_options)
        if name == "openai":
            judge_options.setdefault("model", "gpt-4o-2024-11-20")  # lmms-eval's own default judge model
        if name == "openai" and not self.options.judge and not os.environ.get("OPENAI_API_KEY"):
            raise ConfigError("MathVista and HallusionBench are scored with a judge model: set OPENAI_API_KEY, or choose "
                              "one with --judge BACKEND --judge-option model=NAME (e.g. base_url=... for a local server), "
                              "or leave them out with --benchmarks")
        self.relay = JudgeRelay(open_backend(name, judge_options)).__enter__()
        return self.relay.url, str(judge_options.get("model", name)), self.relay

    def __exit__(self, *exc: object) -> None:
        if self.relay is not None:
            self.relay.__exit__()


class _server:
    """``mmat serve`` started for the run, or the server given with --serve-url."""

    def __init__(self, options: SuiteOptions) -> None:
        self.options = options
        self.process: ServeProcess | None = None

    def __enter__(self) -> str:
        if self.options.serve_url:
            return self.options.serve_url.rstrip("/")
        self.process = ServeProcess(self.options.serve_args, self.options.served_name, self.options.out / "serve.log",
                                    self.options.serve_start_timeout_s).__enter__()
        return self.process.base_url

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.__exit__()


def table_rows(options: SuiteOptions, results: Sequence[ModeResult]) -> list[SuiteRow]:
    """The measured rows: one per mode."""
    return [SuiteRow(label=f"{options.label} ({r.mode})", scores=dict(r.scores)) for r in results]


def render(options: SuiteOptions, results: Sequence[ModeResult]) -> str:
    """The paper's table for these results, the paper's reference rows under it."""
    benchmarks = selected(options.benchmarks)
    extra = [suite.DYNVQA if options.dynvqa_golden else suite.DYNVQA_QUESTION] if options.dynvqa else []
    return suite.render_table(table_rows(options, results), suite.reference_rows([r.mode for r in results]),
                              benchmarks, extra)


def write_summary(options: SuiteOptions, benchmarks: Sequence[BenchmarkSpec], results: Sequence[ModeResult]) -> None:
    """``summary.json`` (figures per mode, tasks, lmms-eval folders) and ``table.md`` in the output folder."""
    keys = [spec.key for spec in benchmarks]
    full = len(benchmarks) == len(suite.PAPER_BENCHMARKS)  # the average is the eight benchmarks' only
    summary = {
        "model": options.label, "limit": options.limit, "data_root": str(options.data_root) if options.data_root else None,
        "tasks": {spec.key: spec.task for spec in benchmarks},
        "modes": {r.mode: {"scores": r.scores,
                           "average": SuiteRow(label=r.mode, scores=dict(r.scores)).average(keys) if full else None,
                           "lmms_output": str(r.output_dir)} for r in results},
        "reference": suite.PAPER_REFERENCE,
    }
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (options.out / "table.md").write_text(render(options, results) + "\n", encoding="utf-8")
