"""Run folders that never lose work: refusals instead of overwrites, the writer's lock (with real
processes), non-finite validation, damaged checkpoints, bad paths, the one resume check."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from plasticnet import train as train_mod
from plasticnet.cli import main
from plasticnet.runfolder import (
    LOCK_FILE,
    CheckpointError,
    RunFolderError,
    RunLock,
    RunLockedError,
    load_checkpoint,
    load_run,
    lock_holder,
    read_metrics,
    resume_config,
)
from plasticnet.train import NonFiniteError, evaluate, train_run, validation_batches

SMALL = {"task": "cue-reward", "rule": "hebbian", "cell": "rnn", "hidden_size": 8, "batch_size": 4,
         "steps": 6, "n_cues": 2, "cue_dim": 3, "val_every": 5, "val_batches": 2, "batches": 10, "threads": 1}
# the reproduction options for the command line
T = ["--batches", "20", "--set", "hidden_size=16", "--set", "val_every=10", "--set", "val_batches=2",
     "--set", "threads=1", "--quiet"]
SRC = str(Path(__file__).resolve().parents[1] / "src")

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw):
    return {**SMALL, **kw}


def files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def python(code, *args):
    """A real Python process running ``code`` (plasticnet importable, one thread)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


HOLD = """
import sys, time
from plasticnet.runfolder import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock of a folder; yields ``(folder -> process)`` starter."""
    procs = []

    def start(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        p = python(HOLD, str(folder))
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


# ---------------------------------------------------------------- refusals instead of overwrites
def test_resume_without_config_yaml_refused(tmp_path):
    train_run(small(), tmp_path, progress=False)
    (tmp_path / "config.yaml").unlink()
    before = {n: (tmp_path / n).read_bytes() for n in ("last.pt", "best.pt", "metrics.csv")}
    for resume in (True, False):
        with pytest.raises(RunFolderError, match="last.pt.*but no config.yaml"):
            train_run(small(batches=20), tmp_path, resume=resume, progress=False)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # nothing overwritten


def test_folder_with_other_files_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "tb").mkdir(parents=True)
    (folder / "tb" / "events").write_text("my events")
    (folder / "notes.txt").write_text("keep me")
    assert main(["train", "cue-reward", *T, "--run-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err or "no config.yaml" in err
    assert files(folder) == ["notes.txt", "tb"] and (folder / "tb" / "events").read_text() == "my events"
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2\n")
    with pytest.raises(RunFolderError, match=r"not empty and not a run folder \(it holds data.csv\)"):
        train_run(small(), other, resume=True, progress=False)
    assert files(other) == ["data.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_run(small(batches=5), empty, progress=False)["finished"]  # an empty folder is fine


def test_run_killed_before_its_first_checkpoint_restarts_with_its_options(tmp_path):
    train_run(small(batches=5, seed=3), tmp_path, progress=False)
    for name in ("last.pt", "best.pt", "summary.json"):
        (tmp_path / name).unlink()
    train_run({"task": "cue-reward", "batches": 5}, tmp_path, resume=True, progress=False)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["seed"] == 3  # the saved options, not defaults


def test_run_without_a_checkpoint_starts_again_with_new_options(tmp_path, capsys):
    """A run that failed before its first checkpoint (here: killed) is neither refused as "already holds a
    run" nor held to its old options under --resume."""
    train_run(small(batches=5, seed=3), tmp_path, progress=False)
    for name in ("last.pt", "best.pt", "summary.json"):
        (tmp_path / name).unlink()
    assert train_run(small(batches=5, seed=1), tmp_path, progress=False)["finished"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["seed"] == 1
    for name in ("last.pt", "best.pt"):
        (tmp_path / name).unlink()
    assert main(["train", "cue-reward", "--run-dir", str(tmp_path), "--resume", "--quiet", "--set", "batch_size=4",
                 "--batches", "5"]) == 0
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["batch_size"] == 4
    assert len(read_metrics(tmp_path)["batch"]) == 2  # the old run's metrics are gone, not mixed in


def test_too_large_a_run_is_refused_before_its_folder_is_made(tmp_path, capsys, monkeypatch):
    # sizes that fail at once (no gradual growth) where they are not refused
    for option in ("batch_size=100000000", "hidden_size=1000000000"):
        assert main(["train", "cue-reward", "--run-dir", str(tmp_path / "run"), "--quiet", "--set", option]) == 2
        err = capsys.readouterr().err
        assert option.split("=")[0] in err and option.split("=")[1] in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()
    # a model that fits the machine but not the (pretended) free memory: refused naming hidden_size
    import plasticnet.memory

    monkeypatch.setattr(plasticnet.memory, "available_memory", lambda device="cpu": 10**7)
    assert main(["train", "cue-reward", "--run-dir", str(tmp_path / "run"), "--rule", "none", "--batches", "1",
                 "--quiet", "--set", "hidden_size=600", "--set", "val_batches=1"]) == 2
    err = capsys.readouterr().err
    assert "hidden_size=600" in err and "10 MB of memory is free" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("under, message", [
    ("", r"run folder .*afile is a file, not a folder"),
    ("sub/run", r"run folder .*afile/sub/run cannot be made: .*afile is a file"),
])
def test_bad_run_paths(tmp_path, capsys, under, message):
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["train", "cue-reward", *T, "--run-dir", str(target / under if under else target)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert target.read_text() == "x"


def test_unwritable_run_path(tmp_path, monkeypatch, capsys):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode))
    assert main(["train", "cue-reward", *T, "--run-dir", str(tmp_path / "run")]) == 2
    assert f"no write permission on {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- options checked before anything is written
@pytest.mark.parametrize("options, message", [
    ({"n_cues": 0}, "n_cues must be a positive integer, got 0"),
    ({"steps": -5}, "steps must be a positive integer, got -5"),
    ({"cue_dim": 0}, "cue_dim must be a positive integer, got 0"),
    ({"noise": -1}, "noise must be >= 0, got -1"),
    ({"lr_schedule": "cosine", "lr_min": 0.1}, "lr_min must be <= lr"),
    ({"task": "regression", "n": 0}, "n must be a positive integer or null, got 0"),
    ({"task": "regression", "test_points": 0}, "test_points must be a positive integer, got 0"),
    ({"task": "seq-reproduction", "seq_length": 0}, "seq_length must be a positive integer, got 0"),
    ({"task": "seq-reproduction", "delay": -1}, "delay must be a non-negative integer, got -1"),
    ({"task": "seq-reproduction", "dim": 0}, "dim must be a positive integer, got 0"),
    ({"task": "one-shot-patterns", "l1": -1.0}, "l1 must be >= 0, got -1.0"),
    ({"task": "pattern-memorisation", "input_scale": 0}, "input_scale must be > 0, got 0"),
    ({"task": "pattern-memorisation", "delay_steps": -2}, "delay_steps must be a non-negative integer"),
    ({"hidden_size": "abc"}, "hidden_size must be an integer or null, got 'abc'"),
    ({"grad_clip": -1}, "grad_clip must be > 0 or null, got -1"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
])
def test_out_of_range_options_refused_leaving_nothing(tmp_path, options, message):
    task_specific = {k: v for k, v in SMALL.items() if k in ("task", "batches", "val_every", "val_batches")}
    opts = {**(SMALL if "task" not in options else task_specific), **options}
    if opts["task"] not in ("cue-reward", "regression", "seq-reproduction"):
        opts.pop("rule", None), opts.pop("cell", None)
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train_run(opts, run, progress=False)
    assert not run.exists()
    run.mkdir()  # an empty folder stays empty: no config.yaml, no tb/
    with pytest.raises(ValueError, match=message):
        train_run(opts, run, progress=False)
    assert files(run) == []


def test_set_errors_are_messages(tmp_path, capsys):
    assert main(["train", "cue-reward", *T, "--set", "hidden_size=abc", "--run-dir", str(tmp_path / "r")]) == 2
    assert "hidden_size must be an integer or null, got 'abc'" in capsys.readouterr().err
    assert main(["train", "cue-reward", *T, "--set", "noise=[1, 2", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--set 'noise=[1, 2': the value is not valid YAML" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- non-finite validation
def nan_after(monkeypatch, calls_ok):
    """Make validation return NaN from call ``calls_ok + 1`` on."""
    n = {"calls": 0}

    def evaluate_or_nan(*a, **k):
        n["calls"] += 1
        vals = evaluate(*a, **k)
        return {k: math.nan for k in vals} if n["calls"] > calls_ok else vals

    monkeypatch.setattr(train_mod, "evaluate", evaluate_or_nan)


def test_non_finite_validation_stops_the_run(tmp_path, monkeypatch, capsys):
    nan_after(monkeypatch, 2)  # batches 0 and 5 fine, batch 10 NaN
    with pytest.raises(NonFiniteError, match="non-finite validation error nan at batch 10"):
        train_run(small(batches=15), tmp_path, progress=False)
    monkeypatch.undo()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["finished"] is False and "batch 10" in summary["error"]
    assert math.isfinite(summary["final_val_error"]) and math.isfinite(summary["best_val_error"])
    for which in ("last", "best"):  # what is kept evaluates finite
        assert load_checkpoint(tmp_path / f"{which}.pt")["batch"] == 5
        task, model, config = load_run(tmp_path, which)
        vals = evaluate(task, model, validation_batches(task, config))
        assert math.isfinite(vals["error"])
    assert main(["eval", str(tmp_path), "--checkpoint", "last"]) == 0
    assert "nan" not in capsys.readouterr().out


def test_first_validation_nan(tmp_path, monkeypatch, capsys):
    nan_after(monkeypatch, 0)
    with pytest.raises(NonFiniteError, match="at batch 0: run stopped; no checkpoint was written"):
        train_run(small(), tmp_path, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "best.pt not found" in err and "non-finite validation error nan at batch 0" in err


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_named_without_torch_advice(tmp_path, capsys, damage):
    train_run(small(batches=5), tmp_path, progress=False)
    path = tmp_path / "best.pt"
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x80\x02garbage" * 10, "empty": b""}[damage])
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {path} is damaged" in err and "--checkpoint last" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert main(["eval", str(tmp_path), "--checkpoint", "last"]) == 0  # what still works, works
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="last.pt is damaged.*best.pt may still be intact") as e:
        train_run(small(batches=10), tmp_path, resume=True, progress=False)
    assert "weights_only" not in str(e.value)


@pytest.mark.parametrize("batches", ["-2", "0"])
def test_eval_batches_checked(tmp_path, capsys, batches):
    train_run(small(batches=5), tmp_path, progress=False)
    assert main(["eval", str(tmp_path), "--batches", batches]) == 2
    assert f"--batches must be a positive integer, got {batches}" in capsys.readouterr().err


# ---------------------------------------------------------------- one writer per folder (real processes)
def test_lock_names_its_holder_and_dies_with_it(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    assert f"pid {proc.pid}" in lock_holder(run)
    start = time.time()
    with pytest.raises(RunLockedError, match=f"in use by another writer \\(pid {proc.pid} on "):
        train_run(small(), run, progress=False)
    with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
        train_run(small(), run, resume=True, progress=False)
    assert time.time() - start < 10  # refused at once, not after waiting
    assert files(run) == [LOCK_FILE]  # nothing written
    proc.send_signal(signal.SIGKILL)  # a crash: the kernel drops the lock, nothing stale is left
    proc.wait(timeout=10)
    assert lock_holder(run) is None
    assert train_run(small(batches=5), run, progress=False)["finished"]


def test_lock_refuses_a_second_writer_in_this_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released on exit
        pass


TRAIN = """
import sys
from plasticnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_twice_into_one_folder(tmp_path):
    run = tmp_path / "run"
    args = ["train", "cue-reward", "--batches", "100000", "--set", "hidden_size=8", "--set", "val_every=5",
            "--set", "val_batches=1", "--set", "batch_size=4", "--set", "threads=1", "--quiet", "--run-dir", str(run)]
    first = python(TRAIN, *args)
    try:
        deadline = time.time() + 60
        while not (run / "last.pt").is_file():  # the first run is going
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.2)
        for extra in ([], ["--resume"]):
            second = python(TRAIN, *args, *extra)
            _, err = second.communicate(timeout=60)
            assert second.returncode == 2
            assert f"in use by another writer (pid {first.pid} on " in err and "Traceback" not in err
    finally:
        first.kill()
        first.wait(timeout=10)
    batches = list(read_metrics(run)["batch"])
    assert batches == sorted(set(batches))  # one writer's rows only


def test_sweep_skips_trials_another_process_holds(tmp_path, holder):
    from plasticnet.experiments import parse_experiment
    from plasticnet.sweep import plan, run_sweep, run_trial

    exp = parse_experiment({"name": "tiny", "task": "cue-reward", "grid": {"rule": ["gradient", "none"]},
                            "base": {"batch_size": 4, "val_every": 2, "val_batches": 1, "batches": 2,
                                     "cell": "rnn", "n_cues": 2, "hidden_size": 8},
                            "seeds": [0]})
    held = tmp_path / "tiny" / "rule=none,seed=0"
    proc = holder(held)
    assert [o.status for o in plan(exp, tmp_path)] == ["new", "held"]
    outcomes = run_sweep(exp, tmp_path, analyze=False, log=lambda s: None)
    assert [o.status for o in outcomes] == ["finished", "held"]
    assert f"pid {proc.pid}" in outcomes[1].error
    assert files(held) == [LOCK_FILE]  # not trained twice
    # a trial taken by another process after the plan: left to it
    assert "held" in run_trial(exp.trials()[1].options, str(held), analyze=False)


SWEEP = """
import sys
from plasticnet.cli import main
sys.exit(main(["sweep", sys.argv[1], "--out", sys.argv[2], "--no-analysis"]))
"""


def test_two_sweeps_into_one_out_train_each_trial_once(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "task": "cue-reward", "grid": {"lr": [1e-3, 2e-3]}, "seeds": 2,
                                    "base": {"batch_size": 4, "val_every": 10, "val_batches": 1, "batches": 40,
                                             "cell": "rnn", "n_cues": 2, "hidden_size": 8, "rule": "none"}}))
    procs = [python(SWEEP, str(path), str(tmp_path / "runs")) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for d in sorted((tmp_path / "runs" / "tiny").iterdir()):
        if d.name.startswith("."):
            continue
        assert list(read_metrics(d)["batch"]) == [0, 10, 20, 30, 40]  # trained once, not twice interleaved
        assert json.loads((d / "summary.json").read_text())["finished"]


# ---------------------------------------------------------------- one resume check for train and sweep
def test_config_predating_an_option_resumes_under_train_and_sweep(tmp_path):
    from plasticnet.sweep import check_run_folder

    opts = small(batches=5)
    train_run(opts, tmp_path, progress=False)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved.pop("layernorm") is False  # as if written before the option existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_folder(tmp_path, {**opts, "batches": 10})  # the sweep's check accepts it ...
    resume_config(tmp_path, {"task": "cue-reward", "batches": 10})  # ... as train's does (the same function)
    with pytest.raises(RunFolderError, match=r"layernorm=True \(run has False\)"):
        check_run_folder(tmp_path, {**opts, "layernorm": True})
    with pytest.raises(RunFolderError, match=r"n_cues=5 \(run has 2\)"):  # a complete trial: defaults count
        check_run_folder(tmp_path, {k: v for k, v in opts.items() if k != "n_cues"})
    assert train_run({"task": "cue-reward", "batches": 10}, tmp_path, resume=True, progress=False)["finished"]


def test_analysis_does_not_import_the_trainer():
    proc = python("import sys, plasticnet.analysis; print('plasticnet.train' in sys.modules)")
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "False", err


def test_corrupt_checkpoint_in_python_api(tmp_path):
    path = tmp_path / "x.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(path)


KILLED = """
import json, sys
from plasticnet.train import train_run
train_run(json.loads(sys.argv[1]), sys.argv[2], progress=False)
"""


def test_sigkilled_run_resumes_to_byte_identical_metrics(tmp_path):
    opts = small(rule="gradient", cell="lstm", batches=40, val_every=4, steps=12, lr_schedule="cosine",
                 lr_min=1e-4)
    proc = python(KILLED, json.dumps(opts), str(tmp_path / "killed"))
    try:
        deadline = time.time() + 60
        metrics = tmp_path / "killed" / "metrics.csv"
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 4):  # 3 validations
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-run, wherever it is: no clean-up runs
        proc.wait(timeout=10)
    assert not (tmp_path / "killed" / "summary.json").exists()
    train_run({"task": "cue-reward"}, tmp_path / "killed", resume=True, progress=False)
    train_run(opts, tmp_path / "full", progress=False)
    assert (tmp_path / "killed" / "metrics.csv").read_bytes() == (tmp_path / "full" / "metrics.csv").read_bytes()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_malicious_checkpoint_refused_without_running_code(tmp_path):
    train_run(small(batches=5), tmp_path / "run", progress=False)
    marker = tmp_path / "ran"
    torch.save({"model": _Payload(str(marker))}, tmp_path / "run" / "best.pt")
    with pytest.raises(CheckpointError, match="best.pt is damaged") as err:
        load_run(tmp_path / "run")
    assert not marker.exists() and "weights_only" not in str(err.value)


# ---------------------------------------------------------------- the checkpoint is the truth of a run
@pytest.mark.parametrize("edit", [{"steps": 9}, {"n_cues": 3}])
def test_edited_config_yaml_refused_by_eval_and_resume(tmp_path, capsys, edit):
    train_run(small(batches=5), tmp_path, progress=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **edit}, sort_keys=False))
    before = (tmp_path / "metrics.csv").read_bytes()
    key = next(iter(edit))
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"config.yaml does not match the checkpoint .*best.pt.*{key}={edit[key]}", err)
    with pytest.raises(RunFolderError, match=rf"{key}={edit[key]} \(checkpoint has"):
        train_run(small(batches=10, **edit), tmp_path, resume=True, progress=False)
    assert (tmp_path / "metrics.csv").read_bytes() == before  # no second task mixed in


@pytest.mark.parametrize("name, content, missing", [
    ("best.pt", {}, "lacks model"),
    ("last.pt", "drop train_rng", "lacks train_rng"),
])
def test_checkpoint_without_its_fields_is_a_message(tmp_path, capsys, name, content, missing):
    train_run(small(batches=5), tmp_path, progress=False)
    if content == "drop train_rng":
        ck = torch.load(tmp_path / name, weights_only=True)
        del ck["train_rng"]
        content = ck
    torch.save(content, tmp_path / name)
    argv = (["eval", str(tmp_path)] if name == "best.pt" else
            ["train", "cue-reward", "--run-dir", str(tmp_path), "--resume", "--batches", "10", "--quiet"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert missing in err and name in err and "Traceback" not in err


def test_stale_temp_files_removed_on_the_next_start(tmp_path):
    train_run(small(batches=5), tmp_path, progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".best.pt.{int(dead.stdout)}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".last.pt.{os.getppid()}.tmp"  # a live process's file stays
    live.write_bytes(b"in use")
    train_run(small(batches=10), tmp_path, resume=True, progress=False)
    assert not stale.exists() and live.exists()


def test_environment_recorded_in_the_run_folder(tmp_path):
    train_run(small(batches=5, engine="auto"), tmp_path, progress=False)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["engine"] in ("kernel", "fast") and env["torch"] == torch.__version__
    assert env["batch"] == 0 and env["plasticnet"] and "device_name" in env and "numba" in env
    assert "torch" not in yaml.safe_load((tmp_path / "config.yaml").read_text())
    train_run(small(batches=10), tmp_path, resume=True, progress=False)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["batch"] == 5 and env["earlier"][0]["batch"] == 0
