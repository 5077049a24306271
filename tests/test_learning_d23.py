"""Each [D23] task is learnable: reduced runs in the default suite, the paper's sizes as ``slow``.

The trivial baseline of every task is predicting 0 (the targets' mean):
MSE 1/3 for cue–reward and sequence reproduction (U(−1,1) targets) and
(T−1)/T ≈ 0.95 for the standardised regression targets.
"""

import pytest

from plasticnet.train import read_metrics, train_run

TINY = {"cell": "rnn", "hidden_size": 16, "batch_size": 16, "lr": 3e-3, "val_batches": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("options, baseline, bound", [
    ({"task": "cue-reward", "rule": "hebbian", "batches": 60}, 1 / 3, 0.25),
    ({"task": "seq-reproduction", "rule": "hebbian", "seq_length": 3, "delay": 2, "batches": 125}, 1 / 3, 0.1),
    ({"task": "regression", "rule": "gradient", "n": 2, "train_points": 8, "test_points": 8, "batches": 60},
     15 / 16, 0.7),
])
def test_reduced_learning(tmp_path, options, baseline, bound):
    opts = {**TINY, **options, "val_every": options["batches"]}
    summary = train_run(opts, tmp_path, progress=False)
    assert read_metrics(tmp_path)["val_error"][0] > 0.9 * baseline  # untrained: no better than the baseline
    assert summary["final_val_error"] < bound < baseline


# the paper's comparisons at the paper's sizes (hours on a CPU): plastic rules beat the non-plastic network
@pytest.mark.slow
@pytest.mark.parametrize("task, options, batches", [
    ("seq-reproduction", {}, 10000),
    ("cue-reward", {}, 20000),
    ("regression", {"function": "linear"}, 10000),
])
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_paper_comparison(tmp_path, task, options, batches, cell):
    errors = {}
    for rule in ("gradient", "hebbian", "none"):
        s = train_run({"task": task, "rule": rule, "cell": cell, "batches": batches, **options},
                      tmp_path / rule, progress=False)
        errors[rule] = s["best_val_error"]
    assert errors["gradient"] < errors["none"] and errors["hebbian"] < errors["none"]
    if task == "regression":  # gradient-based plasticity wins few-shot regression
        assert errors["gradient"] < errors["hebbian"]
