"""The judge relay: lmms-eval's two ways of calling a judge, answered by an mmat LLM backend."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mmat_plugins.evaluation.lmms.judge import JudgeRelay, open_backend

from mmat_core import ConfigError
from tests.consumers import consumer_python
from tests.fakes.openai_server import FakeOpenAIServer, RecordedRequest, Reply


def test_the_relay_answers_at_the_api_root_and_at_the_full_url_through_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # lmms-eval's judge layer appends /chat/completions to OPENAI_API_URL; HallusionBench posts to it as given.
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeOpenAIServer() as judge:
        judge.responder = lambda request: Reply.text_reply("correct")
        backend = open_backend("openai", {"model": "judge-model", "base_url": judge.base_url})
        with JudgeRelay(backend) as relay:
            body = {"model": "ignored", "messages": [{"role": "user", "content": "Is it right?"}], "max_tokens": 16}
            for url in (relay.url, relay.url + "/chat/completions"):
                reply = httpx.post(url, json=body, timeout=30).json()
                assert reply["choices"][0]["message"]["content"] == "correct"
            assert httpx.get(relay.url, timeout=30).status_code == 404
        sent: list[RecordedRequest] = judge.completions()
        assert [r.body["model"] for r in sent] == ["judge-model", "judge-model"]
        assert sent[0].body["messages"] == [{"role": "user", "content": "Is it right?"}]
        assert relay.calls == 2


def test_a_failing_backend_answers_an_openai_shaped_error_not_a_dropped_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeOpenAIServer() as judge:
        judge.responder = lambda request: Reply.status(400, "bad judge request")
        with JudgeRelay(open_backend("openai", {"model": "j", "base_url": judge.base_url})) as relay:
            response = httpx.post(relay.url, json={"messages": [{"role": "user", "content": "x"}]}, timeout=60)
    assert response.status_code == 502 and "judge backend openai" in response.json()["error"]["message"]


def test_an_unknown_judge_option_is_a_config_error_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--judge openai"):
        open_backend("openai", {"modle": "x"})


def test_judged_benchmarks_without_a_judge_key_stop_before_anything_starts(tmp_path: Path, data_root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mmat_plugins.evaluation.lmms.runner import SuiteOptions, run_suite

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    options = SuiteOptions(modes=["plain"], out=tmp_path / "out", data_root=data_root, benchmarks=["mathvista"],
                           lmms_python=str(consumer_python("lmms")), serve_args=["--model", "m", "--backend", "offline"])
    with pytest.raises(ConfigError, match="MathVista and HallusionBench are scored with a judge model"):
        run_suite(options)
    assert not (tmp_path / "out" / "serve.log").exists()
