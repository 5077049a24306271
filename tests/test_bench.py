"""plasticnet bench: the measurement, the subprocess runner, the table and the CLI checks."""

import json

import pytest

from plasticnet import bench
from plasticnet.cli import main


def test_measure_one_tiny_step():
    res = bench.measure(bench.Config("cue-reward", "rnn", "hebbian", "fast", batch_size=2, repeats=1, warmup=0))
    assert {"task", "cell", "rule", "engine", "ms_per_step", "peak_mb"} <= set(res)
    assert res["hidden"] == 256 and res["ms_per_step"] > 0 and res["peak_mb"] >= 0


def test_run_child_prints_one_json_object():
    res = bench.run_child(bench.Config("regression-mlp", "lstm", "none", "none", batch_size=2, repeats=1), 300)
    assert "error" not in res, res
    assert res["rule"] == "none" and res["hidden"] == 192
    json.dumps(res)


def test_reference_run_skipped_when_memory_is_short():
    cfg = bench.Config("seq-L5-d60", "rnn", "gradient", "reference")
    res = bench.run_child(cfg, 10, memory_fraction=1e-9)
    assert res["error"].startswith("skipped: needs ~")


def test_configurations_and_table():
    cfgs = list(bench.configurations(["cue-reward"], ["rnn"], ["hebbian", "gradient"], ["fast", "reference", "none"]))
    assert [(c.rule, c.engine) for c in cfgs] == [("hebbian", "fast"), ("hebbian", "reference"),
                                                  ("gradient", "fast"), ("gradient", "reference"), ("none", "none")]
    rows = [dict(task="cue-reward", cell="rnn", rule="hebbian", engine="fast", ms_per_step=100.0, peak_mb=50.0),
            dict(task="cue-reward", cell="rnn", rule="hebbian", engine="reference", ms_per_step=3000.0, peak_mb=3000.0),
            dict(task="cue-reward", cell="rnn", rule="none", engine="none", ms_per_step=40.0, peak_mb=30.0)]
    text = bench.table(rows)
    assert "30.0x" in text and "2.50x" in text and "60.0x" in text


@pytest.mark.parametrize("argv,message", [
    (["--tasks", "pong"], "unknown task 'pong'"),
    (["--engines", "turbo"], "unknown engine 'turbo'"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_bench_cli_rejects_bad_options(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err
