"""plasticnet sweep: a tiny real sweep with both backends, skip/resume, and the report on its folders."""

import json
import math
import re

import numpy as np
import pytest
import yaml

from plasticnet.cli import main
from plasticnet.experiments import parse_experiment
from plasticnet.report import write_report
from plasticnet.runfolder import read_metrics
from plasticnet.sweep import plan, run_sweep

TINY = {"batch_size": 4, "val_every": 2, "val_batches": 1, "batches": 4, "cell": "rnn", "n_cues": 2}


def tiny_experiment(name="tiny", seeds=(0, 1), **base):
    return parse_experiment({"name": name, "task": "cue-reward", "base": {**TINY, **base},
                             "grid": {"rule": ["gradient", "none"]}, "seeds": list(seeds), "size_matching": 8})


def table_means(text):
    """{rule: mean final val error} from the report's per-condition table (rows start with the rule)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\| (gradient|none) \| (\d+)/(\d+) \| ([\d.e-]+)", line)
        if m:
            out[m.group(1)] = (float(m.group(4)), int(m.group(2)), int(m.group(3)))
    return out


def check_report_matches_runs(root, outcomes, seeds=2):
    text = write_report(root).read_text()
    means = table_means(text)
    for rule in ("gradient", "none"):
        finals = [read_metrics(o.run_dir)["val_error"][-1]
                  for o in outcomes if o.trial.options["rule"] == rule]
        mean, done, n = means[rule]
        assert (done, n) == (seeds, seeds)
        assert mean == pytest.approx(np.mean(finals), rel=1e-3)
    return text


def test_local_sweep_runs_skips_and_resumes(tmp_path):
    exp = tiny_experiment(batches=2)
    outcomes = run_sweep(exp, tmp_path, workers=2, log=lambda s: None)
    assert [o.status for o in outcomes] == ["finished"] * 4
    for o in outcomes:
        assert o.run_dir.parent == tmp_path.resolve() / "tiny"
        summary = json.loads((o.run_dir / "summary.json").read_text())
        assert summary["finished"] and summary["batches"] == 2
        config = yaml.safe_load((o.run_dir / "config.yaml").read_text())
        assert config["hidden_size"] == (16 if o.trial.options["rule"] == "gradient" else 24)
        has_analysis = (o.run_dir / "analysis.npz").is_file()
        assert has_analysis == (o.trial.options["rule"] != "none")

    again = run_sweep(exp, tmp_path, workers=2, log=lambda s: None)  # all finished: nothing runs
    assert [o.status for o in again] == ["skipped"] * 4
    mtime = outcomes[0].run_dir.joinpath("metrics.csv").stat().st_mtime_ns
    assert again[0].run_dir.joinpath("metrics.csv").stat().st_mtime_ns == mtime

    # a longer sweep over the same folders resumes each trial from its last.pt (as after a kill)
    longer = tiny_experiment(batches=4)
    assert [o.status for o in plan(longer, tmp_path)] == ["partial"] * 4
    resumed = run_sweep(longer, tmp_path, workers=1, log=lambda s: None)
    assert [o.status for o in resumed] == ["finished"] * 4
    for o in resumed:
        assert list(read_metrics(o.run_dir)["batch"]) == [0, 2, 4]
    check_report_matches_runs(tmp_path / "tiny", resumed)


def test_sweep_refuses_changed_options(tmp_path):
    run_sweep(tiny_experiment(batches=2), tmp_path, log=lambda s: None)
    with pytest.raises(ValueError, match="other options.*lr"):
        plan(tiny_experiment(batches=2, lr=0.01), tmp_path)


def test_bad_option_fails_before_running(tmp_path):
    with pytest.raises(ValueError, match="trial rule=gradient,seed=0: unknown option.*'hiden'"):
        run_sweep(tiny_experiment(hiden=3), tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_cli_dry_run_and_errors(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "task": "cue-reward", "base": TINY,
                                    "grid": {"rule": ["gradient", "none"]}, "seeds": 2}))
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "[new     ] rule=none,seed=1" in out
    assert not (tmp_path / "runs").exists()
    assert main(["sweep", str(path), "--dry-run", "--set", "rule=none"]) == 2
    assert "conflicts" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_ray_missing_gives_install_hint(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'plasticnet\[sweep\]'"):
        run_sweep(tiny_experiment(batches=2), tmp_path, backend="ray", log=lambda s: None)


def test_ray_backend_matches_local(tmp_path, monkeypatch):
    pytest.importorskip("ray.tune")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    exp = tiny_experiment(batches=2, seeds=[0])  # two trials: Ray's start-up is the cost here
    ray_out = run_sweep(exp, tmp_path / "ray", backend="ray", workers=2, log=lambda s: None)
    assert [o.status for o in ray_out] == ["finished"] * 2
    import ray

    assert not ray.is_initialized()  # the backend shut down the Ray instance it started
    local = run_sweep(exp, tmp_path / "local", workers=1, log=lambda s: None)
    for a, b in zip(ray_out, local):  # seeded runs: the same numbers on either backend
        ma, mb = read_metrics(a.run_dir), read_metrics(b.run_dir)
        np.testing.assert_allclose(ma["val_error"], mb["val_error"], rtol=1e-6)
        assert (a.run_dir / "analysis.npz").is_file() == (b.run_dir / "analysis.npz").is_file()
    check_report_matches_runs(tmp_path / "ray" / "tiny", ray_out, seeds=1)
    assert not any(math.isnan(o.summary["final_val_error"]) for o in ray_out)


def test_sweep_progress_counts_every_trials_batches(tmp_path, capsys):
    """One bar over the batches of all pending trials, fed from each run folder; a resumed trial starts
    where its metrics.csv stands; closing lines go above the bar."""
    from plasticnet.sweep import SweepProgress

    exp = tiny_experiment(batches=4, seeds=(0,))
    pending = plan(exp, tmp_path)
    first = pending[0].run_dir
    first.mkdir(parents=True)
    (first / "metrics.csv").write_text("batch,train_loss,val_error\n0,,0.5\n2,0.4,0.3\n")
    lines = []
    with SweepProgress(pending, log=lines.append, interval=0.05) as bar:
        assert (bar.bar.total, bar.bar.n) == (8, 2)
        (first / "metrics.csv").write_text("batch,train_loss,val_error\n0,,0.5\n2,0.4,0.3\n4,0.3,0.2\n")
        bar.poll()
        assert bar.bar.n == 4
        bar.trial_done(pending[1].run_dir)  # failed early: its batches count as done
        bar.log("tiny trial: FAILED")
        assert bar.bar.n == 8 and bar.finished == 1
    err = capsys.readouterr()
    assert "8/8" in err.err and "tiny trial: FAILED" in err.out + err.err

    with SweepProgress(pending, enabled=False, log=lines.append) as quiet:
        quiet.log("a line")
    assert lines == ["a line"]
    outcomes = run_sweep(exp, tmp_path / "real", progress=True, log=lambda s: None)  # around a real sweep
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert "batch" in capsys.readouterr().err
