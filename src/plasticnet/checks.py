"""Argument checks shared by every module: one message style for bad values.

Each check raises ``ValueError`` naming the option, the value it got and what
is allowed, in one of two forms::

    unknown optimizer 'sgd'; allowed: 'adamw', 'adam', 'rmsprop'
    steps must be a positive integer, got -5

Checks run where a value enters (option resolution, constructors, CLI
commands), before any work starts and before anything is written.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Iterable, Optional


def check_choice(name: str, value, allowed: Iterable) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed`` (the message lists them)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def check_known(what: str, given: Iterable, valid: Iterable, context: str = "") -> None:
    """Raise ``ValueError`` naming every key of ``given`` not in ``valid``, and the valid ones.

    ``unknown option(s) 'hiden' for task 'cue-reward'; valid keys: task, rule, ...``
    (``what`` = ``"option(s)"``, ``context`` = ``" for task 'cue-reward'"``).
    """
    valid = list(valid)
    unknown = sorted(set(given) - set(valid), key=str)
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}{context}; "
                         f"valid keys: {', '.join(map(str, valid)) or '(none)'}")


def is_int(value) -> bool:
    """``value`` is an ``int`` (``bool`` is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive integer (or ``None`` with ``allow_none``)."""
    if allow_none and value is None:
        return
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{' or null' if allow_none else ''}, got {value!r}")


def check_nonnegative_int(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= 0``."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def check_range(name: str, value, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number in the interval ``low .. high``.

    ``low_open`` / ``high_open`` exclude the end points; ``None`` bounds are
    unbounded. Messages read ``lr must be > 0, got 0.0``, ``degrade must be in
    [0, 1), got 1.5``.
    """
    if allow_none and value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = number and not (
        (low is not None and (value < low or (low_open and value == low)))
        or (high is not None and (value > high or (high_open and value == high))))
    if not ok:
        if low is not None and high is not None:
            want = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            want = f"{'>' if low_open else '>='} {low}"
        elif high is not None:
            want = f"{'<' if high_open else '<='} {high}"
        else:
            want = "a finite number"
        raise ValueError(f"{name} must be {want}{' or null' if allow_none else ''}, got {value!r}")


def check_positive(name: str, value, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number ``> 0``."""
    check_range(name, value, low=0, low_open=True, allow_none=allow_none)


def check_nonnegative(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number ``>= 0``."""
    check_range(name, value, low=0)


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe_type(kind: Any) -> str:
    """A type as a user reads it: ``int`` → ``an integer``, ``Optional[int]`` → ``an integer or null``."""
    if typing.get_origin(kind) is typing.Union:
        args = typing.get_args(kind)
        parts = [describe_type(a) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if kind in _NAMES:
        return _NAMES[kind]
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


__all__ = ["check_choice", "check_known", "check_nonnegative", "check_nonnegative_int", "check_positive",
           "check_positive_int", "check_range", "describe_type", "is_int"]


# ---------------------------------------------------------------- model options (PlasticRNN)
def check_bool(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is ``True`` or ``False`` (a string such as ``'no'`` is not)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_finite(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number (not nan or ±inf)."""
    check_range(name, value)


__all__ += ["check_bool", "check_finite"]
