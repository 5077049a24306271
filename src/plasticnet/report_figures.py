"""The report's PNG figures (matplotlib, Agg backend): curves, sweeps, analyses.

Each function takes the condition keys and the :class:`~plasticnet.report.Condition`
list of one experiment and writes one figure; :func:`group_figures` writes
all that apply and returns ``[(path, caption)]``. Bands and error bars are 95%
t-intervals over seeds (:func:`plasticnet.stats.t_interval`).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import List, Tuple

import numpy as np

from .stats import t_interval

MIN_SWEEP_VALUES = 3  # a numeric option with at least this many values gets an error-vs-option plot


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _split(keys, conditions):
    """Panels by the first key when several keys vary (e.g. one panel per cell), lines by the others."""
    if len(keys) < 2:
        return [("", conditions)], keys
    panels = {}
    for c in conditions:
        panels.setdefault(c.values[0], []).append(c)
    return [(f"{keys[0]}={v}", cs) for v, cs in panels.items()], keys[1:]


def _line_label(keys, values) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"


def _band(curves: List[Tuple[np.ndarray, np.ndarray]]):
    """Mean and 95% half-width over runs at each batch any run logged (runs may stop early)."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    stats = [t_interval([y[x == b][0] for x, y in curves if (x == b).any()]) for b in xs]
    mean = np.array([s[0] for s in stats])
    half = np.nan_to_num(np.array([s[1] for s in stats]))
    return xs, mean, half


def learning_curves(keys, conditions, path: Path, title: str = "", ylabel: str = "validation error") -> bool:
    """Validation error vs batch, one line per condition with its 95% band (figure ``title``, y label ``ylabel``)."""
    plt = _plt()
    panels, line_keys = _split(keys, conditions)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False, sharey=True)
    drawn = False
    for ax, (panel, conds) in zip(axes[0], panels):
        for c in conds:
            curves = [(r.metrics["batch"], r.metrics["val_error"]) for r in c.runs
                      if len(r.metrics.get("val_error", []))]
            if not curves:
                continue
            xs, mean, half = _band(curves)
            values = c.values[1:] if len(keys) > 1 else c.values
            line, = ax.plot(xs, mean, label=f"{_line_label(line_keys, values)} (n={len(curves)})")
            ax.fill_between(xs, mean - half, mean + half, color=line.get_color(), alpha=0.2)
            drawn = True
        ax.set(title=f"{title}, {panel}" if title and panel else title or panel, xlabel="batch")
        _legend(ax, len(conds))
    axes[0][0].set_ylabel(ylabel)
    means = [y for ax in axes[0] for line in ax.get_lines() for y in line.get_ydata()]
    if means and min(means) > 0 and max(means) / min(means) >= 3:  # early errors dwarf the rest
        for ax in axes[0]:
            ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _determined_by(keys, conditions, i: int) -> List[int]:
    """Indices of the keys whose value follows from the value of key ``i`` (e.g. zipped with it)."""
    out = []
    for j in range(len(keys)):
        seen = {}
        if j != i and all(seen.setdefault(c.values[i], c.values[j]) == c.values[j] for c in conditions):
            out.append(j)
    return out


def error_vs(keys, conditions, key: str, path: Path) -> bool:
    """Final validation error vs the numeric option ``key``, one line per setting of the other keys.

    Keys varied together with ``key`` (zipped) are not split into lines.
    """
    plt = _plt()
    i = keys.index(key)
    skip = {i, *_determined_by(keys, conditions, i)}
    lines = {}
    for c in conditions:
        rest = tuple(v for j, v in enumerate(c.values) if j not in skip)
        lines.setdefault(rest, []).append(c)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    other = [k for j, k in enumerate(keys) if j not in skip]
    xs_all = []
    for rest, conds in lines.items():
        conds = sorted(conds, key=lambda c: c.values[i])
        xs = [c.values[i] for c in conds]
        st = [c.stats() for c in conds]
        ax.errorbar(xs, [s[0] for s in st], yerr=np.nan_to_num([s[1] for s in st]), marker="o", capsize=3,
                    label=_line_label(other, rest))
        xs_all += xs
    positive = [x for x in xs_all if x > 0]
    if len(positive) == len(xs_all) and max(positive) / min(positive) >= 20:
        ax.set_xscale("log")
    ax.set(xlabel=key, ylabel="final validation error")
    _legend(ax, len(ax.get_lines()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


ANALYSIS_PANELS = (("modulation", "modulation  m_t"),
                   ("inner_lr", "modulated inner lr  η_t = p_lr·m_t"),
                   ("effective_lr", "effective rate  η_t·s_t (after clip)"),
                   ("fast_norm", "fast-weight norm  ‖F_t‖"))


def _scored_steps(ax, analyses) -> None:
    """Shade the steps the task scores (its queries: ``mask_frac > 0``) behind a per-step panel."""
    frac = analyses[0].get("mask_frac")
    if frac is None:
        return
    for t in np.flatnonzero(np.asarray(frac) > 0):
        ax.axvspan(t - 0.5, t + 0.5, color="0.9", zorder=0, lw=0)


def _by_episode_length(conds, key):
    """Conditions grouped by the length of their episodes (``{T: [condition]}``, in order of appearance)."""
    groups = {}
    for c in conds:
        a = next(r.analysis for r in c.runs if r.analysis)
        groups.setdefault(len(a[f"{key}_mean"]), []).append(c)
    return groups


def analysis_plot(keys, conditions, path: Path) -> bool:
    """Per episode step: modulation, modulated inner lr, effective rate, fast-weight norm — the panels
    every analysis of the group holds (mean over seeds, band = 95%; dotted: 10–90 % of the episodes,
    mean over seeds; grey: the steps the task scores). Conditions whose episodes differ in length (a
    delay or sequence-length sweep) get a row each, with their own scored steps."""
    conds = [c for c in conditions if any(r.analysis for r in c.runs)]
    if not conds:
        return False
    analyses = [r.analysis for c in conds for r in c.runs if r.analysis]
    panels = [(k, t) for k, t in ANALYSIS_PANELS if all(f"{k}_mean" in a for a in analyses)]
    if not panels:
        return False
    groups = _by_episode_length(conds, panels[0][0])
    plt = _plt()
    fig, axes = plt.subplots(len(groups), len(panels), figsize=(4.5 * len(panels), 3.6 * len(groups)),
                             squeeze=False)
    for row, (T, group) in zip(axes, groups.items()):
        _analysis_row(row, panels, keys, group)
        if len(groups) > 1:
            row[0].set_ylabel(f"episodes of {T} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _analysis_row(axes, panels, keys, conds) -> None:
    """One row of :func:`analysis_plot`: a panel per key, a line (and bands) per condition."""
    analyses = [r.analysis for c in conds for r in c.runs if r.analysis]
    for ax, (key, title) in zip(axes, panels):
        _scored_steps(ax, analyses)
        for c in conds:
            runs = [r.analysis for r in c.runs if r.analysis]
            ys = np.stack([a[f"{key}_mean"] for a in runs])  # (seeds, T)
            stats = [t_interval(col) for col in ys.T]
            mean = np.array([s[0] for s in stats])
            half = np.nan_to_num(np.array([s[1] for s in stats]))
            steps = np.arange(len(mean))
            line, = ax.plot(steps, mean, label=f"{_line_label(keys, c.values)} (n={len(ys)})")
            ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2)
            if all(f"{key}_q10" in a for a in runs):
                for q in ("q10", "q90"):
                    ax.plot(steps, np.mean([a[f"{key}_{q}"] for a in runs], 0), ls=":", lw=0.8,
                            color=line.get_color())
        ax.set(title=title, xlabel="step of the episode")
    _legend(axes[-1], len(conds))


def heatmap_plot(keys, conditions, path: Path) -> bool:
    """The fast weights of one episode at a few steps, one row per condition (its first analysed seed)."""
    rows = [(c, next(r.analysis for r in c.runs if r.analysis)) for c in conditions
            if any(r.analysis and "heatmap" in r.analysis for r in c.runs)]
    rows = [(c, a) for c, a in rows if "heatmap" in a][:8]
    if not rows:
        return False
    plt = _plt()
    k = max(len(a["heatmap_steps"]) for _, a in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(2.6 * k, 2.4 * len(rows)), squeeze=False)
    for i, (c, a) in enumerate(rows):
        lim = float(np.abs(a["heatmap"]).max()) or 1.0
        for j in range(k):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(a["heatmap_steps"]):
                ax.axis("off")
                continue
            im = ax.imshow(a["heatmap"][j], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                           interpolation="nearest")
            ax.set_title(f"step {int(a['heatmap_steps'][j])}", fontsize=8)
            if j == 0:
                ax.set_ylabel(_line_label(keys, c.values) or "run", fontsize=7)
        fig.colorbar(im, ax=list(axes[i]), fraction=0.02)
    fig.suptitle("fast weights of one episode (rows: pre, columns: post)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _legend(ax, n: int) -> None:
    """A legend that stays readable with many lines: beside the axes past 6 entries."""
    if n > 6:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7)


def _numeric_keys(keys, conditions) -> List[str]:
    """Numeric keys with enough values for an error-vs-key plot; one key per zipped group."""
    out, covered = [], set()
    for i, k in enumerate(keys):
        vals = {c.values[i] for c in conditions}
        if (i not in covered and len(vals) >= MIN_SWEEP_VALUES
                and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)):
            out.append(k)
            covered.update(_determined_by(keys, conditions, i))
    return out


def group_figures(keys, conditions, fig_dir: Path, slug: str) -> List[Tuple[Path, str]]:
    """Write every figure that applies to one experiment; returns ``[(path, caption)]``."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []
    path = fig_dir / f"{slug}_curves.png"
    if learning_curves(keys, conditions, path):
        made.append((path, f"{slug}: validation error during training (mean and 95% band over seeds)"))
    for key in _numeric_keys(keys, conditions):
        path = fig_dir / f"{slug}_error_vs_{key}.png"
        if error_vs(keys, conditions, key, path):
            made.append((path, f"{slug}: final validation error vs {key} (mean ± 95%)"))
    path = fig_dir / f"{slug}_analysis.png"
    if analysis_plot(keys, conditions, path):
        made.append((path, f"{slug}: modulation and fast-weight norm over the episode (grey: the scored steps)"))
    path = fig_dir / f"{slug}_fast_weights.png"
    if heatmap_plot(keys, conditions, path):
        made.append((path, f"{slug}: fast weights of one episode at a few steps"))
    return made
