"""Where a Keypoint R-CNN's inference time goes, per stage, in float32 and bfloat16, NCHW and
channels_last, measured side by side (interleaved) in one run.

Stages: preprocess (normalise, resize, batch), backbone (with the FPN), RPN, RoIAlign (both RoI
pools: every proposal for the box head, every person for the keypoint head), box head (two MLP
layers and the predictor on every proposal), box postprocess (decoding, NMS), keypoint head (the
8 convs and the predictor, per person), heatmap decoding (heatmaps -> keypoints, per person) and
postprocess (boxes and keypoints back to the image's size).

Usage:
    python -m benchmarks.profile_model                   # R50-FPN, random weights, 100 persons, 800 px
    python -m benchmarks.profile_model --persons 5 --image 000000217285.jpg --repeats 5
    python -m benchmarks.profile_model --weights best.pth --score-thresh 0.9
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any, Callable, Sequence

import cv2
import torch
import torchvision.models.detection.roi_heads as tv_roi_heads

import models
import roi_align
import utils

REPO = Path(__file__).resolve().parents[1]
COCO_MINI_VAL = REPO.parent / "shared" / "data" / "coco-mini" / "val2017"
STAGES = ("preprocess", "backbone", "rpn", "roi align", "box head", "box postprocess", "keypoint head",
          "heatmap decoding", "postprocess")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_model", description=__doc__.split("\n\n")[0],
                                     formatter_class=utils.HelpFormatter)
    parser.add_argument("--image", default=str(COCO_MINI_VAL / "000000000139.jpg"), help="the frame")
    parser.add_argument("--weights", default=None, help="a checkpoint (default: seeded random R50-FPN)")
    parser.add_argument("--min-size", type=utils.image_side, default=800)
    parser.add_argument("--persons", type=utils.positive_int, default=100,
                        help="persons through the keypoint head (random weights: box score threshold 0)")
    parser.add_argument("--score-thresh", type=utils.probability, default=0.0)
    parser.add_argument("--repeats", type=utils.positive_int, default=3)
    parser.add_argument("--warmup", type=utils.nonnegative_int, default=1)
    parser.add_argument("--threads", type=utils.nonnegative_int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--ops", type=utils.nonnegative_int, default=0, metavar="N",
                        help="also print torch.profiler's N costliest operators of each config's last run")
    parser.add_argument("--configs", nargs="+", default=["fp32-nchw", "bf16-nchw", "fp32-cl", "bf16-cl", "bf16-cl-fast"],
                        help="precision-layout[-fast]; -fast: detect.py's model (models.prepare_for_inference: "
                             "roi_align's kernel, float32 coordinates, bfloat16 weights for bf16), else "
                             "torchvision's RoI pools")
    args = parser.parse_args(argv)
    for config in args.configs:
        parts = config.split("-")
        if len(parts) not in (2, 3) or parts[0] not in ("fp32", "bf16") or parts[1] not in ("nchw", "cl") \
                or parts[2:] not in ([], ["fast"]):
            parser.error(f"--configs: bad config {config!r} (e.g. fp32-nchw, bf16-cl, bf16-cl-fast)")
    return args


class StageClock:
    """Adds up the wall time of modules and functions per stage while `active`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}

    def module(self, module: torch.nn.Module, stage: str) -> None:
        module.register_forward_pre_hook(lambda *_: self._start(stage))
        module.register_forward_hook(lambda *_: self._stop(stage))

    def function(self, fn: Callable, stage: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._start(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                self._stop(stage)
        return timed

    def _start(self, stage: str) -> None:
        self._started[stage] = time.perf_counter()

    def _stop(self, stage: str) -> None:
        self.seconds[stage] += time.perf_counter() - self._started.pop(stage)


def build(args: argparse.Namespace, config: str) -> tuple[torch.nn.Module, StageClock]:
    precision, layout, *fast = config.split("-")
    torch.manual_seed(0)
    if args.weights:
        model, _ = models.load_model(args.weights, None, args.min_size, None)
    else:
        model = models.build_model("resnet50", "none", min_size=[args.min_size])
    model.eval()
    model.roi_heads.score_thresh = args.score_thresh
    model.roi_heads.detections_per_img = args.persons
    models.fold_batchnorm(model)
    if layout == "cl":
        model.to(memory_format=torch.channels_last)
    if fast:  # detect.py's model (models.prepare_for_inference)
        models.keep_float32_outputs(model)
        if precision == "bf16":
            models.store_autocast_weights(model)
    else:
        roi_align.install_torchvision_pools(model)
    clock = StageClock()
    heads = model.roi_heads
    clock.module(model.backbone, "backbone")
    clock.module(model.rpn, "rpn")
    clock.module(heads.box_roi_pool, "roi align")
    clock.module(heads.keypoint_roi_pool, "roi align")
    for module in (heads.box_head, heads.box_predictor):
        clock.module(module, "box head")
    for module in (heads.keypoint_head, heads.keypoint_predictor):
        clock.module(module, "keypoint head")
    heads.postprocess_detections = clock.function(heads.postprocess_detections, "box postprocess")
    model.transform.postprocess = clock.function(model.transform.postprocess, "postprocess")
    # GeneralizedRCNNTransform.forward is the preprocessing (normalise, resize, batch).
    clock.module(model.transform, "preprocess")
    return model, clock


def run_configs(args: argparse.Namespace, built: dict[str, tuple[torch.nn.Module, Any]], image: torch.Tensor,
                decode_clock: list) -> dict[str, dict[str, list[float]]]:
    """Every config, interleaved, --warmup then --repeats times: each stage's seconds per run."""
    samples: dict[str, dict[str, list[float]]] = {c: defaultdict(list) for c in args.configs}
    for run in range(args.warmup + args.repeats):
        for config in args.configs if run % 2 == 0 else reversed(args.configs):  # a b b a: drift hits both
            model, clock = built[config]
            clock.seconds.clear()
            decode_clock[:] = [clock]
            last = args.ops and run == args.warmup + args.repeats - 1
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.startswith("bf16")), \
                    torch.profiler.profile() if last else contextlib.nullcontext() as profiler:
                start = time.perf_counter()
                output = model([image])[0]
                total = time.perf_counter() - start
            if last:
                print(f"{config}: costliest operators (self CPU time, one run)")
                print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
            if run >= args.warmup:
                for stage in STAGES:
                    samples[config][stage].append(clock.seconds.get(stage, 0.0))
                samples[config]["total"].append(total)
                samples[config]["persons"].append(len(output["scores"]))
    return samples


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = cv2.imread(args.image)
    if frame is None:
        raise SystemExit(f"error: cannot read image {args.image}")
    image = torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255)
    built = {c: build(args, c) for c in args.configs}
    # Heatmap decoding is a module-level function of torchvision: timed by wrapping it.
    decode_clock: list[StageClock] = []
    originals = {tv_roi_heads: tv_roi_heads.keypointrcnn_inference}
    for module, original in originals.items():
        module.keypointrcnn_inference = (lambda fn: lambda *a: decode_clock[0].function(fn, "heatmap decoding")(*a))(original)
    try:
        samples = run_configs(args, built, image, decode_clock)
    finally:  # torchvision's function is put back: nothing of this run outlives it
        for module, original in originals.items():
            module.keypointrcnn_inference = original
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    print(f"CPU: {caps.get('cpu_name', '?')}, {torch.get_num_threads()} torch threads, "
          f"avx512_bf16 {caps.get('avx512_bf16')}, amx_bf16 {caps.get('amx_bf16')}; torch {torch.__version__}"
          f"{roi_align.fallback_note()}")
    print(f"image {Path(args.image).name} at {args.min_size} px, persons through the keypoint head: "
          + ", ".join(f"{c} {int(median(samples[c]['persons']))}" for c in args.configs)
          + f"; median of {args.repeats} after {args.warmup} warm-up, interleaved; seconds")
    print(f"{'stage':<18}" + "".join(f"{c:>14}" for c in args.configs))
    result = {c: {k: median(v) for k, v in samples[c].items()} for c in args.configs}
    for stage in (*STAGES, "total"):
        print(f"{stage:<18}" + "".join(f"{result[c][stage]:>14.3f}" for c in args.configs))
    rest = {c: result[c]["total"] - sum(result[c][s] for s in STAGES) for c in args.configs}
    print(f"{'(other)':<18}" + "".join(f"{rest[c]:>14.3f}" for c in args.configs))
    base = result[args.configs[0]]["total"]
    print(f"{'total / ' + args.configs[0]:<18}" + "".join(f"{result[c]['total'] / base:>13.2f}x" for c in args.configs))
    return result


if __name__ == "__main__":
    main()
