"""``plasticnet demo``: tiny run in the default suite; the reference reproduction is ``slow``."""

import pytest
import yaml

from plasticnet.cli import main
from plasticnet.demo import REFERENCE, run_demo

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_command(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--batches", "4", "--out", str(out), "--quiet", "--jobs", "1", "--set", "hidden_size=8",
                 "--set", "val_every=2", "--set", "val_batches=1", "--set", "batch_size=4", "--set", "steps=6"])
    assert code == 0
    text = capsys.readouterr().out
    for rule in ("gradient", "hebbian", "none"):
        assert (out / rule / "summary.json").is_file()
        config = yaml.safe_load((out / rule / "config.yaml").read_text())
        assert (config["task"], config["cell"], config["rule"]) == ("cue-reward", "rnn", rule)
        assert any(line.startswith(rule) and f"{REFERENCE[rule]:.3f}" in line for line in text.splitlines())
    png = out / "cue_reward_curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # running again reuses the finished runs
    before = (out / "hebbian" / "metrics.csv").read_text()
    assert main(["demo", "--batches", "4", "--out", str(out), "--quiet", "--rules", "hebbian", "--jobs", "1",
                 "--set", "hidden_size=8", "--set", "val_every=2", "--set", "val_batches=1",
                 "--set", "batch_size=4"]) == 0
    assert (out / "hebbian" / "metrics.csv").read_text() == before


@pytest.mark.slow  # spawning processes that import torch takes long on a loaded machine
def test_demo_parallel_jobs_match_sequential(tmp_path):
    extra = {"hidden_size": 8, "val_every": 2, "val_batches": 1, "batch_size": 4, "steps": 6}
    seq = run_demo(tmp_path / "seq", batches=4, rules=("hebbian", "none"), jobs=1, extra=extra, progress=False)
    par = run_demo(tmp_path / "par", batches=4, rules=("hebbian", "none"), jobs=2, extra=extra, progress=True)
    for rule in ("hebbian", "none"):
        assert par[rule]["final_val_error"] == seq[rule]["final_val_error"]


def test_demo_refuses_bad_input(tmp_path, capsys):
    assert main(["demo", "--rules", "oja", "--out", str(tmp_path)]) == 2
    assert "unknown rule 'oja'; allowed: 'gradient', 'hebbian', 'none'" in capsys.readouterr().err
    assert main(["demo", "--set", "hiden=1", "--out", str(tmp_path)]) == 2
    assert "valid keys" in capsys.readouterr().err


def test_demo_defaults_are_the_reference_figure():
    from plasticnet.demo import DEFAULT_SIZE, demo_options, size_options
    from plasticnet.train import resolved_config

    sizes = {}
    for rule in ("gradient", "hebbian", "none"):
        config, task, model = resolved_config(demo_options(rule, 5000, 0, size_options(DEFAULT_SIZE, rule)))
        assert (config["task"], config["cell"], config["batches"], config["batch_size"]) == \
            ("cue-reward", "rnn", 5000, 64)
        assert (config["lr"], config["optimizer"], config["grad_clip"]) == (1e-3, "adamw", 5.0)
        sizes[rule] = model.hidden_size
    assert sizes == {"gradient": 128, "hebbian": 128, "none": 192}


@pytest.mark.slow
def test_demo_reproduces_the_reference_outcome(tmp_path):
    """Full size, 5,000 batches: both plastic rules near 0.06, the non-plastic RNN near 0.144."""
    s = run_demo(tmp_path, jobs=3, progress=False)
    assert s["gradient"]["final_val_error"] < 0.09
    assert s["hebbian"]["final_val_error"] < 0.09
    assert 0.12 < s["none"]["final_val_error"] < 0.17


def test_demo_sizes():
    from plasticnet.demo import SIZES, size_options

    assert SIZES == {"figure": (64, 5000), "quick": (32, 5000), "paper": (128, 5000)}
    # the reference figure's configuration (its experiment skips the RNN's ×2): what `make demo` runs
    assert {r: size_options("figure", r)["hidden_size"] for r in ("gradient", "hebbian", "none")} == \
        {"gradient": 128, "hebbian": 128, "none": 192}
    from plasticnet.cli import build_parser

    assert build_parser().parse_args(["demo"]).size == "figure"
    assert {r: size_options("paper", r)["hidden_size"] for r in ("gradient", "hebbian", "none")} == \
        {"gradient": 256, "hebbian": 256, "none": 384}
    assert {r: size_options("quick", r)["hidden_size"] for r in ("gradient", "hebbian", "none")} == \
        {"gradient": 64, "hebbian": 64, "none": 96}
    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        size_options("huge", "none")


@pytest.mark.slow
def test_quick_demo_reproduces_the_outcome(tmp_path):
    """``make demo``'s size: both plastic rules well below the flat non-plastic network."""
    s = run_demo(tmp_path, batches=5000, jobs=3, progress=False, size="quick")
    none = s["none"]["final_val_error"]
    assert 0.12 < none < 0.17
    assert s["gradient"]["final_val_error"] < 0.75 * none
    assert s["hebbian"]["final_val_error"] < 0.75 * none
