"""Our network is the paper's network: every case of tests/data/d23_vectors.pt.

Each case loads the slow parameters the public reference code used into a
float64 PlasticRNN (each engine), runs its input and compares outputs, final fast weights
and the gradients of sum(outputs²) with what the reference computed.
"""

import pytest
import torch

from d23_reference import FAST_NAMES, case_ids, load_case, load_cases, parameter_map

TOL = 1e-10


@pytest.fixture(scope="module")
def reference():
    return load_cases()


def _case(reference, cid):
    configs, vectors = reference
    return next(c for c in configs if c["id"] == cid), vectors


@pytest.mark.parametrize("cid", case_ids())
@pytest.mark.parametrize("engine", ["reference", "fast", "kernel"])
def test_reference_case(reference, cid, engine):
    cfg, vectors = _case(reference, cid)
    net, inputs, theirs = load_case(cfg, vectors, engine=engine)
    out, state = net(inputs)

    # outputs at every step
    torch.testing.assert_close(out, vectors[f"{cid}/output"], atol=TOL, rtol=0)

    # final fast weights (after the last step's update)
    prefix = f"{cid}/fast/"
    fast_keys = [k for k in vectors if k.startswith(prefix)]
    assert (state.fast is None) == (not fast_keys)
    for key in fast_keys:
        layer, part = key[len(prefix):].rsplit(".", 1)
        ours = getattr(net.fast_weights(state)[FAST_NAMES[layer]], part)
        if ours is None:  # Hebbian biases: never changed, zero in the reference too
            assert vectors[key].abs().max() == 0
        else:
            torch.testing.assert_close(ours, vectors[key], atol=TOL, rtol=0)

    # outer gradients of sum(outputs²)
    params = dict(net.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(out.square().sum(), list(params.values()))))
    mapping, unmatched = parameter_map(cfg)
    for name in theirs:
        ref = vectors[f"{cid}/grad/{name}"]
        if name in unmatched:  # a parameter our network does not have: it had no effect there
            assert ref.abs().max() == 0, name
            continue
        target, fn = mapping[name]
        if cfg["rule"] == "none" and name.startswith("out_fc"):
            assert ref[cfg["output_size"]:].abs().max() == 0  # the unused extra units
        torch.testing.assert_close(grads[target], fn(ref) if fn else ref, atol=TOL, rtol=0, msg=name)


def test_all_reference_cases_present(reference):
    configs, _ = reference
    rules = {(c["rule"], c["cell"]) for c in configs}
    assert rules == {(r, c) for r in ("gradient", "hebbian", "none") for c in ("RNN", "LSTM")}


def test_missing_reference_file_fails_not_skips(tmp_path):
    from d23_reference import REFERENCE_DIR, _require

    assert _require(REFERENCE_DIR / "d23_vectors.pt").is_file()  # in the repository
    with pytest.raises(FileNotFoundError, match="tests/data"):
        _require(tmp_path / "d23_vectors.pt")
