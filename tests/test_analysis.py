"""analysis.npz: modulated inner learning rate and fast-weight norm over an episode, from a run folder."""

import numpy as np
import pytest
import torch

from plasticnet.analysis import TRACE_KEYS, analyze_run, load_analysis
from plasticnet.cli import main
from plasticnet.train import load_run, train_run

TINY = {"task": "cue-reward", "cell": "rnn", "hidden_size": 12, "batch_size": 4, "batches": 2,
        "val_every": 2, "val_batches": 1, "n_cues": 2}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for rule, modulation in [("gradient", True), ("hebbian", False), ("none", True)]:
        run_dir = root / f"{rule}-{modulation}"
        train_run({**TINY, "rule": rule, "modulation": modulation}, run_dir, progress=False)
        out[(rule, modulation)] = run_dir
    return out


@pytest.mark.parametrize("rule, modulation", [("gradient", True), ("hebbian", False)])
def test_analysis_arrays(runs, rule, modulation):
    run_dir = runs[(rule, modulation)]
    result = analyze_run(run_dir, episodes=10, batch_size=4)
    saved = load_analysis(run_dir)
    assert set(saved) == set(result)
    T = 20  # cue-reward episode length
    for k in TRACE_KEYS:
        assert saved[f"{k}_mean"].shape == (T,) and saved[f"{k}_std"].shape == (T,)
        np.testing.assert_array_equal(saved[f"{k}_mean"], result[f"{k}_mean"])
    assert int(saved["episodes"]) == 10 and list(saved["step"]) == list(range(T))
    np.testing.assert_allclose(saved["mask_frac"], 1.0)  # cue-reward scores every step
    m = saved["modulation_mean"]
    if modulation:
        assert ((m > 0) & (m < 2)).all()
    else:
        np.testing.assert_array_equal(m, 1.0)
        np.testing.assert_array_equal(saved["modulation_std"], 0.0)
    np.testing.assert_allclose(saved["inner_lr_mean"], 0.1 * m, rtol=1e-6)  # float32 trace
    assert (saved["effective_lr_mean"] <= saved["inner_lr_mean"] + 1e-12).all()  # the clip only shrinks
    assert ((saved["clip_scale_mean"] > 0) & (saved["clip_scale_mean"] <= 1)).all()
    assert (saved["fast_norm_mean"] > 0).all()


def test_analysis_equals_direct_trace(runs):
    """The saved means are the per-step means of the network's own trace on the same episodes."""
    run_dir = runs[("gradient", True)]
    result = analyze_run(run_dir, episodes=6, batch_size=6, seed=7, save=False)
    task, model, _ = load_run(run_dir)
    batch = task.sample(6, torch.Generator().manual_seed(7))
    _, _, trace = model(batch.inputs, return_trace=True)
    np.testing.assert_allclose(result["fast_norm_mean"], trace["fast_norm"].mean(0).detach().double().numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(result["modulation_mean"], trace["modulation"].mean(0).detach().double().numpy(),
                               rtol=1e-6)
    again = analyze_run(run_dir, episodes=6, batch_size=6, seed=7, save=False)
    np.testing.assert_array_equal(again["fast_norm_mean"], result["fast_norm_mean"])


def test_rule_none_has_nothing_to_analyse(runs):
    run_dir = runs[("none", True)]
    assert analyze_run(run_dir, episodes=4) is None
    assert load_analysis(run_dir) is None


def test_cli(runs, capsys, tmp_path):
    run_dir = runs[("hebbian", False)]
    assert main(["analyze", str(run_dir), "--episodes", "4"]) == 0
    assert "analysis.npz" in capsys.readouterr().out
    assert main(["analyze", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_report_analyze_fills_missing_analyses(tmp_path):
    run_dir = tmp_path / "exp" / "run"
    train_run({**TINY, "rule": "hebbian"}, run_dir, progress=False)
    assert load_analysis(run_dir) is None
    assert main(["report", str(tmp_path), "--analyze"]) == 0
    assert load_analysis(run_dir)["fast_norm_mean"].shape == (20,)
    assert "exp_analysis.png" in (tmp_path / "report.md").read_text()


def test_every_network_gets_spread_and_a_fast_weight_heatmap(runs):
    result = analyze_run(runs[("hebbian", False)], episodes=8, batch_size=4, save=False)
    T = len(result["step"])
    assert list(result["heatmap_steps"]) == [4, 9, 14, 19] and result["heatmap"].shape == (4, 12, 12)
    assert np.abs(result["heatmap"][-1]).sum() > 0
    for key in ("modulation", "fast_norm"):
        assert result[f"{key}_q10"].shape == (T,)
        assert np.all(result[f"{key}_q10"] <= result[f"{key}_q90"] + 1e-12)


MICONI = [("one-shot-patterns", "neuromod", {"hidden_size": 2}), ("pattern-completion", "trace", {}),
          ("pattern-memorisation", "trace-learned", {"pattern_size": 20, "input_scale": 1.0})]


@pytest.mark.parametrize("task, rule, extra", MICONI)
def test_hebbian_trace_networks_are_analysed(tmp_path, task, rule, extra):
    """Miconi's networks: modulation and ‖α ⊙ Hebb_t‖ per step, equal to stepping the network by hand."""
    from plasticnet.analysis import trace_layer, trace_net_episode

    run_dir = tmp_path / "run"
    train_run({"task": task, "rule": rule, "batches": 2, "batch_size": 4, "val_every": 2, "val_batches": 1,
               **extra}, run_dir, progress=False)
    result = analyze_run(run_dir, episodes=6, batch_size=6)
    T = len(result["step"])
    assert result["fast_norm_mean"].shape == (T,) and result["mask_frac"].shape == (T,)
    assert result["fast_norm_mean"][-1] > 0
    assert result["heatmap"].shape[0] == len(result["heatmap_steps"])
    task_, model, _ = load_run(run_dir)
    batch = task_.sample(6, torch.Generator().manual_seed(1234))
    trace = trace_net_episode(model, batch.inputs, steps=(T - 1,))
    np.testing.assert_allclose(result["fast_norm_mean"], trace["fast_norm"].double().mean(0).numpy(), rtol=1e-5)
    layer = trace_layer(model)
    with torch.no_grad():
        _, state = model(batch.inputs)
    torch.testing.assert_close(trace[f"fast_{T - 1}"], layer.effective_alpha() * state.hebb)
    if rule == "neuromod":
        assert not np.allclose(result["modulation_mean"], 1.0)
    else:
        assert np.allclose(result["modulation_mean"], 1.0)


def test_report_analyze_covers_miconi_and_skips_what_it_cannot(tmp_path, capsys):
    """A folder mixing a Miconi run with a PlasticRNN run: both analysed, one figure each, the report whole."""
    train_run({"task": "one-shot-patterns", "rule": "neuromod", "batches": 2, "batch_size": 4, "val_every": 2,
               "val_batches": 1}, tmp_path / "miconi" / "run", progress=False)
    train_run({**TINY, "rule": "hebbian", "threads": 1}, tmp_path / "d23" / "a", progress=False)
    train_run({**TINY, "rule": "gradient", "val_every": 1}, tmp_path / "d23" / "b", progress=False)
    assert main(["report", str(tmp_path), "--analyze"]) == 0
    report = (tmp_path / "report.md").read_text()
    for fig in ("miconi_analysis.png", "miconi_fast_weights.png", "d23_analysis.png", "d23_fast_weights.png"):
        assert fig in report and (tmp_path / "figures" / fig).is_file()
    # threads and val_every are how the runs were made, not conditions; batches appears once, as a column
    d23 = report[report.index("## d23"):]
    header = next(line for line in d23.splitlines() if line.startswith("| "))
    assert header.startswith("| rule | seeds") and header.count("batches") == 1
