"""Run options: one flat dict per run, resolved and validated before training.

A run is described by a flat ``{key: value}`` dict (what ``config.yaml`` of a
run folder holds and what ``--set key=value`` reaches):

- ``task``, ``rule``, ``cell`` and the trainer keys of :data:`TRAIN_DEFAULTS`
  (a task's ``train_defaults`` override their defaults);
- every field of the task's ``Options`` dataclass;
- every key of the task's ``model_defaults`` (the model's keyword options).

:func:`resolve_options` fills the defaults, refuses unknown keys (listing the
valid ones) and values of the wrong type or outside their choices, all before
anything is trained.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Iterable, List, Tuple

import torch
import yaml
from torch import nn

from .checks import (
    check_choice,
    check_known,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    describe_type,
)
from .memory import check_memory
from .tasks import get_task_class, make_task
from .tasks.base import Task

# trainer keys and their defaults (SPEC §1: the outer training of every [D23] sequence task)
TRAIN_DEFAULTS: Dict[str, Any] = {
    "rule": "gradient",  # plasticity rule of the model
    "cell": "lstm",  # recurrent cell of the model
    "batches": 10000,  # training batches
    "seed": 0,  # model init, training episodes and the held-out validation episodes
    "batch_size": 64,  # episodes per batch
    "lr": 1e-3,  # outer learning rate
    "optimizer": "adamw",  # adamw (amsgrad, as the reference), adam, rmsprop
    "weight_decay": 0.0,  # outer weight decay
    "grad_clip": 5.0,  # clip of the outer gradient norm (null: off)
    "lr_schedule": "constant",  # constant or cosine (from lr down to lr_min over the run)
    "lr_min": 0.0,  # final lr of the cosine schedule
    "val_every": 200,  # batches between validations
    "val_batches": 100,  # batches of held-out episodes per validation (paper: 100)
    "device": "cpu",  # torch device
    "threads": None,  # torch.set_num_threads (null: leave as is)
}

CHOICES = {"optimizer": ("adamw", "adam", "rmsprop"), "lr_schedule": ("constant", "cosine")}
_POSITIVE_INT = ("batches", "batch_size", "val_every", "val_batches")
_TRAIN_TYPES = {"rule": str, "cell": str, "device": str, "optimizer": str, "lr_schedule": str,
                "batches": int, "seed": int, "batch_size": int, "val_every": int, "val_batches": int,
                "threads": typing.Optional[int], "lr": float, "weight_decay": float,
                "grad_clip": typing.Optional[float], "lr_min": float}


MAX_YAML_NODES = 1_000_000  # nodes of a YAML document once its aliases are expanded


class YAMLSyntaxError(ValueError):
    """Text that is not valid YAML (or holds a refused tag); the message names its source and the problem."""

    def __init__(self, source: str, err: yaml.YAMLError):
        self.problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        super().__init__(f"{source}: not valid YAML ({self.problem}{where})")


class _SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags) that refuses alias bombs before constructing anything."""

    def construct_document(self, node):
        _check_expanded_size(node, self.name)
        return super().construct_document(node)


def _check_expanded_size(root, source: str) -> None:
    """Refuse a node graph whose aliases expand to more than :data:`MAX_YAML_NODES` nodes.

    Aliases share their node, so the expanded size is counted once per node
    (memoised): linear in the document, however deep the nesting of aliases.
    """
    sizes: Dict[int, int] = {}
    open_: set = set()  # nodes whose children are being counted: met again, an alias refers to itself
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in open_:
            raise ValueError(f"{source}: an alias (*name) refers to a value that contains it: refused")
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_.discard(id(node))
        sizes[id(node)] = total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_YAML_NODES:
            raise ValueError(f"{source}: the YAML document expands to more than {MAX_YAML_NODES:,} values through "
                             f"its aliases (*name): refused as an alias bomb")


def load_yaml(text, source: str = "<yaml>") -> Any:
    """``yaml.safe_load(text)`` that also refuses alias bombs (a few KB expanding to billions of values).

    Errors are ``ValueError`` naming ``source``: invalid YAML, Python tags
    (``!!python/...``, refused as by ``safe_load``), an expansion beyond
    :data:`MAX_YAML_NODES` values.
    """
    loader = _SafeLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise YAMLSyntaxError(source, err) from None
    except RecursionError:
        raise ValueError(f"{source}: the YAML document nests too deeply") from None
    finally:
        loader.dispose()


def parse_set(items: Iterable[str]) -> Dict[str, Any]:
    """``["key=value", ...]`` → ``{key: yaml.safe_load(value)}`` (``1e-3``, ``null``, ``true`` work).

    A value that is not valid YAML is refused naming the item (no parser traceback).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = load_yaml(value, f"--set {item!r}") if value.strip() else None
        except YAMLSyntaxError as err:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({err.problem}); "
                             f"quote it, e.g. --set '{key.strip()}=\"...\"'") from None
    return out


def coerce(key: str, value: Any, kind) -> Any:
    """``value`` checked against type ``kind`` (int, float, bool, str, Optional[...]).

    ints are accepted for floats, numeric strings (``"1e-3"``, which YAML reads
    as a string) for numbers; anything else of the wrong type is refused with
    a message naming the key, the value and the expected type.
    """
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ValueError as err:
                errors.append(err)
        raise ValueError(f"{key} must be {describe_type(kind)}, got {value!r}")
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind in (bool, str):
        if isinstance(value, kind):
            return value
    else:  # a type this check does not know: leave it to the constructor
        return value
    raise ValueError(f"{key} must be {describe_type(kind)}, got {value!r}")


def _kind_of_default(default):
    if default is None:
        return typing.Any
    return type(default) if type(default) in (bool, int, float, str) else typing.Any


def option_types(task_cls) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """``(defaults, kinds, groups)`` of every key a run of ``task_cls`` accepts.

    ``groups[key]`` is ``"run"``, ``"task"`` or ``"model"``.
    """
    defaults: Dict[str, Any] = {"task": task_cls.name}
    kinds: Dict[str, Any] = {"task": str}
    groups: Dict[str, str] = {"task": "run"}
    for k, v in TRAIN_DEFAULTS.items():
        defaults[k] = task_cls.train_defaults.get(k, v)
        kinds[k], groups[k] = _TRAIN_TYPES[k], "run"
    unknown = sorted(set(task_cls.train_defaults) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"task {task_cls.name!r}: train_defaults has unknown key(s) {unknown}")
    try:
        hints = typing.get_type_hints(task_cls.Options)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    model_types = getattr(task_cls, "model_types", {}) or {}
    for f in dataclasses.fields(task_cls.Options):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        _add(defaults, kinds, groups, f.name, default, hints.get(f.name, _kind_of_default(default)), "task", task_cls)
    for k, default in task_cls.model_defaults.items():
        _add(defaults, kinds, groups, k, default, model_types.get(k, _kind_of_default(default)), "model", task_cls)
    return defaults, kinds, groups


def _add(defaults, kinds, groups, key, default, kind, group, task_cls):
    if key in defaults:
        raise ValueError(f"task {task_cls.name!r}: option {key!r} of the {group} is also a {groups[key]} option")
    defaults[key], kinds[key], groups[key] = default, kind, group


def resolve_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """The full flat option dict of a run: defaults filled in, every value checked.

    Raises ``ValueError`` for a missing/unknown task, an unknown key (listing the
    valid keys), a value of the wrong type, or a choice not among the allowed.
    """
    if "task" not in options:
        raise ValueError("options need a 'task'")
    task_cls = get_task_class(options["task"])
    defaults, kinds, _ = option_types(task_cls)
    check_known("option(s)", options, defaults, f" for task {task_cls.name!r}")
    resolved = dict(defaults)
    for k, v in options.items():
        resolved[k] = coerce(k, v, kinds[k])
    for k, allowed in CHOICES.items():
        check_choice(k, resolved[k], allowed)
    for k in _POSITIVE_INT:
        check_positive_int(k, resolved[k])
    check_nonnegative_int("seed", resolved["seed"])
    check_positive_int("threads", resolved["threads"], allow_none=True)
    check_positive("lr", resolved["lr"])
    check_nonnegative("weight_decay", resolved["weight_decay"])
    check_nonnegative("lr_min", resolved["lr_min"])
    if resolved["lr_schedule"] == "cosine" and resolved["lr_min"] > resolved["lr"]:
        raise ValueError(f"lr_min must be <= lr (the cosine schedule decays from lr to lr_min), "
                         f"got lr_min={resolved['lr_min']!r} with lr={resolved['lr']!r}")
    check_positive("grad_clip", resolved["grad_clip"], allow_none=True)
    return resolved


def split_options(config: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """``(run keys, task options, model options)`` of a resolved flat ``config``."""
    _, _, groups = option_types(get_task_class(config["task"]))
    parts: List[Dict[str, Any]] = [{}, {}, {}]
    index = {"run": 0, "task": 1, "model": 2}
    for k, v in config.items():
        parts[index[groups[k]]][k] = v
    return parts[0], parts[1], parts[2]


def build(config: Dict[str, Any]) -> Tuple[Task, nn.Module]:
    """Task and freshly initialised model of a resolved ``config`` (model init seeded by ``seed``).

    Bad option values (rejected by the task or model constructors) become
    ``ValueError``; so does a run too large for the free memory
    (:func:`plasticnet.memory.check_memory`), before the model is built.
    """
    _, task_opts, model_opts = split_options(config)
    try:
        task = make_task(config["task"], **task_opts)
        check_memory(config, task, model_opts)  # before anything large exists
        torch.manual_seed(config["seed"])
        model = task.build_model(config["rule"], config["cell"], **model_opts)
    except TypeError as err:
        raise ValueError(f"bad option value: {err}") from err
    return task, model


def resolved_config(options: Dict[str, Any]) -> Tuple[Dict[str, Any], Task, nn.Module]:
    """Resolve ``options``, build task and model; ``config`` records the task's own resolution
    (e.g. regression's ``n=None`` → the paper's ``n``, ``hidden_size=None`` → the matched size).

    Writes nothing: every option is checked here, before a run folder is touched.
    """
    config = resolve_options(options)
    task, model = build(config)
    for k, v in vars(task.options).items():
        config[k] = v
    if "hidden_size" in config and config["hidden_size"] is None and hasattr(model, "hidden_size"):
        config["hidden_size"] = model.hidden_size  # the size matching of SPEC §1, as built
    if config["device"] != "cpu":
        try:
            dev = torch.device(config["device"])
        except RuntimeError as err:
            raise ValueError(f"bad device {config['device']!r}: {err}") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config['device']!r} requested but CUDA is not available")
    return config, task, model
