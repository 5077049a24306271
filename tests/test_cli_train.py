"""``plasticnet train`` and ``plasticnet eval`` end to end."""

import csv

import pytest
import yaml

from plasticnet.cli import main

SETS = ["--set", "hidden_size=8", "--set", "batch_size=4", "--set", "val_every=3", "--set", "val_batches=2",
        "--set", "seq_length=3", "--set", "delay=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "seq-reproduction", "--rule", "gradient", "--cell", "rnn", "--batches", "6",
                 "--seed", "3", "--run-dir", str(run), "--quiet", *SETS, "--set", "lr=2e-3"])
    assert code == 0
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (run / name).is_file()
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["batch", "train_loss", "val_error"]
    assert [int(r["batch"]) for r in rows] == [0, 3, 6]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["task"], config["rule"], config["cell"], config["seed"]) == ("seq-reproduction", "gradient",
                                                                                  "rnn", 3)
    assert config["lr"] == 2e-3 and config["seq_length"] == 3 and config["hidden_size"] == 8
    assert "best val_error" in capsys.readouterr().out

    assert main(["eval", str(run), "--batches", "3"]) == 0
    out = capsys.readouterr().out
    assert "error:" in out
    err = float(out.split("error:")[1].split()[0])
    assert 0 < err < 10
    # continue the same run to more batches
    assert main(["train", "seq-reproduction", "--run-dir", str(run), "--batches", "9", "--resume", "--quiet"]) == 0
    with open(run / "metrics.csv") as f:
        assert [int(r["batch"]) for r in csv.DictReader(f)] == [0, 3, 6, 9]


@pytest.mark.parametrize("bad, message", [
    (["--set", "hiden_size=8"], "valid keys: task, rule"),
    (["--set", "hidden_size=eight"], "hidden_size must be"),
    (["--set", "optimizer=sgd"], "allowed: 'adamw', 'adam', 'rmsprop'"),
    (["--rule", "oja"], "unknown rule 'oja'"),
    (["--set", "hidden_size"], "key=value"),
])
def test_bad_set_refused(tmp_path, capsys, bad, message):
    run = tmp_path / "run"
    code = main(["train", "cue-reward", "--run-dir", str(run), "--quiet", *bad])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (run / "metrics.csv").exists()


def test_eval_missing_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
