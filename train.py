"""Train torchvision's Keypoint R-CNN on COCO person keypoints, resumable, on one GPU or many.

Usage:
    python train.py                                    # the documented recipe on ./coco
    python train.py --resume                           # continue the newest run's last.pth where it stopped
    torchrun --nproc_per_node=4 train.py -b 16 --lr 0.04   # 4 GPUs x 4 images; -b is the total batch
    python train.py --data-root sample --device cpu --backbone resnet18 --weights none \\
        --min-size 320 --max-size 480 --keypoint-head 128x4 -b 4 --epochs 20 --lr 0.02

The recipe (every number is a flag): 46 epochs, lr x0.1 after epochs 36 and 43 (torchvision's
schedule), SGD with lr 0.02 for a total batch of 8 (the original project's), momentum 0.9, weight
decay 1e-4, linear warm-up over the first 1000 iterations, multi-scale training (shorter side
640..800), horizontal flips, aspect-ratio grouped batches, a ResNet-50 FPN backbone initialised
from ImageNet. Data: `<data-root>/train2017` for training, `val2017` for the validation loss every
epoch and COCO box/keypoint AP every --eval-every epochs, exactly as test.py gives it for the
checkpoint. Scale --lr linearly with -b: 0.0025 x b (0.04 at -b 16, 0.16 at -b 64);
torchvision's recipe uses half that rate per image (0.02 at -b 16).

Files written to --output-dir (default: a new run folder runs/train/exp, exp2, ... per run; a
folder that holds an earlier run is refused unless --resume continues it or --exist-ok is given):
    last.pth                   full checkpoint after every epoch (model, optimizer, lr scheduler,
                               AMP scaler, epoch, arguments, model settings, history); on Ctrl-C
                               also mid-epoch. `--resume` continues from it.
    best.pth                   the same, for the epoch with the best keypoint AP so far
    e46_b8_lr0.02_m0.9.pth     the final weights: a plain model state_dict, loadable by any
                               torchvision user (keypointrcnn_resnet50_fpn().load_state_dict)
    e46_b8_lr0.02_m0.9.json    the per-epoch numbers (losses, lr, AP, time)
    e46_b8_lr0.02_m0.9.png     train/val loss curves, and AP when computed

The progress bar shows running means over the epoch: loss (total), cls, box, kp, obj, rpn (loss_classifier,
loss_box_reg, loss_keypoint, loss_objectness, loss_rpn_box_reg), and the current lr.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

import coco_eval
import draw
import keypoints
import models
import precision
import runs
import utils
from dataset import (CocoKeypoints, DatasetError, coco_paths, collate_fn, create_aspect_ratio_groups, epoch_batches,
                     first_images, get_transforms, has_person_keypoints)
from engine import LOSS_NAMES, SHORT_LOSS_NAMES, Progress, train_one_epoch, validation_loss
from optim import lr_factor, make_optimizer, scaled_milestones

# torchvision's keypoint schedule (references/detection: --epochs 46 --lr-steps 36 43, its AP 65.0; the
# original project ran 42 epochs with these milestones, so its second decay never came). Its lr per image
# of the total batch: the original's 0.02 at 8 (AP 64.2), twice torchvision's; --lr scales linearly with -b.
DEFAULT_EPOCHS, DEFAULT_MILESTONES, LR_PER_IMAGE, DEFAULT_BATCH_SIZE = 46, (36, 43), 0.0025, 8


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=utils.HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default="coco", help="COCO layout: train2017/, val2017/, annotations/")
    g.add_argument("--limit", type=utils.positive_int, default=None, metavar="N", help="train on the first N training images only")
    g.add_argument("--val-limit", type=utils.nonnegative_int, default=None, metavar="N",
                   help="validate on the first N val2017 images only (0: no validation at all)")
    g.add_argument("-j", "--workers", type=utils.nonnegative_int, default=min(4, os.cpu_count() or 1),
                   help="data loading processes per GPU/process")
    g.add_argument("--flip-prob", type=utils.probability, default=0.5, help="probability of a horizontal flip in training")
    g.add_argument("--aspect-ratio-group-factor", type=utils.int_or_off, default=3,
                   help="batch images of similar aspect ratio (k bins per side, torchvision's 3); -1: off")
    g.add_argument("--flip-pairs", type=utils.flip_pair_arg, nargs="*", default=None, metavar="LEFT:RIGHT",
                   help="the pairs a flip swaps, by keypoint name, all of them (no value: none); default: by left/right")
    coco_eval.add_oks_sigmas_flag(g)

    g = p.add_argument_group("model")
    g.add_argument("--backbone", default="resnet50", choices=models.BACKBONES,
                   help="FPN backbone: resnet50 is torchvision's model; resnet18/mobilenet_v3_large for CPU")
    g.add_argument("--weights", default="imagenet",
                   help="initialisation: imagenet (ImageNet backbone, torchvision's recipe), coco (torchvision's "
                        "trained Keypoint R-CNN, to fine-tune), none (from scratch) or a checkpoint path; "
                        "coco and imagenet are downloaded")
    g.add_argument("--min-size", type=utils.image_side, nargs="+", default=list(models.DEFAULT_MIN_SIZE),
                   help="shorter image side; several values: one picked at random per image (multi-scale)")
    g.add_argument("--max-size", type=utils.image_side, default=models.DEFAULT_MAX_SIZE, help="longer image side at most")
    g.add_argument("--keypoint-head", type=utils.keypoint_head_arg, default="512x8", metavar="WxD",
                   help="keypoint head convs: torchvision's 512x8, or lighter (128x4 trains ~4x faster on CPU)")
    g.add_argument("--fpn-channels", type=utils.positive_int, default=models.DEFAULT_FPN_CHANNELS, metavar="C",
                   help="FPN width, the RPN's and heads' input too (ResNets; 128: about 2x faster on a CPU)")
    g.add_argument("--trainable-layers", type=utils.nonnegative_int, default=None,
                   help="backbone stages to train (default: 3 from pretrained weights, all from scratch)")
    g.add_argument("--box-batch-size-per-image", type=utils.positive_int, default=512,
                   help="RoIs sampled per image for the box head (lower is faster on CPU)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=utils.positive_int, default=DEFAULT_EPOCHS, help="epochs to train")
    g.add_argument("-b", "--batch-size", type=utils.positive_int, default=DEFAULT_BATCH_SIZE, help="total batch over all processes")
    g.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"), help="sgd (torchvision's) or adamw (docs/demo.md)")
    g.add_argument("--lr", type=utils.positive_float, default=LR_PER_IMAGE * DEFAULT_BATCH_SIZE,
                   help=f"peak learning rate for the total batch (SGD); scale it with -b: {LR_PER_IMAGE} x b (default "
                        f"{LR_PER_IMAGE * DEFAULT_BATCH_SIZE:g} for -b {DEFAULT_BATCH_SIZE}; torchvision's recipe: half that)")
    g.add_argument("--momentum", type=utils.momentum, default=0.9, help="SGD momentum (AdamW: beta1)")
    g.add_argument("--weight-decay", type=utils.nonnegative_float, default=1e-4, help="SGD weight decay")
    g.add_argument("--schedule", default="step", choices=("step", "cosine"), help="after the warm-up: step or cosine to 0")
    g.add_argument("--milestones", type=utils.positive_int, nargs="*", default=None,
                   help="step schedule: epochs after which the lr is multiplied by --gamma, each below --epochs; "
                        f"none: constant lr (default: {' and '.join(map(str, DEFAULT_MILESTONES))} of "
                        f"{DEFAULT_EPOCHS} epochs, scaled to --epochs: 8 9 for --epochs 10)")
    g.add_argument("--gamma", type=utils.positive_float, default=0.1, help="lr factor at each milestone")
    g.add_argument("--warmup-iters", type=utils.nonnegative_int, default=1000, help="iterations of linear lr warm-up (0: none)")
    g.add_argument("--warmup-factor", type=utils.positive_float, default=0.001, help="lr factor at the first warm-up iteration")
    g.add_argument("--clip-grad", type=utils.nonnegative_float, default=0.0, metavar="NORM", help="gradient norm clip (0: off)")
    precision.add_training_flag(g)

    g = p.add_argument_group("run")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    g.add_argument("--output-dir", default=None,
                   help=f"where checkpoints, the log and the plot go (default: a new {runs.RUNS}/expN for a new run, "
                        "the checkpoint's folder with --resume)")
    g.add_argument("--exist-ok", action="store_true",
                   help="let a new run write into an --output-dir that holds an earlier run, overwriting it")
    g.add_argument("--resume", nargs="?", const="", default=None, metavar="PATH",
                   help=f"continue a run from PATH (no PATH: last.pth in --output-dir, else the newest "
                        f"{runs.RUNS}/*/last.pth or ./last.pth); its settings are restored, flags given here "
                        "override the ones allowed to change (e.g. --epochs)")
    g.add_argument("--seed", type=utils.nonnegative_int, default=0, help="seed of the initial weights, data order and augmentation")
    g.add_argument("--eval-every", type=utils.nonnegative_int, default=1, metavar="K",
                   help="COCO box and keypoint AP every K epochs and after the last (0: never)")
    coco_eval.add_analyze_flag(g)
    utils.add_max_image_pixels_flag(p.add_argument_group("images"))
    return p


# On --resume these must match the checkpoint: they shape the model, the optimizer or the data order.
FIXED_ON_RESUME = ("backbone", "keypoint_head", "fpn_channels", "trainable_layers", "box_batch_size_per_image",
                   "weights", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "seed")
# What concerns this command, not the run: never saved with a run's settings, so never restored.
COMMAND_ONLY = ("resume", "exist_ok", "device", "given")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags; `given` lists those typed on the command line, which --resume keeps over the
    checkpoint's settings (the others come from the checkpoint)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Parsed again onto a namespace that already holds every name, argparse sets only what is typed.
    untyped = object()
    typed = parser.parse_args(argv, namespace=argparse.Namespace(**{name: untyped for name in vars(args)}))
    args.given = sorted(name for name, value in vars(typed).items() if value is not untyped)
    if args.milestones is None:  # a shorter run decays at the same fractions of itself
        args.milestones = scaled_milestones(args.epochs, DEFAULT_MILESTONES, DEFAULT_EPOCHS)
    return args


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, as saved: plain types only (checkpoints are loaded with weights_only)."""
    return {k: v for k, v in vars(args).items() if k not in COMMAND_ONLY}


def resume(args: argparse.Namespace) -> tuple[argparse.Namespace, dict | None, Path | None]:
    """(settings, checkpoint, its path). With --resume: the checkpoint (read once, here) and its
    run's settings, under the flags typed now; a flag in FIXED_ON_RESUME cannot change. The run
    goes on in the checkpoint's folder unless --output-dir is typed. Without: (args, None, None)."""
    if args.resume is None:
        return args, None, None
    path = runs.resume_path(args.resume, args.output_dir)
    ckpt = models.load_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "lr_scheduler", "epoch", "args", "model_config") if k not in ckpt]
    if missing:
        raise utils.UserError(f"--resume: {path} is not a full training checkpoint (no {missing[0]!r}); "
                              "use it with --weights to start a new run from its weights")
    saved, merged = ckpt["args"], vars(args).copy()
    for name, value in saved.items():
        if name not in merged or name in COMMAND_ONLY:
            continue
        if name in args.given and name in FIXED_ON_RESUME and merged[name] != value:
            raise utils.UserError(f"--{name.replace('_', '-')} {merged[name]} differs from {value} in {path}; "
                                  "it cannot change when resuming (start a new run with --weights instead)")
        if name not in args.given:
            merged[name] = value
    if "output_dir" not in args.given:
        merged["output_dir"] = str(path.parent)
    return argparse.Namespace(**merged), ckpt, path


def check_args(args: argparse.Namespace, world_size: int) -> None:
    """What no single flag's type can check: flags against each other and the process count."""
    if args.batch_size % world_size:
        raise utils.UserError(f"--batch-size {args.batch_size} is the total over {world_size} processes "
                              "and must be divisible by it")
    late = [m for m in args.milestones if m >= args.epochs] if args.schedule == "step" else []
    if late:
        raise utils.UserError(f"--milestones {' '.join(map(str, args.milestones))}: a decay after epoch {late[0]} never "
                              f"happens in a run of --epochs {args.epochs}; pass --milestones below it (none: constant lr)")
    if args.max_size < max(args.min_size):
        raise utils.UserError(f"--min-size {args.min_size} / --max-size {args.max_size}: "
                              "--max-size must be at least the largest --min-size")


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------
def build_datasets(args: argparse.Namespace):
    """(training set, validation-loss set, evaluation set, keypoint set); the two validation sets
    are None with --val-limit 0. The keypoint set is the training file's (with --flip-pairs).

    The validation loss is computed on val2017 filtered like the training data (no crowds, no
    empty images), so it compares with the training loss; COCO AP uses every val image, as test.py.
    """
    root = Path(args.data_root)
    train_dir, train_ann = coco_paths(root, "train")
    if not train_ann.is_file():
        raise utils.UserError(f"no training data: {train_ann} not found; get COCO with `python dataset.py --download "
                              "coco`, or make a sample set with `python dataset.py --sample sample` and pass "
                              "--data-root sample")
    pixels = args.max_image_pixels
    train_set = CocoKeypoints(train_dir, train_ann, train=True, max_image_pixels=pixels)
    if not len(train_set):
        raise utils.UserError(f"{train_ann} has no person keypoints to train on" +
                              ("" if has_person_keypoints(train_set.coco) else
                               " (a COCO instances file? Keypoint R-CNN needs person_keypoints_*.json)"))
    kp_set = train_set.keypoint_set.with_flip_pairs(args.flip_pairs)
    train_set.transforms = get_transforms(True, flip_prob=args.flip_prob, keypoint_set=kp_set)
    train_set = first_images(train_set, args.limit)
    if args.val_limit == 0:
        return train_set, None, None, kp_set
    val_dir, val_ann = coco_paths(root, "val")
    val_loss_set = first_images(CocoKeypoints(val_dir, val_ann, train=True, transforms=get_transforms(False),
                                       max_image_pixels=pixels), args.val_limit)
    eval_set = CocoKeypoints(val_dir, val_ann, train=False, transforms=get_transforms(False), max_image_pixels=pixels)
    keypoints.check_same(kp_set, eval_set.keypoint_set, f"{train_ann} has", str(val_ann), "both splits need the same")
    coco_eval.oks_sigmas(kp_set, args.oks_sigmas, verbose=False)  # a wrong --oks-sigmas fails now, not after an epoch
    return train_set, val_loss_set, first_images(eval_set, args.val_limit), kp_set


# --------------------------------------------------------------------------------------
# Schedule, interrupts, checkpoints
# --------------------------------------------------------------------------------------
def save_log(path: Path, args, config: dict, history: list[dict]) -> None:
    utils.write_json(path, {"args": plain_args(args), "model_config": config, "epochs": history}, indent=1)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one training run updates, and what a checkpoint of it holds."""
    model: torch.nn.Module              # what runs the steps (DistributedDataParallel under torchrun)
    net: torch.nn.Module                # the model itself, what is saved and evaluated
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    config: dict[str, Any]
    progress: Progress = field(default_factory=Progress)
    history: list[dict] = field(default_factory=list)
    best_ap: float | None = None

    def checkpoint(self, args: argparse.Namespace, iters_per_epoch: int, world_size: int) -> dict:
        """A full checkpoint: what --resume needs to continue exactly where the run stands."""
        return {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.progress.epoch, "epoch_step": self.progress.step,
            "epoch_loss_sums": list(self.progress.loss_sums), "epoch_lr": self.progress.lr,
            "iters_per_epoch": iters_per_epoch, "world_size": world_size, "args": plain_args(args),
            "model_config": self.config, "history": self.history, "best_keypoint_ap": self.best_ap,
        }


@dataclass
class Data:
    train_set: Any
    sampler: DistributedSampler
    group_ids: list[int] | None
    per_process_batch: int
    iters_per_epoch: int
    val_loader: DataLoader | None
    val_loss_set: Any
    eval_set: Any
    keypoint_set: keypoints.KeypointSet


def settle_model_settings(args: argparse.Namespace, weights: models.Weights,
                          resume_ckpt: dict | None) -> tuple[argparse.Namespace, bool]:
    """The run's model settings: the flags typed, else what the checkpoint of --weights records,
    else the defaults (models.default_*); a resumed run's are its own. Returns (settings, whether
    BatchNorm is frozen)."""
    if resume_ckpt is not None:
        frozen_bn, found = bool(resume_ckpt["model_config"]["frozen_bn"]), {}
    else:
        frozen_bn, saved = models.default_frozen_bn(weights), weights.settings or {}
        found = {name: saved[name] for name in ("backbone", "keypoint_head", "fpn_channels")
                 if saved.get(name) and name not in args.given}
    settings = argparse.Namespace(**{**vars(args), **found})
    if settings.trainable_layers is None:
        settings.trainable_layers = models.default_trainable_layers(settings.backbone, frozen_bn)
    return settings, frozen_bn


def build_data(args: argparse.Namespace, info: utils.DistInfo, device: torch.device) -> Data:
    train_set, val_loss_set, eval_set, kp_set = build_datasets(args)
    per_process_batch = args.batch_size // info.world_size
    # DistributedSampler also for one process: its set_epoch(epoch) makes each epoch's order a
    # function of (seed, epoch), which is what lets --resume replay it.
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed)
    group_ids = create_aspect_ratio_groups(train_set, k=args.aspect_ratio_group_factor) \
        if args.aspect_ratio_group_factor >= 0 else None
    iters_per_epoch = len(epoch_batches(sampler, group_ids, per_process_batch, 0))
    if iters_per_epoch == 0:
        raise utils.UserError(f"{len(train_set)} training image(s) make no full batch of {per_process_batch} "
                              f"per process; lower --batch-size or raise --limit")
    val_loader = None
    if val_loss_set is not None and len(val_loss_set):
        shard = Subset(val_loss_set, range(info.rank, len(val_loss_set), info.world_size))
        val_loader = DataLoader(shard, batch_size=per_process_batch, shuffle=False, num_workers=args.workers,
                                collate_fn=collate_fn, pin_memory=device.type == "cuda")
    return Data(train_set, sampler, group_ids, per_process_batch, iters_per_epoch, val_loader, val_loss_set, eval_set,
                kp_set)


def build_run(args: argparse.Namespace, weights: models.Weights, frozen_bn: bool, iters_per_epoch: int,
              info: utils.DistInfo, device: torch.device, kp_set: keypoints.KeypointSet = keypoints.COCO17,
              new_predictor: bool = False) -> Run:
    """Model, SGD, the lr schedule and the AMP scaler, as a fresh run starts them."""
    utils.seed_everything(args.seed)
    net = models.build_model(args.backbone, weights, kp_set.num,
                             min_size=args.min_size, max_size=args.max_size,
                             trainable_layers=args.trainable_layers, frozen_bn=frozen_bn,
                             keypoint_head=args.keypoint_head, new_keypoint_predictor=new_predictor,
                             fpn_channels=args.fpn_channels, box_batch_size_per_image=args.box_batch_size_per_image)
    config = models.model_config(args.backbone, kp_set, args.min_size, args.max_size, frozen_bn, args.keypoint_head,
                                 args.fpn_channels)
    net.to(device)
    model = net
    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(
        iters_per_epoch, args.milestones, args.gamma, args.warmup_iters, args.warmup_factor,
        args.epochs * iters_per_epoch if args.schedule == "cosine" else 0))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.training(args.amp, device) == "fp16")
    return Run(model, net, optimizer, scheduler, scaler, config)


def restore_run(run: Run, ckpt: dict, source: Path, args: argparse.Namespace, iters_per_epoch: int,
                log: Callable[..., None]) -> None:
    """Put a full checkpoint's weights, optimizer, schedule and progress into `run`."""
    models.apply_state_dict(run.net, ckpt["model"], source=str(source))
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["lr_scheduler"])
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    run.progress = Progress(int(ckpt["epoch"]), int(ckpt.get("epoch_step", 0)),
                            list(ckpt.get("epoch_loss_sums") or [0.0] * len(LOSS_NAMES)),
                            float(ckpt.get("epoch_lr", 0.0)))
    if run.progress.epoch > args.epochs:
        raise utils.UserError(f"--epochs {args.epochs}: {source} has already done {run.progress.epoch} epochs")
    # An interrupt between logging an epoch and saving it must not log that epoch twice.
    run.history = [h for h in ckpt.get("history", []) if h["epoch"] <= run.progress.epoch]
    run.best_ap = ckpt.get("best_keypoint_ap")
    if ckpt.get("iters_per_epoch") != iters_per_epoch:
        log(f"note: {iters_per_epoch} iterations per epoch now, {ckpt.get('iters_per_epoch')} in the "
            "checkpoint (other data, batch or process count): milestones move accordingly")
        if run.progress.step:
            run.progress.step, run.progress.loss_sums = 0, [0.0] * len(LOSS_NAMES)
            log("note: the interrupted epoch restarts from its beginning")


def describe(args: argparse.Namespace, data: Data, frozen_bn: bool, info: utils.DistInfo, device: torch.device,
             resumed: Progress | None, resume_path: Path | None, log: Callable[..., None],
             transfer: str | None = None) -> None:
    sizes = "-".join(str(s) for s in sorted({min(args.min_size), max(args.min_size)}))
    log(f"train: {len(data.train_set)} images from {args.data_root}, {data.iters_per_epoch} iterations/epoch, "
        f"batch {args.batch_size} ({info.world_size} process(es) x {data.per_process_batch}), device {device}")
    after = "a half cosine to 0" if args.schedule == "cosine" else (
        f"x{args.gamma:g} after epoch(s) {', '.join(map(str, args.milestones))}" if args.milestones else "constant")
    log(f"schedule: {args.optimizer} at lr {args.lr:g}, {args.warmup_iters} warm-up iterations, then {after}")
    head = args.keypoint_head
    head = f"{head[0]}x{len(head)}" if len(set(head)) == 1 else ",".join(map(str, head))
    log(f"model: {args.backbone} FPN, weights {args.weights}, keypoint head {head}, image size {sizes} "
        f"(max {args.max_size}), {'frozen' if frozen_bn else 'trained'} BatchNorm, {data.keypoint_set.describe()}")
    flips = args.flip_prob and args.flip_pairs is None  # explicit pairs, even none, need no warning
    for line in filter(None, (transfer, flips and keypoints.flip_warning(data.keypoint_set))):
        log(line)
    if data.val_loader is None:
        log("validation: off")
    else:
        log(f"validation: {len(data.val_loss_set)} images for the loss, {len(data.eval_set)} for COCO AP "
            f"{'every ' + str(args.eval_every) + ' epoch(s)' if args.eval_every else 'never (--eval-every 0)'}"
            f" (as test.py: size {models.inference_min_size(args.min_size)}, one image per pass)")
    if resumed is not None:
        log(f"resuming {resume_path}: {resumed.epoch} epoch(s) done"
            + (f", {resumed.step} iteration(s) into epoch {resumed.epoch + 1}" if resumed.step else ""))


def epoch_summary(entry: dict[str, Any], epochs: int, metrics: dict, is_best: bool) -> str:
    summary = f"epoch {entry['epoch']}/{epochs}: train loss {entry['train_loss']:.4f} (" + \
        " ".join(f"{n} {entry[k]:.3f}" for n, k in zip(SHORT_LOSS_NAMES, LOSS_NAMES)) + ")"
    if entry["val_loss"] is not None:
        summary += f" | val loss {entry['val_loss']:.4f}"
    if metrics:
        summary += f" | {coco_eval.format_metrics_line(metrics)}" + (" (best)" if is_best else "")
    return summary + f" | lr {entry['lr']:.2e} | {entry['time_s']:.0f}s"


def validate(run: Run, data: Data, args: argparse.Namespace, epoch: int, info: utils.DistInfo,
             device: torch.device) -> tuple[dict[str, float] | None, dict]:
    """(validation losses or None, COCO metrics or {}) after `epoch`, as the flags ask."""
    val = validation_loss(run.net, data.val_loader, device, precision.training(args.amp, device), info.world_size) \
        if data.val_loader is not None else None
    metrics = {}
    if evaluates(data, args, epoch):
        # test.py's numbers for this checkpoint: its defaults (image size, one image per pass, float32)
        metrics, _ = coco_eval.evaluate_dataset(run.net, data.eval_set, device, workers=args.workers,
                                                desc=f"eval epoch {epoch + 1}", sigmas=args.oks_sigmas,
                                                analyze=args.analyze)
        run.model.train()
    return val, metrics


def evaluates(data: Data, args: argparse.Namespace, epoch: int) -> bool:
    return data.eval_set is not None and bool(args.eval_every) and \
        ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs)


def finish_epoch(run: Run, data: Data, args: argparse.Namespace, epoch: int, started: float,
                 info: utils.DistInfo, device: torch.device, paths: dict[str, Path]) -> str:
    """Save last.pth, validate, log, save last.pth (and best.pth), the log and the plot; returns the
    summary line. The first save keeps the epoch's training if validation fails (a bad val image)."""
    train_losses = [s / max(run.progress.step, 1) for s in run.progress.loss_sums]
    entry: dict[str, Any] = {"epoch": epoch + 1, "lr": run.progress.lr,
                             "train_loss": sum(train_losses), **dict(zip(LOSS_NAMES, train_losses)),
                             "val_loss": None, "time_s": round(time.time() - started, 1)}
    run.history.append(entry)
    run.progress = Progress(epoch + 1)
    if info.is_main and (data.val_loader is not None or evaluates(data, args, epoch)):
        utils.atomic_save(run.checkpoint(args, data.iters_per_epoch, info.world_size), paths["last"])
    val, metrics = validate(run, data, args, epoch, info, device)
    if val:
        entry.update(val_loss=sum(val.values()), **{f"val_{k}": v for k, v in val.items()})
    if metrics:
        entry.update(box_AP=metrics["bbox"]["AP"], keypoint_AP=metrics["keypoints"]["AP"], metrics=metrics)
    entry["time_s"] = round(time.time() - started, 1)
    is_best = bool(metrics) and (run.best_ap is None or metrics["keypoints"]["AP"] > run.best_ap)
    if is_best:
        run.best_ap = metrics["keypoints"]["AP"]
    if info.is_main:
        ckpt = run.checkpoint(args, data.iters_per_epoch, info.world_size)
        utils.atomic_save(ckpt, paths["last"])
        if is_best:
            utils.atomic_save(ckpt, paths["best"])
        del ckpt
        save_log(paths["log"], args, run.config, run.history)
        draw.plot_history(paths["plot"], run.history, paths["final"].stem)
    return epoch_summary(entry, args.epochs, metrics, is_best)


def save_stopped_run(run: Run, data: Data, args: argparse.Namespace, info: utils.DistInfo,
                     paths: dict[str, Path]) -> str:
    """Save last.pth where the run stopped (Ctrl-C, a bad file); returns where that is, in words."""
    if info.is_main:
        utils.atomic_save(run.checkpoint(args, data.iters_per_epoch, info.world_size), paths["last"])
    if run.progress.step == 0 and run.progress.epoch:
        return f"the end of epoch {run.progress.epoch}"
    return f"epoch {run.progress.epoch + 1}, iteration {run.progress.step}/{data.iters_per_epoch}"


def train(args: argparse.Namespace, info: utils.DistInfo, device: torch.device) -> Path | None:
    log = print if info.is_main else (lambda *a, **k: None)
    args, resume_ckpt, resume_path = resume(args)  # settings: fresh, or the resumed run's
    check_args(args, info.world_size)
    if args.amp and device.type != "cuda":
        log("note: --amp needs CUDA; training in float32")
    weights = models.read_weights("none" if resume_ckpt is not None else args.weights)  # --weights PATH: read here
    args, frozen_bn = settle_model_settings(args, weights, resume_ckpt)
    data = build_data(args, info, device)
    # Rank 0 picks the folder (a new runs/train/expN by default); under torchrun every rank writes there.
    args.output_dir = str(utils.all_gather_objects(
        runs.prepare_output_dir(args.output_dir, args.resume is not None, args.exist_ok) if info.is_main else None)[0])
    paths = runs.run_paths(args.output_dir, models.checkpoint_name(args.epochs, args.batch_size, args.lr, args.momentum))
    if resume_ckpt is not None:
        keypoints.check_same(keypoints.KeypointSet.from_config(resume_ckpt["model_config"]), data.keypoint_set,
                             f"{resume_path} predicts", "the training data", "resume on the data it was trained on")
    transfer = models.keypoint_transfer(weights, data.keypoint_set)
    run = build_run(args, weights, frozen_bn, data.iters_per_epoch, info, device, data.keypoint_set,
                    new_predictor=transfer is not None)
    del weights  # its tensors are in the model now
    if resume_ckpt is not None:
        restore_run(run, resume_ckpt, resume_path, args, data.iters_per_epoch, log)
        del resume_ckpt
    describe(args, data, frozen_bn, info, device, run.progress if resume_path else None, resume_path, log, transfer)

    try:
        while run.progress.epoch < args.epochs:
            epoch, started = run.progress.epoch, time.time()
            # Each epoch's randomness (flips, scales, RoI sampling, worker seeds) depends only on
            # (seed, epoch, rank): an epoch redone after a crash is the same epoch.
            utils.seed_everything(args.seed + epoch * info.world_size + info.rank)
            batches = epoch_batches(data.sampler, data.group_ids, data.per_process_batch, epoch)
            loader = DataLoader(data.train_set, batch_sampler=batches[run.progress.step:], num_workers=args.workers,
                                collate_fn=collate_fn, pin_memory=device.type == "cuda")
            train_one_epoch(run.model, run.optimizer, run.scheduler, run.scaler, loader, device, run.progress,
                            args.epochs, data.iters_per_epoch, info.world_size, show=info.is_main,
                            checkpoint_path=paths["last"], clip_grad=args.clip_grad)
            log(finish_epoch(run, data, args, epoch, started, info, device, paths))
    except KeyboardInterrupt:
        where = save_stopped_run(run, data, args, info, paths)
        if info.is_main:
            print(f"\ninterrupted at {where}: saved {paths['last']}; continue with: "
                  f"python train.py --resume {paths['last']}", flush=True)
        raise SystemExit(130) from None
    except DatasetError as e:  # a bad image mid-run: keep what was trained, name the file
        where = save_stopped_run(run, data, args, info, paths)
        raise utils.UserError(f"{utils.one_line(e)}; saved {paths['last']} at {where}: fix or replace the file, "
                              f"then continue with: python train.py --resume {paths['last']}") from None

    # the final weights: a plain state_dict, like torchvision's own
    if info.is_main:
        utils.atomic_save(run.net.state_dict(), paths["final"])
        log(f"done: final weights {paths['final']}")
        log(f"      full checkpoints {paths['last']}" +
            (f", {paths['best']} (keypoint AP {run.best_ap:.3f})" if run.best_ap is not None else ""))
        log(f"      log {paths['log']}, plot {paths['plot']}")
    utils.barrier()
    return paths["final"] if info.is_main else None


def main(argv: Sequence[str] | None = None) -> Path | None:
    """Train; returns the final weights' path (None on other ranks than 0 under torchrun)."""
    args = parse_args(argv)
    with utils.cli_errors(), utils.interrupts_as_keyboard_interrupt():
        info, device = utils.init_distributed(args.device)
        try:
            return train(args, info, device)
        finally:
            utils.cleanup_distributed()


if __name__ == "__main__":
    main()
