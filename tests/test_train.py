"""The trainer: learning, resume equivalence, atomic checkpoints, NaN stop, option checks."""

import json
import math

import pytest
import torch
import yaml

from plasticnet import config as cfg
from plasticnet.tasks.d23 import CueReward
from plasticnet.train import (
    NonFiniteError,
    load_checkpoint,
    load_run,
    lr_at,
    read_metrics,
    save_atomic,
    train_run,
)

SMALL = {"task": "cue-reward", "rule": "hebbian", "cell": "rnn", "hidden_size": 12, "batch_size": 8,
         "steps": 8, "n_cues": 3, "cue_dim": 4, "val_every": 5, "val_batches": 2, "batches": 10}


def small(**kw):
    return {**SMALL, **kw}


pytestmark = pytest.mark.usefixtures("one_thread")


def rows(run_dir):
    """metrics.csv as a list of rows (dicts), from the columns of read_metrics."""
    columns = read_metrics(run_dir)
    n = len(columns["batch"])
    return [{k: (int(v[i]) if k == "batch" else float(v[i])) for k, v in columns.items()} for i in range(n)]


def metrics(run_dir):
    """metrics.csv rows with NaN (no train loss at batch 0) as None, so rows compare with ==."""
    return [{k: None if v != v else v for k, v in row.items()} for row in rows(run_dir)]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder(tmp_path):
    summary = train_run(small(), tmp_path, progress=False)
    for name in ("config.yaml", "metrics.csv", "best.pt", "last.pt", "summary.json"):
        assert (tmp_path / name).is_file()
    assert list((tmp_path / "tb").iterdir())  # TensorBoard events
    rows_ = rows(tmp_path)
    assert [r["batch"] for r in rows_] == [0, 5, 10]
    assert list(rows_[0])[:3] == ["batch", "train_loss", "val_error"]
    assert math.isnan(rows_[0]["train_loss"]) and rows_[1]["train_loss"] > 0
    first = (tmp_path / "metrics.csv").read_text().splitlines()[1].split(",")
    assert first[:2] == ["0", ""]  # no training before batch 0: an empty cell, not "nan"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and summary["finished"] and summary["batches"] == 10
    assert summary["final_val_error"] == rows_[-1]["val_error"]
    assert summary["best_val_error"] == min(r["val_error"] for r in rows_)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["hidden_size"] == 12 and config["optimizer"] == "adamw" and config["inner_lr"] == 0.1
    best = load_checkpoint(tmp_path / "best.pt")  # weights_only=True
    assert best["val_error"] == summary["best_val_error"]
    task, model, config2 = load_run(tmp_path)
    assert config2 == config and same_weights(model.state_dict(), best["model"])


def test_loss_decreases(tmp_path):
    train_run(small(batches=60, val_every=20, val_batches=4, lr=3e-3), tmp_path, progress=False)
    rows_ = rows(tmp_path)
    assert rows_[-1]["val_error"] < 0.8 * rows_[0]["val_error"]
    assert rows_[-1]["train_loss"] < rows_[1]["train_loss"]


def test_resume_continues_to_the_same_numbers(tmp_path):
    opts = small(rule="gradient", cell="lstm", batches=20)
    # a run of 10 batches, then resumed to 20 (only the task is needed to resume) ...
    train_run({**opts, "batches": 10}, tmp_path / "a", progress=False)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["batch"] == 10
    with pytest.raises(ValueError, match="seed=1"):  # resuming may not change what the run is
        train_run({**opts, "seed": 1}, tmp_path / "a", resume=True, progress=False)
    train_run({"task": "cue-reward", "batches": 20}, tmp_path / "a", resume=True, progress=False)
    # ... equals an uninterrupted run of 20
    train_run(opts, tmp_path / "b", progress=False)
    assert [r["batch"] for r in rows(tmp_path / "b")] == [0, 5, 10, 15, 20]
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert same_weights(a["model"], b["model"])
    assert same_weights(a["optimizer"]["state"][0], b["optimizer"]["state"][0])


def test_resume_a_run_written_before_an_option_existed(tmp_path):
    """A key missing from an old config.yaml takes its current default instead of blocking the resume."""
    opts = small(batches=10)
    train_run({**opts, "batches": 5}, tmp_path, progress=False)
    path = tmp_path / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved.pop("inner_clip") == 1.0  # as if written by a version without that option
    path.write_text(yaml.safe_dump(saved))
    train_run({"task": opts["task"], "batches": 10}, tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["batch"] == 10
    with pytest.raises(ValueError, match=r"inner_clip=2\.0 \(run has 1\.0\)"):  # an explicit other value is refused
        train_run({"task": opts["task"], "batches": 12, "inner_clip": 2.0}, tmp_path, resume=True, progress=False)


def test_killed_run_resumes_exactly(tmp_path, monkeypatch):
    opts = small(rule="gradient", cell="lstm", batches=20, lr_schedule="cosine", lr_min=1e-4)
    train_run(opts, tmp_path / "full", progress=False)

    calls = {"n": 0}
    sample = CueReward.sample

    def dying_sample(self, batch_size, generator):
        if batch_size == opts["batch_size"] and generator is not None:
            calls["n"] += 1
            if calls["n"] == 2 + 5 + 2 + 5 + 2 + 3:  # val at 0, batches 1-5, val, 6-10, val, dies in batch 13
                raise KeyboardInterrupt
        return sample(self, batch_size, generator)

    monkeypatch.setattr(CueReward, "sample", dying_sample)
    with pytest.raises(KeyboardInterrupt):
        train_run(opts, tmp_path / "killed", progress=False)
    monkeypatch.setattr(CueReward, "sample", sample)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["batch"] == 10
    assert not (tmp_path / "killed" / "summary.json").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        train_run(opts, tmp_path / "killed", progress=False)
    train_run(opts, tmp_path / "killed", resume=True, progress=False)
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "killed" / "last.pt"), load_checkpoint(tmp_path / "full" / "last.pt")
    assert same_weights(a["model"], b["model"])
    assert torch.equal(a["train_rng"], b["train_rng"])
    # resuming a finished run does nothing
    again = train_run(opts, tmp_path / "full", resume=True, progress=False)
    assert again["finished"] and metrics(tmp_path / "full") == metrics(tmp_path / "killed")


def test_atomic_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"batch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"batch": 2, "w": torch.zeros(3)}, path)
    ck = load_checkpoint(path)
    assert ck["batch"] == 1 and torch.equal(ck["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_non_finite_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, where):
    calls = {"n": 0}
    loss = CueReward.loss

    def bad_loss(self, outputs, batch):
        value = loss(self, outputs, batch)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 8:
                if where == "loss":
                    return value * float("nan")
                return value + (0 * outputs.sum()).sqrt()  # finite loss, non-finite gradient
        return value

    monkeypatch.setattr(CueReward, "loss", bad_loss)
    with pytest.raises(NonFiniteError, match="at batch 8") as err:
        train_run(small(), tmp_path, progress=False)
    assert ("loss" if where == "loss" else "gradient") in str(err.value)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["batch"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["finished"] is False and "batch 8" in summary["error"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden": 3}, "unknown option.*'hidden'.*valid keys: task, rule, cell, batches"),
        ({"hidden_size": "big"}, "hidden_size must be"),
        ({"batches": 2.5}, "batches must be an integer, got 2.5"),
        ({"batches": 0}, "batches must be a positive integer"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"modulation": "yes"}, "modulation must be true or false"),
        ({"optimizer": "sgd"}, "unknown optimizer 'sgd'; allowed: 'adamw', 'adam', 'rmsprop'"),
        ({"lr_schedule": "step"}, "allowed: 'constant', 'cosine'"),
        ({"rule": "oja"}, "unknown rule 'oja'"),
        ({"cell": "gru"}, "unknown cell 'gru'"),
        ({"engine": "warp"}, "unknown engine 'warp'"),
        ({"inner_lr_mode": "zero"}, "unknown inner_lr_mode"),
        ({"function": "cubic"}, "unknown option"),  # a regression option, not cue-reward's
        ({"task": "chess"}, "unknown task 'chess'"),
    ],
)
def test_bad_options_refused_before_training(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        train_run(small(**options), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_option_types_and_values():
    r = cfg.resolve_options({"task": "regression", "lr": "1e-3", "weight_clip": 2, "grad_clip": None,
                             "hidden_size": 64, "function": "mlp"})
    assert r["lr"] == 1e-3 and r["weight_clip"] == 2.0 and r["grad_clip"] is None
    assert r["batches"] == 10000 and r["val_batches"] == 100 and r["batch_size"] == 64
    assert cfg.resolve_options({"task": "cue-reward"})["batches"] == 20000
    assert cfg.parse_set(["a=1e-3", "b=null", "c=true", "d=fast", "e=3"]) == \
        {"a": "1e-3", "b": None, "c": True, "d": "fast", "e": 3}
    with pytest.raises(ValueError, match="key=value"):
        cfg.parse_set(["hidden_size"])


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "rmsprop"])
def test_optimizers(tmp_path, optimizer):
    summary = train_run(small(optimizer=optimizer, weight_decay=1e-4, batches=5), tmp_path, progress=False)
    assert summary["finished"]
    state = load_checkpoint(tmp_path / "last.pt")["optimizer"]
    assert state["param_groups"][0]["weight_decay"] == 1e-4
    assert state["param_groups"][0].get("amsgrad", False) == (optimizer == "adamw")


def test_lr_schedule():
    c = cfg.resolve_options({"task": "cue-reward", "lr": 1e-3, "lr_min": 1e-4, "batches": 100,
                             "lr_schedule": "cosine"})
    assert lr_at(c, 0) == pytest.approx(1e-3)
    assert lr_at(c, 50) == pytest.approx(5.5e-4)
    assert lr_at(c, 100) == pytest.approx(1e-4)
    assert lr_at({**c, "lr_schedule": "constant"}, 50) == 1e-3


def test_config_records_resolved_sizes(tmp_path):
    opts = {"task": "regression", "rule": "none", "cell": "rnn", "batch_size": 2, "batches": 1,
            "val_batches": 1, "train_points": 2, "test_points": 2}
    train_run(opts, tmp_path, progress=False)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["hidden_size"] == 384 and config["n"] == 12  # size matching; the paper's n for linear
    _, model, _ = load_run(tmp_path)
    assert model.hidden_size == 384 and model.input_size == 14
