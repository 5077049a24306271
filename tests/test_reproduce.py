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

    assert claim_verdict([R("holds"), R("not run")]) == "partial"  # never plain holds on part of the evidence
    assert claim_verdict([R("inconclusive"), R("not run")]) == "partial"
    assert claim_verdict([R("fails"), R("not run")]) == "fails"
    assert claim_verdict([R("holds"), R("holds")]) == "holds"
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
    for bad in ("../../X", "..", "a/b", "."):  # the id names the claim's folder under --out
        with pytest.raises(ValueError, match="claim id"):
            synthetic_claim(id=bad)


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
        assert c.sizes["standard"]["seeds"] >= 4 and c.sizes["standard"].get("note")
        # standard runs every comparison of the claim (RNN and LSTM, the non-plastic network, ...)
        trials = [(e.name, t.options) for e in claim_experiments(c, "standard") for t in e.trials()]
        for comp in c.comparisons:
            for term in comp.terms:
                assert any(all(opts.get(k) == v for k, v in term.where.items() if k != "experiment")
                           and term.where.get("experiment", name) == name for name, opts in trials), \
                    f"{c.id}: comparison {comp.name!r} is not run at standard size"
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
    assert "    standard    24 runs (4 seeds)" in out  # cue_reward: 3 rules × 2 cells × 4 seeds
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
    assert "PIPELINE CHECK, NOT EVIDENCE" in report  # a smoke verdict is never evidence
    summary = json.loads((root / "result.json").read_text())
    assert summary["evidence"] is False
    assert all(math.isfinite(r.summary["test_error"]) for r in (root / "pattern_memorisation").iterdir()
               for r in [type("R", (), {"summary": json.loads((r / "summary.json").read_text())})])
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
    for bad, what in (({"dataset": "../../../tmp/x"}, "dataset"), ({"image_size": "../x"}, "image_size")):
        with pytest.raises(ValueError, match=what):  # refused before any path is built from it
            _encoder_path(claim, "quick", tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


def _rerun_config(root, folder, **changes):
    d = root / "cr" / folder
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg.update(changes)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_only_this_invocations_runs_are_judged(tmp_path):
    """Stale runs (other batches), extra seeds and stray folders are listed apart, never pooled."""
    make_runs(tmp_path, {"gradient": [0.050, 0.055, 0.052, 0.30], "none": [0.144, 0.146, 0.143, 0.01]})
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")  # 3 seeds: the seed-3 runs are not judged
    assert res.verdict == "holds" and res.runs == 6
    assert sorted(p.name for p in res.extra) == ["rule=gradient,seed=3", "rule=none,seed=3"]
    assert len(evaluate_claim(synthetic_claim(), tmp_path, "quick", seeds=4).comparisons[0].conditions[0].values) == 4
    _rerun_config(tmp_path, "rule=gradient,seed=1", batches=3)  # a shorter run in a trial's folder
    _rerun_config(tmp_path, "rule=none,seed=2", threads=1, engine="fast")  # how it ran does not matter
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    assert [(p.name, keys) for p, keys in res.stale] == [("rule=gradient,seed=1", ["batches"])]
    assert res.comparisons[0].conditions[0].values == [0.050, 0.052]
    assert res.comparisons[0].conditions[1].values == [0.144, 0.146, 0.143]
    write_claim_report(res)
    report = (tmp_path / "report.md").read_text()
    assert "`rule=gradient,seed=1`: made with other batches" in report
    assert "`rule=gradient,seed=3`: not a trial of this size" in report


def test_partial_verdict_says_how_many_ran(tmp_path):
    claim = synthetic_claim(sizes={s: {"base": {"batches": 10}, "seeds": 3,
                                       **({"grid": {"rule": ["gradient"]}} if s == "quick" else {})}
                                   for s in SIZES})
    make_runs(tmp_path, {"gradient": [0.050, 0.055, 0.052]})
    res = evaluate_claim(claim, tmp_path, "quick")
    assert [c.verdict for c in res.comparisons] == ["not run", "holds"]
    assert res.verdict == "partial" and res.verdict_label == "partial (1 of 2 comparisons run)"
    write_claim_report(res)
    assert "PARTIAL (1 OF 2 COMPARISONS RUN)" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "result.json").read_text())["comparisons_run"] == 1


def test_reference_score_beside_the_verdicts(tmp_path):
    make_runs(tmp_path, {"gradient": [0.050, 0.055, 0.052], "none": [0.144, 0.146, 0.143]})
    for i, d in enumerate(sorted((tmp_path / "cr").iterdir())):  # the test score says the opposite
        summary = json.loads((d / "summary.json").read_text())
        summary.update(test_error=0.2 + 0.001 * i if "gradient" in d.name else 0.1 + 0.001 * i,
                       test_metrics={"error": 0.0})
        (d / "summary.json").write_text(json.dumps(summary))
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    diff = res.comparisons[0]
    assert diff.verdict == "holds" and diff.alt["test"]["verdict"] == "fails"
    assert diff.alt["test"]["estimate"] == pytest.approx(0.201 - 0.104, abs=1e-9)
    assert "test query" not in diff.alt  # no query_error in these summaries
    write_claim_report(res)
    assert "]: fails |" in (tmp_path / "report.md").read_text()


def test_training_into_another_sizes_folders_is_refused(tmp_path, capsys):
    claims_dir = tmp_path / "claims"
    claims_dir.mkdir()
    data = {"id": "synthetic", "statement": "gradient below none",
            "experiments": [{"name": "cr", "task": "cue-reward", "grid": {"rule": ["gradient", "none"]}}],
            "sizes": {s: {"base": {"batches": 10}, "seeds": 3} for s in SIZES},
            "comparisons": [{"lower": {"rule": "gradient"}, "than": {"rule": "none"}}]}
    (claims_dir / "s.yaml").write_text(yaml.safe_dump(data))
    root = tmp_path / "out" / "quick" / "synthetic"
    make_runs(root, {"gradient": [0.05], "none": [0.14]})
    _rerun_config(root, "rule=gradient,seed=0", batches=200)
    code = main(["reproduce", "synthetic", "--claims-dir", str(claims_dir), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "holds a run made with other options (batches=200 (claim: 10))" in err
    assert not (root / "cr" / "rule=none,seed=1").exists()  # nothing trained


def test_failed_trials_make_the_exit_status_nonzero(tmp_path, capsys, monkeypatch):
    import plasticnet.reproduce as rp

    def failing_claim(claim, out, size, seeds, backend, workers, train, overrides, log):
        res = evaluate_claim(claim, tmp_path / "none", size, seeds)
        res.root, res.failed = tmp_path, 12
        return res

    monkeypatch.setattr(rp, "run_claim", failing_claim)
    assert main(["reproduce", "cue_reward", "--size", "smoke", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "12 failed" in captured.out and "12 run(s) failed" in captured.err


def test_list_shows_the_measured_cost(tmp_path, capsys):
    make_runs(tmp_path / "quick" / "cue_reward", {"gradient": [0.05]})
    (tmp_path / "quick" / "cue_reward" / "result.json").write_text(json.dumps({"train_s": 600.0, "finished": 9}))
    assert main(["reproduce", "--list", "--out", str(tmp_path)]) == 0
    assert "quick        9 runs (3 seeds); measured 10 min of training for 9 finished runs" in capsys.readouterr().out


def test_report_says_whether_training_flattened(tmp_path):
    from plasticnet.reproduce import last_fifth_fall

    make_runs(tmp_path, {"gradient": [0.05, 0.05, 0.05], "none": [0.199, 0.2, 0.2]})  # logged 0.2 at batch 0
    res = evaluate_claim(synthetic_claim(), tmp_path, "quick")
    gradient = res.runs_by_exp["cr"][0]
    assert last_fifth_fall(gradient) == pytest.approx(1.0)  # all of its improvement came after batch 8 of 10
    write_claim_report(res)
    report = (tmp_path / "report.md").read_text()
    assert "| rule=gradient | 100.0%, 100.0%, 100.0% | **no** |" in report
    assert "| rule=none | 100.0%, —, — | **no** |" in report  # two seeds never went below their start


def test_report_lists_a_condition_that_never_improved(tmp_path):
    make_runs(tmp_path, {"gradient": [0.05, 0.05, 0.05], "none": [0.2, 0.2, 0.2]})  # none stays at its start
    write_claim_report(evaluate_claim(synthetic_claim(), tmp_path, "quick"))
    assert "| rule=none | —, —, — | never below its start |" in (tmp_path / "report.md").read_text()
