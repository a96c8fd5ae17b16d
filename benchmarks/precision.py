"""benchmark.py's precision rows: float32 and bfloat16 (float16 on CUDA), NCHW and channels_last,
and keypoint_decode's heatmap decoding against torchvision's per-person loop.

  precision   our model (detect.py's: BatchNorm folded, persons below --score-thresh dropped
              before the keypoint head) alone on one frame, in each precision and memory layout,
              against float32 NCHW; all four measured interleaved in one run.
  decode      the original's model (box score threshold 0: --decode-persons persons through the
              keypoint head) in our precision with keypoint_decode's RoIHeads, against the same
              model with torchvision's RoIHeads: the difference is the heatmap decoding alone.
"""
from __future__ import annotations

import argparse
import copy

import torch

from keypoint_decode import use_fast_keypoint_decoding
from models import store_autocast_weights
from benchmarks.timing import Row, Table, compared, measure, model_only
from utils import cpu_has_fast_bf16


def precision_rows(table: Table, args: argparse.Namespace, device: torch.device, ours: torch.nn.Module,
                   image: torch.Tensor) -> None:
    low = "bf16" if device.type == "cpu" else "fp16"
    layouts = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    variants = {}
    for layout, memory_format in layouts.items():
        for precision in ("fp32", low):
            # detect.py's model for that precision: float32 weights, or bfloat16 ones for a CPU's bfloat16
            model = copy.deepcopy(ours).float().to(memory_format=memory_format)
            if precision == "bf16":
                store_autocast_weights(model)
            variants[f"{precision} {layout}"] = model_only(model, image, device, precision)
    s = measure(variants, args.repeats, args.warmup, device)
    native = "" if device.type != "cpu" or cpu_has_fast_bf16() else "; emulated bfloat16 (no AMX/AVX512-BF16)"
    for name in variants:
        if name != "fp32 NCHW":
            table.add(compared("precision", f"precision: {name}", s[name], s["fp32 NCHW"], "fp32 NCHW",
                               f"model only, our model at {args.min_size} px{native}"))


def decode_row(table: Table, args: argparse.Namespace, device: torch.device, original: torch.nn.Module,
               image: torch.Tensor, precision: str) -> Row:
    """Heatmap decoding: keypoint_decode (all persons at once) against torchvision's loop."""
    theirs = copy.deepcopy(original).eval()
    theirs.roi_heads.score_thresh, theirs.roi_heads.detections_per_img = 0.0, args.decode_persons
    if device.type == "cpu":
        theirs.to(memory_format=torch.channels_last)
    fast = use_fast_keypoint_decoding(copy.deepcopy(theirs))
    with torch.inference_mode():
        persons = len(fast([image])[0]["scores"])
    s = measure({"fast": model_only(fast, image, device, precision), "loop": model_only(theirs, image, device, precision)},
                args.repeats, args.warmup, device)
    row = compared("option", "option: vectorised heatmap decoding", s["fast"], s["loop"],
                   "torchvision's per-person loop",
                   f"model only, {persons} persons through the keypoint head, {precision}; keypoint_decode.py")
    table.add(row)
    return row
