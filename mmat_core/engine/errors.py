"""Failures of model calls, classified so the scheduler knows whether to retry."""

from __future__ import annotations

from mmat_core.errors import MmatError


class LLMCallError(MmatError):
    """A model call failed. ``retryable`` tells the scheduler whether another attempt may help."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RateLimited(LLMCallError):
    """HTTP 429 (or a provider's equivalent): slow down, honour Retry-After."""

    retryable = True


class Overloaded(LLMCallError):
    """HTTP 5xx or 529: the server is struggling; retry with backoff."""

    retryable = True


class CallTimeout(LLMCallError):
    """No answer within the request timeout (a hung connection)."""

    retryable = True


class MalformedResponse(LLMCallError):
    """The body could not be parsed (truncated or invalid JSON); retrying usually helps."""

    retryable = True


class PermanentError(LLMCallError):
    """A request the server will never accept (400, 401, 404): do not retry."""


class CircuitOpen(LLMCallError):
    """The backend failed persistently: the circuit breaker opened too many times in a row and
    the scheduler gave up on the waiting calls (each is recorded as a failure on its sample)."""


class BatchFailed(LLMCallError):
    """A provider batch ended without an answer for this request (expired, cancelled, failed)."""


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets, every known key (whole or a long part of it) and anything
    shaped like a credential replaced by ``***``: see :mod:`mmat_core.secrets`."""
    from mmat_core.secrets import scrub as scrub_secrets

    return scrub_secrets(text, *secrets)
