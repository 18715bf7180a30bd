"""Cache keys name the server and output mode of a backend, not only its name and model."""

from __future__ import annotations

from mmat_core.components import LLMRequest
from mmat_core.engine.cache import model_keyed
from mmat_core.plugins import PluginManager


def key(backend_options: dict) -> str:
    backend = PluginManager().create("llm", "openai", **backend_options)
    request = LLMRequest(purpose="x", messages=[{"role": "user", "content": "hi"}])
    return model_keyed(backend.cache_identity(), backend.model, request)[0]


def test_two_servers_serving_one_model_name_do_not_share_answers() -> None:
    assert key({"model": "m", "base_url": "http://a:8000/v1"}) != key({"model": "m", "base_url": "http://b:8000/v1"})


def test_output_mode_is_part_of_the_key() -> None:
    assert key({"model": "m", "structured_output": "json_object"}) != key({"model": "m"})


def test_default_options_keep_the_plain_backend_name() -> None:
    backend = PluginManager().create("llm", "openai", model="m")
    assert backend.cache_identity() == "openai"
    assert key({"model": "m", "transport": "sdk"}) == key({"model": "m"})  # the transport changes no answer
