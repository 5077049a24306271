"""checks: one message style for every bad value."""

from typing import Optional

import pytest

from plasticnet import layers
from plasticnet.checks import (
    check_bool,
    check_choice,
    check_finite,
    check_known,
    check_nonnegative,
    check_nonnegative_int,
    check_path_component,
    check_positive,
    check_positive_int,
    check_range,
    describe_type,
)


def test_choice():
    check_choice("optimizer", "adam", ("adam", "sgd"))
    with pytest.raises(ValueError, match=r"^unknown optimizer 'x'; allowed: 'adam', 'sgd'$"):
        check_choice("optimizer", "x", ("adam", "sgd"))
    with pytest.raises(ValueError, match="allowed: 'a', 'b'"):
        check_choice("key", "c", {"a": 1, "b": 2})  # a mapping's keys
    assert layers.check_choice is check_choice and layers.check_positive_int is check_positive_int


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=rf"^steps must be a positive integer, got {value!r}$"):
        check_positive_int("steps", value)


def test_integers():
    check_positive_int("n", 3)
    check_positive_int("n", None, allow_none=True)
    with pytest.raises(ValueError, match="n must be a positive integer or null, got 0"):
        check_positive_int("n", 0, allow_none=True)
    check_nonnegative_int("delay", 0)
    for bad in (-1, 0.5, False):
        with pytest.raises(ValueError, match=f"delay must be a non-negative integer, got {bad!r}"):
            check_nonnegative_int("delay", bad)


def test_ranges():
    check_range("degrade", 0.0, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"degrade must be in \[0, 1\), got 1"):
        check_range("degrade", 1, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\], got 0"):
        check_range("gamma", 0, 0, 1, low_open=True)
    with pytest.raises(ValueError, match="lr must be > 0, got 0.0"):
        check_positive("lr", 0.0)
    with pytest.raises(ValueError, match="noise must be >= 0, got nan"):
        check_nonnegative("noise", float("nan"))
    with pytest.raises(ValueError, match="x must be <= 2, got 'a'"):
        check_range("x", "a", high=2)
    check_positive("clip", None, allow_none=True)
    with pytest.raises(ValueError, match="clip must be > 0 or null, got -1"):
        check_positive("clip", -1, allow_none=True)


def test_describe_type():
    assert describe_type(int) == "an integer"
    assert describe_type(Optional[int]) == "an integer or null"
    assert describe_type(Optional[float]) == "a number or null"
    assert describe_type(bool) == "true or false" and describe_type(str) == "a string"


def test_known_keys():
    check_known("option(s)", {"a": 1}, ("a", "b"))
    with pytest.raises(ValueError, match=r"^unknown option\(s\) 'x', 'y' for task 't'; valid keys: a, b$"):
        check_known("option(s)", ["y", "x", "a"], ("a", "b"), " for task 't'")
    with pytest.raises(ValueError, match=r"valid keys: \(none\)"):
        check_known("option(s)", ["x"], ())


# ---------------------------------------------------------------- names that become folders, finite numbers, flags
@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "a\0b", "-rf", "~", "x" * 256, 3, None])
def test_check_path_component_refuses(name):
    with pytest.raises(ValueError, match="claim id"):
        check_path_component("claim id", name)


@pytest.mark.parametrize("name", ["cue_reward", "rule=gradient,seed=0", "a.b", "..x", "x" * 255])
def test_check_path_component_accepts(name):
    check_path_component("claim id", name)


def test_check_finite_and_bool():
    for bad in (float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match=r"inner_lr must be a finite number, got"):
            check_finite("inner_lr", bad)
    check_finite("inner_lr", 0.1)
    check_finite("weight_clip", None, allow_none=True)
    for bad in ("no", 0, None):
        with pytest.raises(ValueError, match="modulation must be true or false, got"):
            check_bool("modulation", bad)
    check_bool("modulation", False)
