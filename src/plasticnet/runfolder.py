"""Run-folder files: atomic checkpoints, ``metrics.csv``, TensorBoard.

A run folder (see :mod:`plasticnet.train`) is all a report reads. Every file
that a crash could leave half-written is written to a temp file beside it
and moved into place with ``os.replace`` (atomic on POSIX), and checkpoints
hold only what ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import torch


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then ``os.replace``: never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """A checkpoint of this trainer (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def read_metrics(run_dir) -> list:
    """Rows of ``metrics.csv`` as dicts of floats (``batch`` as int)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}")
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "batch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


class Metrics:
    """``metrics.csv`` writer: columns ``batch, train_loss, val_error, val_<key>...`` fixed by the
    first row, one appended row per validation. With ``keep_upto`` (resuming) the rows after
    that batch — written after the checkpoint a run resumes from — are dropped first."""

    def __init__(self, path: Path, keep_upto: Optional[int]):
        self.path, self.columns = path, None
        if keep_upto is not None and path.is_file():  # resuming: drop rows after the checkpoint
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.columns = rows[0]
                kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= keep_upto]
                write_text_atomic(path, "".join(",".join(r) + "\n" for r in kept))
        elif path.exists():
            path.unlink()

    def write(self, batch: int, train_loss: float, metrics: Dict[str, float]) -> None:
        values = {"batch": batch, "train_loss": train_loss, "val_error": metrics["error"]}
        values.update({f"val_{k}": v for k, v in metrics.items() if k != "error"})
        if self.columns is None:
            self.columns = list(values)
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        with open(self.path, "a") as f:
            f.write(",".join(_fmt(values.get(c, float("nan"))) for c in self.columns) + "\n")


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


def tensorboard(run_dir: Path, purge_step: Optional[int]):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=3)
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)
