"""Load the reference vectors of tests/data into a PlasticRNN.

The vectors are what the public code of Duan et al. computes (float64); see
tests/data/README.md for their provenance and names. Our parameter for each of theirs, and
which of their gradients must be zero because our network has no such
parameter (unused Λ of Hebbian biases, ω outside the gradient rule, the
unused out_fc units of the non-plastic network).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from plasticnet import PlasticRNN

REFERENCE_DIR = Path(__file__).resolve().parent / "data"
VECTORS, CONFIGS = REFERENCE_DIR / "d23_vectors.pt", REFERENCE_DIR / "d23_vectors.json"


def _require(path: Path) -> Path:
    """``path``, or a failure (never a skip): without the vectors nothing shows the network is the paper's."""
    if not path.is_file():
        raise FileNotFoundError(f"reference file {path} is missing; it is part of the repository "
                                f"(tests/data, see tests/data/README.md): restore it with git")
    return path


def load_configs():
    """The case configurations of ``tests/data/d23_vectors.json``."""
    return json.loads(_require(CONFIGS).read_text())


def load_cases():
    """``(configs, vectors)``: the case configurations and the flat dict of reference tensors."""
    vectors = torch.load(_require(VECTORS), weights_only=True)
    return load_configs(), vectors


def case_ids():
    """Ids of every reference case (``case0``, ...)."""
    return [c["id"] for c in load_configs()]


def build(cfg, engine="reference") -> PlasticRNN:
    """A float64 PlasticRNN with the case's options (its batch mean as inner_loss_scale)."""
    return PlasticRNN(
        cfg["input_size"], cfg["hidden_size"], cfg["output_size"],
        cell=cfg["cell"].lower(), rule=cfg["rule"], extra_dim=cfg["extra_dim"],
        modulation=cfg["modulation"], inner_lr_mode=cfg["inner_lr_mode"],
        inner_lr=cfg["p_lr"], inner_decay=cfg["p_wd"], inner_clip=cfg["inner_grad_clip"],
        inner_loss_scale=1.0 / cfg["B"], weight_clip=cfg.get("weight_clip"),
        layernorm=cfg.get("layernorm", False), engine=engine,
    ).double()


def parameter_map(cfg):
    """``{their name: (our name, transform)}`` and the set of their names without a counterpart."""
    rule = cfg["rule"]
    out_size = cfg["output_size"]
    mapping, unmatched = {}, set()
    if rule == "none":
        def t(w):
            return w.t()

        def rows(w):
            return w[:out_size].t()

        def first(b):
            return b[:out_size]

        mapping = {
            "in_fc.0.weight": ("in_fc.weight", t), "in_fc.0.bias": ("in_fc.bias", None),
            "rnn.weight_ih": ("cell.i_fc.weight", t), "rnn.bias_ih": ("cell.i_fc.bias", None),
            "rnn.weight_hh": ("cell.h_fc.weight", t), "rnn.bias_hh": ("cell.h_fc.bias", None),
            "out_fc.0.weight": ("out_fc.weight", rows), "out_fc.0.bias": ("out_fc.bias", first),
        }
        unmatched = {"out_weight"}
        return mapping, unmatched
    io = ".0" if rule == "gradient" else ""
    for theirs, ours in ((f"in_fc{io}", "in_fc"), ("rnn.h_fc", "cell.h_fc"), ("rnn.i_fc", "cell.i_fc"),
                         (f"out_fc{io}", "out_fc")):
        mapping[f"{theirs}.w.param"] = (f"{ours}.weight", None)
        mapping[f"{theirs}.b.param"] = (f"{ours}.bias", None)
        mapping[f"{theirs}.w.lr"] = (f"{ours}.lr_weight", None)
        if rule == "gradient":
            mapping[f"{theirs}.b.lr"] = (f"{ours}.lr_bias", None)
        else:
            unmatched.add(f"{theirs}.b.lr")
    if rule == "gradient":
        mapping["out_weight"] = ("omega", None)
    else:
        unmatched.add("out_weight")
    mapping["layernorm.weight"] = ("layernorm.weight", None)
    mapping["layernorm.bias"] = ("layernorm.bias", None)
    return mapping, unmatched


FAST_NAMES = {"in_fc": "in_fc", "rnn.h_fc": "h_fc", "rnn.i_fc": "i_fc", "out_fc": "out_fc",
              "in_fc.0": "in_fc", "out_fc.0": "out_fc"}


def load_case(cfg, vectors, engine="reference"):
    """``(net, inputs, their_params)`` with the case's slow parameters loaded."""
    cid = cfg["id"]
    net = build(cfg, engine)
    mapping, _ = parameter_map(cfg)
    ours = dict(net.named_parameters())
    prefix = f"{cid}/param/"
    theirs = {k[len(prefix):]: v for k, v in vectors.items() if k.startswith(prefix)}
    loaded = set()
    with torch.no_grad():
        for name, value in theirs.items():
            if name not in mapping:
                continue
            target, fn = mapping[name]
            ours[target].copy_(fn(value) if fn else value)
            loaded.add(target)
    missing = set(ours) - loaded
    assert not missing, f"{cid}: parameters not loaded from the reference: {sorted(missing)}"
    return net, vectors[f"{cid}/input"], theirs
