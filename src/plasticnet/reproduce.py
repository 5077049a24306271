"""``plasticnet reproduce``: the papers' findings as runnable claims with a verdict.

A *claim* is data: one YAML file in ``plasticnet/claims/`` (shipped with the
package), with

- ``id``, ``statement`` (what the paper says), ``source``;
- ``experiments``: one or more experiment documents (the format of
  :mod:`plasticnet.experiments`, without ``seeds`` and ``size_matching``,
  which the size gives);
- ``sizes``: ``paper``, ``quick`` and ``smoke``, each with ``base`` (options
  laid over every experiment's base), optional ``grid`` / ``zip`` (replace
  those axes of every experiment that has them, e.g. a subset of the delays),
  ``experiments: {name: {base, grid, zip}}`` (the same, for one experiment),
  ``seeds``, ``size_matching``, ``pretrain`` (options of
  :func:`plasticnet.pretrain.pretrain_encoder`: an encoder trained first and
  given to every run as ``pretrained``; it follows ``--set dataset=...``,
  ``data_dir`` and ``image_size``, so ``oneshot_glyphs`` runs on CIFAR-FS or
  miniImageNet when a folder is given) and a ``note`` saying what differs
  from the paper;
- ``metric``: ``final`` or ``best`` validation error (``val_error`` of the
  run's summary: the task's error on ``val_batches × batch_size`` held-out
  episodes, the same ones at every validation);
- ``test``: ``welch`` (Welch's t-interval and test over seeds) or
  ``bootstrap`` (percentile bootstrap over seeds), see :mod:`plasticnet.stats`;
- ``comparisons``: each a linear contrast of condition means with an
  expected sign. Shorthands: ``{lower: A, than: B}`` (``A − B < 0``),
  ``{higher: A, than: B}`` (``A − B > 0``), with ``B`` a condition or a number
  (a threshold) and an optional ``factor`` f (``A − f·B``: "far below" is
  ``factor: 0.5``); or the general ``{terms: [{where: A, coef: c}, ...],
  constant: k, expect: negative|positive}`` (``Σ c·mean − k``). A condition
  (``where``) is a mapping of option → value that selects runs by their
  ``config.yaml`` (plus ``experiment: NAME`` when the claim has several);
  each seed must match exactly one run.

Verdict of a comparison, from the 95% interval of its contrast over seeds:
**holds** if the interval lies entirely on the expected side of zero,
**fails** if it lies entirely on the other side, **inconclusive** if it
contains zero (or fewer than 2 seeds finished). A claim holds if every
comparison run at that size holds, fails if any fails, and is inconclusive
otherwise. Comparisons whose conditions a size does not run (``quick`` may
keep a subset of a sweep) are listed as "not run at this size".

Runs go through the sweep machinery (:func:`plasticnet.sweep.run_sweep`):
``OUT/<size>/<claim>/<experiment>/<trial>/``, resumable, finished runs
skipped. Each claim gets ``report.md`` (+ ``figures/``, ``result.json``) in
its folder; ``OUT/<size>/summary.md`` and ``summary.json`` list all claims
evaluated.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from .checks import check_choice, check_nonnegative_int, check_path_component, check_positive_int
from .experiments import Experiment, parse_experiment

CLAIMS_DIR = Path(__file__).resolve().parent / "claims"
SIZES = ("quick", "standard", "paper", "smoke")
METRICS = ("final", "best")
TESTS = ("welch", "bootstrap")
EXPECT = ("negative", "positive")
CLAIM_KEYS = ("id", "statement", "source", "experiments", "sizes", "metric", "test", "comparisons")
SIZE_KEYS = ("base", "grid", "zip", "experiments", "seeds", "size_matching", "pretrain", "note")
EXP_SIZE_KEYS = ("base", "grid", "zip")
VERDICTS = ("holds", "fails", "inconclusive")
MIN_SEEDS = 2
# options that say where or how fast a run was made, not what it computes: a run made with another value
# of these is still a run of the claim's size (the engines are tested equal; paths differ between machines)
RUN_ONLY_KEYS = ("threads", "engine_threads", "device", "engine", "pretrained", "data_dir")
# the scores shown beside the verdict's metric: label, summary path
ALT_SCORES = (("test", ("test_error",)), ("test query", ("test_metrics", "query_error")))


# ------------------------------------------------------------------ claim data
@dataclass
class Term:
    """One condition of a contrast: ``where`` (option → value, maybe ``experiment``) and its coefficient."""

    where: Dict[str, Any]
    coef: float


@dataclass
class Comparison:
    """A linear contrast ``Σ coef · mean(condition) − constant`` and its expected sign."""

    name: str
    terms: List[Term]
    constant: float
    expect: str  # negative | positive


@dataclass
class Claim:
    """A parsed claim file (see the module docstring)."""

    id: str
    statement: str
    source: str
    experiments: List[Dict[str, Any]]
    sizes: Dict[str, Dict[str, Any]]
    metric: str
    test: str
    comparisons: List[Comparison]
    path: Optional[Path] = None

    def experiment_names(self) -> List[str]:
        return [e["name"] for e in self.experiments]


def _err(source: str, msg: str) -> ValueError:
    return ValueError(f"{source}: {msg}")


def _where(source: str, value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise _err(source, f"{what} must be a non-empty mapping of option -> value, got {value!r}")
    return dict(value)


def _parse_comparison(source: str, data: Any, i: int) -> Comparison:
    if not isinstance(data, dict):
        raise _err(source, f"comparison {i} must be a mapping, got {data!r}")
    name = str(data.get("name") or f"comparison {i}")
    where = f"comparison {name!r}"
    shorthand = [k for k in ("lower", "higher") if k in data]
    if shorthand:
        allowed = {"name", "lower", "higher", "than", "factor"}
        unknown = sorted(set(data) - allowed)
        if len(shorthand) > 1 or unknown or "than" not in data:
            raise _err(source, f"{where}: the shorthand is {{lower|higher: CONDITION, than: CONDITION or "
                               f"NUMBER, factor: F}}; got keys {sorted(data)}")
        key = shorthand[0]
        a = _where(source, data[key], f"{where}: {key}")
        factor = data.get("factor", 1.0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise _err(source, f"{where}: factor must be a positive number, got {factor!r}")
        than = data["than"]
        expect = "negative" if key == "lower" else "positive"
        if isinstance(than, (int, float)) and not isinstance(than, bool):
            return Comparison(name, [Term(a, 1.0)], float(factor) * float(than), expect)
        b = _where(source, than, f"{where}: than")
        return Comparison(name, [Term(a, 1.0), Term(b, -float(factor))], 0.0, expect)
    unknown = sorted(set(data) - {"name", "terms", "constant", "expect"})
    if unknown or "terms" not in data:
        raise _err(source, f"{where}: needs lower/higher + than, or terms + expect; unknown key(s) {unknown}")
    terms = data["terms"]
    if not isinstance(terms, list) or not terms:
        raise _err(source, f"{where}: terms must be a non-empty list of {{where, coef}}")
    parsed = []
    for t in terms:
        if not isinstance(t, dict) or set(t) != {"where", "coef"}:
            raise _err(source, f"{where}: each term is {{where: CONDITION, coef: NUMBER}}, got {t!r}")
        coef = t["coef"]
        if isinstance(coef, bool) or not isinstance(coef, (int, float)):
            raise _err(source, f"{where}: coef must be a number, got {coef!r}")
        parsed.append(Term(_where(source, t["where"], f"{where}: where"), float(coef)))
    expect = data.get("expect")
    if expect not in EXPECT:
        raise _err(source, f"{where}: expect must be one of {', '.join(EXPECT)}, got {expect!r}")
    constant = data.get("constant", 0.0)
    if isinstance(constant, bool) or not isinstance(constant, (int, float)):
        raise _err(source, f"{where}: constant must be a number, got {constant!r}")
    return Comparison(name, parsed, float(constant), expect)


def parse_claim(data: Any, source: str = "<claim>") -> Claim:
    """Validate a loaded claim document; clear errors name the bad field and what is allowed.

    Every experiment is parsed at every size (so a bad option fails here) and
    every comparison's conditions must select runs at ``paper`` size.
    """
    if not isinstance(data, dict):
        raise _err(source, f"a claim must be a mapping with keys {', '.join(CLAIM_KEYS)}")
    unknown = sorted(set(data) - set(CLAIM_KEYS))
    if unknown:
        raise _err(source, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(CLAIM_KEYS)}")
    for key in ("id", "statement"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise _err(source, f"{key!r} is required (a non-empty string)")
    try:
        check_path_component("claim id", data["id"])  # it names the claim's folder under --out
    except ValueError as err:
        raise _err(source, str(err)) from None
    exps = data.get("experiments")
    if not isinstance(exps, list) or not exps or not all(isinstance(e, dict) for e in exps):
        raise _err(source, "'experiments' must be a non-empty list of experiment mappings")
    names = [e.get("name") for e in exps]
    if len(set(names)) != len(names):
        raise _err(source, f"experiment names must differ, got {names}")
    for e in exps:
        for key in ("seeds", "size_matching"):
            if key in e:
                raise _err(source, f"experiment {e.get('name')!r}: {key!r} belongs to the sizes, not the experiment")
    sizes = data.get("sizes")
    if not isinstance(sizes, dict) or set(sizes) != set(SIZES):
        raise _err(source, f"'sizes' must give exactly {', '.join(SIZES)}, got {sorted(sizes or {})}")
    for size, spec in sizes.items():
        if not isinstance(spec, dict):
            raise _err(source, f"size {size!r} must be a mapping")
        bad = sorted(set(spec) - set(SIZE_KEYS))
        if bad:
            raise _err(source, f"size {size!r}: unknown key(s) {bad}; allowed: {', '.join(SIZE_KEYS)}")
        for name, over in (spec.get("experiments") or {}).items():
            if name not in names:
                raise _err(source, f"size {size!r}: no experiment {name!r}; experiments: {', '.join(names)}")
            if not isinstance(over, dict) or set(over) - set(EXP_SIZE_KEYS):
                raise _err(source, f"size {size!r}, experiment {name!r}: allowed keys {', '.join(EXP_SIZE_KEYS)}")
    metric = data.get("metric", "final")
    if metric not in METRICS:
        raise _err(source, f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    test = data.get("test", "welch")
    if test not in TESTS:
        raise _err(source, f"unknown test {test!r}; allowed: {', '.join(TESTS)}")
    comps = data.get("comparisons")
    if not isinstance(comps, list) or not comps:
        raise _err(source, "'comparisons' must be a non-empty list")
    claim = Claim(id=data["id"], statement=" ".join(data["statement"].split()), source=str(data.get("source", "")),
                  experiments=exps, sizes=sizes, metric=metric, test=test,
                  comparisons=[_parse_comparison(source, c, i + 1) for i, c in enumerate(comps)])
    from .config import resolve_options

    for size in SIZES:
        for exp in claim_experiments(claim, size):
            for trial in exp.trials():  # options combine (size matching, unique folder names) and resolve
                try:
                    resolve_options(trial.options)
                except ValueError as err:
                    raise _err(source, f"size {size!r}, experiment {exp.name!r}, trial {trial.name}: {err}") from None
    trials = _trial_configs(claim, "paper")
    for comp in claim.comparisons:
        for term in comp.terms:
            try:
                _match(claim, term.where, trials)
            except ValueError as err:
                raise _err(source, f"comparison {comp.name!r}: {err}") from None
    return claim


def _load_file(path: Path) -> Claim:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    claim = parse_claim(data, source=str(path))
    claim.path = path
    return claim


def load_claims(directory: Union[str, Path, None] = None) -> Dict[str, Claim]:
    """Every claim file (``*.yaml``) of ``directory`` (default: the package's claims), by id, sorted."""
    directory = Path(directory) if directory is not None else CLAIMS_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"claims folder {str(directory)!r} not found")
    claims: Dict[str, Claim] = {}
    for path in sorted(directory.glob("*.yaml")):
        claim = _load_file(path)
        if claim.id in claims:
            raise ValueError(f"{path}: claim id {claim.id!r} also in {claims[claim.id].path}")
        claims[claim.id] = claim
    return claims


def select_claims(ids: Sequence[str], claims: Dict[str, Claim]) -> List[Claim]:
    """The claims named by ``ids`` (all when empty); an unknown id is refused, naming the valid ones."""
    if not ids:
        return list(claims.values())
    bad = [i for i in ids if i not in claims]
    if bad:
        raise ValueError(f"unknown claim id(s) {', '.join(map(repr, bad))}; valid ids: {', '.join(claims)}")
    return [claims[i] for i in dict.fromkeys(ids)]


# ------------------------------------------------------------------ experiments of a size
def claim_experiments(claim: Claim, size: str, seeds: Optional[int] = None,
                      extra: Optional[Dict[str, Any]] = None) -> List[Experiment]:
    """The claim's experiments at ``size`` (size overrides applied), as :class:`Experiment` objects.

    ``seeds``: use seeds ``0..seeds−1`` instead of the size's. ``extra``:
    options laid over every base last (e.g. ``pretrained``).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; allowed: {', '.join(SIZES)}")
    spec = claim.sizes[size]
    out = []
    for doc in claim.experiments:
        doc = copy.deepcopy(doc)
        per = (spec.get("experiments") or {}).get(doc["name"], {})
        doc["base"] = {**(doc.get("base") or {}), **(spec.get("base") or {}), **(per.get("base") or {}),
                       **(extra or {})}
        for layer in (spec, per):
            for key, values in (layer.get("grid") or {}).items():
                if key in (doc.get("grid") or {}):
                    doc["grid"][key] = values
            if layer.get("zip") is not None and doc.get("zip") is not None:
                doc["zip"] = copy.deepcopy(layer["zip"])
        doc["seeds"] = seeds if seeds is not None else spec.get("seeds", 1)
        if spec.get("size_matching") is not None:
            doc["size_matching"] = spec["size_matching"]
        out.append(parse_experiment(doc, source=f"claim {claim.id!r}, size {size}, experiment {doc['name']!r}"))
    return out


def _trial_configs(claim: Claim, size: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``(experiment name, trial options)`` of every trial of the claim at ``size``."""
    return [(e.name, t.options) for e in claim_experiments(claim, size) for t in e.trials()]


def _selects(where: Dict[str, Any], exp_name: str, options: Dict[str, Any]) -> bool:
    for k, v in where.items():
        if k == "experiment":
            if v != exp_name:
                return False
        elif options.get(k) != v:
            return False
    return True


def _match(claim: Claim, where: Dict[str, Any], trials) -> List:
    """The trials ``where`` selects; refuses a condition that selects nothing or two runs of one seed."""
    if "experiment" not in where and len(claim.experiments) > 1:
        raise ValueError(f"condition {where} needs 'experiment' (one of {', '.join(claim.experiment_names())})")
    if "experiment" in where and where["experiment"] not in claim.experiment_names():
        raise ValueError(f"condition {where}: no experiment {where['experiment']!r}; "
                         f"experiments: {', '.join(claim.experiment_names())}")
    hits = [(name, opts) for name, opts in trials if _selects(where, name, opts)]
    if not hits:
        raise ValueError(f"condition {where} selects no run")
    seeds = [opts["seed"] for _, opts in hits]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"condition {where} selects several runs of one seed; add the option that tells them apart")
    return hits


# ------------------------------------------------------------------ evaluation
@dataclass
class ConditionValues:
    """The metric of one condition's finished runs (one per seed) and how many runs it has."""

    where: Dict[str, Any]
    values: List[float]
    runs: int
    episodes: List[int]
    alt: Dict[str, List[float]] = field(default_factory=dict)


@dataclass
class ComparisonResult:
    """One comparison's conditions, contrast interval and verdict (``not run`` if the size lacks it)."""

    comparison: Comparison
    conditions: List[ConditionValues] = field(default_factory=list)
    estimate: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_value: float = math.nan
    df: float = math.nan
    boot_low: float = math.nan
    boot_high: float = math.nan
    verdict: str = "not run"
    note: str = ""
    alt: Dict[str, Dict[str, float]] = field(default_factory=dict)


def verdict_of(low: float, high: float, expect: str) -> str:
    """``holds`` / ``fails`` / ``inconclusive`` from a contrast's interval ``[low, high]`` and expected sign."""
    if expect not in EXPECT:
        raise ValueError(f"expect must be one of {', '.join(EXPECT)}, got {expect!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    below, above = high < 0, low > 0
    if expect == "negative":
        return "holds" if below else "fails" if above else "inconclusive"
    return "holds" if above else "fails" if below else "inconclusive"


def claim_verdict(results: Sequence[ComparisonResult]) -> str:
    """The claim's verdict from its comparisons' verdicts.

    ``fails`` when any comparison run fails; otherwise ``partial`` when some
    comparisons were not run (a claim never holds on part of its evidence);
    otherwise ``holds`` when every comparison holds, else ``inconclusive``;
    ``not run`` when none was run.
    """
    run = [r.verdict for r in results if r.verdict != "not run"]
    if not run:
        return "not run"
    if "fails" in run:
        return "fails"
    if len(run) < len(results):
        return "partial"
    return "holds" if all(v == "holds" for v in run) else "inconclusive"


def _summary_value(run, path: Tuple[str, ...]) -> float:
    """A number of a finished run's summary at ``path`` (nan when absent or not a number)."""
    value: Any = run.summary if run.finished else None
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _run_metric(run, metric: str) -> float:
    if not run.finished:
        return math.nan
    return run.final_error if metric == "final" else run.best_error


def evaluate_comparison(claim: Claim, comp: Comparison, runs_by_exp: Dict[str, list],
                        trials) -> ComparisonResult:
    """The comparison's contrast over the finished runs (``runs_by_exp``: experiment → report Runs)."""
    from .stats import bootstrap_contrast, contrast

    res = ComparisonResult(comp)
    groups = []
    for term in comp.terms:
        try:
            _match(claim, term.where, trials)
        except ValueError:
            res.note = f"condition {term.where} is not run at this size"
            return res
        exp_names = [term.where["experiment"]] if "experiment" in term.where else claim.experiment_names()
        runs = [(name, r) for name in exp_names for r in runs_by_exp.get(name, [])
                if _selects(term.where, name, r.config)]
        values = [_run_metric(r, claim.metric) for _, r in runs]
        episodes = sorted({int(r.config.get("val_batches", 0)) * int(r.config.get("batch_size", 0)) for _, r in runs})
        alt = {label: [v for v in (_summary_value(r, path) for _, r in runs) if math.isfinite(v)]
               for label, path in ALT_SCORES}
        cv = ConditionValues(term.where, [v for v in values if math.isfinite(v)], len(runs), episodes,
                             {k: v for k, v in alt.items() if v})
        res.conditions.append(cv)
        groups.append(cv.values)
    if not any(c.runs for c in res.conditions):
        res.note = "no run of these conditions yet"
        return res
    coefs = [t.coef for t in comp.terms]
    for label, _ in ALT_SCORES:  # the same contrast on the other scores, shown beside (not the verdict's)
        alt_groups = [c.alt.get(label, []) for c in res.conditions]
        if all(len(g) >= MIN_SEEDS for g in alt_groups):
            other = contrast(claim.test, alt_groups, coefs, comp.constant)
            res.alt[label] = {"estimate": other.estimate, "low": other.low, "high": other.high,
                              "verdict": verdict_of(other.low, other.high, comp.expect)}
    short = [c for c in res.conditions if len(c.values) < MIN_SEEDS]
    if short:
        res.verdict = "inconclusive"
        res.note = (f"fewer than {MIN_SEEDS} finished runs in "
                    + "; ".join(f"{c.where} ({len(c.values)} of {c.runs})" for c in short))
        return res
    main = contrast(claim.test, groups, coefs, comp.constant)
    boot = bootstrap_contrast(groups, coefs, comp.constant)
    res.estimate, res.low, res.high, res.p_value, res.df = main.estimate, main.low, main.high, main.p_value, main.df
    res.boot_low, res.boot_high = boot.low, boot.high
    res.verdict = verdict_of(main.low, main.high, comp.expect)
    return res


@dataclass
class RunSelection:
    """Which run folders of a claim's root are judged for one invocation (size and seeds).

    ``used``: experiment → the runs whose configuration equals one of the
    invocation's trials (folder ``<experiment>/<trial name>``, every trial
    option equal except :data:`RUN_ONLY_KEYS`); ``stale``: ``(folder, keys)``
    of trial folders made with other options (e.g. another size's batches),
    with the differing keys; ``extra``: run folders that are not a trial of
    this invocation (e.g. seeds beyond ``--seeds``); ``missing``: trials
    without a folder.
    """

    used: Dict[str, list]
    stale: List[Tuple[Path, List[str]]]
    extra: List[Path]
    missing: int


def config_differences(options: Dict[str, Any], config: Dict[str, Any]) -> List[str]:
    """The trial options (``options``) a run's ``config`` gives another value, :data:`RUN_ONLY_KEYS` aside."""
    return [k for k, v in options.items() if k not in RUN_ONLY_KEYS and config.get(k) != v]


def select_runs(claim: Claim, root: Union[str, Path], size: str, seeds: Optional[int] = None) -> RunSelection:
    """The run folders under ``root`` that are this invocation's trials (see :class:`RunSelection`)."""
    from .report import load_runs

    root = Path(root)
    used: Dict[str, list] = {}
    stale, extra, missing = [], [], 0
    for exp in claim_experiments(claim, size, seeds):
        folder = root / exp.name
        runs = {r.path.resolve(): r for r in load_runs(folder)} if folder.is_dir() else {}
        used[exp.name] = []
        for trial in exp.trials():
            run = runs.pop((folder / trial.name).resolve(), None)
            if run is None:
                missing += 1
                continue
            diff = config_differences(trial.options, run.config)
            if diff:
                stale.append((run.path, diff))
            else:
                used[exp.name].append(run)
        extra += sorted(r.path for r in runs.values())
    return RunSelection(used, stale, extra, missing)


@dataclass
class ClaimResult:
    """A claim evaluated at one size: its comparisons, verdict, run counts and the runs left out."""

    claim: Claim
    size: str
    comparisons: List[ComparisonResult]
    verdict: str
    runs: int
    finished: int
    train_s: float
    wall_s: float = math.nan
    root: Optional[Path] = None
    seeds: int = 0
    stale: List[Tuple[Path, List[str]]] = field(default_factory=list)
    extra: List[Path] = field(default_factory=list)
    missing: int = 0
    failed: int = 0
    runs_by_exp: Dict[str, list] = field(default_factory=dict)

    @property
    def comparisons_run(self) -> int:
        return sum(r.verdict != "not run" for r in self.comparisons)

    @property
    def verdict_label(self) -> str:
        """The verdict as a report states it: ``partial`` with how many comparisons ran; smoke size marked."""
        label = self.verdict
        if self.verdict == "partial":
            label = f"partial ({self.comparisons_run} of {len(self.comparisons)} comparisons run)"
        if self.size == "smoke":
            label += " — pipeline check, not evidence"
        return label


def evaluate_claim(claim: Claim, root: Union[str, Path], size: str, seeds: Optional[int] = None) -> ClaimResult:
    """Judge every comparison on the run folders under ``root/<experiment>/`` that this invocation asked for.

    Only the runs :func:`select_runs` keeps are judged; the others are
    listed in the result (``stale``, ``extra``) and the report, never pooled.
    """
    root = Path(root)
    trials = [(e.name, t.options) for e in claim_experiments(claim, size, seeds) for t in e.trials()]
    selection = select_runs(claim, root, size, seeds)
    runs_by_exp = selection.used
    all_runs = [r for rs in runs_by_exp.values() for r in rs]
    results = [evaluate_comparison(claim, c, runs_by_exp, trials) for c in claim.comparisons]
    train_s = sum(float((r.summary or {}).get("elapsed_s", 0.0)) for r in all_runs)
    verdict = claim_verdict(results) if all_runs else "not run"
    n_seeds = seeds if seeds is not None else int(claim.sizes[size].get("seeds", 1))
    return ClaimResult(claim, size, results, verdict, len(all_runs), sum(r.finished for r in all_runs), train_s,
                       root=root, seeds=n_seeds, stale=selection.stale, extra=selection.extra,
                       missing=selection.missing, runs_by_exp=runs_by_exp)


# ------------------------------------------------------------------ reports
def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def _cond_label(where: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items())


def _contrast_text(comp: Comparison) -> str:
    parts = []
    for t in comp.terms:
        sign = "−" if t.coef < 0 else "+"
        mag = abs(t.coef)
        coef = "" if mag == 1 else f"{mag:g}·"
        parts.append(f"{sign} {coef}[{_cond_label(t.where)}]")
    text = " ".join(parts).lstrip("+ ")
    if comp.constant:
        text += f" − {comp.constant:g}"
    return text + (" < 0" if comp.expect == "negative" else " > 0")


def _condition_cell(cv: ConditionValues) -> str:
    from .stats import t_interval

    mean, half, n = t_interval(cv.values)
    return f"[{_cond_label(cv.where)}]: {_num(mean)} ± {_num(half, 2)} (n={n}/{cv.runs})"


def claim_report_lines(result: ClaimResult) -> List[str]:
    """Markdown of one claim: statement, setting, verdict table per comparison."""
    claim, spec = result.claim, result.claim.sizes[result.size]
    test = ("Welch's t-interval (Welch–Satterthwaite df) of the contrast over seeds"
            if claim.test == "welch" else "percentile bootstrap interval (10,000 resamples of the seeds)")
    lines = [f"# Claim `{claim.id}` — {result.verdict_label.upper()} at size `{result.size}`", "",
             f"**Paper:** {claim.statement}", "", f"Source: {claim.source}", "",
             f"Size `{result.size}`: {' '.join(str(spec.get('note', '')).split()) or 'as in the claim file'}.", "",
             f"Metric of the verdict: the {claim.metric} validation error of each run (`{claim.metric}_val_error`: "
             f"the task's error on its held-out validation episodes); one value per seed. Test: {test}, 95 %; "
             "verdict **holds** when the interval lies on the expected side of zero, **fails** when on the other "
             "side, **inconclusive** when it contains zero; a claim with comparisons not run is **partial**. "
             "Also shown: the bootstrap interval of the same contrast, and the same contrast on the reference's "
             "score (*test*: the best-validation checkpoint on fixed held-out test episodes, the same for every "
             "run) and, where the task has one, on the test error of the query steps only (*test query*); these "
             "do not decide the verdict.",
             "", f"Runs judged: {result.finished} finished of {result.runs} (seeds 0–{result.seeds - 1}) under "
             f"`{result.root}`; training time (sum over runs) {result.train_s / 60:.1f} min"
             + (f"; wall time of this invocation {result.wall_s / 60:.1f} min" if math.isfinite(result.wall_s)
                else "") + "."
             + (f" Not yet run: {result.missing} of the size's trials." if result.missing else "")
             + (f" Failed in this invocation: {result.failed}." if result.failed else ""), ""]
    if result.stale or result.extra:
        lines += ["Run folders left out of the verdict (not this invocation's configuration):", ""]
        lines += [f"- `{p.name}`: made with other {', '.join(keys)}" for p, keys in result.stale]
        lines += [f"- `{p.name}`: not a trial of this size and seed count" for p in result.extra]
        lines.append("")
    lines += ["| comparison | contrast | conditions: mean ± 95% (n finished/runs) | held-out episodes | "
              "effect (contrast) [95% interval] | bootstrap 95% | p (two-sided) | verdict | "
              "test: effect [95%] | test query: effect [95%] |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.comparisons:
        conds = "<br>".join(_condition_cell(c) for c in r.conditions) or "—"
        eps = ", ".join(str(e) for c in r.conditions for e in c.episodes) if r.conditions else "—"
        eps = ", ".join(dict.fromkeys(eps.split(", ")))
        verdict = f"**{r.verdict}**" + (f" ({r.note})" if r.note else "")
        alt = " | ".join(_alt_cell(r.alt.get(label)) for label, _ in ALT_SCORES)
        lines.append(f"| {r.comparison.name} | {_contrast_text(r.comparison)} | {conds} | {eps} | "
                     f"{_num(r.estimate)} [{_num(r.low)}, {_num(r.high)}] | [{_num(r.boot_low)}, "
                     f"{_num(r.boot_high)}] | {_num(r.p_value, 2)} | {verdict} | {alt} |")
    return lines


def _alt_cell(alt: Optional[Dict[str, Any]]) -> str:
    if not alt:
        return "—"
    return f"{_num(alt['estimate'])} [{_num(alt['low'])}, {_num(alt['high'])}]: {alt['verdict']}"


FLAT_TOLERANCE = 0.05  # a run whose error fell by more than this over its last fifth of training was still learning


def last_fifth_fall(run) -> float:
    """``(e(0.8·N) − e(N)) / (e(0) − e(N))``: the share of a run's improvement made in its last fifth.

    ``e(b)`` is the validation error logged at the last validation at or
    before batch ``b`` of the run's ``N`` batches (``metrics.csv``; ``e(0)``
    the validation before training). Near 0: the curve had flattened; a
    large share: it was still falling when training stopped. Scaling by the
    whole improvement keeps a solved task (an error near zero wobbling by its
    own size) from looking unsettled. nan when the run logged no such values
    or did not improve at all.
    """
    batch, err = run.metrics.get("batch"), run.metrics.get("val_error")
    if batch is None or err is None or not len(batch):
        return math.nan
    n = int(batch[-1])
    earlier = [e for b, e in zip(batch, err) if b <= 0.8 * n and math.isfinite(e)]
    if not earlier or not math.isfinite(err[-1]) or not earlier[0] > err[-1]:
        return math.nan
    return float((earlier[-1] - err[-1]) / (earlier[0] - err[-1]))


def write_claim_report(result: ClaimResult, out: Union[str, Path, None] = None) -> Path:
    """``report.md`` (verdicts, then each experiment's tables and figures) and ``result.json`` of a claim."""
    from . import report as rep
    from . import report_figures as figs

    out = Path(out) if out is not None else result.root
    out.mkdir(parents=True, exist_ok=True)
    lines = claim_report_lines(result)
    for name in result.claim.experiment_names():
        runs = result.runs_by_exp.get(name, [])
        if not runs:
            continue
        keys = rep.condition_keys(runs)
        conditions = rep.group_conditions(runs, keys)
        tasks = ", ".join(sorted({str(r.config.get("task")) for r in runs}))
        lines += ["", f"## Experiment `{name}`", "", f"Task {tasks}; {len(runs)} runs. Final and best validation "
                  "error per condition (mean ± 95% t-interval over seeds):", ""]
        lines += rep.condition_table(keys, conditions)
        lines += ["", "Has training flattened? The share of each run's improvement of the validation error (from "
                  "the untrained network to the end) made in the last fifth of training, per seed (—: the run "
                  "ended no lower than it started); a condition whose mean share exceeds "
                  f"{FLAT_TOLERANCE:.0%} was still falling (more batches would change its error):", "",
                  "| condition | share of the improvement in the last fifth (per seed) | flattened |", "|---|---|---|"]
        for c in conditions:
            shares = [last_fifth_fall(r) for r in c.runs if r.finished]
            falls = [f for f in shares if math.isfinite(f)]
            label = ", ".join(f"{k}={v}" for k, v in zip(keys, c.values)) or "all runs"
            if not shares:
                continue
            cells = ", ".join(f"{f:.1%}" if math.isfinite(f) else "—" for f in shares)
            if falls:
                flat = "yes" if sum(falls) / len(falls) <= FLAT_TOLERANCE else "**no**"
            else:
                flat = "never below its start"
            lines.append(f"| {label} | {cells} | {flat} |")
        try:
            fig_list = figs.group_figures(keys, conditions, out / "figures", name)
        except ImportError:  # matplotlib is optional
            fig_list = []
        for fig_path, caption in fig_list:
            lines += ["", f"![{caption}]({fig_path.relative_to(out).as_posix()})", "", f"*{caption}*"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "result.json").write_text(json.dumps(result_dict(result), indent=2) + "\n")
    return path


def result_dict(result: ClaimResult) -> Dict[str, Any]:
    """A JSON-ready summary of a claim's result."""
    def clean(x):
        return x if isinstance(x, (int, float)) and math.isfinite(x) else None

    spec = result.claim.sizes[result.size]
    return {"claim": result.claim.id, "size": result.size, "verdict": result.verdict,
            "verdict_label": result.verdict_label, "evidence": result.size != "smoke",
            "statement": result.claim.statement, "source": result.claim.source,
            "size_note": " ".join(str(spec.get("note", "")).split()), "seeds": result.seeds,
            "test": result.claim.test, "metric": result.claim.metric,
            "comparisons_run": result.comparisons_run, "comparisons_total": len(result.comparisons),
            "runs": result.runs, "finished": result.finished, "missing": result.missing, "failed": result.failed,
            "left_out": [p.name for p, _ in result.stale] + [p.name for p in result.extra],
            "train_s": clean(result.train_s), "wall_s": clean(result.wall_s),
            "comparisons": [{"name": r.comparison.name, "contrast": _contrast_text(r.comparison),
                             "verdict": r.verdict, "note": r.note, "estimate": clean(r.estimate),
                             "low": clean(r.low), "high": clean(r.high), "p_value": clean(r.p_value),
                             "df": clean(r.df), "bootstrap_low": clean(r.boot_low),
                             "bootstrap_high": clean(r.boot_high),
                             "alt": {k: {kk: clean(vv) if kk != "verdict" else vv for kk, vv in v.items()}
                                     for k, v in r.alt.items()},
                             "conditions": [{"where": c.where, "values": c.values, "runs": c.runs,
                                             "episodes": c.episodes, "alt": c.alt} for c in r.conditions]}
                            for r in result.comparisons]}


def write_summary(results: Sequence[ClaimResult], out: Union[str, Path]) -> Path:
    """``summary.md`` and ``summary.json`` in ``out``: one row per claim, its verdict and comparisons."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Reproduction summary", "", "| claim | size | verdict | comparisons (effect [95% interval]: verdict) "
             "| runs finished | training time |", "|---|---|---|---|---|---|"]
    for res in results:
        comps = "<br>".join(f"{r.comparison.name}: {_num(r.estimate)} [{_num(r.low)}, {_num(r.high)}]: {r.verdict}"
                            for r in res.comparisons)
        lines.append(f"| `{res.claim.id}` | {res.size} | **{res.verdict_label}** | {comps} | "
                     f"{res.finished}/{res.runs} | "
                     f"{res.train_s / 60:.1f} min |")
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps([result_dict(r) for r in results], indent=2) + "\n")
    return path


# ------------------------------------------------------------------ running
PRETRAIN_DATA_KEYS = ("dataset", "data_dir", "image_size")  # run options the encoder's pre-training follows


def _encoder_path(claim: Claim, size: str, root: Path, overrides: Dict[str, Any]) -> Tuple[Dict[str, Any], Path]:
    """The pre-training options at ``size`` (``--set dataset=...`` etc. followed) and the encoder's path."""
    spec = dict(claim.sizes[size].get("pretrain") or {})
    for key in PRETRAIN_DATA_KEYS:
        if key in overrides and spec:
            spec[key] = overrides[key]
    if spec:  # checked before the name is built from them: the encoder's file stays in the claim's folder
        from .data import DATASETS

        check_choice("dataset", spec.get("dataset", "glyphs"), DATASETS)
        check_nonnegative_int("image_size", spec.get("image_size", 0))
    base = dict(claim.sizes[size]["pretrain"]) if spec else {}
    name = "encoder.pt" if spec == base else f"encoder-{spec.get('dataset', 'data')}-{spec.get('image_size', 0)}.pt"
    return spec, (root / name).resolve()


def _pretrain(claim: Claim, size: str, root: Path, overrides: Dict[str, Any], train: bool,
              log: Callable[[str], None]) -> Dict[str, Any]:
    """``{"pretrained": path}`` when the size pre-trains an encoder (trained first if missing and ``train``)."""
    spec, path = _encoder_path(claim, size, root, overrides)
    if not spec:
        return {}
    if train and not path.is_file():
        from .pretrain import pretrain_encoder

        log(f"{claim.id}: pre-training the encoder ({spec}) into {path}")
        res = pretrain_encoder(path, progress=False, **spec)
        path.with_suffix(".json").write_text(json.dumps({**spec, "train_accuracy": res["train_accuracy"],
                                                         "elapsed_s": res["elapsed_s"]}, indent=2) + "\n")
    return {"pretrained": str(path)}


def run_claim(claim: Claim, out: Union[str, Path], size: str = "quick", seeds: Optional[int] = None,
              backend: str = "local", workers: Optional[int] = None, train: bool = True,
              overrides: Optional[Dict[str, Any]] = None, log: Callable[[str], None] = print) -> ClaimResult:
    """Train the claim's pending runs (sweep machinery) under ``out/<size>/<claim id>/``, judge, write its report.

    ``overrides``: options laid over every run (``--set``, e.g. ``engine`` or ``device``).
    """
    from .sweep import plan, run_sweep

    root = Path(out) / size / claim.id
    t0 = time.time()
    if train:
        root.mkdir(parents=True, exist_ok=True)
    failed = 0
    if train:
        extra = _pretrain(claim, size, root, overrides or {}, train, log)
        experiments = claim_experiments(claim, size, seeds, {**extra, **(overrides or {})})
        for exp in experiments:  # every trial's options checked before anything trains
            plan(exp, root)
        for exp in experiments:
            outcomes = run_sweep(exp, root, backend=backend, workers=workers, analyze=True, log=log)
            for o in outcomes:
                if o.status == "failed":
                    failed += 1
                    log(f"{claim.id}: run {o.run_dir} failed: {o.error.splitlines()[0] if o.error else ''}")
    result = evaluate_claim(claim, root, size, seeds)
    result.wall_s = time.time() - t0 if train else math.nan
    result.failed = failed
    write_claim_report(result)
    return result


def check_claims(claims: Sequence[Claim], size: str, seeds: Optional[int] = None,
                 overrides: Optional[Dict[str, Any]] = None) -> None:
    """Refuse (``ValueError``) what would stop any of ``claims`` at ``size``: an override (``--set``)
    of an option its experiment varies, or a trial whose options do not resolve. Run before anything trains."""
    from .config import resolve_options

    overrides = overrides or {}
    for c in claims:
        for exp in claim_experiments(c, size, seeds, overrides):
            varied = [k for k in overrides if k in exp.varied_keys]
            if varied:
                raise ValueError(f"--set {varied[0]} conflicts with claim {c.id!r}, whose experiment "
                                 f"{exp.name!r} varies it")
            for trial in exp.trials():
                try:
                    resolve_options(trial.options)
                except ValueError as err:
                    raise ValueError(f"claim {c.id!r}, experiment {exp.name!r}, trial {trial.name}: {err}") from None


def claim_listing(claims: Sequence[Claim], roots: Sequence[Union[str, Path]] = ()) -> List[str]:
    """Lines of ``reproduce --list``: each claim's id, statement and, per size, its runs and measured cost.

    The cost is read from the first ``<root>/<size>/<claim id>/result.json``
    found under ``roots`` (e.g. ``--out``, and ``docs/results`` in a clone):
    the training time summed over its runs and how many finished.
    """
    lines = []
    for c in claims:
        lines += [c.id, f"    {c.statement}"]
        for size in SIZES:
            runs = sum(len(e.trials()) for e in claim_experiments(c, size))
            seeds = c.sizes[size].get("seeds", 1)
            text = f"    {size:9s} {runs:4d} runs ({seeds} seeds)"
            for root in roots:
                path = Path(root) / size / c.id / "result.json"
                try:
                    data = json.loads(path.read_text())
                    text += (f"; measured {float(data['train_s']) / 60:.0f} min of training for "
                             f"{data['finished']} finished runs ({path.parent})")
                    break
                except (OSError, ValueError, KeyError, TypeError):
                    continue
            lines.append(text)
    return lines


def check_run_folders(claim: Claim, out: Union[str, Path], size: str, seeds: Optional[int] = None,
                      overrides: Optional[Dict[str, Any]] = None) -> None:
    """Refuse (``ValueError``) to train into trial folders made with other options.

    A trial's folder under ``out/<size>/<claim id>/`` that holds a run whose
    ``config.yaml`` differs from the trial (more batches than asked, say)
    would be skipped as finished and judged as another run; the message names
    the folder and the differing options. What a resumed run may change
    (``RESUME_MAY_CHANGE``: more batches, another engine, ...) is allowed:
    the run is continued to the trial's options. Run before anything trains.
    """
    from .runfolder import RESUME_MAY_CHANGE, read_config

    root = Path(out) / size / claim.id
    for exp in claim_experiments(claim, size, seeds, overrides):
        for trial in exp.trials():
            folder = root / exp.name / trial.name
            if not (folder / "config.yaml").is_file():
                continue
            config = read_config(folder)
            diff = [k for k in config_differences(trial.options, config)
                    if k not in RESUME_MAY_CHANGE or (k == "batches" and config.get(k, 0) > trial.options[k])]
            if diff:
                shown = ", ".join(f"{k}={config.get(k)!r} (claim: {trial.options[k]!r})" for k in diff[:4])
                raise ValueError(f"claim {claim.id!r}: {folder} holds a run made with other options ({shown}); "
                                 f"use another --out for size {size!r}, or move that folder away")


def reproduce(ids: Sequence[str] = (), out: Union[str, Path] = "runs/reproduce", size: str = "quick",
              seeds: Optional[int] = None, backend: str = "local", workers: Optional[int] = None,
              overrides: Optional[Dict[str, Any]] = None, report_only: bool = False,
              claims_dir: Union[str, Path, None] = None, log: Callable[[str], None] = print) -> "ReproduceResult":
    """What ``plasticnet reproduce`` does: run and judge the claims ``ids`` (default: all), write the summary.

    Every chosen claim is checked first (:func:`check_claims`); then each is
    run (:func:`run_claim`, its report written) and ``log`` gets its verdict
    line. With ``report_only`` nothing trains: the existing run folders are
    judged, and a claim without any is reported as not run. ``seeds``,
    ``backend``, ``workers``, ``overrides``: as :func:`run_claim`;
    ``claims_dir``: another folder of claim files (default: the shipped ones).
    The summary (``out/<size>/summary.md``, ``summary.json``) lists the
    chosen claims and, when only some were chosen, keeps the rows of the
    others that have run folders there. Returns a :class:`ReproduceResult`
    (the summary's path, the results, how many trials failed).
    """
    claims = load_claims(claims_dir)
    chosen = select_claims(ids, claims)
    check_positive_int("seeds", seeds, allow_none=True)
    check_positive_int("workers", workers, allow_none=True)
    check_claims(chosen, size, seeds, overrides)
    if not report_only:
        for c in chosen:
            check_run_folders(c, out, size, seeds, overrides)
    results = []
    for c in chosen:
        if report_only and not (Path(out) / size / c.id).is_dir():
            log(f"{c.id}: not run (no run folders under {Path(out) / size / c.id})")
            continue
        res = run_claim(c, out, size, seeds, backend, workers, train=not report_only, overrides=overrides, log=log)
        failed = f", {res.failed} failed" if res.failed else ""
        log(f"{c.id}: {res.verdict_label} ({res.finished}/{res.runs} runs finished{failed}; "
            f"report {res.root / 'report.md'})")
        results.append(res)
    summary_dir = Path(out) / size
    known = []
    if ids:  # keep the other claims' rows: re-evaluate every claim that has run folders here
        known = [evaluate_claim(c, summary_dir / c.id, size, seeds) for c in claims.values()
                 if (summary_dir / c.id).is_dir() and c.id not in ids]
    return ReproduceResult(write_summary(known + results, summary_dir), results)


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did: the summary's path and the chosen claims' results."""

    summary: Path
    claims: List[ClaimResult]

    @property
    def failed(self) -> int:
        """Trials that failed in this invocation, over all chosen claims."""
        return sum(r.failed for r in self.claims)


__all__ = ["Claim", "ClaimResult", "Comparison", "ComparisonResult", "ReproduceResult", "RunSelection", "Term",
           "check_claims", "check_run_folders", "claim_experiments", "claim_listing", "claim_verdict",
           "config_differences", "evaluate_claim", "load_claims", "parse_claim", "reproduce", "run_claim",
           "select_claims", "select_runs", "verdict_of", "write_claim_report", "write_summary", "SIZES"]
