"""The report reads run folders only: tables, intervals, flags and figures on hand-made folders."""

import json
import math
import re

import numpy as np
import pytest
import yaml

from plasticnet import matched_hidden_size
from plasticnet.report import condition_keys, load_runs, t_interval, t_quantile, write_report


def make_run(path, config, errors, finished=True, every=10):
    """A run folder as the trainer writes it: config.yaml, metrics.csv, summary.json when finished."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # as the trainer
    rows = ["batch,train_loss,val_error,val_mse"]
    for i, e in enumerate(errors):
        rows.append(f"{(i + 1) * every},{e * 1.1},{e},{e}")
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    if finished:
        (path / "summary.json").write_text(json.dumps({
            "finished": True, "best_val_error": min(errors), "final_val_error": errors[-1],
            "batches": len(errors) * every, "elapsed_s": 1.0}))


def test_t_quantile_values():
    # t_{0.975} of the t distribution: table values and the large-df limit
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(60) == pytest.approx(2.000, abs=2e-3)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=1e-3)


def test_t_interval():
    x = [1.0, 2.0, 3.0, 4.0]
    mean, half, n = t_interval(x)
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182 * np.std(x, ddof=1) / 2, rel=1e-6)
    assert t_interval([5.0])[:1] == (5.0,) and math.isnan(t_interval([5.0])[1])
    assert t_interval([math.nan, 1.0, 3.0])[2] == 2


@pytest.fixture
def sweep_dir(tmp_path):
    """rules x cells, 3 seeds (one unfinished), hidden_size matched as the sweep sets it."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    truth = {}
    for rule in ("gradient", "none"):
        for cell in ("rnn", "lstm"):
            for seed in range(3):
                errors = list(rng.uniform(0.05, 0.2, size=4))
                finished = not (rule == "none" and cell == "lstm" and seed == 2)
                if not finished:
                    errors = errors[:2]
                cfg = {"task": "cue-reward", "rule": rule, "cell": cell, "seed": seed, "batches": 40,
                       "hidden_size": matched_hidden_size(rule, cell), "lr": 0.001}
                make_run(root / "exp" / f"rule={rule},cell={cell},seed={seed}", cfg, errors, finished)
                truth.setdefault((rule, cell), []).append(errors[-1])
    return root, truth


def parse_table(text):
    """Rows of the per-condition table of report.md: {(rule, cell): (mean, half, seeds)}."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| (\w+) \| (\w+) \| (\d+)/(\d+) \| ([\d.e-]+)(?: ± ([\d.e-]+))?", line)
        if m:
            cell, rule = m.group(1), m.group(2)
            rows[(rule, cell)] = (float(m.group(5)), float(m.group(6) or "nan"), int(m.group(4)))
    return rows


def test_condition_keys_drop_seed_and_matched_hidden_size(sweep_dir):
    root, _ = sweep_dir
    assert condition_keys(load_runs(root)) == ["cell", "rule"]


def test_report_table_matches_metrics(sweep_dir):
    root, truth = sweep_dir
    path = write_report(root)
    text = path.read_text()
    rows = parse_table(text)
    assert set(rows) == set(truth)
    for key, errors in truth.items():
        mean, half, n = rows[key]
        assert n == 3
        assert mean == pytest.approx(np.mean(errors), rel=1e-3)
        want = t_quantile(2) * np.std(errors, ddof=1) / math.sqrt(3)
        assert half == pytest.approx(want, rel=0.05)
    assert "2/3" in text and " *" in text  # the unfinished seed is flagged
    assert "rule=none,cell=lstm,seed=2" in text and "last validation at batch 20 of 40" in text
    assert "rule \\ cell" in text  # the paper's layout


def test_report_figures(sweep_dir):
    root, _ = sweep_dir
    out = root / "out"
    text = write_report(root / "exp", out=out).read_text()
    figs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figs and all((out / f).is_file() and (out / f).stat().st_size > 1000 for f in figs)
    assert "figures/exp_curves.png" in figs or any("curves" in f for f in figs)


def test_error_vs_numeric_key_and_analysis(tmp_path):
    root = tmp_path / "runs"
    for delay in (0, 10, 40):
        for seed in range(2):
            run = root / "d" / f"delay={delay},seed={seed}"
            make_run(run, {"task": "seq-reproduction", "rule": "hebbian", "cell": "rnn", "delay": delay,
                           "seed": seed}, [0.3, 0.1 + delay / 100])
            T = 5 + delay
            arrays = {f"{k}_{s}": np.full(T, 0.1) for k in ("modulation", "inner_lr", "effective_lr",
                                                             "clip_scale", "fast_norm") for s in ("mean", "std")}
            np.savez(run / "analysis.npz", step=np.arange(T), **arrays)
    text = write_report(root).read_text()
    assert "figures/d_error_vs_delay.png" in text
    assert "figures/d_analysis.png" in text
    assert (root / "figures" / "d_analysis.png").is_file()
    # three episode lengths (5, 15, 45 steps): a row of panels each, so each has its own scored steps
    import matplotlib.image

    height, width = matplotlib.image.imread(root / "figures" / "d_analysis.png").shape[:2]
    assert height > 2 * width / 4 * 3.6 / 4.5


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        write_report(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no run folders"):
        write_report(tmp_path)


def test_zipped_keys_get_one_sweep_plot(tmp_path):
    root = tmp_path / "runs"
    for rule in ("gradient", "hebbian"):
        for lr in (0.0, 0.05, 0.1):
            for seed in range(2):
                make_run(root / "z" / f"{rule},{lr},{seed}", {"task": "cue-reward", "rule": rule, "inner_lr": lr,
                                                              "inner_decay": lr, "seed": seed}, [0.2, 0.1 + lr])
    text = write_report(root).read_text()
    assert "| inner_lr | inner_decay | rule |" in text
    assert "z_error_vs_inner_lr.png" in text and "error_vs_inner_decay" not in text


def test_cli(sweep_dir, capsys, tmp_path):
    from plasticnet.cli import main

    root, _ = sweep_dir
    out = tmp_path / "rep"
    assert main(["report", str(root), "--out", str(out), "--title", "T"]) == 0
    assert (out / "report.md").read_text().startswith("# T")
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_unreadable_config_skipped_with_a_warning(tmp_path):
    root = tmp_path / "exp"
    for seed in range(3):
        make_run(root / f"seed={seed}", {"task": "cue-reward", "rule": "none", "seed": seed}, [0.5, 0.4])
    bad = root / "seed=1" / "config.yaml"
    bad.write_text("task: [cue-reward\n")  # a YAML syntax error
    with pytest.warns(UserWarning, match=f"skipped {root / 'seed=1'}: {bad} cannot be read"):
        runs = load_runs(root)
    assert [r.path.name for r in runs] == ["seed=0", "seed=2"]
    with pytest.warns(UserWarning, match="seed=1"):
        assert write_report(root).is_file()


def test_hand_edited_folders_are_messages_not_tracebacks(tmp_path, capsys):
    from plasticnet.cli import main

    root = tmp_path / "exp"
    make_run(root / "a", {"task": "cue-reward", "rule": "none", "lr": {"a": 1}, "seed": 0}, [0.5, 0.4])
    make_run(root / "b", {"task": "cue-reward", "rule": "none", "lr": 0.1, "seed": 0}, [0.5, 0.3])
    make_run(root / "c", {"task": "cue-reward", "rule": "none", "lr": 0.2, "seed": 0}, [0.5, 0.3])
    summary = root / "c" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "final_val_error": "abc"}))
    (root / "b" / "analysis.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.warns(UserWarning) as caught:
        assert main(["report", str(root)]) == 0
    messages = " ".join(str(w.message) for w in caught)
    assert f"{summary}: final_val_error must be a number or null, got 'abc'" in messages
    assert "analysis.npz cannot be read" in messages
    text = (root / "report.md").read_text()
    assert "(('a', 1),)" in text and "| 0.1 |" in text  # both readable runs reported


def test_long_legends_go_beside_the_axes():
    """Past six lines a legend is drawn beside the plot, not over the curves."""
    from plasticnet import report_figures as figs

    plt = figs._plt()
    for n, outside in [(3, False), (8, True)]:
        fig, ax = plt.subplots()
        for i in range(n):
            ax.plot([0, 1], [i, i], label=f"inner_lr={i / 10}, rule=hebbian (n=4)")
        figs._legend(ax, n)
        fig.canvas.draw()
        legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert (legend.x0 >= axes.x1) == outside
        plt.close(fig)
