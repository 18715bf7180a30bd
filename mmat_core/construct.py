"""A faster ``model_construct`` for hot paths (the engine's, a backend's, a critic's).

Pydantic's ``model_construct`` walks every field's aliases on each call; the engine builds a few
such records per model call (a response, its usage, the ModelCall, the request). :func:`construct`
does the same for models without aliases or post-init hooks from a per-class plan computed once:
the result has the same ``__dict__`` (in field order), ``model_fields_set``, extra and private
slots as ``model_construct`` gives. Other models go through ``model_construct`` itself.

A plain pydantic helper at the bottom of the layers, so plugins use it without importing the
engine (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_IMMUTABLE = (str, int, float, bool, bytes, type(None), tuple, frozenset)
_FROM_FACTORY = object()


class _Plan:
    """What :func:`construct` needs of one class: every field in order with its default (or a
    placeholder), the required fields, and the fields whose default comes from a factory."""

    __slots__ = ("template", "required", "factories")

    def __init__(self, template: dict[str, Any], required: frozenset[str],
                 factories: tuple[tuple[str, Callable[[], Any]], ...]) -> None:
        self.template = template
        self.required = required
        self.factories = factories


#: Per class: its plan, or None where the class needs pydantic's own ``model_construct``
#: (aliases, post-init, root models, extra="allow", mutable defaults).
_PLANS: dict[type, _Plan | None] = {}


def _plan(cls: type[BaseModel]) -> _Plan | None:
    if cls.__pydantic_root_model__ or cls.__pydantic_post_init__ or cls.model_config.get("extra") == "allow":
        return None
    template: dict[str, Any] = {}
    required: set[str] = set()
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, field in cls.__pydantic_fields__.items():
        if field.alias is not None or field.validation_alias is not None:
            return None
        factory = field.default_factory
        if factory is not None:
            if field.default_factory_takes_validated_data:
                return None
            template[name] = _FROM_FACTORY
            factories.append((name, factory))  # type: ignore[arg-type]
        elif field.is_required():
            template[name] = None  # a placeholder, always replaced (see construct)
            required.add(name)
        elif isinstance(field.default, _IMMUTABLE):
            template[name] = field.default
        else:
            return None  # a mutable default pydantic would copy
    return _Plan(template, frozenset(required), tuple(factories))


def construct(cls: type[M], **values: Any) -> M:
    """``cls.model_construct(**values)`` for trusted values (no validation), faster."""
    try:
        plan = _PLANS[cls]
    except KeyError:
        plan = _PLANS[cls] = _plan(cls)
    if plan is None:
        return cls.model_construct(**values)
    # Copying the template keeps the fields in their declared order (which serialisation follows).
    fields = plan.template.copy()
    fields.update(values)
    if len(fields) != len(plan.template) or not plan.required <= values.keys():
        return cls.model_construct(**values)  # unknown names, or required fields left out
    for name, factory in plan.factories:
        if name not in values:
            fields[name] = factory()
    model = cls.__new__(cls)
    setter = object.__setattr__
    setter(model, "__dict__", fields)
    setter(model, "__pydantic_fields_set__", set(values))
    setter(model, "__pydantic_extra__", None)
    setter(model, "__pydantic_private__", None)
    return model
