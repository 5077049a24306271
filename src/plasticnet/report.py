"""``plasticnet report DIR``: tables and figures from run folders, and nothing else.

Every folder under ``DIR`` holding a ``config.yaml`` is a run (local or Ray
sweeps, single ``plasticnet train`` runs alike). Runs are grouped by the
folder that contains them (one group per experiment), and within a group by
*condition*: the options that differ between its runs, less ``seed`` (and
less ``hidden_size`` where size matching derives it from rule and cell).

For each group the report (``report.md``, figures under ``figures/``) gives:

- a table of the final validation error per condition — mean ± half-width of
  the 95% t-interval over seeds, ``mean ± t_{0.975, n−1} · s / √n`` — the best
  validation error, and the number of seeds (finished/all) behind each cell;
  unfinished runs count with their last logged validation, marked ``*``;
- the paper's layout: a rule × cell table where both vary;
- learning curves (validation error vs batch, mean and 95% band over seeds);
- error vs each swept numeric option with ≥ 3 values (delay, seq_length,
  inner_lr, ...);
- from ``analysis.npz`` (:mod:`plasticnet.analysis`): the modulated inner
  learning rate and the fast-weight norm over the steps of an episode.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .analysis import load_analysis
from .runfolder import read_config, read_metrics, read_summary
from .stats import t_interval, t_quantile

DERIVED = ("hidden_size",)  # dropped from conditions when the other varied keys determine them
NOT_CONDITIONS = ("threads", "engine_threads", "device", "val_every", "val_batches", "batches", "cache_dir",
                  "data_dir")  # how a run was made or measured, not what was compared (batches: its own column)
LAST_KEYS = ("cell", "rule")  # ordered last, so tables read like the paper's (rows rule, columns cell)


@dataclass
class Run:
    """One run folder: its options, metrics columns and summary (``None`` while running)."""

    path: Path
    config: Dict[str, Any]
    metrics: Dict[str, np.ndarray]
    summary: Optional[Dict[str, Any]]
    analysis: Optional[Dict[str, np.ndarray]] = None

    @property
    def finished(self) -> bool:
        return bool(self.summary and self.summary.get("finished"))

    @property
    def final_error(self) -> float:
        """``final_val_error`` of the summary, else the last logged validation error (nan if none)."""
        if self.finished and self.summary.get("final_val_error") is not None:
            return float(self.summary["final_val_error"])
        v = self.metrics.get("val_error", np.array([]))
        return float(v[-1]) if len(v) else math.nan

    @property
    def best_error(self) -> float:
        if self.finished and self.summary.get("best_val_error") is not None:
            return float(self.summary["best_val_error"])
        v = self.metrics.get("val_error", np.array([]))
        return float(np.nanmin(v)) if len(v) else math.nan


@dataclass
class Condition:
    """The runs of one condition (all seeds) and their statistics."""

    values: Tuple[Any, ...]
    runs: List[Run] = field(default_factory=list)

    def stats(self, attr: str = "final_error") -> Tuple[float, float, int]:
        """``(mean, 95% half-width, n)`` over runs with a value (half-width nan for n < 2)."""
        return t_interval([getattr(r, attr) for r in self.runs])




def load_runs(root) -> List[Run]:
    """Every run folder (a folder with ``config.yaml``) under ``root``, sorted by path.

    A run whose ``config.yaml`` or ``metrics.csv`` cannot be read is skipped
    with a warning naming the file; the others are reported.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder")
    runs = []
    for cfg in sorted(root.rglob("config.yaml")):
        if any(part.startswith(".") for part in cfg.relative_to(root).parts):
            continue  # e.g. the Ray backend's .ray/ bookkeeping
        run_dir = cfg.parent
        try:
            config = read_config(run_dir)
            metrics = read_metrics(run_dir) if (run_dir / "metrics.csv").is_file() else {}
            summary = read_summary(run_dir)
        except (ValueError, OSError) as err:
            warnings.warn(f"skipped {run_dir}: {err}", stacklevel=2)
            continue
        try:
            analysis = load_analysis(run_dir)
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:  # garbage: the run stays
            warnings.warn(f"{run_dir / 'analysis.npz'} cannot be read ({type(err).__name__}); "
                          f"reported without its analysis", stacklevel=2)
            analysis = None
        runs.append(Run(run_dir, config, metrics, summary, analysis))
    return runs


def _hashable(v: Any) -> Any:
    """``v`` as a hashable value: lists and mappings (a hand-edited ``lr: {a: 1}``) as tuples, recursively."""
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple((str(k), _hashable(x)) for k, x in v.items())
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


def _order(x: Any) -> tuple:
    """Sort key of a condition value: numbers by value, anything else by its text."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ("0", float(x), "")
    return ("1", 0.0, f"{type(x).__name__}:{x!r}")


def condition_keys(runs: List[Run]) -> List[str]:
    """Options that vary between ``runs``, less seed and derived keys, in table order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))  # config.yaml order
    varied = [k for k in keys if k != "seed" and k not in NOT_CONDITIONS
              and len({_hashable(r.config.get(k)) for r in runs}) > 1]
    for d in DERIVED:
        others = [k for k in varied if k != d]
        if d in varied and others:
            seen: Dict[tuple, set] = defaultdict(set)
            for r in runs:
                seen[tuple(_hashable(r.config.get(k)) for k in others)].add(_hashable(r.config.get(d)))
            if all(len(s) == 1 for s in seen.values()):
                varied.remove(d)
    return [k for k in varied if k not in LAST_KEYS] + [k for k in LAST_KEYS if k in varied]


def group_conditions(runs: List[Run], keys: List[str]) -> List[Condition]:
    """Runs grouped by their values of ``keys``, sorted by those values."""
    groups: Dict[tuple, Condition] = {}
    for r in runs:
        values = tuple(_hashable(r.config.get(k)) for k in keys)
        groups.setdefault(values, Condition(values)).runs.append(r)
    return [groups[v] for v in sorted(groups, key=lambda v: tuple(_order(x) for x in v))]


def fmt(mean: float, half: float, digits: int = 4) -> str:
    """``mean ± half`` (just the mean when the interval is undefined)."""
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.{digits}g}" + (f" ± {half:.2g}" if np.isfinite(half) else "")


def _label(keys: List[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"


SECONDARY_ERRORS = ("query_error", "recall_error")  # a task's error on the steps that test memory, beside `error`


def _last(run: Run, column: str) -> float:
    v = run.metrics.get(column, np.array([]))
    return float(v[-1]) if len(v) else math.nan


def condition_table(keys: List[str], conditions: List[Condition]) -> List[str]:
    """Markdown rows: condition values, seeds, final error (mean ± 95%), best error, batches; and the final
    ``query_error`` / ``recall_error`` where the task logs one (regression's error covers every step)."""
    extra = [m for m in SECONDARY_ERRORS if any(f"val_{m}" in r.metrics for c in conditions for r in c.runs)]
    head = keys + ["seeds (finished/all)", "final val error (mean ± 95%)",
                   *[f"final val {m.replace('_', ' ')} (mean ± 95%)" for m in extra],
                   "best val error (mean ± 95%)", "batches"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in conditions:
        done = sum(r.finished for r in c.runs)
        mark = "" if done == len(c.runs) else " *"
        batches = sorted({int(r.metrics["batch"][-1]) for r in c.runs if len(r.metrics.get("batch", []))})
        span = "—" if not batches else (str(batches[0]) if len(batches) == 1 else f"{batches[0]}–{batches[-1]}")
        lines.append("| " + " | ".join([str(v) for v in c.values] + [
            f"{done}/{len(c.runs)}", fmt(*c.stats("final_error")[:2]) + mark,
            *[fmt(*t_interval([_last(r, f"val_{m}") for r in c.runs])[:2]) + mark for m in extra],
            fmt(*c.stats("best_error")[:2]) + mark, span]) + " |")
    return lines


def pivot_tables(keys: List[str], conditions: List[Condition]) -> List[str]:
    """The paper's layout: rows ``rule``, columns ``cell`` (or the last two keys), one table per other setting."""
    if len(keys) < 2:
        return []
    rk, ck = keys[-1], keys[-2]
    ri, ci = keys.index(rk), keys.index(ck)
    rest = [i for i in range(len(keys)) if i not in (ri, ci)]
    by_rest: Dict[tuple, Dict[tuple, Condition]] = defaultdict(dict)
    for c in conditions:
        by_rest[tuple(c.values[i] for i in rest)][(c.values[ri], c.values[ci])] = c
    lines = []
    for rest_values, cells in by_rest.items():
        rows = sorted({k[0] for k in cells}, key=str)
        cols = sorted({k[1] for k in cells}, key=str)
        if rest:
            lines.append(f"\n{_label([keys[i] for i in rest], rest_values)}:\n")
        lines.append(f"| {rk} \\ {ck} | " + " | ".join(map(str, cols)) + " |")
        lines.append("|" + "---|" * (len(cols) + 1))
        for row in rows:
            entries = []
            for col in cols:
                c = cells.get((row, col))
                entries.append("—" if c is None else f"{fmt(*c.stats()[:2])} (n={c.stats()[2]})")
            lines.append(f"| {row} | " + " | ".join(entries) + " |")
    return lines


def write_report(root, out=None, title: Optional[str] = None) -> Path:
    """Write ``report.md`` and ``figures/*.png`` for the runs under ``root``; returns the report's path."""
    from . import report_figures as figs

    root = Path(root)
    runs = load_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run folders (with config.yaml) under {str(root)!r}")
    out = Path(out) if out is not None else root
    (out / "figures").mkdir(parents=True, exist_ok=True)
    groups: Dict[Path, List[Run]] = defaultdict(list)
    for r in runs:
        groups[r.path.parent].append(r)
    done = sum(r.finished for r in runs)
    lines = [f"# {title or 'Report: ' + str(root)}", "",
             f"{len(runs)} run folders under `{root}`: {done} finished, {len(runs) - done} unfinished. "
             "Final validation error: mean ± half-width of the 95% t-interval over seeds; "
             "`*` marks conditions with unfinished runs (counted with their last logged validation).", ""]
    for parent, group in groups.items():
        name = parent.relative_to(root).as_posix() if parent != root else root.name
        slug = name.replace("/", "_") or "runs"
        keys = condition_keys(group)
        conditions = group_conditions(group, keys)
        tasks = sorted({str(r.config.get("task")) for r in group})
        seeds = sorted({len(c.runs) for c in conditions})
        lines += [f"## {name}", "", f"Task {', '.join(tasks)}; {len(group)} runs, {len(conditions)} conditions "
                  f"({', '.join(keys) or 'none varied'}); seeds per condition: "
                  f"{'–'.join(map(str, [seeds[0], seeds[-1]])) if len(seeds) > 1 else seeds[0]}.", ""]
        lines += condition_table(keys, conditions)
        pivot = pivot_tables(keys, conditions)
        if pivot:
            lines += ["", f"Final validation error, {keys[-1]} × {keys[-2]} (mean ± 95%, n seeds):", ""] + pivot
        unfinished = [r for r in group if not r.finished]
        if unfinished:
            lines += ["", "Unfinished runs:", ""]
            for r in unfinished:
                last = int(r.metrics["batch"][-1]) if len(r.metrics.get("batch", [])) else 0
                lines.append(f"- `{r.path.relative_to(root)}`: last validation at batch {last} "
                             f"of {r.config.get('batches', '?')}")
        lines.append("")
        for fig_path, caption in figs.group_figures(keys, conditions, out / "figures", slug):
            lines += [f"![{caption}]({fig_path.relative_to(out).as_posix()})", "", f"*{caption}*", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def analyze_missing(root) -> List[Path]:
    """Write ``analysis.npz`` (:func:`plasticnet.analysis.analyze_run`) for every finished run under ``root``
    that lacks one and has fast weights (rule other than ``none``); returns their folders.

    A run whose model the analysis does not cover is reported and skipped; the others go on."""
    from .analysis import ANALYSIS_FILE, analyze_run

    done = []
    for r in load_runs(root):
        if r.finished and not (r.path / ANALYSIS_FILE).is_file() and r.config.get("rule") != "none":
            try:
                result = analyze_run(r.path)
            except ValueError as err:
                print(f"analysis skipped for {r.path}: {err}")
                continue
            if result is not None:
                done.append(r.path)
    return done


__all__ = ["Run", "Condition", "analyze_missing", "load_runs", "condition_keys", "group_conditions", "t_interval",
           "t_quantile", "write_report"]
