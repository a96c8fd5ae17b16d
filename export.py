"""Export a trained Keypoint R-CNN to ONNX, and check that ONNX Runtime gives its answers.

Writes `<weights stem>.onnx` beside the weights (`--output FILE` elsewhere; for `coco`, in the
current folder): one file holding the whole model, from a float 3 x H x W image in [0, 1] of any
size (it resizes to the recorded --min-size/--max-size itself) to the persons' boxes, labels,
scores, keypoints (N, K, 3) and keypoint scores (N, K) in the image's pixels, with the model's
settings (keypoint names, skeleton, image size, ...) in the file's own metadata. The box score
threshold is the graph's second input, `score_thresh` (test.py feeds 0.05, detect.py its
--score-thresh), unless `--bake-score-thresh T` fixes it in the graph.

How: torch.onnx's TorchScript-based exporter (`dynamo=False`) on torchvision's own model in
evaluation mode (no BatchNorm folding, channels_last or roi_align's numba kernel: those are
PyTorch-side speed-ups), with torchvision's ONNX paths for the resize, the box filtering and the keypoint
decoding, and two changes that keep its answers: the resize computes its output size in double
precision as eager PyTorch does (`EagerSizeTransform`; torchvision's traced resize does it in
float32 and lands one row short on some sizes, which moved every box), and the multi-scale RoI
pooling gathers its levels instead of scattering them (`GatherRoIAlign`, faster). docs/export.md
says what was tried and what failed.

After exporting, the file is checked (`onnx.checker`) and run by ONNX Runtime beside the PyTorch
model (float32) on a few real images: `--check-images DIR`, by default coco/val2017 when it exists,
else a few synthetic sample images. A table gives per image the persons each found and the largest
box, keypoint and score differences of the matched persons; outside the tolerance the file is not
written and the exit status is 1.

Usage:
    python export.py --weights runs/train/exp/best.pth               # -> runs/train/exp/best.onnx
    python export.py --weights e46_b8_lr0.02_m0.9.pth --min-size 480 # a faster file for a webcam
    python export.py --weights coco --output coco.onnx --check-images ../shared/data/coco-mini/val2017
    python export.py --weights best.pth --bake-score-thresh 0.8 --opset 17 --exist-ok
    python detect.py --weights best.onnx --file photo.jpg            # run it, with ONNX Runtime
    python test.py --weights best.onnx                               # its COCO AP

Exit status: 0 when the file was written and matched, 1 with a one-line error (or the table) otherwise.
"""
from __future__ import annotations

import argparse
import copy
import io
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

import export_check
import models
import onnx_model
import roi_align
import runs
import utils
from keypoints import KeypointSet

try:
    import onnx
except ImportError:  # optional: only exporting needs it
    onnx = None

DEFAULT_OPSET = 17
OPSETS = range(11, 21)  # torchvision's nms and roi_align need 11; the TorchScript exporter stops at 20
COCO_OUTPUT = "keypointrcnn_resnet50_fpn_coco.onnx"
CHECK_COUNT = 4


def opset_arg(text: str) -> int:
    """argparse type of --opset: an ONNX opset the exporter and torchvision's ops support."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value not in OPSETS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an ONNX opset from {OPSETS[0]} to {OPSETS[-1]}")
    return value


SUMMARY = ("Export a Keypoint R-CNN (any checkpoint test.py and detect.py load) to ONNX and check ONNX Runtime "
           "against PyTorch on real images.")
EXIT_STATUS = ("Exit status: 0 when the file was written and ONNX Runtime matched PyTorch, 1 with a one-line error "
               "or the table of differences otherwise.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=SUMMARY, epilog=EXIT_STATUS, formatter_class=utils.HelpFormatter)
    model = parser.add_argument_group("model")
    models.add_model_flags(model, " (fixed in the file)")
    model.add_argument("--bake-score-thresh", type=utils.probability, default=None, metavar="T",
                       help="fix the box score threshold in the graph (default: it is the graph's input "
                            f"'score_thresh', which test.py feeds {onnx_model.DEFAULT_SCORE_THRESH} and "
                            "detect.py its --score-thresh)")
    model.add_argument("--opset", type=opset_arg, default=DEFAULT_OPSET, help="ONNX opset of the file")

    out = parser.add_argument_group("output")
    out.add_argument("--output", type=Path, default=None, metavar="FILE",
                     help="where to write the file (default: beside the weights as <stem>.onnx; for coco, "
                          f"{COCO_OUTPUT} here)")
    out.add_argument("--exist-ok", action="store_true", help="replace an existing file")

    check = parser.add_argument_group("check")
    check.add_argument("--check-images", type=Path, default=None, metavar="DIR",
                       help="images to compare ONNX Runtime and PyTorch on (default: coco/val2017 when it exists, "
                            "else synthetic sample images)")
    check.add_argument("--check-count", type=utils.positive_int, default=CHECK_COUNT, metavar="N",
                       help="how many of them (the first N by name)")
    utils.add_max_image_pixels_flag(check)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    """Export, check, write; returns the path of the written file."""
    args = parse_args(argv)
    with utils.cli_errors():
        return run(args)


def run(args: argparse.Namespace) -> Path:
    weights, how = runs.resolve_weights(args.weights)
    output = output_path(weights, args.output, args.exist_ok)
    if onnx is None:
        raise utils.UserError(f"exporting needs the onnx package, which is not installed: {onnx_model.INSTALL_HINT}")
    onnx_model.require_onnxruntime("checking the exported file")
    with tempfile.TemporaryDirectory(prefix="export-check-") as scratch:
        images = export_check.check_images(args.check_images, args.check_count, Path(scratch), args.max_image_pixels)
        print(f"weights: {models.describe_weights(weights)}{how}")
        score_thresh = onnx_model.DEFAULT_SCORE_THRESH if args.bake_score_thresh is None else args.bake_score_thresh
        model, config = models.load_model(weights, args.backbone, args.min_size, args.max_size,
                                          rpn_post_nms_top_n_test=args.proposals, box_score_thresh=score_thresh)
        print(f"model: {config['backbone']}, images resized to {config['min_size'][0]} (max {config['max_size']}), "
              f"{KeypointSet.from_config(config).describe()}")
        info = export_info(weights, args.opset, args.proposals, args.bake_score_thresh)
        start = time.perf_counter()
        data = export_bytes(model, config, info)
        print(f"exported with torch.onnx (TorchScript, opset {args.opset}) in {time.perf_counter() - start:.1f} s, "
              f"{len(data) / 2**20:.1f} MiB; onnx.checker passed")
        session = onnx_model.open_session(data)
        checked = onnx_model.OnnxKeypointRCNN(session, output, score_thresh)
        rows = export_check.compare(model, checked, images)
    print(export_check.format_table(rows, score_thresh))
    if not all(row.ok for row in rows):
        raise utils.UserError(f"ONNX Runtime's outputs differ from PyTorch's beyond the tolerance "
                              f"({export_check.describe_tolerance()}); {output} not written")
    utils.write_bytes(output, data)
    print(f"wrote {output}")
    return output


def output_path(weights: str, output: Path | None, exist_ok: bool) -> Path:
    """--output, else `<stem>.onnx` beside the weights (for coco, COCO_OUTPUT here); an existing
    file only with --exist-ok; its folder checked writable before the slow export."""
    if output is None:
        output = Path(COCO_OUTPUT) if weights == "coco" else Path(weights).with_suffix(onnx_model.ONNX_SUFFIX)
    if output.suffix.lower() != onnx_model.ONNX_SUFFIX:
        raise utils.UserError(f"--output {output}: name it *{onnx_model.ONNX_SUFFIX}, the suffix test.py and "
                              "detect.py know ONNX files by")
    if weights != "coco" and output.resolve() == Path(weights).resolve():
        raise utils.UserError(f"--output {output} is the weights file itself")
    if output.is_dir():
        raise utils.UserError(f"--output {output} is a folder; name the file")
    if output.exists() and not exist_ok:
        raise utils.UserError(f"{output} exists; add --exist-ok to replace it, or pass --output FILE")
    utils.check_writable_folder(output.parent, "--output")
    return output


def export_info(weights: str, opset: int = DEFAULT_OPSET, proposals: int = models.DEFAULT_PROPOSALS,
                bake_score_thresh: float | None = None) -> dict[str, Any]:
    """How the file is made, for its metadata (onnx_model.OnnxKeypointRCNN reads it back)."""
    return {"weights": Path(weights).name if weights != "coco" else "coco", "opset": opset,
            "exporter": "torch.onnx TorchScript (dynamo=False)", "score_thresh": bake_score_thresh,
            "proposals": proposals,
            "inputs": [onnx_model.INPUT_IMAGE] + ([onnx_model.INPUT_SCORE_THRESH] if bake_score_thresh is None else []),
            "outputs": list(onnx_model.OUTPUT_NAMES), "torch": torch.__version__, "torchvision": torchvision.__version__}


class GatherRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign with another way to merge the levels in a traced graph:
    each level's RoI Align results concatenated and put back in RoI order by one gather, instead
    of torchvision's one scatter of an index as large as the output per level (in ONNX Runtime,
    its ScatterElements took longer than all the RoI Aligns: docs/export.md). Same values."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            return tv_roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == level)[0]
            pooled.append(tv_roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio))
            order.append(index)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]


def _resize_like_eager(image: torch.Tensor, min_size: float, max_size: float) -> torch.Tensor:
    """torchvision's evaluation resize as eager PyTorch computes it: the output size floor(side x
    scale) in double precision. (A traced F.interpolate computes it in float32, where 279 x (160 /
    279) is 159.99998: one row short, and every box moves: docs/export.md.) Scripted, so that the
    graph computes it for each image."""
    height, width = float(image.shape[-2]), float(image.shape[-1])
    scale = min(min_size / min(height, width), max_size / max(height, width))
    size = [int(math.floor(height * scale)), int(math.floor(width * scale))]
    return torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


with warnings.catch_warnings():
    # torch.jit.script is deprecated for torch.export, which cannot export this model (docs/export.md).
    warnings.simplefilter("ignore", FutureWarning)
    resize_like_eager = torch.jit.script(_resize_like_eager)


class EagerSizeTransform(GeneralizedRCNNTransform):
    """torchvision's GeneralizedRCNNTransform whose evaluation resize is `resize_like_eager`."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        if self.training or target is not None or self.fixed_size is not None:
            return super().resize(image, target)
        return resize_like_eager(image, float(self.min_size[-1]), float(self.max_size)), target


class ExportedModel(torch.nn.Module):
    """The traced function: one image and the box score threshold -> the outputs of torchvision's
    model as a tuple in onnx_model.OUTPUT_NAMES order."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, score_thresh: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.model.roi_heads.score_thresh = score_thresh  # a graph input in place of torchvision's float
        output = self.model([image])[0]
        return tuple(output[name] for name in onnx_model.OUTPUT_NAMES)


# The traced example: any size works (the graph resizes), and a threshold of 0 keeps persons in
# every step, so no branch is traced on an empty set.
EXAMPLE_SIZE = (3, 300, 400)


def export_bytes(model: torch.nn.Module, config: dict[str, Any], info: dict[str, Any]) -> bytes:
    """The ONNX file of `model` (left as it is): dynamic height and width, the score threshold
    an input or baked in, the metadata, onnx.checker passed."""
    traced = copy.deepcopy(model).eval()
    roi_align.install_pools(traced, GatherRoIAlign)  # in place of the inference kernel, which cannot be traced
    t = traced.transform
    traced.transform = EagerSizeTransform(t.min_size, t.max_size, t.image_mean, t.image_std,
                                          size_divisible=t.size_divisible, fixed_size=t.fixed_size)
    example = (torch.rand(EXAMPLE_SIZE), torch.tensor(0.0))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on torchvision's shape arithmetic: its ONNX paths handle it
        torch.onnx.export(ExportedModel(traced), example, buffer, dynamo=False, opset_version=info["opset"],
                          input_names=[onnx_model.INPUT_IMAGE, onnx_model.INPUT_SCORE_THRESH],
                          output_names=list(onnx_model.OUTPUT_NAMES),
                          dynamic_axes={onnx_model.INPUT_IMAGE: {1: "height", 2: "width"},
                                        **{name: {0: "persons"} for name in onnx_model.OUTPUT_NAMES}})
    proto = onnx.load_from_string(buffer.getvalue())
    if info["score_thresh"] is not None:
        bake_input(proto, onnx_model.INPUT_SCORE_THRESH, info["score_thresh"])
    for key, value in onnx_model.metadata(config, info).items():
        proto.metadata_props.add(key=key, value=value)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise utils.UserError(f"onnx.checker refused the exported graph: {str(e).splitlines()[0]}") from None
    return proto.SerializeToString()


def bake_input(proto: Any, name: str, value: float) -> None:
    """Turn the graph's float32 scalar input `name` into a constant of `value`."""
    graph = proto.graph
    graph.input.remove(next(i for i in graph.input if i.name == name))
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(value, dtype=np.float32), name))


if __name__ == "__main__":
    main()
