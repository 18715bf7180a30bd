"""A scriptable fake of the Anthropic Messages API on 127.0.0.1, for tests and benchmarks.

Same machinery and scripting API as :mod:`tests.fakes.openai_server` (``queue``, ``responder``,
``Reply.*`` faults, ``latency``, ``fault_rate``, ``requests``, ``hold_batches``,
``batch_polls_to_finish``, context manager); see that module's docstring. Differences:

- ``root_url`` is what ``anthropic.AsyncAnthropic(base_url=...)`` takes (the client adds ``/v1``).
- ``POST /v1/messages`` answers a ``message`` object. ``Reply.json(obj)`` becomes a ``tool_use``
  block when the request offered tools (structured output the Anthropic way), else a text block.
- ``Reply.overloaded()`` answers 529 with ``overloaded_error``, as Anthropic does.
- Message Batches: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}`` and
  ``GET /v1/messages/batches/{id}/results`` (JSON Lines).

Example::

    with FakeAnthropicServer() as server:
        server.queue(Reply.overloaded(), Reply.text("hello"))
        client = AsyncAnthropic(base_url=server.root_url, api_key="test-key")
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import RecordedRequest, Reply, ScriptedServer, _usage

__all__ = ["FakeAnthropicServer", "RecordedRequest", "Reply"]


def _iso(seconds_from_now: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)).isoformat().replace("+00:00", "Z")


class FakeAnthropicServer(ScriptedServer):
    """The Anthropic Messages and Message Batches API."""

    completion_path = "/v1/messages"
    batch_state_key = "processing_status"

    def routes(self) -> list[web.RouteDef]:
        """Messages and message batches."""
        return super().routes() + [
            web.post("/v1/messages", self._messages),
            web.post("/v1/messages/batches", self._create_batch),
            web.get("/v1/messages/batches/{batch_id}", self._get_batch),
            web.get("/v1/messages/batches/{batch_id}/results", self._results),
        ]

    def completions(self) -> list[RecordedRequest]:
        """Recorded model calls (not batch endpoints)."""
        return [r for r in self.requests if r.path == "/v1/messages"]

    def message_body(self, reply: Reply, body: dict[str, Any] | None) -> dict[str, Any]:
        """A ``message`` object for a text or JSON reply."""
        body = body or {}
        tools = body.get("tools") or []
        if reply.kind == "json" and tools:
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": self.new_id("toolu_"), "name": tools[0]["name"],
                                              "input": reply.data}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": reply.text}]
            stop = "end_turn"
        prompt, completion = _usage(reply, json.dumps(body.get("messages", "")))
        return {"id": self.new_id("msg_"), "type": "message", "role": "assistant", "model": body.get("model", "fake-claude"),
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion}}

    @staticmethod
    def error_body(reply: Reply) -> dict[str, Any]:
        """Anthropic's error envelope."""
        kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error",
                401: "authentication_error", 404: "not_found_error"}.get(reply.status_code, "api_error")
        return {"type": "error", "error": {"type": kind, "message": reply.message}}

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        reply = self.next_reply(recorded)
        return await self.send(request, recorded, reply, lambda r: self.message_body(r, recorded.body), self.error_body)

    def _batch_object(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in batch.items() if not key.startswith("_")}

    async def _create_batch(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        items = (recorded.body or {}).get("requests") or []
        batch_id = self.new_id("msgbatch_")
        self.batches[batch_id] = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(items), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": _iso(), "expires_at": _iso(86400), "ended_at": None, "archived_at": None,
            "cancel_initiated_at": None, "results_url": None, "_items": items, "_polls": 0, "_results": None,
        }
        recorded.status = 200
        return web.json_response(self._batch_object(self.batches[batch_id]))

    def _finish_batch(self, batch: dict[str, Any]) -> None:
        lines: list[str] = []
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for item in batch["_items"]:
            params = item.get("params") or {}
            shadow = RecordedRequest("POST", "/v1/messages", {}, params, time.monotonic())
            reply = self.next_reply(shadow)
            if reply.kind == "error":
                counts["errored"] += 1
                result: dict[str, Any] = {"type": "errored", "error": self.error_body(reply)}
            else:
                counts["succeeded"] += 1
                self.ok_by_text[shadow.user_text()] += 1
                result = {"type": "succeeded", "message": self.message_body(reply, params)}
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
        batch["_results"] = ("\n".join(lines) + "\n").encode()
        batch.update(processing_status="ended", ended_at=_iso(), request_counts=counts,
                     results_url=f"{self.root_url}/v1/messages/batches/{batch['id']}/results")

    async def _results(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None or batch["_results"] is None:
            recorded.status = 404
            return web.json_response(self.error_body(Reply.status(404, "results not ready")), status=404)
        recorded.status = 200
        return web.Response(body=batch["_results"], content_type="application/binary")


def main() -> None:
    """Serve from the command line (``python -m tests.fakes.anthropic_server``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    FakeAnthropicServer(port=args.port, latency=args.latency, record_bodies=False).serve_forever()


if __name__ == "__main__":
    main()
