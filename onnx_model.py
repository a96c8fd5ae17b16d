"""A Keypoint R-CNN exported by export.py, run by ONNX Runtime as the PyTorch model is run.

`OnnxKeypointRCNN` takes what torchvision's model takes in evaluation mode, a list of 3 x H x W
float images in [0, 1], and returns what it returns: per image a dict of torch tensors `boxes`
(N, 4) x1 y1 x2 y2 in the image's pixels, `labels`, `scores`, `keypoints` (N, K, 3) and
`keypoints_scores` (N, K). So test.py and detect.py run a `.onnx` file through their own code:
`load_model` is their one branch, in place of `models.load_model` + `models.prepare_for_inference`.

The file carries its settings in its own metadata (`metadata_props`): `model_config`, the
checkpoint's settings as models.model_config records them (keypoint names, skeleton, image
size, ...), and `export`, how export.py made it (opset, the box score threshold if baked in, the
RPN proposals and persons per image, the source weights, the torch and torchvision versions).
The graph resizes to the recorded size itself; the box score threshold is the graph's second
input `score_thresh` unless export.py baked one in (`--bake-score-thresh`).

ONNX Runtime is optional for users who never export: without it, a one-line error names the
pip command. The CPU provider runs the file; on `--device cuda` the CUDA provider does
(onnxruntime-gpu).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from utils import UserError

try:
    import onnxruntime
except ImportError:  # optional: only .onnx weights need it
    onnxruntime = None

ONNX_SUFFIX = ".onnx"
INPUT_IMAGE = "image"
INPUT_SCORE_THRESH = "score_thresh"
OUTPUT_NAMES = ("boxes", "labels", "scores", "keypoints", "keypoints_scores")
CONFIG_KEY = "model_config"  # metadata_props keys: the checkpoint's settings, and how it was exported
EXPORT_KEY = "export"
INSTALL_HINT = "pip install onnxruntime (or: pip install -r requirements-export.txt)"

# torchvision's box_score_thresh: the persons test.py scores for COCO AP, as models.load_model builds it.
DEFAULT_SCORE_THRESH = 0.05

RUNTIMES = ("onnxruntime",)


def require_onnxruntime(what: str = "running an .onnx file") -> None:
    """A one-line UserError when ONNX Runtime is not installed."""
    if onnxruntime is None:
        raise UserError(f"{what} needs ONNX Runtime, which is not installed: {INSTALL_HINT}")


def is_onnx_file(weights: str | os.PathLike | None) -> bool:
    return weights is not None and str(weights).lower().endswith(ONNX_SUFFIX)


def selected(weights: str | None, runtime: str | None) -> bool:
    """Whether --weights names an ONNX file (then run by --runtime); --runtime with any other
    weights is refused, as it would change nothing."""
    if is_onnx_file(weights):
        return True
    if runtime is not None:
        raise UserError(f"--runtime {runtime} runs .onnx weights (export.py writes them); "
                        f"--weights {weights or '(default)'} is a PyTorch checkpoint")
    return False


def add_runtime_flag(group: argparse._ArgumentGroup) -> None:
    """--runtime of test.py and detect.py (for .onnx weights only)."""
    group.add_argument("--runtime", choices=RUNTIMES, default=None,
                       help=f"what runs .onnx weights (export.py writes them; default: {RUNTIMES[0]}); "
                            "--precision, --backbone and the size flags then come from the file")


def onnx_precision(spec: str) -> str:
    """--precision for an ONNX file: it computes in float32 as exported; auto and fp32 mean that."""
    if spec not in ("auto", "fp32"):
        raise UserError(f"--precision {spec}: an .onnx file runs in float32, as exported; "
                        "use the PyTorch checkpoint for bf16 or fp16")
    return "fp32"


def metadata(model_config: dict[str, Any], export_info: dict[str, Any]) -> dict[str, str]:
    """The metadata_props export.py writes: each value as JSON text (ONNX metadata holds strings)."""
    return {CONFIG_KEY: json.dumps(model_config), EXPORT_KEY: json.dumps(export_info)}


def read_metadata(session: Any, path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_config, export info) from an ONNX Runtime session's file; UserError for a file
    that export.py did not write."""
    props = session.get_modelmeta().custom_metadata_map
    try:
        config, export_info = json.loads(props[CONFIG_KEY]), json.loads(props[EXPORT_KEY])
    except (KeyError, ValueError):
        raise UserError(f"{path} has no {CONFIG_KEY!r} in its metadata: not a model written by export.py "
                        "(its keypoint set and image size are unknown)") from None
    if not isinstance(config, dict) or not isinstance(export_info, dict):
        raise UserError(f"{path}: its {CONFIG_KEY!r} metadata is not a JSON object")
    return config, export_info


def providers(device: torch.device) -> list[str]:
    """ONNX Runtime's execution providers for `device`: CPU, or CUDA (with CPU for what CUDA lacks)."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise UserError(f"--device {device}: this ONNX Runtime has no CUDA provider; "
                        "pip install onnxruntime-gpu, or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def open_session(source: str | os.PathLike | bytes, device: torch.device = torch.device("cpu"),
                 threads: int | None = None) -> Any:
    """An ONNX Runtime session on a file or its bytes, with as many threads as torch uses
    (so both runtimes share the cores alike), on `device`'s provider."""
    require_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its shape-inference warnings are not the user's business
    where = source if isinstance(source, bytes) else str(source)
    try:
        return onnxruntime.InferenceSession(where, options, providers=providers(device))
    except UserError:
        raise
    except Exception as e:  # ONNX Runtime raises its own error types for a damaged or foreign file
        name = "the exported model" if isinstance(source, bytes) else str(source)
        raise UserError(f"ONNX Runtime cannot load {name}: {str(e).strip().splitlines()[0][:200]}") from None


@dataclass
class RecordedSize:
    """What coco_eval.at_inference_size reads off `model.transform`: the graph's own resize target,
    fixed at export."""
    min_size: tuple[int, ...]
    max_size: int


class OnnxKeypointRCNN:
    """An exported Keypoint R-CNN behind torchvision's evaluation-mode call (see the module doc).

    `score_thresh`: persons scoring at most this are dropped (torchvision's box_score_thresh);
    fed to the graph, or, when export.py baked one in, applied on top of it (never below it).
    `max_persons`: keep at most this many, the surest (the graph keeps its own recorded number)."""

    def __init__(self, session: Any, path: str | os.PathLike, score_thresh: float = DEFAULT_SCORE_THRESH,
                 max_persons: int | None = None):
        self.session, self.path = session, Path(path)
        self.config, self.export_info = read_metadata(session, path)
        self.transform = RecordedSize(tuple(self.config["min_size"]), int(self.config["max_size"]))
        self.inputs = [i.name for i in session.get_inputs()]
        baked = self.export_info.get("score_thresh")
        if baked is not None and score_thresh < baked:
            raise UserError(f"{path} drops persons scoring {baked:g} or less (export.py --bake-score-thresh); "
                            f"it cannot give those down to {score_thresh:g}: export it again without it")
        self.score_thresh, self.max_persons = float(score_thresh), max_persons

    def eval(self) -> OnnxKeypointRCNN:
        return self  # torchvision's model is put in eval mode before inference; this one always is

    def describe(self) -> str:
        """How it runs, for the line that names the model and the device."""
        return (f"ONNX Runtime {onnxruntime.__version__} ({self.session.get_providers()[0]}), "
                f"float32 as exported (opset {self.export_info.get('opset')})")

    def __call__(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.run_one(image) for image in images]

    def run_one(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = {INPUT_IMAGE: image.detach().float().cpu().contiguous().numpy()}
        if INPUT_SCORE_THRESH in self.inputs:
            feeds[INPUT_SCORE_THRESH] = np.array(self.score_thresh, dtype=np.float32)
        values = self.session.run(list(OUTPUT_NAMES), feeds)
        output = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in zip(OUTPUT_NAMES, values)}
        keep = output["scores"] > self.score_thresh  # a no-op where the graph was fed the same threshold
        if self.max_persons is not None:
            keep &= torch.arange(len(keep)) < self.max_persons  # sorted by score, as torchvision's
        return output if bool(keep.all()) else {name: v[keep] for name, v in output.items()}


def check_settings(model: OnnxKeypointRCNN, backbone: str | None, min_size: int | None, max_size: int | None,
                   proposals: int | None = None) -> None:
    """Flags of test.py and detect.py that shape a PyTorch model: an ONNX file has them fixed,
    so a value other than the recorded one is a one-line error naming export.py's flag."""
    config, recorded = model.config, model.export_info
    fixed = [("--backbone", backbone, config["backbone"], "the file's own"),
             ("--min-size", min_size, config["min_size"][0], "export.py --min-size"),
             ("--max-size", max_size, config["max_size"], "export.py --max-size"),
             ("--proposals", proposals, recorded.get("proposals"), "export.py --proposals")]
    for flag, given, fixed_value, how in fixed:
        if given is not None and fixed_value is not None and given != fixed_value:
            raise UserError(f"{flag} {given}: {model.path} has {fixed_value} built in ({how}); "
                            "export it again with that setting, or run the PyTorch checkpoint")


def load_model(weights: str | os.PathLike, device: torch.device, runtime: str | None = None,
               backbone: str | None = None, min_size: int | None = None, max_size: int | None = None,
               score_thresh: float = DEFAULT_SCORE_THRESH, max_persons: int | None = None,
               proposals: int | None = None) -> tuple[OnnxKeypointRCNN, dict[str, Any]]:
    """test.py's and detect.py's model for .onnx weights: (model, its model_config), as
    models.load_model returns them. `runtime` is --runtime (None: onnxruntime)."""
    if runtime not in (None, *RUNTIMES):
        raise UserError(f"--runtime {runtime}: choose one of {', '.join(RUNTIMES)}")
    if not Path(weights).is_file():
        raise UserError(f"weights file not found: {weights}")
    model = OnnxKeypointRCNN(open_session(weights, device), weights, score_thresh, max_persons)
    check_settings(model, backbone, min_size, max_size, proposals)
    return model, model.config
