"""benchmark.py's ONNX Runtime rows: export.py's file of the benchmark's weights, run by ONNX Runtime
(onnx_model.OnnxKeypointRCNN, as test.py and detect.py run it), against our PyTorch path (detect.py's
model: BatchNorm folded, channels_last on a CPU, float32 coordinates, roi_align's kernel) in float32 and, where
the CPU computes bfloat16 natively, in bfloat16; model only, the same frame and weights, persons
below the display threshold dropped before the keypoint head on every side, all sides interleaved
in one run, at each --onnx-sizes. ONNX Runtime uses as many threads as torch.
"""
from __future__ import annotations

import argparse
import copy

import torch

import export
import models
import onnx_model
from benchmarks.data import DISPLAY_THRESH
from benchmarks.timing import Table, compared, measure, model_only
from precision import cpu_has_fast_bf16
from utils import UserError


def onnx_rows(table: Table, args: argparse.Namespace, device: torch.device, weights: str,
              image: torch.Tensor) -> None:
    if onnx_model.onnxruntime is None or export.onnx is None:
        print(f"onnx rows: skipped, onnx or onnxruntime not installed ({onnx_model.INSTALL_HINT})")
        return
    low = "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else None
    for size in args.onnx_sizes:
        model, config = models.load_model(weights, min_size=size, max_size=args.max_size,
                                          rpn_post_nms_top_n_test=args.proposals, box_score_thresh=DISPLAY_THRESH)
        data = export.export_bytes(model, config, export.export_info(str(weights), proposals=args.proposals))
        try:
            runtime = onnx_model.OnnxKeypointRCNN(onnx_model.open_session(data, device), "benchmark.onnx",
                                                  DISPLAY_THRESH)
        except UserError as e:  # no CUDA provider in this ONNX Runtime
            print(f"onnx rows: skipped, {e}")
            return
        ours = models.prepare_for_inference(copy.deepcopy(model), device)
        with torch.inference_mode():
            persons = len(runtime([image])[0]["scores"])
        sides = {"onnx": model_only(runtime, image, device, "fp32"), "fp32": model_only(ours, image, device, "fp32")}
        if low:  # detect.py's bfloat16 model: its weights stored in bfloat16
            sides[low] = model_only(models.prepare_for_inference(copy.deepcopy(model), device, low), image, device, low)
        s = measure(sides, args.repeats, args.warmup, device)
        note = f"model only at {size} px, {persons} person(s) through the keypoint head; {runtime.describe()}"
        table.add(compared("onnx", f"onnx: ONNX Runtime, {size} px", s["onnx"], s["fp32"],
                           "our PyTorch path in float32", note))
        if low:
            table.add(compared("onnx", f"onnx: ONNX Runtime vs bf16, {size} px", s["onnx"], s[low],
                               "our PyTorch path in bfloat16 autocast", note))
