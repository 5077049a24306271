"""``plasticnet reproduce``: claim files, verdicts on hand-made run folders, one smoke claim end to end."""

import json
import math

import pytest
import yaml

from plasticnet.cli import main
from plasticnet.reproduce import (
    SIZES,
    claim_experiments,
    claim_verdict,
    evaluate_claim,
    load_claims,
    parse_claim,
    run_claim,
    select_claims,
    verdict_of,
    write_claim_report,
    write_summary,
)


def synthetic_claim(**over):
    """A claim over a cue-reward rule grid: gradient below none, and gradient below a 0.1 threshold."""
    data = {
        "id": "synthetic",
        "statement": "gradient below none",
        "experiments": [{"name": "cr", "task": "cue-reward", "grid": {"rule": ["gradient", "none"]}}],
        "sizes": {s: {"base": {"batches": 10}, "seeds": 3} for s in SIZES},
        "metric": "final",
        "test": "welch",
        "comparisons": [
            {"name": "gradient below none", "lower": {"rule": "gradient"}, "than": {"rule": "none"}},
            {"name": "gradient below 0.1", "lower": {"rule": "gradient"}, "than": 0.1},
        ],
    }
    data.update(over)
    return parse_claim(data, "synthetic")


def make_runs(root, values, finished=True):
    """Run folders as the trainer writes them, final validation errors ``values[rule][seed]``."""
    for rule, errors in values.items():
        for seed, err in enumerate(errors):
            d = root / "cr" / f"rule={rule},seed={seed}"
            d.mkdir(parents=True)
            cfg = {"task": "cue-reward", "rule": rule, "cell": "lstm", "batches": 10, "seed": seed,
                   "batch_size": 64, "val_batches": 20}
            (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            (d / "metrics.csv").write_text(f"batch,train_loss,val_error\n0,nan,0.2\n10,{err},{err}\n")
            if finished:
                (d / "summary.json").write_text(json.dumps({"finished": True, "final_val_error": err,
                                                            "best_val_error": err, "batches": 10,
                                                            "elapsed_s": 2.0}))


def test_verdict_holds(tmp_path):
    make_runs(tmp_path, {"gradient": [0.050, 0.055, 0.052], "none": [0.144, 0.146, 0.143]})
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    diff, thresh = res.comparisons
    assert diff.verdict == "holds" and thresh.verdict == "holds" and res.verdict == "holds"
    assert diff.estimate == pytest.approx(0.0523333 - 0.1443333, abs=1e-6)
    assert diff.low < diff.estimate < diff.high < 0
    assert thresh.estimate == pytest.approx(0.0523333 - 0.1, abs=1e-6)
    assert diff.conditions[0].episodes == [20 * 64]
    assert res.finished == res.runs == 6 and res.train_s == pytest.approx(12.0)


def test_verdict_fails(tmp_path):
    make_runs(tmp_path, {"gradient": [0.150, 0.155, 0.152], "none": [0.044, 0.046, 0.043]})
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    assert [c.verdict for c in res.comparisons] == ["fails", "fails"] and res.verdict == "fails"
    assert res.comparisons[0].low > 0


def test_verdict_inconclusive(tmp_path):
    make_runs(tmp_path, {"gradient": [0.05, 0.20, 0.12], "none": [0.10, 0.16, 0.13]})
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    assert res.comparisons[0].verdict == "inconclusive" and res.verdict == "inconclusive"
    assert res.comparisons[0].low < 0 < res.comparisons[0].high


def test_claim_without_runs_is_not_run(tmp_path, capsys):
    assert evaluate_claim(synthetic_claim(), tmp_path, "quick").verdict == "not run"
    assert main(["reproduce", "cue_reward", "--report-only", "--out", str(tmp_path)]) == 0
    assert "cue_reward: not run" in capsys.readouterr().out
    assert not (tmp_path / "quick" / "cue_reward").exists()  # nothing written for it


def test_unfinished_runs_do_not_count(tmp_path):
    make_runs(tmp_path, {"gradient": [0.05, 0.05, 0.05], "none": [0.14, 0.14, 0.14]}, finished=False)
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    assert res.verdict == "inconclusive" and "fewer than 2 finished runs" in res.comparisons[0].note
    assert res.finished == 0 and res.runs == 6


def test_factor_and_bootstrap(tmp_path):
    # "far below": a < 0.5 b; 0.06 vs 0.144: holds at factor 0.5, fails at factor 0.3
    make_runs(tmp_path, {"gradient": [0.060, 0.062, 0.061], "none": [0.144, 0.146, 0.143]})
    for factor, want in ((0.5, "holds"), (0.3, "fails")):
        claim = synthetic_claim(test="bootstrap", comparisons=[
            {"lower": {"rule": "gradient"}, "than": {"rule": "none"}, "factor": factor}])
        res = evaluate_claim(claim, tmp_path, "quick").comparisons[0]
        assert res.verdict == want
        assert res.estimate == pytest.approx(0.061 - factor * 0.1443333, abs=1e-6)
        assert math.isnan(res.df)  # the bootstrap decided


def test_verdict_logic():
    assert verdict_of(-0.3, -0.1, "negative") == "holds"
    assert verdict_of(0.1, 0.3, "negative") == "fails"
    assert verdict_of(-0.1, 0.3, "negative") == "inconclusive"
    assert verdict_of(0.1, 0.3, "positive") == "holds"
    assert verdict_of(math.nan, math.nan, "positive") == "inconclusive"
    with pytest.raises(ValueError, match="expect must be one of negative, positive"):
        verdict_of(0, 1, "down")

    class R:
        def __init__(self, v):
            self.verdict = v

    assert claim_verdict([R("holds"), R("not run")]) == "holds"
    assert claim_verdict([R("holds"), R("inconclusive")]) == "inconclusive"
    assert claim_verdict([R("inconclusive"), R("fails")]) == "fails"
    assert claim_verdict([R("not run")]) == "not run"


def test_bad_claim_files_are_refused():
    with pytest.raises(ValueError, match="unknown key.*'verdict'.*allowed"):
        synthetic_claim(verdict="holds")
    with pytest.raises(ValueError, match=r"condition \{'rule': 'hebbian'\} selects no run"):
        synthetic_claim(comparisons=[{"lower": {"rule": "hebbian"}, "than": {"rule": "none"}}])
    with pytest.raises(ValueError, match="unknown metric 'last'; allowed: final, best"):
        synthetic_claim(metric="last")
    with pytest.raises(ValueError, match="unknown test 'ttest'; allowed: welch, bootstrap"):
        synthetic_claim(test="ttest")
    with pytest.raises(ValueError, match="expect must be one of negative, positive"):
        synthetic_claim(comparisons=[{"terms": [{"where": {"rule": "none"}, "coef": 1}], "expect": "up"}])
    with pytest.raises(ValueError, match="'sizes' must give exactly quick, standard, paper, smoke"):
        synthetic_claim(sizes={"quick": {}})
    with pytest.raises(ValueError, match="unknown option.*'hiden_size'"):
        synthetic_claim(sizes={s: {"base": {"hiden_size": 8}} for s in SIZES})
    two = [{"name": "a", "task": "cue-reward", "grid": {"rule": ["gradient", "none"]}},
           {"name": "b", "task": "cue-reward", "grid": {"rule": ["gradient", "none"]}}]
    with pytest.raises(ValueError, match="needs 'experiment' \\(one of a, b\\)"):
        synthetic_claim(experiments=two)


def test_size_overrides_and_seeds():
    claim = synthetic_claim(sizes={"paper": {"seeds": 4}, "quick": {"grid": {"rule": ["gradient"]}, "seeds": 3},
                                   "standard": {"seeds": 4}, "smoke": {"base": {"batches": 2}}},
                            comparisons=[{"lower": {"rule": "gradient"}, "than": 0.1}])
    (paper,) = claim_experiments(claim, "paper")
    (quick,) = claim_experiments(claim, "quick")
    assert len(paper.trials()) == 8 and len(quick.trials()) == 3
    assert len(claim_experiments(claim, "quick", seeds=5)[0].trials()) == 5
    assert claim_experiments(claim, "smoke")[0].base["batches"] == 2
    with pytest.raises(ValueError, match="unknown size 'huge'; allowed: quick, standard, paper, smoke"):
        claim_experiments(claim, "huge")


def test_packaged_claims():
    claims = load_claims()
    want = {"cue_reward", "seq_reproduction_delay", "seq_reproduction_length", "regression_linear",
            "regression_mlp", "neuromodulation", "oneshot_glyphs", "miconi_near_zero", "miconi_reversal_alpha",
            "pattern_memorisation"}
    assert want <= set(claims)
    for c in claims.values():
        assert c.sizes["quick"]["seeds"] >= 3 and c.sizes["paper"]["seeds"] >= 4
        assert c.sizes["quick"].get("note"), f"{c.id}: quick size must say what it changes"
    # the paper's task definitions at quick size: L = 5 with the longest delay, 12 / 6 inputs
    (delay,) = claim_experiments(claims["seq_reproduction_delay"], "quick")
    assert {t.options["delay"] for t in delay.trials()} == {0, 20, 60}
    assert {t.options["seq_length"] for t in delay.trials()} == {5}
    (lin,) = claim_experiments(claims["regression_linear"], "quick")
    assert {(t.options["n"], t.options["train_points"]) for t in lin.trials()} == {(12, 10), (12, 20)}
    with pytest.raises(ValueError, match="unknown claim id\\(s\\) 'nope'; valid ids: .*cue_reward"):
        select_claims(["nope"], claims)


def test_cli_list_and_bad_id(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "cue_reward\n" in out and "gradient-based plasticity reaches a lower MSE than Hebbian" in out
    assert main(["reproduce", "cue_reward", "nope", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err
    assert "unknown claim id(s) 'nope'" in err and "valid ids:" in err and "miconi_near_zero" in err
    # --set: refused before anything runs when a claim varies the key or the value is bad
    assert main(["reproduce", "cue_reward", "--set", "rule=none", "--out", "/nonexistent/never"]) == 2
    assert "--set rule conflicts with claim 'cue_reward'" in capsys.readouterr().err
    assert main(["reproduce", "cue_reward", "--set", "batches=-1", "--out", "/nonexistent/never"]) == 2
    assert "batches must be a positive integer, got -1" in capsys.readouterr().err


def test_smoke_claim_end_to_end(tmp_path, one_thread):
    claim = load_claims()["pattern_memorisation"]
    logs = []
    res = run_claim(claim, tmp_path, "smoke", log=logs.append)
    root = tmp_path / "smoke" / "pattern_memorisation"
    assert res.runs == res.finished == 4 and res.verdict in ("holds", "fails", "inconclusive")
    report = (root / "report.md").read_text()
    assert "Claim `pattern_memorisation`" in report and res.verdict.upper() in report
    assert "plastic error below half the non-plastic" in report
    saved = json.loads((root / "result.json").read_text())
    assert saved["verdict"] == res.verdict and len(saved["comparisons"][0]["conditions"][0]["values"]) == 2
    again = run_claim(claim, tmp_path, "smoke", log=logs.append)  # resumable: everything is skipped
    assert "4 trials, 4 already finished" in " ".join(logs) and again.verdict == res.verdict
    summary = write_summary([res], tmp_path / "smoke")
    assert "`pattern_memorisation` | smoke" in summary.read_text()
    write_claim_report(res, tmp_path / "copy")
    assert (tmp_path / "copy" / "report.md").is_file()


def test_encoder_pretraining_follows_the_dataset(tmp_path):
    from plasticnet.reproduce import _encoder_path

    claim = load_claims()["oneshot_glyphs"]
    spec, path = _encoder_path(claim, "quick", tmp_path, {})
    assert spec["dataset"] == "glyphs" and path == (tmp_path / "encoder.pt").resolve()
    spec, path = _encoder_path(claim, "quick", tmp_path, {"dataset": "cifar-fs", "image_size": 32, "data_dir": "/d"})
    assert (spec["dataset"], spec["image_size"], spec["data_dir"]) == ("cifar-fs", 32, "/d")
    assert path.name == "encoder-cifar-fs-32.pt"
    spec, _ = _encoder_path(load_claims()["cue_reward"], "quick", tmp_path, {"dataset": "x"})
    assert spec == {}  # a claim without pre-training gets none
