"""Encoder pre-training by classification on the training classes ([D23] §2, optional).

The encoder plus a linear head is trained to classify the images of the
``train`` split over all its classes (cross-entropy, AdamW, cosine decay,
the task's augmentation), then only the encoder is saved. The episodic run
loads it with ``--set pretrained=PATH`` (and keeps it frozen unless
``freeze_encoder=false``), as the reference does with its pre-trained CNNs.
A ResNet-12's DropBlock rate rises linearly over the first half of the steps.

The checkpoint is a plain dict loadable with ``torch.load(weights_only=True)``:
``{"encoder", "channels", "image_size", "dataset", "state_dict", "steps"}``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_nonnegative, check_nonnegative_int, check_positive, check_positive_int
from .data import augment
from .encoders import ENCODERS, build_encoder, encoder_output_size
from .runfolder import save_atomic


def pretrain_encoder(out, dataset: str = "glyphs", encoder: str = "conv4", channels: int = 64, steps: int = 1000,
                     batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
                     data_dir: str = "", image_size: int = 0, cache_dir: str = "", progress: bool = True) -> dict:
    """Train ``encoder`` + linear head on ``dataset``'s train classes; save the encoder to ``out``.

    ``channels``: the encoder width (the task's ``encoder_channels``).
    Returns ``{"train_accuracy": accuracy of the last 50 batches, "elapsed_s", "path"}``.
    Defaults are the reference's classification pre-training (batch 128, lr 3e-3,
    wd 1e-4, cosine), with fewer steps (the reference: 20,000). Every argument
    is checked (``ValueError``) before any data is read.
    """
    from .tasks.fewshot_images import FewShotImages

    check_choice("encoder", encoder, ENCODERS)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("channels", channels)):
        check_positive_int(name, value)
    check_positive("lr", lr)
    check_nonnegative("weight_decay", weight_decay)
    check_nonnegative_int("seed", seed)
    check_nonnegative_int("image_size", image_size)
    task = FewShotImages(dataset=dataset, data_dir=data_dir, image_size=image_size, cache_dir=cache_dir)
    data = task.data("train")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    enc = build_encoder(encoder, task.channels, task.image_size, channels=channels, dropblock_warmup=steps // 2)
    head = nn.Linear(encoder_output_size(enc, task.channels, task.image_size), data.n_classes)
    model = nn.Sequential(enc, head)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    aug = task.augmentation()
    if aug is None:  # glyphs/Omniglot: small shifts only (no flip: a mirrored letter is another letter)
        aug = (2, False)
    start, hits = time.time(), []
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(data.labels), (batch_size,), generator=g)
        x = data.normalise(augment(data.images[idx], g, padding=aug[0], flip=aug[1]))
        logits = model(x)
        loss = F.cross_entropy(logits, data.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hits.append((logits.argmax(1) == data.labels[idx]).float().mean().item())
        if progress and (step + 1) % max(1, steps // 10) == 0:
            print(f"pretrain {step + 1}/{steps}: loss {loss.item():.3f}, "
                  f"accuracy {sum(hits[-50:]) / len(hits[-50:]):.3f}", flush=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"encoder": encoder, "channels": task.channels, "image_size": task.image_size, "dataset": dataset,
            "state_dict": enc.state_dict(), "steps": steps}
    save_atomic(ckpt, out)
    return {"train_accuracy": sum(hits[-50:]) / len(hits[-50:]), "elapsed_s": time.time() - start, "path": str(out)}
