"""Experiment files: a base configuration plus the axes a study varies.

An experiment file (``experiments/*.yaml``) describes a grid of training runs
("trials"), each of which the sweep runner (:mod:`plasticnet.sweep`) trains
into its own run folder::

    name: cue_reward_rules_cells      # folder under --out; trial folders go inside
    task: cue-reward                  # a registered task
    base:                             # flat trainer options (any --set key, rule, cell, batches, ...)
      batches: 20000
    grid:                             # key -> list of values, combined as a Cartesian product
      rule: [gradient, hebbian, none]
      cell: [lstm, rnn]
    zip:                              # optional: keys varied *together* (lists of one length)
      seq_length: [5, 10]
      delay: [0, 0]
    seeds: [0, 1, 2]                  # or a count: ``seeds: 3`` means 0, 1, 2
    size_matching: true               # hidden_size = matched_hidden_size(rule, cell, base=128)

``zip`` may also be a list of such mappings (several groups, each one axis).
``size_matching`` is ``false`` (default), ``true`` (base 128) or an integer
base: the hidden size of every trial is then
``plasticnet.matched_hidden_size(rule, cell, base)`` (SPEC §1: ×1.5 for rule
none, ×2 for the RNN cell), so the study compares rules at equal size.

Trials: ``n_trials = Π_grid len × Π_zip len × len(seeds)``; each trial's
options are ``base`` updated with its grid/zip values, ``task`` and ``seed``.
Its folder name lists the values that vary, in file order, e.g.
``rule=gradient,cell=lstm,seed=0``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .checks import check_known, check_path_component, check_positive_int
from .config import load_yaml
from .network import matched_hidden_size

TOP_KEYS = ("name", "task", "base", "grid", "zip", "seeds", "size_matching", "description")
RESERVED = ("task", "seed")  # set by the file's own fields, not by base/grid/zip
DEFAULT_MATCH_BASE = 128
MAX_TRIALS = 10_000  # trials an experiment may expand to unless asked for more (sweep --max-trials)


@dataclass
class Trial:
    """One training run of an experiment: its folder name and flat options."""

    name: str
    options: Dict[str, Any]


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    name: str
    task: str
    base: Dict[str, Any] = field(default_factory=dict)
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    zip: List[Dict[str, List[Any]]] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0])
    size_matching: Optional[int] = None  # the base hidden size, or None (off)
    description: str = ""
    max_trials: int = MAX_TRIALS  # more trials than this are refused before any is expanded

    @property
    def n_trials(self) -> int:
        """How many trials the experiment has, counted without expanding them."""
        n = len(self.seeds)
        for values in self.grid.values():
            n *= len(values)
        for group in self.zip:
            n *= len(next(iter(group.values())))
        return n

    def apply_overrides(self, overrides: Dict[str, Any]) -> List[str]:
        """Lay ``overrides`` (``sweep --set``) over ``base``; returns notes on what they changed.

        Refused, with the reason: ``task`` and ``seed`` (the file declares
        them; ``--seeds`` sets the seeds) and every key the grid or zip
        varies. ``hidden_size`` on an experiment with size matching becomes
        the matching's base (the trials then have the sizes matched to it).
        """
        for key in overrides:
            if key in RESERVED:
                raise ValueError(f"--set {key} conflicts with the experiment file, which declares its "
                                 f"{'task' if key == 'task' else 'seeds'}: "
                                 + ("use another experiment file" if key == "task" else "use --seeds N"))
            if key in self.varied_keys:
                raise ValueError(f"--set {key} conflicts with the experiment's grid/zip, which varies {key}")
        notes = []
        overrides = dict(overrides)
        if self.size_matching is not None and "hidden_size" in overrides:
            base = overrides.pop("hidden_size")
            check_positive_int("--set hidden_size (the size-matching base of this experiment)", base)
            notes.append(f"hidden_size={base} is the size-matching base (was {self.size_matching}): each trial's "
                         f"hidden size is matched to it by rule and cell")
            self.size_matching = base
        self.base.update(overrides)
        return notes

    @property
    def varied_keys(self) -> List[str]:
        """The keys that vary across trials (grid then zip, in file order)."""
        return list(self.grid) + [k for group in self.zip for k in group]

    def trials(self) -> List[Trial]:
        """All trials, in a fixed order: grid (last key fastest), zip groups, then seeds.

        More than ``max_trials`` are refused before any is made (:attr:`n_trials` counts them).
        """
        if self.n_trials > self.max_trials:
            raise ValueError(f"experiment {self.name!r} has {self.n_trials:,} trials, more than the cap of "
                             f"{self.max_trials:,}; shrink its grid or raise the cap (sweep --max-trials N)")
        axes = [[{k: v} for v in values] for k, values in self.grid.items()]
        for group in self.zip:
            n = len(next(iter(group.values())))
            axes.append([{k: values[i] for k, values in group.items()} for i in range(n)])
        trials, names = [], set()
        for combo in itertools.product(*axes):
            point = {k: v for part in combo for k, v in part.items()}
            for seed in self.seeds:
                options = {"task": self.task, **self.base, **point, "seed": seed}
                if self.size_matching is not None:
                    for key in ("rule", "cell"):
                        if key not in options:
                            raise ValueError(f"experiment {self.name!r}: size_matching needs {key!r} in base or grid")
                    options["hidden_size"] = matched_hidden_size(options["rule"], options["cell"],
                                                                 base=self.size_matching)
                name = trial_name({**point, "seed": seed})
                check_path_component(f"experiment {self.name!r}: trial folder name", name)
                if name in names:
                    raise ValueError(f"experiment {self.name!r}: two trials share the folder name {name!r}")
                names.add(name)
                trials.append(Trial(name, options))
        return trials


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "-".join(_format_value(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "-", text)


def trial_name(point: Dict[str, Any]) -> str:
    """Folder name of a trial: ``key=value`` of its varied options joined by commas."""
    return ",".join(f"{k}={_format_value(v)}" for k, v in point.items())


def _check_mapping(name: str, what: str, value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"experiment {name!r}: {what!r} must be a mapping of option -> value, "
                         f"got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ValueError(f"experiment {name!r}: {what!r} keys must be option names, got {bad!r}")
    reserved = [k for k in value if k in RESERVED]
    if reserved:
        raise ValueError(f"experiment {name!r}: {reserved[0]!r} cannot be set in {what!r}; "
                         f"use the file's top-level 'task' / 'seeds'")
    return dict(value)


def _check_axis(name: str, what: str, key: str, values: Any) -> List[Any]:
    if not isinstance(values, list) or not values:
        raise ValueError(f"experiment {name!r}: {what}.{key} must be a non-empty list of values, got {values!r}")
    return values


def _parse_seeds(name: str, seeds: Any) -> List[int]:
    if seeds is None:
        return [0]
    if isinstance(seeds, bool):
        raise ValueError(f"experiment {name!r}: seeds must be a list of integers or a count, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"experiment {name!r}: seeds count must be >= 1, got {seeds}")
        return list(range(seeds))
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"experiment {name!r}: seeds must be a list of integers or a count, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"experiment {name!r}: repeated seeds in {seeds!r}")
    return list(seeds)


def _parse_size_matching(name: str, value: Any) -> Optional[int]:
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_MATCH_BASE
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(f"experiment {name!r}: size_matching must be true, false or a base hidden size "
                     f"(positive integer), got {value!r}")


def parse_experiment(data: Any, source: str = "<experiment>") -> Experiment:
    """Validate a loaded YAML document and build the :class:`Experiment`; clear errors name the bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: an experiment file must be a mapping with keys {', '.join(TOP_KEYS)}")
    try:
        check_known("key(s)", data, TOP_KEYS)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    for key in ("name", "task"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{source}: {key!r} is required (a non-empty string)")
    name = data["name"]
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"{source}: name {name!r} must be a folder name (letters, digits, '.', '_', '-')")
    try:
        check_path_component("name", name)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    base = _check_mapping(name, "base", data.get("base"))
    grid = {k: _check_axis(name, "grid", k, v) for k, v in _check_mapping(name, "grid", data.get("grid")).items()}
    groups = data.get("zip") or []
    groups = [groups] if isinstance(groups, dict) else groups
    if not isinstance(groups, list):
        raise ValueError(f"experiment {name!r}: 'zip' must be a mapping of key -> list or a list of such mappings")
    zipped = []
    for group in groups:
        group = _check_mapping(name, "zip", group)
        if not group:
            raise ValueError(f"experiment {name!r}: empty 'zip' group")
        group = {k: _check_axis(name, "zip", k, v) for k, v in group.items()}
        lengths = {k: len(v) for k, v in group.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"experiment {name!r}: zipped lists must have one length, got {lengths}")
        zipped.append(group)
    seen: Dict[str, str] = {}
    for where, keys in [("grid", list(grid))] + [("zip", list(g)) for g in zipped]:
        for k in keys:
            if k in seen:
                raise ValueError(f"experiment {name!r}: {k!r} is varied twice ({seen[k]} and {where})")
            seen[k] = where
    size = _parse_size_matching(name, data.get("size_matching"))
    if size is not None and ("hidden_size" in base or "hidden_size" in seen):
        raise ValueError(f"experiment {name!r}: size_matching sets hidden_size; remove hidden_size "
                         f"or give the base size as size_matching: N")
    return Experiment(name=name, task=data["task"], base=base, grid=grid, zip=zipped,
                      seeds=_parse_seeds(name, data.get("seeds")), size_matching=size,
                      description=str(data.get("description") or ""))


def load_experiment(path: Union[str, Path]) -> Experiment:
    """Read and validate an experiment file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {str(path)!r} not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"experiment file {str(path)!r} is not a text (YAML) file") from None
    return parse_experiment(load_yaml(text, str(path)), source=str(path))


__all__ = ["Experiment", "MAX_TRIALS", "Trial", "load_experiment", "parse_experiment", "trial_name"]
