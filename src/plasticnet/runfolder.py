"""Run folders: what a run writes, how it is read back, and who may write it.

A run folder (see :mod:`plasticnet.train`) is all a report reads::

    config.yaml    the resolved options
    metrics.csv    batch, train_loss, val_error, val_<key>...   (one row per validation)
    best.pt        checkpoint with the lowest val_error so far
    last.pt        checkpoint of the last validation
    tb/            TensorBoard events (when tensorboard is installed)
    summary.json   {"finished", "best_val_error", "final_val_error", "batches", "elapsed_s", ...}
    environment.json  engine used, versions (plasticnet and its commit, torch, numba), device
    .lock          the writer's lock (pid, host, start time of the process holding it)

Rules that keep work from being lost:

- every file a crash could leave half-written goes through
  :func:`save_atomic` (temp file beside it, ``fsync``, ``os.replace``);
- checkpoints hold only what ``torch.load(weights_only=True)`` reads, and a
  damaged one is reported by name with what still works;
- one writer per folder: :class:`RunLock` takes an exclusive ``flock`` on
  ``.lock`` (the kernel drops it when the holder dies, so a crash leaves no
  stale lock); a second writer is refused at once, naming the holder;
- a folder is trained into only when it is new, empty, a run folder without
  a checkpoint (a run that failed before its first one starts again) or (to
  resume) a run folder; :func:`check_folder` refuses the rest, naming what
  is there or missing; temp files of writers killed mid-save are removed
  (:func:`remove_stale_temps`);
- the checkpoint is the truth of a run: it holds its options, and a
  ``config.yaml`` edited since is refused (:func:`check_checkpoint_config`);
- a resumed run may change only :data:`RESUME_MAY_CHANGE`
  (:func:`resume_config`, used by ``train --resume`` and by ``sweep``).
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import pickle
import socket
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .config import load_yaml, resolve_options, resolved_config

LOCK_FILE = ".lock"
RUN_FILES = ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json", "environment.json", "tb", LOCK_FILE)
# options a resumed run may change (they do not change what is computed, or only how long)
RESUME_MAY_CHANGE = ("batches", "device", "threads", "val_batches", "engine", "chunk_size", "engine_threads")


# what a checkpoint holds (train.py writes them), and the type of each
CHECKPOINT_FIELDS = {"model": dict, "optimizer": dict, "batch": int, "train_rng": torch.Tensor,
                     "torch_rng": torch.Tensor, "best_val_error": float, "val_error": float,
                     "elapsed_s": (int, float), "config": dict}
RESUME_FIELDS = tuple(CHECKPOINT_FIELDS)[:-1]  # what resuming reads (config: compared where present)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (not a folder, foreign files, a missing file, ...)."""


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, garbage, empty)."""


# ------------------------------------------------------------------ writing
def save_atomic(obj, path, save: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Write ``obj`` to ``path`` with ``save(obj, file)`` through a temp file, ``fsync`` and ``os.replace``.

    A crash (or a failing ``save``) leaves the old ``path`` untouched: never a
    half-written file. ``save`` defaults to ``torch.save``; see
    :func:`save_npz_atomic` and :func:`write_text_atomic` for the others.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            (save or torch.save)(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz_atomic(path, arrays: Dict[str, Any], compressed: bool = False) -> None:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path``, atomically (:func:`save_atomic`)."""
    writer = np.savez_compressed if compressed else np.savez
    save_atomic(arrays, path, save=lambda a, f: writer(f, **a))


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`save_atomic`)."""
    save_atomic(text, path, save=lambda t, f: f.write(t.encode()))


# ------------------------------------------------------------------ reading
def load_checkpoint(path, map_location="cpu", hint: str = "", keys=()) -> Dict[str, Any]:
    """A checkpoint of this trainer, read with ``torch.load(weights_only=True)``.

    A file that cannot be read raises :class:`CheckpointError` naming it and
    saying it is damaged, plus ``hint`` (what still works); torch's own
    message, which suggests loading with ``weights_only=False``, is not shown.
    So does a checkpoint that lacks one of ``keys`` (of
    :data:`CHECKPOINT_FIELDS`) or holds it with another type: ``{}``
    saved as ``best.pt``, a ``last.pt`` without its RNG states.
    """
    path = Path(path)
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile, AttributeError,
            ImportError, IndexError, KeyError, TypeError, OSError) as err:
        if isinstance(err, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        size = path.stat().st_size if path.is_file() else 0
        what = "empty" if size == 0 else f"{size} bytes, truncated or not a checkpoint of this trainer"
        raise CheckpointError(f"checkpoint {path} is damaged and cannot be read ({what})"
                              + (f"; {hint}" if hint else "")) from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"checkpoint {path} is damaged: it holds a {type(ck).__name__}, not a checkpoint dict"
                              + (f"; {hint}" if hint else ""))
    missing = [k for k in keys if k not in ck]
    wrong = [k for k in keys if k in ck and not isinstance(ck[k], CHECKPOINT_FIELDS[k])]
    if missing or wrong:
        what = ([f"lacks {', '.join(missing)}"] if missing else []) + [
            f"{k} is a {type(ck[k]).__name__}" for k in wrong]
        raise CheckpointError(f"checkpoint {path} is not a checkpoint of this trainer or is damaged: it "
                              f"{'; '.join(what)}" + (f"; {hint}" if hint else ""))
    return ck


def check_checkpoint_config(ck: Dict[str, Any], config: Dict[str, Any], path, source) -> None:
    """Refuse a ``config`` (read from ``source``, e.g. ``config.yaml``) that differs from the options the
    checkpoint ``ck`` (read from ``path``) was trained with, outside :data:`RESUME_MAY_CHANGE`.

    The checkpoint is the truth of a run: an edited ``config.yaml`` would
    otherwise evaluate or continue the model on a task it never trained on.
    Keys the checkpoint does not record (options added to the library since)
    are not compared; a checkpoint without its options (written before they
    were recorded) is taken as it is.
    """
    saved = ck.get("config")
    if not isinstance(saved, dict):
        return
    changed = [k for k in saved if k not in RESUME_MAY_CHANGE and k in config and config[k] != saved[k]]
    changed += [k for k in saved if k not in RESUME_MAY_CHANGE and k not in config]
    if changed:
        raise RunFolderError(
            f"{source} does not match the checkpoint {path}, which was trained with other options: "
            + ", ".join(f"{k}={config.get(k, '(absent)')!r} (checkpoint has {saved[k]!r})" for k in changed)
            + f"; only {', '.join(RESUME_MAY_CHANGE)} may differ. Restore {source} to the checkpoint's "
              f"values, or train a new run with the new ones in another folder")


def read_config(run_dir) -> Dict[str, Any]:
    """``config.yaml`` of a run folder as a dict; a missing or unreadable file is a :class:`RunFolderError`."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunFolderError(f"{path} not found (is {run_dir} a run folder?)")
    try:
        config = load_yaml(path.read_text(), str(path))
    except (ValueError, OSError) as err:  # not YAML, not text (UnicodeDecodeError), an alias bomb
        raise RunFolderError(f"{path} cannot be read: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict) or "task" not in config:
        raise RunFolderError(f"{path} is not a run's config (expected a mapping with a 'task')")
    return config


SUMMARY_FIELDS = {"finished": bool, "best_val_error": (int, float), "final_val_error": (int, float),
                  "test_error": (int, float), "batches": int, "elapsed_s": (int, float)}
SUMMARY_KINDS = {bool: "true or false", (int, float): "a number or null", int: "an integer"}


def read_summary(run_dir) -> Optional[Dict[str, Any]]:
    """``summary.json`` of a run folder, or ``None`` (absent, or unreadable: a run still writing it).

    A summary whose fields have the wrong type (``final_val_error: "abc"``)
    raises :class:`RunFolderError` naming the file and the field.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(summary, dict):
        return None
    for key, kinds in SUMMARY_FIELDS.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, kinds) or (kinds is not bool and isinstance(value, bool))):
            raise RunFolderError(f"{path}: {key} must be {SUMMARY_KINDS[kinds]}, got {value!r}")
    return summary


def read_metrics(run_dir) -> Dict[str, np.ndarray]:
    """Columns of ``run_dir/metrics.csv``: ``{"batch": int array, "train_loss": float array, ...}``.

    Empty cells read as NaN; no rows give ``{}``. A missing file raises
    ``FileNotFoundError``, a malformed one ``ValueError``, each naming it.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    try:
        out = {k: np.array([float(r[k]) if r[k] not in ("", None) else math.nan for r in rows]) for k in rows[0]}
        if "batch" in out:
            out["batch"] = out["batch"].astype(np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path} is malformed: {err}") from None
    return out


def load_run(run_dir, which: str = "best") -> Tuple[Any, torch.nn.Module, Dict[str, Any]]:
    """``(task, model, config)`` of a run folder with checkpoint ``which`` (best/last) loaded.

    A missing checkpoint names the run's outcome (e.g. a run stopped by a
    non-finite validation before its first checkpoint); a damaged one says
    which other checkpoint may still work.
    """
    from .checks import check_choice

    run_dir = Path(run_dir)
    check_choice("checkpoint", which, ("best", "last"))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} not found")
    config = read_config(run_dir)
    ck_path = run_dir / f"{which}.pt"
    other = "last" if which == "best" else "best"
    if not ck_path.is_file():
        summary = read_summary(run_dir) or {}
        why = f": {summary['error']}" if summary.get("error") else ""
        raise FileNotFoundError(f"{ck_path} not found (the run has no {which} checkpoint{why})")
    hint = (f"{other}.pt may still be intact (--checkpoint {other})" if (run_dir / f"{other}.pt").is_file()
            else "retrain the run")
    ck = load_checkpoint(ck_path, hint=hint, keys=("model",))
    check_checkpoint_config(ck, config, ck_path, run_dir / "config.yaml")
    config = {**config, "device": "cpu"} if not torch.cuda.is_available() else config
    config, task, model = resolved_config(config)
    model.load_state_dict(ck["model"])
    model.eval()
    return task, model, config


# ------------------------------------------------------------------ checking
def check_run_path(run_dir) -> Path:
    """Refuse a run folder path that is a file, lies under a file, or cannot be written; returns it as a Path."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file, not a folder")
    parent = run_dir
    while not parent.exists():  # the nearest existing ancestor must be a writable folder
        parent = parent.parent
    if not parent.is_dir():
        raise RunFolderError(f"run folder {run_dir} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {run_dir} cannot be written: no write permission on {parent}")
    return run_dir


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_folder(run_dir, resume: bool) -> bool:
    """What training may do with ``run_dir``: ``True`` to continue the run folder there, ``False`` to start.

    A new or empty folder starts. A run folder (``config.yaml``) is continued
    with ``resume`` and refused without it. Refused always: a folder with
    checkpoints or metrics but no ``config.yaml`` (the options that made them
    are lost, naming what is missing), and a folder holding other files.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    present = {p.name for p in run_dir.iterdir()} - {LOCK_FILE}
    present = {n for n in present if not (n.startswith(".") and n.endswith(".tmp"))}  # a killed save_atomic
    if not present:
        return False
    if "config.yaml" not in present:
        ours = sorted(present & set(RUN_FILES))
        if ours:
            raise RunFolderError(f"{run_dir} holds {', '.join(ours)} but no config.yaml: the options that made "
                                 f"them are unknown, so it cannot be resumed or overwritten; restore config.yaml "
                                 f"or train into another folder")
        raise RunFolderError(f"{run_dir} is not empty and not a run folder (it holds {_listing(present)}); "
                             f"train into a new or empty folder")
    if not resume:
        if not has_checkpoint(run_dir):  # a run that failed or was killed before its first checkpoint
            return False
        raise RunFolderError(f"{run_dir} already holds a run; pass resume (--resume) or another run folder")
    return True


def has_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` holds a checkpoint (``last.pt`` or ``best.pt``): trained state that a new start
    would lose. A run folder without one may be started again, with any options."""
    return any((Path(run_dir) / name).is_file() for name in ("last.pt", "best.pt"))


def remove_stale_temps(run_dir) -> List[Path]:
    """Delete the temp files (``.NAME.PID.tmp``) that writers killed mid-save left in ``run_dir``.

    Only files of processes no longer alive are removed (a live writer's
    temp file is in use). Call it holding the folder's lock; returns the
    removed paths.
    """
    removed = []
    for path in Path(run_dir).glob(".*.tmp"):
        pid = path.name[:-len(".tmp")].rpartition(".")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:  # gone already, or not ours to delete
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def resume_config(run_dir, options: Dict[str, Any], complete: bool = False):
    """``(config, task, model)`` of continuing the run in ``run_dir`` with ``options``.

    ``complete=False`` (``train --resume``): ``options`` change the saved
    config (keys not given keep the run's values). ``complete=True`` (a sweep
    trial): ``options`` are the whole run (keys not given take their defaults).
    An option added to the library after the run was written takes its
    current default. Any difference outside :data:`RESUME_MAY_CHANGE` is
    refused, naming each key with both values, unless the folder holds no
    checkpoint (nothing was trained: the run starts again with the new options).
    """
    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    before = resolve_options(saved)
    config, task, model = resolved_config(dict(options) if complete else {**saved, **options})
    if not has_checkpoint(run_dir):  # nothing trained yet: any options may start it
        return config, task, model
    changed = [k for k in config if k not in RESUME_MAY_CHANGE and config[k] != before.get(k)]
    if changed:
        raise RunFolderError(f"cannot continue the run in {run_dir} with other options: "
                             + ", ".join(f"{k}={config[k]!r} (run has {before.get(k)!r})" for k in changed)
                             + f"; only {', '.join(RESUME_MAY_CHANGE)} may change (or use another run folder)")
    return config, task, model


# ------------------------------------------------------------------ locking
class RunLock:
    """Exclusive lock on a run folder: ``with RunLock(run_dir): ...``.

    An ``flock(LOCK_EX | LOCK_NB)`` on ``run_dir/.lock``, which then records
    the holder (pid, host, start time, command). The kernel releases the lock
    when the holding process dies, however it dies, so a crashed run never
    blocks a resume. A second writer, in this process or another (on NFS,
    Linux maps ``flock`` to a POSIX lock the server arbitrates), gets
    :class:`RunLockedError` at once, naming the holder. The ``.lock`` file
    itself stays (removing it would let two writers lock two different files).
    """

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError`."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            warnings.warn("no fcntl on this platform: run folders are not locked", stacklevel=2)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot write the lock file {self.path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a file system without locks
                os.close(fd)
                warnings.warn(f"cannot lock {self.path} ({err.strerror}): the run folder is not protected "
                              f"from a second writer", stacklevel=2)
                return self
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process that did not say who"
            os.close(fd)
            raise RunLockedError(f"run folder {self.run_dir} is in use by another writer ({holder}); "
                                 f"wait for it to finish or stop it, then resume") from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv and sys.argv[0] else "python"
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays, emptied)."""
        if self.fd is not None:
            import fcntl

            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(run_dir) -> Optional[str]:
    """Who holds ``run_dir``'s lock now (the lock file's text), or ``None`` if nobody does.

    Probes with a shared ``flock`` for an instant, writing nothing.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ------------------------------------------------------------------ metrics, TensorBoard
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
                whole = [r for r in rows[1:] if len(r) == len(self.columns)]  # not a half-appended row
                kept = [rows[0]] + [r for r in whole if int(r[0]) <= keep_upto]
                write_text_atomic(path, "".join(",".join(r) + "\n" for r in kept))
        elif path.exists():
            path.unlink()

    def write(self, batch: int, train_loss: Optional[float], metrics: Dict[str, float]) -> None:
        """Append one row: the validation after ``batch`` training batches (``train_loss=None``: before any
        training, written as an empty cell)."""
        values = {"batch": batch, "train_loss": train_loss, "val_error": metrics["error"]}
        values.update({f"val_{k}": v for k, v in metrics.items() if k != "error"})
        if self.columns is None:
            self.columns = list(values)
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        with open(self.path, "a") as f:
            f.write(",".join(_fmt(values.get(c, float("nan"))) for c in self.columns) + "\n")


def _fmt(v) -> str:
    if v is None:
        return ""
    return str(v) if isinstance(v, int) else repr(float(v))


def tensorboard(run_dir: Path, purge_step: Optional[int]):
    """A TensorBoard ``SummaryWriter`` on ``run_dir/tb`` (``None``, with a warning, without tensorboard)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=3)
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge_step)


__all__ = ["CHECKPOINT_FIELDS", "CheckpointError", "LOCK_FILE", "RESUME_FIELDS", "check_checkpoint_config",
           "has_checkpoint", "remove_stale_temps", "Metrics", "RESUME_MAY_CHANGE", "RunFolderError", "RunLock",
           "RunLockedError", "check_folder", "check_run_path", "load_checkpoint", "load_run", "lock_holder",
           "read_config", "read_metrics", "read_summary", "resume_config", "save_atomic", "save_npz_atomic",
           "tensorboard", "write_text_atomic"]
