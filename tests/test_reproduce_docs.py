"""The reproduction documents are generated from the evidence and cannot drift from it."""

import json
from pathlib import Path

import pytest

from plasticnet.cli import main
from plasticnet.reproduce import evaluate_claim, write_claim_report
from plasticnet.reproduce_docs import load_results, render_reproduction, render_summary
from test_reproduce import make_runs, synthetic_claim

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_committed_documents_are_the_evidence():
    """docs/reproduction.md and docs/results/summary.md are what the committed result.json files give."""
    assert (DOCS / "reproduction.md").read_text() == render_reproduction(DOCS / "results"), \
        "docs/reproduction.md differs from the evidence: run `plasticnet reproduce --write-docs docs`"
    assert (DOCS / "results" / "summary.md").read_text() == render_summary(DOCS / "results"), \
        "docs/results/summary.md differs from the evidence: run `plasticnet reproduce --write-docs docs`"


def _evidence(root, size, values, why=None):
    folder = root / "results" / size / "synthetic"
    make_runs(folder, values)
    write_claim_report(evaluate_claim(synthetic_claim(), folder, size))
    if why:
        (folder / "why.md").write_text(why)


def test_documents_follow_the_numbers(tmp_path, capsys):
    _evidence(tmp_path, "quick", {"gradient": [0.05, 0.20, 0.12], "none": [0.10, 0.16, 0.13]}, why="Too few seeds.")
    _evidence(tmp_path, "standard", {"gradient": [0.050, 0.055, 0.052], "none": [0.144, 0.146, 0.143]})
    assert main(["reproduce", "--write-docs", str(tmp_path)]) == 0
    doc = (tmp_path / "reproduction.md").read_text()
    # where the claims stand: the largest size run decides
    assert "At the largest size each claim was run (standard): 1 claims — 1 holds" in doc
    assert doc.index("## Size `standard`") < doc.index("## Size `quick`")
    assert "**`synthetic`.** Too few seeds." in doc and "**inconclusive**" in doc
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "| standard | **holds** | 2 of 2 | 6/6 |" in summary
    # a number changes in the evidence: the rendering changes with it
    path = tmp_path / "results" / "standard" / "synthetic" / "result.json"
    data = json.loads(path.read_text())
    data["comparisons"][0]["estimate"] = -0.5
    path.write_text(json.dumps(data))
    assert render_reproduction(tmp_path / "results") != doc


def test_a_result_in_the_wrong_folder_is_refused(tmp_path):
    _evidence(tmp_path, "quick", {"gradient": [0.05, 0.05], "none": [0.1, 0.1]})
    (tmp_path / "results" / "smoke").mkdir()
    (tmp_path / "results" / "quick" / "synthetic").rename(tmp_path / "results" / "smoke" / "synthetic")
    with pytest.raises(ValueError, match="not the result of claim 'synthetic' at size 'smoke'"):
        load_results(tmp_path / "results")
