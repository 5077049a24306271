"""Task registry: task names → task classes (see :mod:`plasticnet.tasks.base`).

Modules register their tasks with :func:`register_task`; :data:`TASK_MODULES`
lists the modules imported on first look-up, so importing the package stays
cheap.
"""

from __future__ import annotations

import importlib
from typing import Dict, Type

from ..checks import check_choice
from .base import Batch, Task, make_options

# modules whose import registers tasks (each a module of this package)
TASK_MODULES = ["d23", "miconi", "fewshot_images"]

_REGISTRY: Dict[str, Type[Task]] = {}
_loaded = False


def register_task(cls: Type[Task]) -> Type[Task]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for mod in TASK_MODULES:
            importlib.import_module(f"{__name__}.{mod}")
        _loaded = True


def task_names():
    """Names of all registered tasks, sorted."""
    _load()
    return sorted(_REGISTRY)


def get_task_class(name: str) -> Type[Task]:
    """The task class registered as ``name``; a clear error for unknown names."""
    _load()
    check_choice("task", name, sorted(_REGISTRY))
    return _REGISTRY[name]


def make_task(name: str, **options) -> Task:
    """An instance of task ``name`` with ``options`` (unknown keys refused)."""
    return get_task_class(name)(**options)


__all__ = ["Batch", "Task", "make_options", "register_task", "task_names", "get_task_class", "make_task"]
