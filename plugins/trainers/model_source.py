"""Whether the packages training needs are installed, checked first; and where ``--model`` comes from.

The ``--model`` check itself lives in the core (:func:`mmat_core.model_refs.check_model_source`,
shared with ``mmat infer``, ``mmat eval`` and ``mmat serve``); it is re-exported here for the code
and tests that import it from the trainers.
"""

from __future__ import annotations

from mmat_core.errors import ConfigError
from mmat_core.model_refs import check_model_source

__all__ = ["TRAINING_PACKAGES", "check_model_source", "require_training_packages"]

#: What training and the tiny model import, by the name pip installs (all in the ``train`` extra).
TRAINING_PACKAGES = ("torch", "transformers", "peft")


def require_training_packages(purpose: str, packages: tuple[str, ...] = TRAINING_PACKAGES) -> None:
    """Raise a one-line ``ConfigError`` naming the missing packages and the ``train`` extra.

    The README's first install (``.[ocr,faces]``) builds data without torch; training needs more.
    """
    import importlib

    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"{purpose} needs {', '.join(missing)}: pip install 'mmat[train]' "
                          "(from a checkout: pip install -e '.[train]')", key="trainer")
