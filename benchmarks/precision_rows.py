"""benchmark.py's precision rows: float32 and bfloat16 (float16 on CUDA), NCHW and channels_last.

  precision   our model (detect.py's: BatchNorm folded, persons below --score-thresh dropped
              before the keypoint head) alone on one frame, in each precision and memory layout,
              against float32 NCHW; all four measured interleaved in one run.
"""
from __future__ import annotations

import argparse
import copy

import torch

from models import store_autocast_weights
from benchmarks.timing import Row, Table, compared, measure, model_only
from precision import cpu_has_fast_bf16


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
