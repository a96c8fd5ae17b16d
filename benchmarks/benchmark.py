"""Measure our scripts against their baselines, side by side in one run, on real images.

Rows (every one a median over --repeats timed runs after --warmup untimed ones; ratio = our
time / the baseline's time, measured in this same run, so lower is better):
  detect      per frame, end to end (read the file, model, draw): detect.py's path against the
              original project's path (PIL -> ToTensor -> model at its default box score threshold
              0.05 -> matplotlib), same frames, same weights, same resolution; then the model alone,
              our pipeline overhead (everything but the model) as a fraction of the model time, and
              the cost a frame of --track --smooth for 10 persons against it (benchmarks/tracking.py);
              then the live rows: the model alone as a webcam runs it, at --live-size px with
              --live-persons persons, in each precision, against torchvision's float32 (benchmarks/live.py).
  resolution  our path at --sizes (800 / 640 / 480), each against the largest.
  option      the speed settings, model only: channels_last, BatchNorm folding, fewer RPN
              proposals, float16 and cudnn.benchmark (CUDA), torch.compile (--compile); the
              precision rows (fp32/bf16 x NCHW/channels_last, benchmarks/precision_rows.py)
              and roi_align's kernel against torchvision's RoIAlign op (benchmarks/live.py).
  onnx        export.py's file run by ONNX Runtime against our PyTorch path in float32 and bfloat16,
              model only, at --onnx-sizes (benchmarks/onnx_rows.py).
  data        dataset items (decode + target + flip): dataset.CocoKeypoints against PIL + ToTensor.
  train       one iteration of train.py's loop (train_one_epoch) against a plain loop doing the
              same thing (torchvision tutorial style), same model, batches and seeds; AMP vs fp32 on CUDA.
  eval        COCOeval of the same detections: coco_eval.coco_evaluate against plain pycocotools.
Each side also reports its peak memory: the CUDA allocator's peak on a GPU, else the process's
peak resident memory (RSS) during that side's runs (Linux resets it per run; elsewhere it is the
process's running maximum, so read it as an upper bound).

Usage:
    python -m benchmarks --quick                      # < 5 min on 2 idle CPU cores
    python -m benchmarks                              # the full table (docs/performance.md)
    python -m benchmarks --device cuda --json runs/benchmark_cuda.json
    python -m benchmarks --data-root coco --weights coco --only detect resolution
    python -m benchmarks --compile                     # adds torch.compile (compiling takes minutes)

Data: --data-root (COCO layout), else ../shared/data/coco-mini beside the repo, else ./sample,
else a sample dataset generated under runs/benchmark/sample. Weights: --weights (a checkpoint or
'coco'), else a seeded random model whose person logit is scaled and shifted so that as many
persons pass 0.9 on the benchmark frames as they have annotated people, and as many boxes pass
0.05 as the untouched random model lets through (docs/performance.md says why).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from pycocotools.cocoeval import COCOeval

import coco_eval
import detect
import engine
import media
import models
import roi_align
import train
import utils
from dataset import (CocoKeypoints, RandomHorizontalFlip, collate_fn, get_transforms, load_coco, read_image,
                     zero_invisible_keypoints)
from precision import cpu_has_fast_bf16, precision_arg, resolve as resolve_precision
from benchmarks import live
from benchmarks.data import DISPLAY_THRESH, benchmark_frames, random_weights, resolve_data_root, synthetic_detections
from benchmarks.precision_rows import precision_rows
from benchmarks.onnx_rows import onnx_rows
from benchmarks.timing import HEADER, Row, Table, compared, describe_device, fmt_time, measure, model_only, sync
from benchmarks.tracking import tracking_row
from utils import coco_paths

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = "runs/benchmark.json"
GROUPS = ("detect", "resolution", "option", "onnx", "data", "train", "eval")

# (--quick value, full value) of the settings --quick changes.
PRESETS = {
    "min_size": (640, 800), "frames": (1, 3), "repeats": (3, 5), "warmup": (1, 1), "data_items": (24, 80),
    "train_backbone": ("resnet18", "resnet50"), "train_size": (320, 512), "train_keypoint_head": ("128x4", "512x8"),
}


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    quick = ", ".join(f"--{k.replace('_', '-')} {q}" for k, (q, _) in PRESETS.items())
    p.add_argument("--quick", action="store_true", help=f"small settings: {quick}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=utils.positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data-root", default=None, help="COCO layout (default: coco-mini beside the repo, else sample data)")
    p.add_argument("--json", default=DEFAULT_JSON, help=f"write the results here (default: {DEFAULT_JSON})")
    p.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="row groups to run (default: all)")
    p.add_argument("--repeats", type=utils.positive_int, default=None, help="timed runs per row (default: 5, --quick 3)")
    p.add_argument("--warmup", type=utils.nonnegative_int, default=None, help="untimed runs first (default: 1)")
    p.add_argument("--seed", type=utils.nonnegative_int, default=0)

    g = p.add_argument_group("detect, resolution, option rows")
    g.add_argument("--weights", default=None,
                   help="a checkpoint or 'coco' for both paths (default: a seeded random model, see above)")
    g.add_argument("--backbone", choices=models.BACKBONES, default="resnet50", help="random model's backbone")
    g.add_argument("--keypoint-head", type=utils.keypoint_head_arg, default=None, metavar="WxD",
                   help="random model's keypoint head (default: torchvision's 512x8)")
    g.add_argument("--min-size", type=utils.image_side, default=None, help="resolution of the detect comparison (default: 800, --quick 640)")
    g.add_argument("--max-size", type=utils.image_side, default=models.DEFAULT_MAX_SIZE)
    g.add_argument("--sizes", type=utils.image_side, nargs="+", default=[800, 640, 480], help="resolution rows")
    g.add_argument("--frames", type=utils.positive_int, default=None, help="val images per detect run (default: 3, --quick 1)")
    g.add_argument("--proposals", type=utils.positive_int, default=1000,
                   help="RPN proposals per frame on both paths (default: torchvision's 1000)")
    live.add_flags(g)
    g.add_argument("--fewer-proposals", type=utils.positive_int, default=300, help="the proposals of the 'fewer proposals' option row")
    g.add_argument("--boxes-at-005", type=utils.nonnegative_int, default=None, metavar="N",
                   help="random model: make N boxes pass 0.05 on the frames, i.e. reach the original's keypoint "
                        "head (default: as many as the untouched random model lets through)")
    g.add_argument("--precision", type=precision_arg, default="auto",
                   help="detect.py --precision for our path and the option rows (default: auto, as detect.py)")
    g.add_argument("--decode-persons", type=utils.positive_int, default=100,
                   help="persons through the keypoint head in the heatmap-decoding row (box score threshold 0)")
    g.add_argument("--onnx-sizes", type=utils.image_side, nargs="+", default=[800, 480],
                   help="the ONNX Runtime rows' sizes (one export each)")
    g.add_argument("--compile", action="store_true", help="also time torch.compile (the compile itself takes minutes)")

    g = p.add_argument_group("data, train, eval rows")
    g.add_argument("--data-items", type=utils.positive_int, default=None, help="train images per data run (default: 80, --quick 24)")
    g.add_argument("--train-backbone", choices=models.BACKBONES, default=None, help="(default: resnet50, --quick resnet18)")
    g.add_argument("--train-size", type=utils.image_side, default=None, help="training image size (default: 512, --quick 320)")
    g.add_argument("--train-keypoint-head", type=utils.keypoint_head_arg, default=None, metavar="WxD",
                   help="(default: 512x8, --quick 128x4)")
    g.add_argument("--train-batch", type=utils.positive_int, default=2, help="images per training iteration")
    g.add_argument("--train-rois", type=utils.positive_int, default=512, help="RoIs sampled per image (train.py --box-batch-size-per-image)")
    g.add_argument("--eval-detections", type=utils.positive_int, default=20, help="synthetic detections per val image for COCOeval")
    args = p.parse_args(argv)

    for name, (quick_value, full_value) in PRESETS.items():
        if getattr(args, name) is None:
            value = quick_value if args.quick else full_value
            setattr(args, name, utils.keypoint_head_arg(value) if name == "train_keypoint_head" else value)
    return args


# --------------------------------------------------------------------------------------
# detect: the original per-frame path (BASELINE) and ours
# --------------------------------------------------------------------------------------
class TimedModel:
    """Calls the model and remembers how long it took and how many persons it returned."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.seconds, self.persons = 0.0, 0

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        sync(self.device)
        start = time.perf_counter()
        outputs = self.model(images)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        self.persons += sum(len(o["scores"]) for o in outputs)
        return outputs


def original_frame(model: Callable, path: Path, device: torch.device) -> np.ndarray:
    """BASELINE, the original project's per-frame path (the torchvision tutorial pattern):
    PIL -> ToTensor -> model (torchvision's default box score threshold, 0.05) -> matplotlib:
    the image, then limbs (plot) and keypoints (scatter) of each person above 0.9, rendered to
    an array. Written with matplotlib's object API instead of pyplot's global figure; the same
    artists are drawn and rendered."""
    img = Image.open(path).convert("RGB")
    tensor = torchvision.transforms.ToTensor()(img).to(device)
    with torch.no_grad():
        output = model([tensor])[0]
    fig = Figure(figsize=(img.width / 100, img.height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img)
    ax.axis("off")
    for score, keypoints in zip(output["scores"], output["keypoints"]):
        if score > DISPLAY_THRESH:
            kps = keypoints.detach().cpu().numpy()
            for a, b in utils.COCO_SKELETON:
                ax.plot(kps[[a, b], 0], kps[[a, b], 1], linewidth=2)
            ax.scatter(kps[:, 0], kps[:, 1], s=12, c="red")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def our_frame(detector: detect.Detector, path: Path) -> np.ndarray:
    """detect.py's per-frame path for a file: read, then its Detector (the model and the drawing)."""
    frame = media.read_bgr(str(path))
    detector(frame)
    return frame


def load_detectors(weights: str, args: argparse.Namespace, device: torch.device, first_frame: Path):
    """(ours as detect.py prepares it: a detect.Detector, the baseline model)."""
    detect_args = detect.parse_args(["--file", str(first_frame), "--weights", weights, "--min-size", str(args.min_size),
                                     "--max-size", str(args.max_size), "--score-thresh", str(DISPLAY_THRESH),
                                     "--device", str(device), "--proposals", str(args.proposals),
                                     "--precision", args.precision])
    with contextlib.redirect_stdout(io.StringIO()):
        ours = detect.load_detector(detect_args, device, *resolve_precision(detect_args, device, detect.CUDA_PRECISION))
    # torchvision's thresholds: box score 0.05, 100 detections.
    original, _ = models.load_model(weights, min_size=args.min_size, max_size=args.max_size,
                                   rpn_post_nms_top_n_test=args.proposals)
    return ours, roi_align.install_torchvision_pools(original).to(device)


@dataclass
class Detectors:
    """The two detect paths of one benchmark run, on the same weights and frames."""
    ours: torch.nn.Module
    original: torch.nn.Module
    ours_timed: TimedModel
    original_timed: TimedModel
    detector: detect.Detector  # detect.py's per-frame path, on ours_timed
    precision: str
    frames: list[Path]
    image: torch.Tensor  # the first frame, for the model-only rows


def every_frame(timed: TimedModel, frames: list[Path], frame_fn: Callable[[Path], Any]) -> Callable[[int], dict[str, float]]:
    def go(_: int) -> dict[str, float]:
        timed.seconds, timed.persons = 0.0, 0
        for f in frames:
            frame_fn(f)
        return {"model": timed.seconds, "persons": timed.persons}
    return go


def detect_rows(table: Table, args: argparse.Namespace, device: torch.device, weights: str,
                frames: list[Path]) -> None:
    groups = set(args.only)
    detector, original = load_detectors(weights, args, device, frames[0])
    ours, ours_timed = detector.model, TimedModel(detector.model, device)
    d = Detectors(ours, original, ours_timed, TimedModel(original, device),
                  dataclasses.replace(detector, model=ours_timed), detector.precision,
                  frames, read_image(frames[0]).to(device).float().div_(255))
    if "detect" in groups:
        end_to_end_rows(table, args, device, d)
        tracking_row(table, args, next(row for row in table.rows if row.name == "detect: model only"))
        live.live_rows(table, args, device, weights, frames)
    if "resolution" in groups:
        resolution_rows(table, args, device, d)
    if "option" in groups:
        option_rows(table, args, device, d)
        precision_rows(table, args, device, d.ours, d.image)
        live.roi_align_row(table, args, device, d.ours, d.image, d.precision)
        if device.type == "cuda":
            cuda_option_rows(table, args, device, d)
        if args.compile:
            compile_rows(table, args, device, d)
    if "onnx" in groups:
        onnx_rows(table, args, device, weights, d.image)


def end_to_end_rows(table: Table, args: argparse.Namespace, device: torch.device, d: Detectors) -> None:
    frames, original_timed, ours_timed, precision = d.frames, d.original_timed, d.ours_timed, d.precision
    s = measure({"original": every_frame(original_timed, frames, lambda f: original_frame(original_timed, f, device)),
                 "ours": every_frame(ours_timed, frames, lambda f: our_frame(d.detector, f))},
                args.repeats, args.warmup, device, per_run=len(frames))
    o, b = s["ours"], s["original"]
    persons = f"keypoint head on {b.extra_median('persons'):.0f} box(es)/frame (original) vs " \
              f"{o.extra_median('persons'):.0f} (ours)"
    row = compared("detect", "detect: frame, end to end", o, b,
                   f"original path (PIL, 0.05, matplotlib) at {args.min_size} px", persons + f"; ours in {precision}")
    # The goal: 0.3x with native bfloat16 on the CPU, 0.5x elsewhere.
    row.goal = 0.3 if device.type == "cpu" and cpu_has_fast_bf16() else 0.5
    table.add(row)
    table.add(Row("detect", "detect: model only", o.extra_median("model"), b.extra_median("model"),
                  "original model call (box score threshold 0.05)", "s", note=persons,
                  runs_ours=o.extra["model"], runs_baseline=b.extra["model"]))
    overhead = [t - m for t, m in zip(o.times, o.extra["model"])]
    original_overhead = median(t - m for t, m in zip(b.times, b.extra["model"]))
    table.add(Row("detect", "detect: pipeline overhead", median(overhead), o.extra_median("model"),
                  "our model time (overhead = end to end - model)", "s",
                  note=f"the original's overhead: {fmt_time(original_overhead, 's')}",
                  runs_ours=overhead, runs_baseline=o.extra["model"]))


def resolution_rows(table: Table, args: argparse.Namespace, device: torch.device, d: Detectors) -> None:
    frames, ours, ours_timed = d.frames, d.ours, d.ours_timed
    sizes = sorted(set(args.sizes), reverse=True)

    def at_size(size: int) -> Callable[[Path], np.ndarray]:
        def frame_fn(f: Path) -> np.ndarray:
            ours.transform.min_size = (size,)
            return our_frame(d.detector, f)
        return frame_fn
    functions = {size: every_frame(ours_timed, frames, at_size(size)) for size in sizes}
    s = measure(functions, args.repeats, args.warmup, device, per_run=len(frames))
    ours.transform.min_size = (args.min_size,)
    for size in sizes:
        table.add(compared("resolution", f"resolution: min_size {size}", s[size], s[sizes[0]],
                           f"our path at {sizes[0]}", f"model {fmt_time(s[size].extra_median('model'), 's')}"))


def option_rows(table: Table, args: argparse.Namespace, device: torch.device, d: Detectors) -> None:
    ours, original = d.ours, d.original
    contiguous = copy.deepcopy(ours).to(memory_format=torch.contiguous_format)
    cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    s = measure({"cl": model_only(cl, d.image, device, d.precision), "cf": model_only(contiguous, d.image, device, d.precision)}, args.repeats, args.warmup, device)
    used = "used by detect.py here" if ours_is_channels_last(ours) else "not used by detect.py here"
    table.add(compared("option", "option: channels_last", s["cl"], s["cf"], "contiguous (NCHW) weights",
                       f"model only; {used}"))
    del contiguous, cl

    unfolded = roi_align.install_fast_pools(copy.deepcopy(original))  # ours in every respect but the folding
    unfolded.roi_heads.score_thresh = ours.roi_heads.score_thresh
    unfolded.roi_heads.detections_per_img = ours.roi_heads.detections_per_img
    if ours_is_channels_last(ours):
        unfolded.to(memory_format=torch.channels_last)
    if d.precision == "bf16" and device.type == "cpu":
        models.store_autocast_weights(unfolded)
    s = measure({"folded": model_only(ours, d.image, device, d.precision), "unfolded": model_only(unfolded, d.image, device, d.precision)}, args.repeats, args.warmup, device)
    table.add(compared("option", "option: BatchNorm folded into convs", s["folded"], s["unfolded"],
                       "BatchNorm layers kept", "model only; used by detect.py (models.fold_batchnorm)"))
    del unfolded

    fewer = copy.deepcopy(ours)
    fewer.rpn._post_nms_top_n["testing"] = args.fewer_proposals  # what rpn_post_nms_top_n_test sets
    s = measure({"fewer": model_only(fewer, d.image, device, d.precision), "all": model_only(ours, d.image, device, d.precision)}, args.repeats, args.warmup, device)
    table.add(compared("option", "option: fewer RPN proposals", s["fewer"], s["all"], f"{args.proposals} proposals",
                       f"model only; {args.fewer_proposals} proposals: detect.py --proposals {args.fewer_proposals}"))
    del fewer


def cuda_option_rows(table: Table, args: argparse.Namespace, device: torch.device, d: Detectors) -> None:
    ours, image = d.ours, d.image
    fp32 = ours  # same weights, autocast off
    functions = {"fp16": model_only(ours, d.image, device, "fp16")}

    def fp32_run(_: int) -> None:
        with torch.inference_mode():
            fp32([image])
    functions["fp32"] = fp32_run
    s = measure(functions, args.repeats, args.warmup, device)
    table.add(compared("option", "option: float16 autocast", s["fp16"], s["fp32"], "float32",
                       "model only; detect.py --precision fp16 (auto on CUDA)"))

    def with_cudnn_benchmark(flag: bool) -> Callable[[int], None]:
        inner = model_only(ours, d.image, device, d.precision)

        def go(run: int) -> None:
            torch.backends.cudnn.benchmark = flag
            inner(run)
        return go
    previous = torch.backends.cudnn.benchmark
    try:
        s = measure({"on": with_cudnn_benchmark(True), "off": with_cudnn_benchmark(False)},
                    args.repeats, args.warmup + 1, device)
    finally:
        torch.backends.cudnn.benchmark = previous
    table.add(compared("option", "option: cudnn.benchmark", s["on"], s["off"], "cudnn.benchmark off",
                       "model only, one frame size"))


def compile_rows(table: Table, args: argparse.Namespace, device: torch.device, d: Detectors) -> None:
    ours = d.ours
    compiled = copy.deepcopy(ours)
    compiled.backbone = torch.compile(compiled.backbone)
    start = time.perf_counter()
    model_only(compiled, d.image, device, d.precision)(0)
    compile_s = time.perf_counter() - start
    s = measure({"compiled": model_only(compiled, d.image, device, d.precision),
                 "eager": model_only(ours, d.image, device, d.precision)}, args.repeats, args.warmup, device)
    table.add(compared("option", "option: torch.compile (backbone)", s["compiled"], s["eager"], "eager",
                       f"model only; first call (compiling) {compile_s:.0f} s"))


def ours_is_channels_last(model: torch.nn.Module) -> bool:
    conv = model.backbone.body.conv1 if hasattr(model.backbone.body, "conv1") else None
    return conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last) \
        and not conv.weight.is_contiguous()


# --------------------------------------------------------------------------------------
# data: CocoKeypoints against a PIL equivalent (BASELINE)
# --------------------------------------------------------------------------------------
def data_rows(table: Table, args: argparse.Namespace, device: torch.device, data_root: Path) -> None:


    ours = CocoKeypoints(*coco_paths(data_root, "train"), train=True, transforms=get_transforms(True))
    items = list(range(min(args.data_items, len(ours))))
    flip, to_tensor = RandomHorizontalFlip(0.5), torchvision.transforms.ToTensor()

    def pil_item(idx: int) -> tuple[torch.Tensor, dict]:
        """BASELINE: PIL decode + ToTensor, the same target and the same flip."""
        info = ours.coco.imgs[ours.ids[idx]]
        image = to_tensor(Image.open(ours.image_dir / info["file_name"]).convert("RGB"))
        image, target = flip(image, ours.get_target(idx))
        zero_invisible_keypoints(target["keypoints"])
        return image, target

    def every_item(get: Callable[[int], Any]) -> Callable[[int], None]:
        def go(run_index: int) -> None:
            torch.manual_seed(args.seed + run_index)  # the same flips on both sides
            for i in items:
                get(i)
        return go

    cpu = torch.device("cpu")
    s = measure({"ours": every_item(ours.__getitem__), "pil": every_item(pil_item)}, args.repeats, args.warmup, cpu,
                per_run=len(items))
    o, b = s["ours"], s["pil"]
    table.add(compared("data", "data: dataset item", o, b, "PIL open/convert + ToTensor + same flip",
                       f"{1 / o.median:.1f} vs {1 / b.median:.1f} items/s over {len(items)} train images"))


# --------------------------------------------------------------------------------------
# train: train.py's loop against a plain loop (BASELINE)
# --------------------------------------------------------------------------------------
def plain_step(model: torch.nn.Module, optimizer, scheduler, images, targets, device: torch.device) -> float:
    """BASELINE: one iteration of the plain training loop (torchvision's tutorial/references)."""
    images = [image.to(device) for image in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    loss_dict = model(images, targets)
    losses = sum(loss for loss in loss_dict.values())
    loss_value = losses.item()
    if not math.isfinite(loss_value):
        raise utils.UserError(f"baseline loss is {loss_value}")
    optimizer.zero_grad()
    losses.backward()
    optimizer.step()
    scheduler.step()
    return loss_value


def train_rows(table: Table, args: argparse.Namespace, device: torch.device, data_root: Path) -> None:

    steps = args.warmup + args.repeats
    dataset = CocoKeypoints(*coco_paths(data_root, "train"), train=True, transforms=get_transforms(True))
    utils.seed_everything(args.seed)
    # One batch for every run: steps on different batches differ in cost by 2x (image sizes, positive
    # RoIs), which would swamp the difference between the two loops.
    order = torch.randperm(len(dataset)).tolist()
    batch = collate_fn([dataset[order[k % len(order)]] for k in range(args.train_batch)])

    utils.seed_everything(args.seed)
    model = models.build_model(args.train_backbone, "none", min_size=args.train_size,
                              max_size=max(args.train_size, round(args.train_size * 1333 / 800)),
                              keypoint_head=args.train_keypoint_head,
                              box_batch_size_per_image=args.train_rois).to(device)
    defaults = train.parse_args([])
    schedule = train.lr_factor(steps, defaults.milestones, defaults.gamma, defaults.warmup_iters, defaults.warmup_factor)

    def make(m: torch.nn.Module):
        params = [p for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=defaults.lr, momentum=defaults.momentum, weight_decay=defaults.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def ours_loop(amp: bool) -> Callable[[int], None]:
        m = copy.deepcopy(model)
        optimizer, scheduler = make(m)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        progress = engine.Progress()

        def go(run: int) -> None:
            torch.manual_seed(args.seed + run)  # the same RoI sampling on both sides
            engine.train_one_epoch(m, optimizer, scheduler, scaler, [batch], device, progress, epochs=1,
                                  iters_per_epoch=steps, world_size=1, show=False,
                                  checkpoint_path=Path("unused.pth"))
        return go

    def plain_loop() -> Callable[[int], None]:
        m = copy.deepcopy(model)
        m.train()
        optimizer, scheduler = make(m)

        def go(run: int) -> None:
            torch.manual_seed(args.seed + run)
            plain_step(m, optimizer, scheduler, *batch, device)
        return go

    head = args.train_keypoint_head
    what = f"{args.train_backbone} at {args.train_size} px, keypoint head {head[0]}x{len(head)}, batch {args.train_batch}, " \
           f"the same batch every run"
    s = measure({"ours": ours_loop(False), "plain": plain_loop()}, args.repeats, args.warmup, device)
    table.add(compared("train", "train: iteration", s["ours"], s["plain"], "plain loop, same batches", what))
    if device.type == "cuda":
        s = measure({"amp": ours_loop(True), "fp32": ours_loop(False)}, args.repeats, args.warmup, device)
        table.add(compared("train", "train: iteration, AMP", s["amp"], s["fp32"], "train.py's loop in float32", what))


# --------------------------------------------------------------------------------------
# eval: coco_eval.coco_evaluate against plain pycocotools (BASELINE)
# --------------------------------------------------------------------------------------


def plain_coco_eval(coco_gt, results: list[dict[str, Any]], image_ids: list[int]) -> dict[str, list[float]]:
    """BASELINE: pycocotools as its README shows it: loadRes, then evaluate/accumulate/summarize."""
    stats = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        for iou_type in ("bbox", "keypoints"):
            evaluator = COCOeval(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            stats[iou_type] = [float(v) for v in evaluator.stats]
    return stats


def eval_rows(table: Table, args: argparse.Namespace, device: torch.device, data_root: Path) -> None:

    coco = load_coco(coco_paths(data_root, "val")[1])
    results = synthetic_detections(coco, args.eval_detections, args.seed)
    image_ids = sorted(coco.getImgIds())
    outcome: dict[str, Any] = {}

    def ours(_: int) -> None:
        outcome["ours"] = coco_eval.coco_evaluate(coco, results, image_ids, verbose=False)

    def plain(_: int) -> None:
        outcome["plain"] = plain_coco_eval(coco, results, image_ids)

    cpu = torch.device("cpu")
    s = measure({"ours": ours, "plain": plain}, args.repeats, args.warmup, cpu)
    same = all(np.allclose(list(outcome["ours"][k].values()), outcome["plain"][k]) for k in ("bbox", "keypoints"))
    table.add(compared("eval", "eval: COCOeval", s["ours"], s["plain"], "plain pycocotools",
                       f"{len(results)} detections on {len(image_ids)} images; "
                       f"{'same' if same else 'DIFFERENT'} metrics (keypoint AP {outcome['ours']['keypoints']['AP']:.3f})"))


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to --json."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    try:
        with utils.cli_errors():
            return run_benchmark(args, argv)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests)


def run_benchmark(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    started = time.perf_counter()
    device = utils.select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = resolve_data_root(args.data_root)
    frames, persons = benchmark_frames(data_root, args.frames)
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{command}\ndevice: {describe_device(device)}; torch {torch.__version__}, data {data_root}")
    table = Table()
    with tempfile.TemporaryDirectory() as tmp:
        weights, about = (args.weights, models.describe_weights(args.weights)) if args.weights else \
            (None, "")
        if {"detect", "resolution", "option", "onnx"} & set(args.only):
            if weights is None:
                weights, about = random_weights(args, frames, persons, Path(tmp))
            print(f"weights: {about}\nframes: {', '.join(f.name for f in frames)}")
        print(f"each row: median of {args.repeats} run(s) after {args.warmup} warm-up; ratio = ours / baseline; "
              f"memory: {'peak CUDA allocated' if device.type == 'cuda' else 'peak process RSS'}\n")
        print(HEADER, flush=True)
        if {"detect", "resolution", "option", "onnx"} & set(args.only):
            detect_rows(table, args, device, weights, frames)
        if "data" in args.only:
            data_rows(table, args, device, data_root)
        if "train" in args.only:
            train_rows(table, args, device, data_root)
        if "eval" in args.only:
            eval_rows(table, args, device, data_root)

    checks = [(row.name, row.ratio, row.target, row.ratio <= row.target) for row in table.rows if row.target is not None]
    if checks:
        print("\ntargets: " + "; ".join(f"{n} {r:.3f}x <= {t:g} {'ok' if ok else 'FAIL'}" for n, r, t, ok in checks))
    report = {
        "command": command, "device": describe_device(device), "torch": torch.__version__,
        "data_root": str(data_root), "frames": [str(f) for f in frames], "weights": about,
        "memory": "peak CUDA memory allocated (MiB)" if device.type == "cuda" else "peak process RSS (MiB)",
        "settings": {k: v for k, v in vars(args).items()}, "rows": [row.to_json() for row in table.rows],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    path = utils.write_json(args.json, report, indent=1)
    print(f"{len(table.rows)} rows in {report['elapsed_s']:.0f} s; wrote {path}")
    return report


if __name__ == "__main__":
    main()
