"""mmat: the MMAT-1M multimodal agent-tuning data engine.

This module is the public API: a plugin author imports everything from here, the way
``from datasette import hookimpl`` serves datasette's::

    from mmat_core import Tool, ToolContext, ToolOutput, hookimpl

The names are grouped below by purpose (docs/plugins/authoring.md lists them too). Apart from
``hookimpl`` they are imported lazily, on first use, so that ``import mmat_core`` (and
``mmat --help``) stays fast: importing this module loads neither pydantic nor the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmat_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from mmat_core.authoring.formatters import (
        PAPER_VAL_RATIO,
        ExportOptions,
        FinishingWriter,
        RecordFunction,
        ViewFormatter,
        ViewOptions,
        checked_record_function,
    )
    from mmat_core.chat import ChatEngine, ChatRequest, ChatResult, ChatResults, ChatRowError, ChatSummary
    from mmat_core.authoring.sources import (
        ImageResolver,
        QuotaOptions,
        RecordItem,
        RecordSource,
        SingleSetOptions,
        SourceOptions,
        SourceRecord,
        answers_field,
        dialogue_turns,
        local_root,
        option_answers,
        parse_choices,
        text_field,
    )
    from mmat_core.components import (
        Component,
        ComponentOptions,
        ContentPart,
        Critic,
        CriticContext,
        Detection,
        Detector,
        DetectorOptions,
        Executor,
        FormatContext,
        Formatter,
        LLMBackend,
        LLMClient,
        LLMRequest,
        LLMResponse,
        Message,
        RecordFormatter,
        SearchBackend,
        Source,
        SubsetPlan,
        Tool,
        ToolContext,
        ToolInfo,
        ToolOutput,
        TraceWriter,
        Trainer,
        TrainResult,
    )
    from mmat_core.config import PipelineConfig, load_config
    from mmat_core.engine.errors import (
        CallTimeout,
        LLMCallError,
        MalformedResponse,
        Overloaded,
        PermanentError,
        RateLimited,
    )
    from mmat_core.errors import (
        ConfigError,
        DuplicateComponentError,
        MmatError,
        PluginError,
        RowError,
        ToolArgumentError,
        UnknownComponentError,
    )
    from mmat_core.formatting import trace_data, view_messages
    from mmat_core.images import ImageError, ImageStore, image_ref_from_bytes, image_ref_from_file, read_regular_file
    from mmat_core.jsonl import BadLine, JsonlLineError, iter_jsonl
    from mmat_core.model_refs import check_model_source
    from mmat_core.models import (
        ImageRef,
        ModelCall,
        Provenance,
        RagCall,
        Rejected,
        SearchHit,
        SourceSample,
        Step,
        ToolCall,
        Trace,
        Usage,
        Verdict,
    )
    from mmat_core.pipeline import Pipeline, RunResult
    from mmat_core.plugins import PluginManager, get_plugin_manager
    from mmat_core.replies import ReplyJSONError, extract_json_object, strip_code_fence
    from mmat_core.writers import RecordWriter, SkipTrace

#: Module -> the public names it provides, grouped by purpose: the lazy lookup below is built from
#: this table (tests/core/test_public_api.py checks it against ``__all__``).
_PUBLIC: dict[str, tuple[str, ...]] = {
    # Running a pipeline and managing plugins.
    "mmat_core.pipeline": ("Pipeline", "RunResult"),
    "mmat_core.config": ("PipelineConfig", "load_config"),
    "mmat_core.plugins": ("PluginManager", "get_plugin_manager"),
    # The base class of each family, their contexts and the types they exchange.
    "mmat_core.components": (
        "Component", "ComponentOptions",
        "Source", "SubsetPlan",
        "LLMBackend", "LLMClient", "LLMRequest", "LLMResponse", "Message", "ContentPart",
        "Tool", "ToolContext", "ToolOutput", "ToolInfo", "SearchBackend", "Detector", "DetectorOptions", "Detection",
        "Critic", "CriticContext",
        "Formatter", "RecordFormatter", "FormatContext", "TraceWriter",
        "Trainer", "TrainResult", "Executor",
    ),
    # The records: what a source yields, what a Trace holds, what a critic returns.
    "mmat_core.models": (
        "SourceSample", "Rejected", "ImageRef", "Trace", "Step", "ToolCall", "RagCall", "SearchHit",
        "ModelCall", "Usage", "Verdict", "Provenance",
    ),
    # Errors a plugin raises (the LLM ones tell the scheduler whether to retry).
    "mmat_core.errors": (
        "MmatError", "ConfigError", "PluginError", "UnknownComponentError", "DuplicateComponentError",
        "ToolArgumentError", "RowError",
    ),
    "mmat_core.engine.errors": (
        "LLMCallError", "RateLimited", "Overloaded", "CallTimeout", "MalformedResponse", "PermanentError",
    ),
    # Images, by content hash.
    "mmat_core.images": ("ImageStore", "ImageError", "read_regular_file", "image_ref_from_bytes", "image_ref_from_file"),
    # Whether a --model folder or Hugging Face id can be loaded, answered at once (no Hub retries).
    "mmat_core.model_refs": ("check_model_source",),
    # Writing a source from a record reader.
    "mmat_core.authoring.sources": (
        "RecordSource", "ImageResolver", "SourceOptions", "SingleSetOptions", "QuotaOptions",
        "SourceRecord", "RecordItem", "text_field", "answers_field", "dialogue_turns", "parse_choices",
        "option_answers", "local_root",
    ),
    # Writing a formatter from one record function.
    "mmat_core.authoring.formatters": (
        "ViewFormatter", "ViewOptions", "ExportOptions", "FinishingWriter", "RecordFunction",
        "checked_record_function", "PAPER_VAL_RATIO",
    ),
    "mmat_core.formatting": ("trace_data", "view_messages"),
    # Reading JSON Lines (a source, a trainer, a corpus): one loop, bad lines reported the same way.
    "mmat_core.jsonl": ("iter_jsonl", "BadLine", "JsonlLineError"),
    # Reading a model's reply (a backend, a judge or an operator that asks a model for JSON).
    "mmat_core.replies": ("extract_json_object", "strip_code_fence", "ReplyJSONError"),
    "mmat_core.writers": ("RecordWriter", "SkipTrace"),
    # Many chat requests (text and images) through the engine's cache, limits and backends.
    "mmat_core.chat": ("ChatEngine", "ChatRequest", "ChatResult", "ChatResults", "ChatSummary", "ChatRowError"),
}

_LAZY: dict[str, str] = {name: module for module, names in _PUBLIC.items() for name in names}

#: Every public name, listed literally so that type checkers see the re-exports.
__all__ = [
    "hookimpl", "Pipeline", "RunResult", "PipelineConfig", "load_config", "PluginManager",
    "get_plugin_manager", "Component", "ComponentOptions", "Source", "SubsetPlan", "LLMBackend", "LLMClient",
    "LLMRequest", "LLMResponse", "Message", "ContentPart", "Tool", "ToolContext", "ToolOutput", "ToolInfo",
    "SearchBackend", "Detector", "DetectorOptions", "Detection", "Critic", "CriticContext", "Formatter", "RecordFormatter", "FormatContext",
    "TraceWriter", "Trainer", "TrainResult", "Executor", "SourceSample", "Rejected", "ImageRef", "Trace",
    "Step", "ToolCall", "RagCall", "SearchHit", "ModelCall", "Usage", "Verdict", "Provenance", "MmatError",
    "ConfigError", "PluginError", "UnknownComponentError", "DuplicateComponentError", "ToolArgumentError",
    "RowError", "LLMCallError", "RateLimited", "Overloaded", "CallTimeout", "MalformedResponse",
    "PermanentError", "ImageStore", "ImageError", "read_regular_file", "image_ref_from_bytes",
    "image_ref_from_file", "check_model_source", "RecordSource", "ImageResolver", "SourceOptions", "SingleSetOptions",
    "QuotaOptions", "SourceRecord", "RecordItem", "text_field", "answers_field", "dialogue_turns",
    "parse_choices", "option_answers", "local_root", "ViewFormatter", "ViewOptions", "ExportOptions",
    "FinishingWriter", "RecordFunction", "checked_record_function", "PAPER_VAL_RATIO", "trace_data",
    "view_messages", "iter_jsonl", "BadLine", "JsonlLineError", "extract_json_object", "strip_code_fence", "ReplyJSONError", "RecordWriter", "SkipTrace",
    "ChatEngine", "ChatRequest", "ChatResult", "ChatResults", "ChatSummary", "ChatRowError",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562) and keep it, so later lookups are plain."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmat_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
