"""The ``plasticnet`` command as a whole: every sub-command's help and bad input, and parsing in one place."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import plasticnet
from plasticnet import bench
from plasticnet.cli import build_parser, main

SRC = Path(plasticnet.__file__).resolve().parent
REPO = SRC.parents[1]
COMMANDS = ["train", "eval", "demo", "data", "pretrain", "bench", "sweep", "report", "analyze", "reproduce"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: plasticnet [-h] COMMAND ...")
    positions = [re.search(rf"^    {c}\s", out, re.M).start() for c in COMMANDS]
    assert positions == sorted(positions)  # in --help order


@pytest.mark.parametrize("command", [[c] for c in COMMANDS] + [["data", "show"]], ids=" ".join)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: plasticnet {' '.join(command)} ")


@pytest.mark.parametrize("argv, message", [
    (["train", "cue-reward", "--rule", "oja", "--run-dir", "{tmp}/run"], "unknown rule 'oja'"),
    (["eval", "{tmp}/nothing"], "not found"),
    (["eval", "{tmp}/nothing", "--batches", "0"], "--batches must be a positive integer, got 0"),
    (["demo", "--rules", ",", "--out", "{tmp}/demo"], "--rules names no rule; allowed: 'gradient', 'hebbian'"),
    (["demo", "--jobs", "0", "--out", "{tmp}/demo"], "--jobs must be >= 1, got 0"),
    (["pretrain", "--out", "{tmp}/enc.pt", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["bench", "--cells", "gru"], "unknown cell 'gru'"),
    (["sweep", "{tmp}/nofile.yaml"], "experiment file '{tmp}/nofile.yaml' not found"),
    (["sweep", str(REPO / "experiments" / "cue_reward_rules_cells.yaml"), "--set", "rule=none", "--out", "{tmp}/s"],
     "--set rule conflicts with the experiment's grid/zip"),
    (["sweep", str(REPO / "experiments" / "cue_reward_rules_cells.yaml"), "--set", "task=regression", "--out",
      "{tmp}/s"], "--set task conflicts with the experiment file, which declares its task"),
    (["sweep", str(REPO / "experiments" / "cue_reward_rules_cells.yaml"), "--set", "seed=3", "--out", "{tmp}/s"],
     "--set seed conflicts with the experiment file, which declares its seeds: use --seeds N"),
    (["sweep", str(REPO / "experiments" / "cue_reward_rules_cells.yaml"), "--seeds", "0", "--out", "{tmp}/s"],
     "--seeds must be a positive integer, got 0"),
    (["demo", "--rules", "gradient", "--set", "rule=none", "--out", "{tmp}/demo"],
     "--set rule conflicts with the demo"),
    (["demo", "--rules", "gradient,gradient", "--jobs", "2", "--out", "{tmp}/demo"], "'gradient' more than once"),
    (["bench", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["bench", "--timeout", "-1"], "timeout must be > 0, got -1"),
    (["bench", "--chunk-size", "-1"], "chunk_size (0: the fast engine's default) must be a non-negative integer"),
    (["bench", "--warmup", "-1"], "warmup must be a non-negative integer, got -1"),
    (["pretrain", "--out", "{tmp}/enc.pt", "--steps", "0"], "steps must be a positive integer, got 0"),
    (["pretrain", "--out", "{tmp}/enc.pt", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["report", "{tmp}/nothing"], "is not a folder"),
    (["analyze", "{tmp}"], "is not a run folder (no config.yaml)"),
    (["reproduce", "nope", "--out", "{tmp}/r"], "unknown claim id(s) 'nope'"),
    (["reproduce", "cue_reward", "--seeds", "0", "--out", "{tmp}/r"], "--seeds must be >= 1, got 0"),
], ids=lambda x: x[0] if isinstance(x, list) else "")
def test_bad_input_is_an_error_line_and_writes_nothing(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"plasticnet {argv[0]}: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert list(tmp_path.iterdir()) == []


def test_parser_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "show", "nosuch"])
    assert exit_.value.code == 2
    assert "plasticnet data show: error: argument dataset: invalid choice: 'nosuch'" in capsys.readouterr().err


def test_handlers_call_the_library_with_keywords(monkeypatch, capsys, tmp_path):
    """A handler turns the parsed flags into one plain call; nothing argparse reaches the library."""
    calls = {}

    def fake_run_bench(**kw):
        calls["bench"] = kw
        row = dict(task="cue-reward", cell="rnn", rule="hebbian", engine="fast", ms_per_step=10.0, peak_mb=1.0)
        kw["on_result"](bench.Config("cue-reward", "rnn", "hebbian", "fast"), row)
        return [row], 10.0

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["bench", "--tasks", "cue-reward", "--engines", "fast,none", "--threads", "1,2", "--json"]) == 0
    kw = calls["bench"]
    assert kw["tasks"] == ["cue-reward"] and kw["engines"] == ["fast", "none"] and kw["threads"] == [1, 2]
    assert (kw["repeats"], kw["warmup"], kw["batch_size"], kw["timeout"]) == (3, 1, 64, 900)
    assert json.loads(capsys.readouterr().out)["ms_per_step"] == 10.0

    import plasticnet.pretrain

    def fake_pretrain(out, **kw):
        calls["pretrain"] = (out, kw)
        return {"path": str(out), "train_accuracy": 0.5, "elapsed_s": 1.0}

    monkeypatch.setattr(plasticnet.pretrain, "pretrain_encoder", fake_pretrain)
    assert main(["pretrain", "--out", str(tmp_path / "e.pt"), "--steps", "7", "--encoder", "resnet12"]) == 0
    out, kw = calls["pretrain"]
    assert out == str(tmp_path / "e.pt")
    assert kw == dict(dataset="glyphs", encoder="resnet12", channels=64, steps=7, batch_size=128, lr=3e-3,
                      weight_decay=1e-4, seed=0, data_dir="", image_size=0)
    assert "use it with --set pretrained=" in capsys.readouterr().out


def test_sweep_dry_run_lists_the_trials(tmp_path, capsys):
    file = REPO / "experiments" / "cue_reward_rules_cells.yaml"
    assert main(["sweep", str(file), "--seeds", "1", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cue_reward_rules_cells: ") and "  [new     ] rule=none,cell=lstm,seed=0" in lines
    assert list(tmp_path.iterdir()) == []


def test_only_the_cli_parses_arguments():
    """Library modules expose plain functions: no argparse, no parsed-argument objects, no per-module parsers.

    ``bench.py`` keeps its measuring child's entry point (``python -m
    plasticnet.bench --child CONFIG``), which reads ``sys.argv`` directly.
    """
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "cli.py":
            continue
        text = path.read_text()
        for word in ("argparse", "Namespace", "def add_parser", "def _cmd", "add_argument"):
            if word in text:
                offenders.append(f"{path.relative_to(SRC)}: {word}")
    assert offenders == []


def test_help_does_not_import_the_working_modules():
    """Building the parser imports no plotting, training or analysis code: ``plasticnet --help`` stays cheap."""
    code = ("import sys; from plasticnet.cli import build_parser; build_parser(); "
            "print(' '.join(sorted(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(res.stdout.split())
    heavy = {"matplotlib", "ray", "plasticnet.train", "plasticnet.pretrain", "plasticnet.report",
             "plasticnet.report_figures", "plasticnet.analysis", "plasticnet.data.show"}
    assert loaded & heavy == set()
    assert build_parser().prog == "plasticnet"


def test_data_show_writes_the_grid(tmp_path, capsys):
    png = tmp_path / "grids" / "g.png"
    assert main(["data", "show", "glyphs", "--rows", "2", "--cols", "3", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.startswith("glyphs train: ")


def test_default_run_dir_names_task_rule_cell_seed():
    from plasticnet.train import default_run_dir

    assert default_run_dir({"task": "cue-reward", "rule": "none", "seed": 3}) == Path("runs/cue-reward-none-lstm-seed3")
    assert default_run_dir({"task": "reversal", "seed": 1}, resume=True) == Path("runs/reversal-gradient-lstm-seed1")
    with pytest.raises(ValueError, match="unknown option"):
        default_run_dir({"task": "cue-reward", "hiden": 1})
