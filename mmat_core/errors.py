"""Errors that mmat reports to users. Each message says what to do: the file, the key, the choices."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING


class MmatError(Exception):
    """Base of every error mmat raises on purpose; the CLI prints it without a traceback."""


class ConfigError(MmatError):
    """A configuration is wrong. Raised before any work starts, so nothing is half-written."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class PluginError(MmatError):
    """A plugin failed to import or register (raised only in strict mode)."""


class UnknownComponentError(ConfigError):
    """A component name that no loaded plugin provides."""

    def __init__(self, family: str, name: str, available: Iterable[str], **kwargs: str | None) -> None:
        names = sorted(available)
        self.family = family
        self.name = name
        self.available = names
        guess = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{guess[0]}'?" if guess else ""
        listing = ", ".join(names) if names else "(none loaded)"
        super().__init__(f"Unknown {family} '{name}'.{hint} Available: {listing}", **kwargs)


class DuplicateComponentError(PluginError):
    """Two plugins registered the same component name in one family."""


class ToolArgumentError(MmatError):
    """Arguments given to a tool do not match its JSON Schema."""


class OutputDirError(MmatError):
    """The output folder cannot be used: it is a file, or it holds files mmat did not write."""


class RunInUseError(MmatError):
    """Another mmat process holds the run folder's lock (it is building or writing into it)."""


class DiskFullError(MmatError, OSError):
    """A write failed for lack of space (or a file-size limit); the run can be resumed once there is room.
    Still an OSError, so code that handled the raw error goes on handling it."""


class LowYieldError(MmatError):
    """A build kept fewer samples than ``--min-yield`` asks for (the outputs are still written)."""


class NoSamplesError(LowYieldError):
    """A build's sources yielded no sample to build at all (an empty file, every row quarantined
    or left out by curation): a fault unless ``--min-yield 0``."""


class RowError(MmatError):
    """A source row that cannot become a sample; ``reason`` is the quarantine reason
    (``missing_field``, ``invalid_json``, ...) and ``detail`` says which field or byte."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


if TYPE_CHECKING:  # pydantic is imported only where a model is validated (mmat --help stays light)
    from pydantic import ValidationError


def first_validation_problem(exc: ValidationError, whole: str = "(row)") -> str:
    """A pydantic error as a one-line quarantine reason: its first problem as ``dotted.key: message``
    (``whole`` names the place when the problem is the value itself, e.g. a row that is not an object)."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or whole}: {first['msg']}"
