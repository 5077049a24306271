"""Engines: implementations of the same equations of SPEC §1 behind one interface (:mod:`.base`).

- ``reference``: materialised per-sample fast weights, autograd for the
  gradient rule (the oracle of the tests);
- ``fast``: the gradient rule in closed form, factored fast weights (GEMMs);
- ``kernel``: a compiled per-sample loop over materialised fast weights whose
  cost grows linearly with the episode length (needs numba: ``plasticnet[kernel]``);
- ``triton``: the kernel engine's algorithm as Triton programs, for CUDA (needs
  triton: ``plasticnet[triton]``; not picked by ``auto``).

``engine="auto"`` (:func:`resolve_engine`) picks ``kernel`` on the CPU (``fast``
where numba is missing, with a one-time warning) and ``fast`` on other devices.
A new engine is a class with the attributes of :class:`~.base.Engine` and one
line in :data:`ENGINES`; ``PlasticRNN(engine=...)`` also takes a configured
engine object.
"""

from __future__ import annotations

import inspect
import warnings

from ..checks import check_choice
from . import kernel
from .base import Engine, EngineResult, EpisodeEngine, LayerParams, NetSpec, StepEngine
from .factored import factored_read
from .fast import FastEngine
from .kernel import KernelEngine
from .reference import ReferenceEngine
from .triton_engine import TritonEngine

ENGINES = {"kernel": KernelEngine, "fast": FastEngine, "reference": ReferenceEngine, "triton": TritonEngine}
"""Registry: name → engine class, whose keyword options are named as ``PlasticRNN``'s (``chunk_size``, ...)."""
ENGINE_CHOICES = ("auto",) + tuple(ENGINES)
_warned = []


def resolve_engine(name: str, device_type: str = "cpu") -> str:
    """The engine ``name`` stands for on a device of type ``device_type`` (``"auto"`` resolved)."""
    if name != "auto":
        return name
    if device_type != "cpu":
        return "fast"  # its work is GEMMs, the kernel is CPU-only
    if kernel.available():
        return "kernel"
    if not _warned:
        _warned.append(True)
        warnings.warn(f"plasticnet: the kernel engine is unavailable ({kernel.IMPORT_ERROR}); engine='auto' uses "
                      "the fast engine (pip install 'plasticnet[kernel]' for the kernel engine)", stacklevel=3)
    return "fast"


def get_engine(name: str, **options) -> Engine:
    """An instance of the engine called ``name`` (not ``"auto"``: see :func:`resolve_engine`).

    ``options`` are the network's engine options (``chunk_size``, ``engine_threads``); each engine takes
    those its constructor names.
    """
    check_choice("engine", name, ENGINE_CHOICES[1:])
    cls = ENGINES[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


def is_engine(obj) -> bool:
    """Whether ``obj`` is a configured engine object (has the attributes of :class:`~.base.Engine`)."""
    return not isinstance(obj, str) and isinstance(obj, Engine)


__all__ = ["ENGINES", "ENGINE_CHOICES", "Engine", "EngineResult", "EpisodeEngine", "FastEngine", "KernelEngine",
           "LayerParams", "NetSpec", "ReferenceEngine", "StepEngine", "TritonEngine", "factored_read", "get_engine",
           "is_engine", "resolve_engine"]
