"""The optimiser and the learning-rate schedule train.py uses.

  * `make_optimizer`: SGD with momentum (torchvision's recipe) or AdamW, which got further than
    SGD in the same steps when training the demo's model from scratch (docs/demo.md);
  * `lr_factor`: one per-iteration lr multiplier, a linear warm-up followed by steps at
    milestone epochs or by a half cosine down to 0, so a schedule's state is one counter.
"""
from __future__ import annotations

import argparse
import bisect
import math
from typing import Callable, Sequence

import torch


def lr_factor(iters_per_epoch: int, milestones: Sequence[int], gamma: float, warmup_iters: int,
              warmup_factor: float, cosine_iters: int = 0) -> Callable[[int], float]:
    """lr multiplier at iteration `it` (counted from 0 over the whole run): linear warm-up, then
    x gamma at each milestone epoch, or (cosine_iters > 0) a half cosine from 1 at the end of the
    warm-up to 0 at iteration cosine_iters. One per-iteration schedule, so its state is one counter."""
    milestone_iters = sorted(m * iters_per_epoch for m in milestones)

    def factor(it: int) -> float:
        warm = warmup_factor + (1 - warmup_factor) * it / warmup_iters if it < warmup_iters else 1.0
        if cosine_iters > 0:
            done = min(max(it - warmup_iters, 0) / max(cosine_iters - warmup_iters, 1), 1.0)
            return warm * 0.5 * (1 + math.cos(math.pi * done))
        return warm * gamma ** bisect.bisect_right(milestone_iters, it)
    return factor


def scaled_milestones(epochs: int, milestones: Sequence[int], of_epochs: int) -> list[int]:
    """A schedule's milestones for a run of `epochs`: the same fractions of the run as `milestones`
    are of `of_epochs` (torchvision's 36 and 43 of 46), rounded, leaving out those at or after the
    last epoch (so a run of 1 or 2 epochs keeps a constant lr after its warm-up)."""
    scaled = (round(m * epochs / of_epochs) for m in milestones)
    return sorted({m for m in scaled if 0 < m < epochs})


def make_optimizer(params, args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD with momentum (torchvision's recipe), or AdamW with --momentum as its beta1."""
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, betas=(args.momentum, 0.999), weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
