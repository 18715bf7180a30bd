"""The pipeline configuration: loading YAML or TOML, command-line overrides, and validation.

Every problem is reported before any work starts, as one :class:`ConfigError` naming the file,
the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The engine's own sections are defined beside the engine (which must not import this module);
# they are re-exported here, where the configuration is assembled.
from mmat_core.engine.settings import EngineSettings, LLMEngineSettings, ReflectionSettings, samples_in_flight
from mmat_core.errors import ConfigError


class ComponentSpec(BaseModel):
    """A component chosen by name, with its options (``{name: ocr, timeout_s: 5}`` or ``ocr``)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        """The options given besides the name."""
        return dict(self.model_extra or {})


def _spec(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class CurationSettings(BaseModel):
    """Stage-1 curation: sampling, dedup and image checks."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    limit: int | None = Field(None, ge=0, description="keep at most this many samples in all")
    sample_rate: float = Field(1.0, gt=0, le=1, description="keep each row with this probability (seeded)")
    dedup: bool = True
    min_side: int = Field(8, ge=1)
    max_side: int = Field(10_000, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    formats: list[str] | None = Field(None, description="allowed PIL formats, e.g. [PNG, JPEG]")
    max_image_bytes: int = Field(50 * 1024 * 1024, ge=1, description="image files larger than this are quarantined unread")
    image_read_timeout_s: float = Field(30.0, gt=0, description="seconds one image file may take to read before its row is quarantined")


class ResumeSettings(BaseModel):
    """What a rerun into an existing run directory does (see docs/scale.md)."""

    model_config = ConfigDict(extra="forbid")
    on_config_change: Literal["refuse", "apply"] = Field(
        "refuse",
        description="when the configuration differs from the one the run started with: refuse (explain and stop) "
        "or apply it to the samples not finished yet (finished samples are kept as they are)",
    )
    retry_failed_calls: bool = Field(
        True, description="redo samples that failed only because a model call failed (429s, 5xx, timeouts)"
    )
    on_source_change: Literal["refuse", "regenerate", "keep"] = Field(
        "refuse",
        description="when finished samples' source rows changed since they were built (question, answers, choices, "
        "constraint, images): refuse (stop before any model call, naming them), regenerate them, or keep the "
        "stored ones (run.json says how many)",
    )


class PipelineConfig(BaseModel):
    """The whole build configuration."""

    model_config = ConfigDict(extra="forbid")
    source: ComponentSpec | list[ComponentSpec] = Field(default_factory=lambda: ComponentSpec(name="sample"))
    llm: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="offline"))
    tools: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name=n) for n in ("image_caption", "ocr", "face_detection")]
    )
    # Unset, search is on only for the bundled sample (with its own corpus): a real build must name
    # its corpus or web backend rather than silently retrieve from the sample's ten documents.
    search: ComponentSpec | None = None
    critics: list[ComponentSpec] = Field(
        default_factory=lambda: [ComponentSpec(name=n) for n in ("answer_match", "general", "math")]
    )
    formatters: list[ComponentSpec] = Field(default_factory=lambda: [ComponentSpec(name="rr"), ComponentSpec(name="orr")])
    executor: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="local"))
    out: str | None = None
    engine: EngineSettings = Field(default_factory=EngineSettings)
    curation: CurationSettings = Field(default_factory=CurationSettings)
    reflection: ReflectionSettings = Field(default_factory=ReflectionSettings)
    resume: ResumeSettings = Field(default_factory=ResumeSettings)
    # Limits, retries, prices and batch mode of model calls (mmat_core/engine/settings.py, docs/llms.md).
    llm_engine: LLMEngineSettings = Field(default_factory=LLMEngineSettings)

    _normalise = field_validator("llm", "executor", "search", mode="before")(lambda cls, v: _spec(v))

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        return [_spec(v) for v in value] if isinstance(value, list) else _spec(value)

    @field_validator("tools", "critics", "formatters", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return [_spec(v) for v in value]

    @model_validator(mode="after")
    def _default_search(self) -> PipelineConfig:
        if "search" not in self.model_fields_set and all(spec.name == "sample" for spec in self.sources):
            # Through __dict__: the value stays a default (not in model_fields_set), so a pipeline
            # given other sources in code can still tell that nobody asked for search.
            self.__dict__["search"] = ComponentSpec(name="local")
        elif "search" not in self.model_fields_set and self.llm.name != "offline":
            from mmat_core.recipes import default_search

            # A real build does the paper's web RAG when a search key is set (assigned, so the
            # pipeline uses it); with none, RAG stays off and the build's summary says so.
            spec = default_search()
            if spec is not None:
                self.search = ComponentSpec(**spec)
        return self

    @model_validator(mode="after")
    def _default_tools(self) -> PipelineConfig:
        if "tools" not in self.model_fields_set:
            from mmat_core.recipes import default_tools

            # The paper's four operators, less label_bbox where it would need a download the build
            # did not ask for (the offline backend's); kept a default so the summary can say why.
            self.__dict__["tools"] = [ComponentSpec(**spec) for spec in default_tools(self.llm.name)]
        return self

    @model_validator(mode="after")
    def _samples_in_flight(self) -> PipelineConfig:
        # engine.concurrency follows llm_engine.concurrency unless set (mmat_core/engine/settings.py
        # says why); filled in without marking it set, so the stored config keeps it unset.
        model = self.llm.options.get("model")
        self.engine.__dict__["concurrency"] = samples_in_flight(
            self.engine, self.llm_engine, self.llm.name, model if isinstance(model, str) else None)
        return self

    @property
    def sources(self) -> list[ComponentSpec]:
        """The sources as a list."""
        return self.source if isinstance(self.source, list) else [self.source]

    def fingerprint(self) -> str:
        """A hash of everything that changes what the build produces (``out`` excluded)."""
        data = self.model_dump(mode="json", exclude={"out"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError("file not found", file=str(path))
    if not path.is_file():
        raise ConfigError("not a regular file; give the path of a .yaml, .yml, .toml or .json file", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        if path.suffix.lower() == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError("unsupported config format; use .yaml, .yml, .toml or .json", file=str(path))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot parse: {exc}", file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of keys to values", file=str(path))
    return data


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_for(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of ``loc`` (for 'unknown key' messages)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        current = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return sorted(getattr(current, "model_fields", {}) or [])


def _problems(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per pydantic error, naming the dotted key; an unknown key gets the closest
    allowed one ("did you mean") and the full list."""
    import difflib

    messages = []
    for err in exc.errors():
        key = prefix + _loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        if err["type"] == "extra_forbidden":
            allowed = _allowed_for(model, err["loc"])
            given = str(err["loc"][-1]) if err["loc"] else ""
            guess = difflib.get_close_matches(given, allowed, n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            messages.append(f"{key}: unknown key; allowed: {', '.join(allowed)}{hint}")
        elif err["type"] == "literal_error":
            messages.append(f"{key}: {err['msg']}")
        else:
            messages.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return messages


def problems_error(problems: list[str], file: str | None) -> ConfigError:
    """One ConfigError listing every problem (one per line when there are several), so a user
    fixes them all in one go; ``.problems`` keeps the list."""
    message = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
    error = ConfigError(message, file=file)
    error.problems = problems  # type: ignore[attr-defined]
    return error


def validation_error(exc: ValidationError, model: type[BaseModel], file: str | None, prefix: str = "") -> ConfigError:
    """Turn a pydantic error into a ConfigError naming each key and what is allowed."""
    return problems_error(_problems(exc, model, prefix), file)


def _component_problems(data: dict[str, Any]) -> list[str]:
    """Option errors of every component named in ``data`` (the raw config), checked against its
    plugin's ``Options``, so they come together with the top-level errors rather than one
    component at a time. A name no plugin provides is left to the pipeline, which reports it with
    its suggestions (a plugin registered in code may provide it there)."""
    from mmat_core.plugins import get_plugin_manager

    family_of = {"source": "source", "llm": "llm", "search": "search", "executor": "executor", "tools": "tool",
                 "critics": "critic", "formatters": "formatter"}
    problems: list[str] = []
    try:
        manager = get_plugin_manager()
        manager.load()
    except Exception:  # plugin trouble is reported where plugins are used
        return problems
    for key, family in family_of.items():
        value = data.get(key)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, str):
                name, options = item, {}
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                name, options = item["name"], {k: v for k, v in item.items() if k != "name"}
            else:
                continue
            if name not in manager.registry(family):
                continue
            where = f"{key}[{index}]." if isinstance(value, list) else f"{key}."
            try:
                manager.get(family, name).Options(**options)
            except ValidationError as exc:
                problems += _problems(exc, manager.get(family, name).Options, where)
            except Exception:  # an Options model that fails otherwise is the pipeline's to report
                continue
    return problems


_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")
#: Config keys whose value is a component spec (or a list of them).
COMPONENT_KEYS = ("source", "llm", "search", "executor", "tools", "critics", "formatters")


def _split_key(dotted: str) -> list[str | int]:
    """``critics[0].threshold`` or ``critics.0.threshold`` -> ["critics", 0, "threshold"]."""
    parts: list[str | int] = []
    for part in dotted.split("."):
        match = _INDEX.match(part)
        if match:
            parts.extend([match.group(1), int(match.group(2))])
        else:
            parts.append(int(part) if part.isdigit() else part)
    return parts


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c=value`` (list items by index: ``critics.0.threshold``) in a nested dict.

    A component given by name alone (``llm: openai``) becomes ``{name: openai}`` so one of its
    options can be set, and a component section missing from the file starts from its default,
    so ``--set llm.model=X`` changes the model of the default backend rather than replacing it.
    """
    parts = _split_key(dotted)
    head = parts[0]
    if head in COMPONENT_KEYS and head not in data and len(parts) > 1:
        default = PipelineConfig().model_dump(mode="json")[head]
        if default is not None:
            data[head] = default
    node: Any = data
    for index, part in enumerate(parts[:-1]):
        following = parts[index + 1]
        if isinstance(node, dict):
            child = node.get(part)
            if child is None:
                child = [] if isinstance(following, int) else {}
                node[part] = child
        elif isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise ConfigError(f"cannot set {dotted}: the list has {len(node)} item(s)", key=dotted)
            child = node[part]
        else:
            raise ConfigError(f"cannot set {dotted}: {part} is not a mapping", key=dotted)
        if isinstance(child, str) and not isinstance(following, int):
            child = {"name": child}  # a component named alone gains an options mapping
            node[part] = child
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"cannot set {dotted}: {part} is not a mapping", key=dotted)
        node = child
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise ConfigError(f"cannot set {dotted}: no such list item", key=dotted)
    node[last] = value


def config_data(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                recipe: str | None = None) -> dict[str, Any]:
    """The raw configuration before validation: a shipped recipe (optional), a config file laid on
    it (optional), then the overrides (dotted keys): recipe < file < overrides (docs/recipes.md)."""
    data: dict[str, Any] = _read_file(Path(path)) if path else {}
    if recipe:
        from mmat_core.recipes import load_recipe, merge

        data = merge(load_recipe(recipe), data)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                recipe: str | None = None) -> PipelineConfig:
    """Read the configuration (see :func:`config_data`) and validate it."""
    data = config_data(path, overrides, recipe)
    # Every problem at once: the top level's and each component's options.
    problems: list[str] = []
    config: PipelineConfig | None = None
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, PipelineConfig)
    problems += _component_problems(data)
    if problems or config is None:
        raise problems_error(problems, str(path) if path else None)
    return config
