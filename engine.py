"""One epoch of training and the validation loss: train.py's loop, as torchvision's
references/detection/engine.py keeps it apart from the script.

`train_one_epoch` runs the steps of one epoch (forward, the five losses, backward, gradient
clipping, optimizer, lr schedule) and keeps `Progress` up to date after every completed step,
so that Ctrl-C or a crash can save exactly where the run stands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

import models
import precision
import utils

LOSS_NAMES = ("loss_classifier", "loss_box_reg", "loss_keypoint", "loss_objectness", "loss_rpn_box_reg")
SHORT_LOSS_NAMES = ("cls", "box", "kp", "obj", "rpn")


@dataclass
class Progress:
    """Where the run stands: `epoch` epochs done, `step` batches of the next one done."""
    epoch: int = 0
    step: int = 0
    loss_sums: list[float] = field(default_factory=lambda: [0.0] * len(LOSS_NAMES))
    lr: float = 0.0  # of the last step


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
                    loader, device: torch.device, progress: Progress, epochs: int, iters_per_epoch: int,
                    world_size: int, show: bool, checkpoint_path: Path, clip_grad: float = 0.0) -> None:
    """Train over `loader`, updating `progress` after every completed step, with the gradient norm
    clipped to `clip_grad` (0: not). `checkpoint_path` is only named in the message of a non-finite loss."""
    model.train()
    autocast = precision.autocast(device, "fp16" if scaler.is_enabled() else "fp32")
    bar = tqdm(loader, total=iters_per_epoch, initial=progress.step, disable=not show, dynamic_ncols=True,
               desc=f"epoch {progress.epoch + 1}/{epochs}")
    for images, targets in bar:
        images, targets = utils.to_device(images, targets, device)
        with autocast:
            loss_dict = model(images, targets)
        values = utils.reduce_mean(torch.stack([loss_dict[k].detach().float() for k in LOSS_NAMES]), world_size)
        if not bool(torch.isfinite(values).all()):
            bad = ", ".join(f"{k}={v:g}" for k, v in zip(LOSS_NAMES, values.tolist()) if not math.isfinite(v))
            raise utils.UserError(
                f"non-finite loss at epoch {progress.epoch + 1}, iteration {progress.step + 1}/{iters_per_epoch} "
                f"({bad}); stopped. Lower --lr or raise --warmup-iters; the last good checkpoint is "
                f"{checkpoint_path} (epoch {progress.epoch})")
        loss = sum(loss_dict[k] for k in LOSS_NAMES)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        with utils.interrupts_held():
            progress.lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            progress.loss_sums = [s + v for s, v in zip(progress.loss_sums, values.tolist())]
            progress.step += 1
        if show:
            means = [s / progress.step for s in progress.loss_sums]
            parts = " ".join(f"{n} {m:.3f}" for n, m in zip(SHORT_LOSS_NAMES, means))
            bar.set_postfix_str(f"loss {sum(means):.3f} {parts} lr {progress.lr:.2e}",
                                refresh=False)
    bar.close()


@torch.no_grad()
def validation_loss(model: torch.nn.Module, loader, device: torch.device, chosen: str,
                    world_size: int) -> dict[str, float] | None:
    """Mean losses over `loader`. torchvision returns losses only in train mode, so the model
    runs in train mode with BatchNorm in eval mode (the val images must not move its statistics)
    and at the test-time size, so that epochs compare; under `chosen`'s autocast (precision.training)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    sums = torch.zeros(len(LOSS_NAMES) + 1, dtype=torch.float64, device=device)
    try:
        with models.at_inference_size(model):
            for images, targets in loader:
                images, targets = utils.to_device(images, targets, device)
                with precision.autocast(device, chosen):
                    loss_dict = model(images, targets)
                sums[:-1] += torch.stack([loss_dict[k].detach().double() for k in LOSS_NAMES]) * len(images)
                sums[-1] += len(images)
    finally:
        model.train()
    if world_size > 1:
        dist.all_reduce(sums)
    if sums[-1] == 0:
        return None
    means = (sums[:-1] / sums[-1]).tolist()
    return dict(zip(LOSS_NAMES, means))
