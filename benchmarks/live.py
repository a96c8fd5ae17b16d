"""benchmark.py's live rows and its RoIAlign row.

  detect: model only, live   per frame, the model alone, as a webcam runs it: detect.py's model
              (`detect.load_detector` at --live-size px with --score-thresh 0 and --max-persons
              --live-persons, so that many persons reach the keypoint head; BatchNorm folded,
              channels_last on a CPU, its RoIHeads and RoI pools) through `detect.detect_frame`, in
              each precision this device has, against torchvision's model from the same weights as
              torchvision builds it (its RoIHeads and MultiScaleRoIAlign, NCHW, float32, box score
              threshold 0, --live-persons detections), on the same frames; all sides interleaved in
              one run, with frames per second. Targets (the issue's, on a CPU): 0.2x in bfloat16,
              0.6x in float32.
  option: RoIAlign kernel   our model alone with roi_align's kernel against the same model with
              torchvision's RoIAlign op, at --min-size.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
from pathlib import Path
from typing import Callable

import cv2
import torch

import detect
import models
import roi_align
import utils
from precision import cpu_has_fast_bf16
from benchmarks.timing import Row, Table, compared, measure, model_only

# The targets for the live rows on a CPU, by precision: our model time / torchvision's float32.
LIVE_GOALS = {"bf16": 0.2, "fp32": 0.6}


def add_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--live-size", type=utils.image_side, default=480,
                       help="shorter side of the live rows (default: 480, detect.py's advice for a webcam on a CPU)")
    group.add_argument("--live-persons", type=utils.positive_int, default=3,
                       help="persons through the keypoint head in the live rows (default: 3)")


def live_precisions(device: torch.device) -> list[str]:
    """The precisions `detect.py --precision` can run here at full speed."""
    if device.type == "cuda":
        return ["fp16", "fp32"]
    return ["bf16", "fp32"] if cpu_has_fast_bf16() else ["fp32"]


def _ours(weights: str, args: argparse.Namespace, device: torch.device, precision: str) -> torch.nn.Module:
    flags = ["--file", "unused.jpg", "--weights", weights, "--min-size", str(args.live_size),
             "--max-size", str(args.max_size), "--score-thresh", "0", "--max-persons", str(args.live_persons),
             "--proposals", str(args.proposals), "--device", str(device), "--precision", precision]
    with contextlib.redirect_stdout(io.StringIO()):
        return detect.load_detector(detect.parse_args(flags), device, precision).model


def _frame_runs(call: Callable[[object], int], frames: list) -> Callable[[int], dict[str, float]]:
    def go(_: int) -> dict[str, float]:
        return {"persons": sum(call(frame) for frame in frames)}
    return go


def live_rows(table: Table, args: argparse.Namespace, device: torch.device, weights: str,
              frame_paths: list[Path]) -> list[Row]:
    frames = [cv2.imread(str(p)) for p in frame_paths]
    tensors = [torch.from_numpy(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255).to(device)
               for f in frames]
    theirs, _ = models.load_model(weights, min_size=args.live_size, max_size=args.max_size, box_score_thresh=0.0,
                                  box_detections_per_img=args.live_persons, rpn_post_nms_top_n_test=args.proposals)
    theirs = roi_align.install_torchvision_pools(theirs).to(device).eval()
    frame_of = {id(f): t for f, t in zip(frames, tensors)}

    def torchvision_call(frame) -> int:
        with torch.no_grad():
            output = theirs([frame_of[id(frame)]])[0]
        return len(output["scores"])

    functions = {"torchvision": _frame_runs(torchvision_call, frames)}
    for precision in live_precisions(device):
        model = _ours(weights, args, device, precision)
        functions[precision] = _frame_runs(
            lambda frame, m=model, p=precision: len(detect.detect_frame(m, frame, device, p)["scores"]), frames)
    s = measure(functions, args.repeats, args.warmup, device, per_run=len(frames))
    base = s["torchvision"]
    rows = []
    for precision in [name for name in functions if name != "torchvision"]:
        ours = s[precision]
        row = compared("detect", f"detect: model only, live {args.live_size} px {precision}", ours, base,
                       f"torchvision's model, float32, same weights at {args.live_size} px",
                       f"{1 / ours.median:.1f} vs {1 / base.median:.1f} FPS; keypoint head on "
                       f"{ours.extra_median('persons'):.0f} vs {base.extra_median('persons'):.0f} person(s)/frame"
                       f"{roi_align.fallback_note()}")
        row.goal = LIVE_GOALS.get(precision) if device.type == "cpu" else None
        table.add(row)
        rows.append(row)
    return rows


def roi_align_row(table: Table, args: argparse.Namespace, device: torch.device, ours: torch.nn.Module,
                  image: torch.Tensor, precision: str) -> Row:
    """Our model with roi_align's kernel against the same model with torchvision's op."""
    plain = roi_align.install_torchvision_pools(copy.deepcopy(ours))
    s = measure({"kernel": model_only(ours, image, device, precision), "op": model_only(plain, image, device, precision)},
                args.repeats, args.warmup, device)
    note = roi_align.fallback_note().lstrip("; ") or f"model only, {precision}; roi_align.py (numba), all FPN levels in one call"
    row = compared("option", "option: RoIAlign kernel", s["kernel"], s["op"], "torchvision's RoIAlign op", note)
    table.add(row)
    return row
