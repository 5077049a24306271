"""``plasticnet demo``: a small demonstration of the plastic network.

Runs the three rules of SPEC §1 on one random episode and prints how far the
fast weights moved and how the modulation behaved.
"""

from __future__ import annotations

import torch

from .network import PlasticRNN


def run_demo(seed: int = 0, batch_size: int = 8, steps: int = 20) -> dict:
    """Run each rule on a random episode; returns ``{rule: (output norm, final ‖F‖)}``."""
    torch.manual_seed(seed)
    inputs = torch.rand(batch_size, steps, 16)
    results = {}
    for rule in ("gradient", "hebbian", "none"):
        torch.manual_seed(seed)
        net = PlasticRNN(16, 32, 1, cell="lstm", rule=rule)
        out, _, trace = net(inputs, return_trace=True)
        fast = trace["fast_norm"][:, -1].mean().item() if trace else 0.0
        results[rule] = (out.norm().item(), fast)
    return results


def _cmd(args) -> int:
    print(f"{'rule':10s} {'‖outputs‖':>10s} {'‖F_T‖':>10s}")
    for rule, (out, fast) in run_demo(seed=args.seed).items():
        print(f"{rule:10s} {out:10.4f} {fast:10.4f}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="demonstrate the plastic network")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)
