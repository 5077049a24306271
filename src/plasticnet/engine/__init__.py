"""Engines: implementations of the same equations of SPEC §1.

``reference`` materialises per-sample fast weights (the oracle); ``fast``
(the default) computes the same numbers with the gradient rule in closed form
and factored fast weights. Engines are
looked up by name, so a faster one can sit behind the same API.
"""

from .fast import FastEngine
from .reference import ReferenceEngine

ENGINES = {"fast": FastEngine, "reference": ReferenceEngine}


def get_engine(name: str):
    """An instance of the engine called ``name``."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; allowed: {', '.join(map(repr, ENGINES))}")
    return ENGINES[name]()
