"""Components from what a configuration or a program gives: a name, a ``{"name": ..., **options}``
dict, a :class:`~mmat_core.config.ComponentSpec` or a ready object. The one path by which
:class:`~mmat_core.pipeline.Pipeline` and :func:`mmat_core.run.critique` create components."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mmat_core.components import Component
from mmat_core.config import ComponentSpec, validation_error
from mmat_core.errors import ConfigError, UnknownComponentError
from mmat_core.plugins import PluginManager, get_plugin_manager

#: How a component may be given.
ComponentArg = str | dict[str, Any] | Component


def as_spec(arg: ComponentArg | ComponentSpec) -> ComponentSpec | Component:
    """A spec from a name or a dict; a spec or a ready component as it is."""
    if isinstance(arg, (Component, ComponentSpec)):
        return arg
    if isinstance(arg, str):
        return ComponentSpec(name=arg)
    return ComponentSpec.model_validate(arg)


def create_component(family: str, arg: ComponentArg | ComponentSpec, *, key: str | None = None,
                     plugins: PluginManager | None = None, config_file: str | None = None) -> Component:
    """One component of ``family`` from a name, a ``{"name": ..., **options}`` dict, a spec or a
    ready object: the class comes from the plugin registry, the options are validated against
    its ``Options``. Errors name ``config_file`` and the dotted ``key`` (``critics[0]``; default:
    the family)."""
    key = key or family
    spec = as_spec(arg)
    if isinstance(spec, Component):
        if spec.family != family:
            raise ConfigError(f"expected a {family} component, got a {spec.family or type(spec).__name__}", key=key)
        return spec
    manager = plugins or get_plugin_manager()
    try:
        cls = manager.get(family, spec.name)
    except UnknownComponentError as exc:
        # Same type (callers catch it for the choices), now naming where the name was written.
        raise UnknownComponentError(exc.family, exc.name, exc.available, file=config_file, key=f"{key}.name") from None
    except ConfigError as exc:
        raise ConfigError(str(exc), file=config_file, key=f"{key}.name") from None
    try:
        options = cls.Options(**spec.options)
    except ValidationError as exc:
        raise validation_error(exc, cls.Options, config_file, prefix=f"{key}.") from None
    try:
        return cls(options)
    except ConfigError as exc:
        raise ConfigError(str(exc), file=config_file, key=key) from None
