"""Engines: implementations of the same equations of SPEC §1.

- ``reference``: materialised per-sample fast weights, autograd for the
  gradient rule (the oracle of the tests);
- ``fast``: the gradient rule in closed form, factored fast weights (GEMMs);
- ``kernel``: a compiled per-sample loop over materialised fast weights whose
  cost grows linearly with the episode length (needs numba: ``plasticnet[kernel]``);
- ``triton``: the kernel engine's algorithm as Triton programs, for CUDA (needs
  triton: ``plasticnet[triton]``; not picked by ``auto``).

``engine="auto"`` (:func:`resolve_engine`) picks ``kernel`` on the CPU (``fast``
where numba is missing, with a one-time warning) and ``fast`` on other devices.
"""

from __future__ import annotations

import warnings
from typing import Optional

from ..checks import check_choice
from . import kernel
from .fast import FastEngine
from .kernel import KernelEngine
from .reference import ReferenceEngine
from .triton_engine import TritonEngine

ENGINES = {"kernel": KernelEngine, "fast": FastEngine, "reference": ReferenceEngine, "triton": TritonEngine}
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


def get_engine(name: str, chunk_size: Optional[int] = 32, engine_threads: Optional[int] = None):
    """An instance of the engine called ``name`` (not ``"auto"``: see :func:`resolve_engine`) with its options."""
    check_choice("engine", name, ENGINE_CHOICES)
    if name == "fast":
        return FastEngine(chunk_size)
    if name == "kernel":
        return KernelEngine(engine_threads)
    if name == "triton":
        return TritonEngine()
    return ReferenceEngine()
