"""What makes a run reproducible besides its options: the software and machine it ran on.

:func:`environment` returns the record that :mod:`plasticnet.train` writes
into every run folder as ``environment.json`` when training starts (and
appends to when the run is resumed, possibly elsewhere): the engine the
model actually uses (``auto`` resolved), the versions of plasticnet (with
its git commit when it runs from a clone), Python, torch, numpy and numba,
the device and the thread count. It is kept apart from ``config.yaml``,
which holds the options only.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def git_commit(path: Path) -> Optional[str]:
    """The commit checked out in the git clone holding ``path`` (read from ``.git``, no subprocess), or ``None``.

    Follows a worktree's ``gitdir:`` file, symbolic ``HEAD`` refs and ``packed-refs``.
    """
    for folder in [path, *path.parents]:
        dot = folder / ".git"
        if dot.exists():
            break
    else:
        return None
    try:
        git = dot
        if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = (folder / text.partition(":")[2].strip()).resolve()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.partition(":")[2].strip()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref:
                    return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def device_name(device: str) -> str:
    """The device as a person reads it: the GPU's name, or the CPU's architecture and core count."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"{platform.machine() or 'cpu'} CPU, {os.cpu_count()} cores"


def environment(model: nn.Module, config: Dict[str, Any]) -> Dict[str, Any]:
    """The record of what a run of ``config`` with ``model`` runs on (see the module docstring)."""
    import plasticnet

    package = Path(plasticnet.__file__).resolve().parent
    numba = _version("numba")
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "engine": getattr(model, "engine", None) or getattr(getattr(model, "rnn", None), "engine", None),
        "plasticnet": plasticnet.__version__,
        "plasticnet_commit": git_commit(package),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "numba": numba,
        "device": config.get("device", "cpu"),
        "device_name": device_name(config.get("device", "cpu")),
        "torch_threads": torch.get_num_threads(),
        "platform": f"{platform.system()} {platform.release()}",
    }


__all__ = ["device_name", "environment", "git_commit"]
