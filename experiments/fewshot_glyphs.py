"""CPU-sized evidence for one-shot glyph classification: rules × cells × seeds, test accuracy ± 95 % CI.

Usage (from the repository root, PYTHONPATH=src):
    python experiments/fewshot_glyphs.py OUT_DIR --pretrained ENC.pt [--rules gradient,hebbian,none]
        [--cells lstm] [--seeds 0,1,2] [--batches 600] [--episodes 2000] [--ablate] [--set KEY=VALUE ...]

Each run goes through the trainer (run folders ``OUT_DIR/<rule>-<cell>-seed<N>``; a finished run is
reused); its best checkpoint is then scored on ``--episodes`` fresh 5-way 1-shot episodes of the
*test* classes (scripts never seen in training): mean accuracy over all queries and the 95 %
interval ``1.96 · sd / √n`` over episodes; ``--ablate`` also scores each plastic run with its fast
weights switched off (inner rate 0). Writes ``OUT_DIR/results.md``: one row per run, then the
spread over seeds (mean ± sd) per rule and cell. The table of docs/results/fewshot_images.md came from
``--seeds 0,1,2 --episodes 1000 --ablate`` (LSTM, and ``--cells rnn``) with the encoder of
``plasticnet pretrain --image-size 20 --channels 32 --steps 2000 --batch-size 64``.
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch

from plasticnet.config import parse_set
from plasticnet.train import load_run, train_run

# CPU-sized setting (see docs/results/fewshot_images.md): 20×20 glyphs, conv-4 with 32 channels (pre-trained, frozen),
# hidden size matched on base 64, AdamW 3e-3 with cosine decay, batches of 32 episodes, the label's
# hot unit 10 (label 1 beside an embedding of norm ~14 is what kept seeds at chance; see
# docs/results/fewshot_images.md and experiments/fewshot_diagnose.py)
COMMON = dict(task="fewshot-images", dataset="glyphs", image_size=20, encoder_channels=32, hidden_base=64,
              batch_size=32, lr=3e-3, lr_min=1e-4, val_every=100, val_batches=10, label_scale=10.0)
# one inner rate for both rules and cells (the paper's 0.1 would need its 40k batches to grow Λ;
# see docs/results/fewshot_images.md);
# the gradient rule's per-sample internal loss unscaled (its gradient is otherwise 1/64 of it)
RULE_OPTIONS = {"hebbian": dict(inner_lr=3.0), "gradient": dict(inner_lr=3.0, inner_loss_scale=1.0), "none": {}}


@torch.no_grad()
def test_accuracy(run_dir, episodes: int, seed: int = 12345, plastic: bool = True):
    """Per-episode query accuracy of the best checkpoint on fresh test-class episodes.

    ``plastic=False`` scores the same network with its fast weights switched off (inner rate 0):
    what it answers from its slow weights and cell state alone.
    """
    task, model, _ = load_run(run_dir)
    if not plastic:
        model.rnn.inner_lr = 0.0
    g = torch.Generator().manual_seed(seed)
    accs = []
    for _ in range(math.ceil(episodes / 100)):
        b = task.sample(100, g, split="test")
        out = task.forward(model, b)
        correct = (out.argmax(-1) == b.targets) & b.mask
        accs.append(correct.sum(1).float() / b.mask.sum(1).float())
    a = torch.cat(accs)[:episodes]
    return a.mean().item(), 1.96 * a.std().item() / math.sqrt(len(a))


def seed_summary(rows):
    """Rows grouped by (rule, cell): accuracies per seed, their mean and sample standard deviation."""
    groups = {}
    for r in rows:
        groups.setdefault((r["rule"], r["cell"]), []).append(r)
    out = []
    for (rule, cell), rs in groups.items():
        accs = torch.tensor([r["test_accuracy"] for r in rs])
        sd = accs.std().item() if len(rs) > 1 else float("nan")
        out.append(dict(rule=rule, cell=cell, seeds=[r["seed"] for r in rs], accs=accs.tolist(),
                        mean=accs.mean().item(), sd=sd, train_s=sum(r["train_s"] for r in rs) / len(rs)))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--pretrained", required=True)
    p.add_argument("--rules", default="gradient,hebbian,none")
    p.add_argument("--cells", default="lstm")
    p.add_argument("--batches", type=int, default=600)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--seeds", default="0", help="comma-separated seeds (one run per seed)")
    p.add_argument("--seed", type=int, help="one seed (same as --seeds N)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a run option")
    p.add_argument("--ablate", action="store_true",
                   help="also score each plastic run with its fast weights off (inner rate 0 at test)")
    args = p.parse_args()
    extra = parse_set(args.set)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = []
    for cell in args.cells.split(","):
        for rule in args.rules.split(","):
            for seed in seeds:
                run_dir = out / f"{rule}-{cell}-seed{seed}"
                opts = dict(COMMON, rule=rule, cell=cell, batches=args.batches, seed=seed,
                            pretrained=args.pretrained, **{**RULE_OPTIONS[rule], **extra})
                t0 = time.time()
                summary = train_run(opts, run_dir, resume=True, progress=False)
                acc, ci = test_accuracy(run_dir, args.episodes)
                rows.append(dict(rule=rule, cell=cell, seed=seed, test_accuracy=acc, ci95=ci,
                                 best_val_error=summary["best_val_error"], train_s=summary["elapsed_s"],
                                 wall_s=time.time() - t0))
                if args.ablate and rule != "none":
                    rows[-1]["no_fast_weights"] = test_accuracy(run_dir, args.episodes, plastic=False)[0]
                print(json.dumps(rows[-1]), flush=True)
    lines = ["| rule | cell | seed | test accuracy (5-way 1-shot) | no fast weights | best val accuracy "
             "| training time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        off = f"{100 * r['no_fast_weights']:.1f} %" if "no_fast_weights" in r else "–"
        lines.append(f"| {r['rule']} | {r['cell']} | {r['seed']} | {100 * r['test_accuracy']:.1f} % ± "
                     f"{100 * r['ci95']:.1f} | {off} | {100 * (1 - r['best_val_error']):.1f} % | "
                     f"{r['train_s'] / 60:.1f} min |")
    lines += ["", "| rule | cell | seeds | mean over seeds ± sd | per seed | mean training time |",
              "|---|---|---|---|---|---|"]
    for g in seed_summary(rows):
        lines.append(f"| {g['rule']} | {g['cell']} | {len(g['seeds'])} | {100 * g['mean']:.1f} % ± "
                     f"{100 * g['sd']:.1f} | {', '.join(f'{100 * a:.1f}' for a in g['accs'])} | "
                     f"{g['train_s'] / 60:.1f} min |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
