"""Signal scales of the one-shot image model at initialisation (why runs sit on a chance plateau).

Usage (from the repository root, PYTHONPATH=src):
    python experiments/fewshot_diagnose.py [--pretrained ENC.pt] [--rules hebbian,gradient] [--seeds 0,1,2]
        [--set KEY=VALUE ...]

For a freshly built model (the options of experiments/fewshot_glyphs.py plus ``--set``) and one
batch of training episodes it prints, per rule and seed:

- ``|e|``: norm of the embedding ``e = relu(proj(encoder(x)))``; ``cos same/diff``: mean cosine
  similarity of a query's embedding to the support of its own class / of the other classes;
- ``label/emb``: size of the label's contribution to the cell's gate pre-activations relative to the
  embedding's (slow weights of i_fc);
- ``clip s``: mean clip scale ``s = min(1, clip/‖G‖)`` over the support steps;
- ``fast/slow``: at the first query step, ``‖x_q @ F_i‖ / ‖x_q @ W_i‖`` (what the fast weights of i_fc,
  written by the support steps, add to the gates, relative to the slow weights);
- ``bind``: how much the query logits move when the support labels are permuted (the episode's
  label binding), ``‖y(perm) − y‖ / ‖y − mean y‖`` over the query steps: 0 means the query output
  cannot depend on which label each support image had, i.e. the outer gradient towards solving the
  task is (close to) zero — the plateau.
"""

import argparse

import torch

from plasticnet.config import parse_set
from plasticnet.train import build, resolve_options

try:
    from fewshot_glyphs import COMMON, RULE_OPTIONS
except ImportError:  # run as a module
    from experiments.fewshot_glyphs import COMMON, RULE_OPTIONS


@torch.no_grad()
def diagnose(options: dict, episodes: int = 64, seed: int = 0) -> dict:
    """The scales listed in the module docstring for the model and task of ``options``."""
    config = resolve_options(options)
    task, model = build(config)
    model.eval()
    if not getattr(model, "freeze_encoder", True):
        model.encoder.train()  # batch statistics, as in training
    g = torch.Generator().manual_seed(1000 + seed)
    batch = task.sample(episodes, g, split="train")
    images, labels = batch.inputs
    B, T = images.shape[:2]
    S = int((~batch.mask[0]).sum())
    e = torch.relu(model.proj(model.encoder(images.flatten(0, 1)))).view(B, T, -1)
    x = torch.cat([e, labels], -1)
    rnn = model.rnn
    ways = labels.shape[-1]
    # embedding similarity: query q of class c against the supports of class c and of other classes
    en = torch.nn.functional.normalize(e, dim=-1)
    sim = en[:, S:] @ en[:, :S].transpose(1, 2)  # (B, Q, S)
    same = batch.targets[:, S:, None] == batch.targets[:, None, :S]
    w_i = rnn.cell.i_fc.weight  # (in, 4H)
    label_part = (labels[:, :S] @ w_i[-ways:]).norm(dim=-1).mean()
    emb_part = (e[:, :S] @ w_i[:-ways]).norm(dim=-1).mean()
    out = dict(emb_norm=e.norm(dim=-1).mean().item(), cos_same=sim[same].mean().item(),
               cos_diff=sim[~same].mean().item(), label_over_emb=(label_part / emb_part).item())
    y, _ = rnn(x)
    perm = torch.roll(torch.arange(ways), 1)
    x_p = torch.cat([e, labels[..., perm]], -1)
    y_p, _ = rnn(x_p)
    yq, ypq = y[:, S:], y_p[:, S:]
    out["bind"] = ((ypq - yq).norm() / (yq - yq.mean(-1, keepdim=True)).norm().clamp_min(1e-12)).item()
    if rnn.rule != "none":
        _, state, trace = rnn(x[:, :S], return_trace=True)
        out["clip_s"] = trace["clip_scale"].mean().item()
        fw = rnn.fast_weights(state)["i_fc"].w  # (B, in, 4H)
        xq = x[:, S]
        fast = torch.einsum("bi,bio->bo", xq, fw).norm(dim=-1)
        slow = (xq @ w_i).norm(dim=-1)
        out["fast_over_slow"] = (fast / slow).mean().item()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pretrained", default="", help="encoder checkpoint (\"\": trained from scratch)")
    p.add_argument("--rules", default="hebbian,gradient")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--paper-rate", action="store_true", help="the paper's inner rate (no RULE_OPTIONS)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(1)
    extra = parse_set(args.set)
    for rule in args.rules.split(","):
        for seed in map(int, args.seeds.split(",")):
            rule_opts = {} if args.paper_rate else RULE_OPTIONS[rule]
            opts = dict(COMMON, rule=rule, cell=args.cell, seed=seed, pretrained=args.pretrained,
                        **{**rule_opts, **extra})
            d = diagnose(opts, seed=seed)
            print(f"{rule:9s} seed {seed}: " + "  ".join(f"{k} {v:.4g}" for k, v in d.items()), flush=True)


if __name__ == "__main__":
    main()
