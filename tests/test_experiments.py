"""Experiment files: parsing, trial expansion, size matching, errors."""

from pathlib import Path

import pytest
import yaml

from plasticnet import matched_hidden_size
from plasticnet.experiments import load_experiment, parse_experiment, trial_name

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def minimal(**extra):
    return {"name": "demo", "task": "cue-reward", "base": {"batches": 10}, **extra}


def test_grid_is_cartesian_with_seeds():
    exp = parse_experiment(minimal(grid={"rule": ["gradient", "hebbian", "none"], "cell": ["lstm", "rnn"]},
                                   seeds=[0, 5]))
    trials = exp.trials()
    assert len(trials) == 3 * 2 * 2
    combos = {(t.options["rule"], t.options["cell"], t.options["seed"]) for t in trials}
    assert len(combos) == 12
    assert all(t.options["task"] == "cue-reward" and t.options["batches"] == 10 for t in trials)
    assert trials[0].name == "rule=gradient,cell=lstm,seed=0"
    assert len({t.name for t in trials}) == 12


def test_zip_varies_keys_together_and_combines_with_grid():
    exp = parse_experiment(minimal(grid={"rule": ["gradient", "hebbian"]},
                                   zip={"seq_length": [5, 10, 20], "delay": [0, 10, 20]}, seeds=2))
    trials = exp.trials()
    assert len(trials) == 2 * 3 * 2
    assert {(t.options["seq_length"], t.options["delay"]) for t in trials} == {(5, 0), (10, 10), (20, 20)}
    assert exp.varied_keys == ["rule", "seq_length", "delay"]
    assert "seq_length=10,delay=10" in trials[2].name


def test_several_zip_groups():
    exp = parse_experiment(minimal(zip=[{"a": [1, 2], "b": [3, 4]}, {"c": [5, 6, 7], "d": [8, 9, 10]}]))
    assert len(exp.trials()) == 2 * 3


@pytest.mark.parametrize("base", [None, 64])
def test_size_matching(base):
    exp = parse_experiment(minimal(grid={"rule": ["gradient", "none"], "cell": ["lstm", "rnn"]},
                                   size_matching=True if base is None else base))
    for t in exp.trials():
        want = matched_hidden_size(t.options["rule"], t.options["cell"], base=base or 128)
        assert t.options["hidden_size"] == want
    sizes = {(t.options["rule"], t.options["cell"]): t.options["hidden_size"] for t in exp.trials()}
    b = base or 128
    assert sizes == {("gradient", "lstm"): b, ("gradient", "rnn"): 2 * b,
                     ("none", "lstm"): 3 * b // 2, ("none", "rnn"): 3 * b}
    assert all("hidden_size" not in t.name for t in exp.trials())


def test_no_size_matching_by_default():
    exp = parse_experiment(minimal(grid={"rule": ["gradient", "none"]}))
    assert all("hidden_size" not in t.options for t in exp.trials())


def test_trial_name_sanitises_values():
    assert trial_name({"inner_lr": 0.001, "function": "a/b c", "seed": 1}) == "inner_lr=0.001,function=a-b-c,seed=1"


@pytest.mark.parametrize("data, match", [
    ([1, 2], "must be a mapping"),
    ({"task": "x"}, "'name' is required"),
    ({"name": "n"}, "'task' is required"),
    ({"name": "a b", "task": "x"}, "folder name"),
    (minimal(grids={"rule": ["gradient"]}), "unknown key.*'grids'.*valid keys: name, task"),
    (minimal(grid={"rule": "gradient"}), "grid.rule must be a non-empty list"),
    (minimal(grid={"rule": []}), "grid.rule must be a non-empty list"),
    (minimal(grid=["rule"]), "'grid' must be a mapping"),
    (minimal(zip={"a": [1, 2], "b": [1]}), "one length"),
    (minimal(zip=5), "'zip' must be"),
    (minimal(grid={"a": [1]}, zip={"a": [2]}), "'a' is varied twice"),
    (minimal(grid={"seed": [1, 2]}), "'seed' cannot be set in 'grid'"),
    (minimal(base={"task": "other"}), "'task' cannot be set in 'base'"),
    (minimal(seeds="three"), "seeds must be"),
    (minimal(seeds=0), "seeds count must be >= 1"),
    (minimal(seeds=[1, 1]), "repeated seeds"),
    (minimal(size_matching="yes"), "size_matching must be"),
    (minimal(size_matching=True, base={"hidden_size": 64}), "size_matching sets hidden_size"),
])
def test_malformed_files_get_clear_errors(data, match):
    with pytest.raises(ValueError, match=match):
        parse_experiment(data)


def test_size_matching_needs_rule_and_cell():
    exp = parse_experiment(minimal(grid={"rule": ["gradient"]}, size_matching=True))
    with pytest.raises(ValueError, match="needs 'cell'"):
        exp.trials()


def test_load_experiment_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_experiment(bad)


def test_load_experiment_roundtrip(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(minimal(grid={"rule": ["gradient", "hebbian"]}, seeds=3)))
    exp = load_experiment(path)
    assert exp.name == "demo" and exp.seeds == [0, 1, 2] and len(exp.trials()) == 6


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_files_parse(path):
    exp = load_experiment(path)
    trials = exp.trials()
    assert trials and len({t.name for t in trials}) == len(trials)
    assert exp.name == path.stem


def test_shipped_trials_resolve_and_the_lr_sweep():
    """Every experiments/*.yaml parses and its trials resolve; the reference's learning-rate sweep is there."""
    from pathlib import Path

    from plasticnet.config import resolve_options
    from plasticnet.experiments import load_experiment

    folder = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        exp = load_experiment(path)
        for trial in exp.trials()[:2]:
            resolve_options(trial.options)
    lr = load_experiment(folder / "cue_reward_lr.yaml")
    assert {(t.options["lr"], t.options["rule"], t.options["cell"]) for t in lr.trials()} == {
        (lr_, r, c) for lr_ in (0.01, 3e-4) for r in ("gradient", "hebbian", "none") for c in ("rnn", "lstm")}


# ---------------------------------------------------------------- untrusted experiment files
def test_dot_names_refused_before_any_folder(tmp_path, capsys):
    from plasticnet.cli import main

    for name in (".", ".."):
        path = tmp_path / "e.yaml"
        path.write_text(f"name: '{name}'\ntask: cue-reward\n")
        out = tmp_path / "out"
        assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 2
        assert "must name a folder inside the output folder" in capsys.readouterr().err
        assert not out.exists()


def test_trial_count_capped_before_expanding(tmp_path, capsys):
    from plasticnet.cli import main

    grid = "\n".join(f"  k{i}: [{', '.join(map(str, range(100)))}]" for i in range(8))
    path = tmp_path / "e.yaml"
    path.write_text(f"name: big\ntask: cue-reward\ngrid:\n{grid}\n")
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "10,000,000,000,000,000 trials, more than the cap of 10,000" in capsys.readouterr().err


def test_alias_bomb_refused(tmp_path, capsys):
    from plasticnet.cli import main

    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 10)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\ntask: cue-reward\n")
    assert len(path.read_bytes()) < 1024
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "alias bomb" in capsys.readouterr().err


def test_binary_experiment_file_is_a_message(tmp_path, capsys):
    from plasticnet.cli import main

    path = tmp_path / "e.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not a text (YAML) file" in err


def test_hidden_size_override_becomes_the_matching_base():
    exp = parse_experiment({"name": "m", "task": "cue-reward", "grid": {"rule": ["gradient", "none"],
                                                                        "cell": ["lstm", "rnn"]},
                            "size_matching": True})
    notes = exp.apply_overrides({"hidden_size": 32})
    assert "size-matching base" in notes[0]
    assert sorted(t.options["hidden_size"] for t in exp.trials()) == [32, 48, 64, 96]
