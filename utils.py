"""Shared helpers for train.py, test.py and detect.py.

What lives here, top to bottom:
  * COCO person-keypoint constants (names, flip index, skeleton), defined once;
  * errors that the scripts turn into one-line messages (`UserError`, `cli_errors`);
  * device and torchrun/distributed helpers;
  * the model builder (`build_model`) and weight resolution (`load_model`);
  * checkpoints: naming, atomic saving, loading with `weights_only=True`;
  * COCO evaluation shared by train.py and test.py (`predict`, `coco_evaluate`);
  * skeleton drawing with OpenCV.

Nothing here keeps global mutable state; every function takes what it needs.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

# --------------------------------------------------------------------------------------
# COCO person keypoints
# --------------------------------------------------------------------------------------
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)


def _flip_index(names: Sequence[str]) -> tuple[int, ...]:
    swapped = [n.replace("left_", "@").replace("right_", "left_").replace("@", "right_") for n in names]
    return tuple(names.index(n) for n in swapped)


# After a horizontal flip, keypoint i of the new image is keypoint KEYPOINT_FLIP_INDEX[i] of the old one.
KEYPOINT_FLIP_INDEX: tuple[int, ...] = _flip_index(COCO_KEYPOINT_NAMES)

# The 19 limbs of COCO's "skeleton" field, 0-based (the annotation files store them 1-based).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

COCO_PERSON_CATEGORY: dict[str, Any] = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO_KEYPOINT_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
}

# COCOeval's `stats`, in order.
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

# Our checkpoints' final-weights name; the regex finds them again for test.py/detect.py defaults.
WEIGHTS_NAME_PATTERN = re.compile(r"^e\d+_b\d+_lr[^_]+_m[^_]+\.pth$")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
class UserError(Exception):
    """Bad input from the user (a file, a flag, the machine): shown as one line, no traceback."""


def one_line(error: BaseException) -> str:
    """The message of `error`; for one re-raised by a DataLoader worker (whose message carries
    the worker's traceback), the original message alone."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into `SystemExit("error: ...")`: one line on stderr, exit code 1."""
    try:
        yield
    except UserError as e:
        raise SystemExit(f"error: {one_line(e)}") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        name = f": {e.filename}" if getattr(e, "filename", None) else ""
        raise SystemExit(f"error: {e.strerror or e}{name}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


# --------------------------------------------------------------------------------------
# Devices and torchrun
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA when present (the local rank's GPU under torchrun), else CPU."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            return torch.device(f"cuda:{local_rank}")
        index = int(spec.split(":")[1])
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    raise UserError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def init_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by torchrun (RANK/WORLD_SIZE set), else single process.

    NCCL for CUDA, gloo for CPU, so `torchrun --nproc_per_node=2` also runs on a laptop.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(), select_device(device_spec)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = select_device(device_spec, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just `[obj]` outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------
BACKBONES = ("resnet50", "resnet18", "resnet34", "resnet101", "mobilenet_v3_large")
WEIGHT_CHOICES = ("coco", "imagenet", "none")
# torchvision's recipe: multi-scale training on these shorter sides, 800 at test time.
DEFAULT_MIN_SIZE: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
DEFAULT_MAX_SIZE = 1333
# torchvision's keypoint head: eight 3x3 convs of 512 channels on 14x14 RoIs, about 7 GFLOPs
# per person. It dominates CPU time, so lighter heads (e.g. 4 x 128) are offered for CPU use.
DEFAULT_KEYPOINT_HEAD: tuple[int, ...] = (512,) * 8


class WeightsError(UserError):
    pass


def _download_failed(what: str, error: Exception) -> WeightsError:
    return WeightsError(
        f"could not download {what} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
        "this needs internet: pass a local checkpoint with --weights PATH, or --weights none to start from scratch"
    )


def model_config(
    backbone: str = "resnet50",
    num_keypoints: int = NUM_KEYPOINTS,
    min_size: int | Sequence[int] = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    frozen_bn: bool = True,
    keypoint_head: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The settings that rebuild a model; stored in our full checkpoints (plain types only)."""
    sizes = [int(min_size)] if isinstance(min_size, (int, float)) else [int(s) for s in min_size]
    return {
        "backbone": backbone,
        "num_keypoints": int(num_keypoints),
        "min_size": sizes,
        "max_size": int(max_size),
        "frozen_bn": bool(frozen_bn),
        "keypoint_head": [int(c) for c in (keypoint_head or DEFAULT_KEYPOINT_HEAD)],
    }


def build_model(
    backbone: str = "resnet50",
    weights: str = "none",
    num_keypoints: int = NUM_KEYPOINTS,
    min_size: int | Sequence[int] = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    keypoint_head: Sequence[int] | None = None,
    **kwargs: Any,
):
    """A torchvision Keypoint R-CNN with an FPN on `backbone`.

    weights: "coco" (torchvision's COCO person-keypoint weights, resnet50 only), "imagenet"
    (ImageNet backbone, fresh heads), "none" (random init), or a checkpoint path (built from
    scratch, then loaded with `load_weights`). Extra kwargs go to `KeypointRCNN` (for instance
    `box_score_thresh`, `box_detections_per_img`).

    BatchNorm is frozen (torchvision's choice) when starting from pretrained weights, and
    trained when starting from scratch, where frozen identity statistics would not train.
    `keypoint_head` lists the conv widths of the keypoint head (default: torchvision's 8 x 512).
    """
    from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet34_Weights
    from torchvision.models import ResNet50_Weights, ResNet101_Weights, mobilenet_v3_large, resnet
    from torchvision.models.detection import KeypointRCNN, KeypointRCNN_ResNet50_FPN_Weights
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops import MultiScaleRoIAlign, misc

    if backbone not in BACKBONES:
        raise UserError(f"--backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    local_path = weights not in WEIGHT_CHOICES
    if weights == "coco" and (backbone != "resnet50" or num_keypoints != NUM_KEYPOINTS):
        raise UserError("--weights coco exists only for --backbone resnet50 with 17 keypoints; "
                        "use --weights imagenet or none")
    pretrained = weights in ("coco", "imagenet")
    if frozen_bn is None:
        frozen_bn = pretrained
    norm_layer = misc.FrozenBatchNorm2d if frozen_bn else torch.nn.BatchNorm2d
    if trainable_layers is None:
        trainable_layers = 3 if pretrained else 5
    min_size = tuple(min_size) if not isinstance(min_size, (int, float)) else (int(min_size),)
    kwargs.update(min_size=min_size, max_size=max_size, num_keypoints=num_keypoints)
    keypoint_head = tuple(keypoint_head or DEFAULT_KEYPOINT_HEAD)
    custom_head = keypoint_head != DEFAULT_KEYPOINT_HEAD
    if custom_head and weights == "coco":
        raise UserError("--weights coco needs torchvision's keypoint head (8 x 512)")
    if custom_head:
        from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
        kwargs["keypoint_head"] = KeypointRCNNHeads(256, keypoint_head)  # FPN channels in
        kwargs["keypoint_predictor"] = KeypointRCNNPredictor(keypoint_head[-1], num_keypoints)
        del kwargs["num_keypoints"]  # KeypointRCNN refuses it next to a predictor

    if backbone == "resnet50" and weights == "coco":
        from torchvision.models.detection import keypointrcnn_resnet50_fpn
        try:
            model = keypointrcnn_resnet50_fpn(weights=KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
                                              trainable_backbone_layers=trainable_layers, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            raise _download_failed("torchvision's COCO Keypoint R-CNN weights", e) from None
        return model

    backbone_weights = {
        "resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet34": ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": ResNet50_Weights.IMAGENET1K_V1, "resnet101": ResNet101_Weights.IMAGENET1K_V1,
        "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    }[backbone] if weights == "imagenet" else None
    try:
        if backbone.startswith("resnet"):
            body = getattr(resnet, backbone)(weights=backbone_weights, norm_layer=norm_layer)
            features = _resnet_fpn_extractor(body, min(trainable_layers, 5))
            model = KeypointRCNN(features, num_classes=2, **kwargs)
        else:
            body = mobilenet_v3_large(weights=backbone_weights, norm_layer=norm_layer)
            features = _mobilenet_extractor(body, True, min(trainable_layers, 6))
            # Two FPN levels plus a pooled one: anchors and RoI pools must match that, as in
            # torchvision's fasterrcnn_mobilenet_v3_large_fpn.
            anchor_sizes = ((32, 64, 128, 256, 512),) * 3
            aspect_ratios = ((0.5, 1.0, 2.0),) * len(anchor_sizes)
            model = KeypointRCNN(
                features, num_classes=2,
                rpn_anchor_generator=AnchorGenerator(anchor_sizes, aspect_ratios),
                box_roi_pool=MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2),
                keypoint_roi_pool=MultiScaleRoIAlign(["0", "1"], output_size=14, sampling_ratio=2),
                **kwargs,
            )
    except (OSError, RuntimeError) as e:
        if backbone_weights is None:
            raise
        raise _download_failed(f"ImageNet weights for {backbone}", e) from None

    if local_path:
        state_dict, _ = load_weights(weights)
        apply_state_dict(model, state_dict)
    return model


def guess_backbone(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Which of BACKBONES produced these weights, from the key names (None when unknown)."""
    keys = state_dict.keys()
    if any(k.startswith("backbone.body.layer") for k in keys):
        layer3 = {k.split(".")[3] for k in keys if k.startswith("backbone.body.layer3.")}
        bottleneck = any(".conv3." in k for k in keys if k.startswith("backbone.body.layer1."))
        if len(layer3) >= 20:
            return "resnet101"
        if bottleneck:
            return "resnet50"
        return "resnet34" if len(layer3) >= 6 else "resnet18"
    if any(k.startswith("backbone.body.") for k in keys):
        return "mobilenet_v3_large"
    return None


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def checkpoint_name(epochs: int, batch_size: int, lr: float, momentum: float) -> str:
    """`e42_b8_lr0.02_m0.9.pth`: lr and momentum exactly as Python prints them."""
    return f"e{epochs}_b{batch_size}_lr{lr}_m{momentum}.pth"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with weights_only=True (checkpoints come from strangers), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load {path} as a PyTorch checkpoint: {first}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    return obj


def split_checkpoint(obj: dict[str, Any], source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict | None]:
    """(model state_dict without `module.` prefixes, model config or None) from any of:
    our full training checkpoint ({"model": ..., "model_config": ...}), a raw torchvision
    state_dict, or a DistributedDataParallel (`module.`-prefixed) state dict."""
    config = obj.get("model_config") if isinstance(obj.get("model_config"), dict) else None
    state = obj
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{source} is not a model state dict or one of our training checkpoints")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state), config


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    return split_checkpoint(load_checkpoint(path), str(path))


def apply_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights") -> None:
    """load_state_dict that explains a mismatch in one line instead of a page of keys."""
    own = model.state_dict()
    # BatchNorm's step counter is absent from frozen-BN weights and meaningless for inference.
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise UserError(f"{source} do not fit this model: " + ", ".join(parts) +
                        "; check --backbone and the number of keypoints")
    model.load_state_dict(state_dict, strict=False)


def find_latest_weights(folder: str | os.PathLike = ".") -> Path | None:
    """Newest `e*_b*_lr*_m*.pth` in `folder` (test.py and detect.py use it by default)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [p for p in folder.iterdir() if p.is_file() and WEIGHTS_NAME_PATTERN.match(p.name)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_weights(weights: str | None, folder: str | os.PathLike = ".") -> str:
    """The --weights rule of test.py and detect.py: as given, else the newest
    e*_b*_lr*_m*.pth in `folder`, else torchvision's COCO weights."""
    if weights:
        return weights
    latest = find_latest_weights(folder)
    return str(latest) if latest else "coco"


def load_model(
    weights: str,
    backbone: str | None = None,
    min_size: int | Sequence[int] | None = None,
    max_size: int | None = None,
    **kwargs: Any,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An inference model from --weights: "coco" or a checkpoint of any supported kind.

    Settings come from, in order: the explicit arguments, the checkpoint's recorded
    model_config, the backbone guessed from the weight names, torchvision's defaults.
    Returns (model in eval mode on the CPU, the config it was built with).
    """
    if weights in ("imagenet", "none"):
        raise UserError(f"--weights {weights} gives a model with untrained heads; "
                        "pass a checkpoint or 'coco'")
    if weights == "coco":
        config = model_config(backbone or "resnet50", min_size=min_size or 800, max_size=max_size or DEFAULT_MAX_SIZE)
        model = build_model(config["backbone"], "coco", min_size=config["min_size"], max_size=config["max_size"], **kwargs)
        return model.eval(), config
    state_dict, saved = load_weights(weights)
    saved = saved or {}
    config = model_config(
        backbone=backbone or saved.get("backbone") or guess_backbone(state_dict) or "resnet50",
        num_keypoints=saved.get("num_keypoints") or _keypoints_in(state_dict),
        # A model trained multi-scale is tested at its largest size, as torchvision does.
        min_size=min_size or max(saved.get("min_size") or [800]),
        max_size=max_size or saved.get("max_size") or DEFAULT_MAX_SIZE,
        # Trained BatchNorm layers carry a step counter; frozen ones (torchvision's) do not.
        frozen_bn=saved.get("frozen_bn", not any(k.endswith("num_batches_tracked") for k in state_dict)),
        keypoint_head=saved.get("keypoint_head") or guess_keypoint_head(state_dict),
    )
    model = build_model(config["backbone"], "none", config["num_keypoints"], config["min_size"],
                        config["max_size"], frozen_bn=config["frozen_bn"],
                        keypoint_head=config["keypoint_head"], **kwargs)
    apply_state_dict(model, state_dict, source=str(weights))
    return model.eval(), config


def guess_keypoint_head(state_dict: dict[str, torch.Tensor]) -> list[int]:
    """The conv widths of the keypoint head, read off the weight shapes."""
    convs = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"roi_heads\.keypoint_head\.(\d+)\.weight", key)
        if m and value.ndim == 4:
            convs[int(m.group(1))] = int(value.shape[0])
    return [convs[i] for i in sorted(convs)] or list(DEFAULT_KEYPOINT_HEAD)


def _keypoints_in(state_dict: dict[str, torch.Tensor]) -> int:
    logits = state_dict.get("roi_heads.keypoint_predictor.kps_score_lowres.weight")
    return int(logits.shape[1]) if logits is not None else NUM_KEYPOINTS


def describe_weights(weights: str) -> str:
    return "torchvision COCO weights (KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)" if weights == "coco" else str(weights)


# --------------------------------------------------------------------------------------
# COCO evaluation (train.py and test.py share it)
# --------------------------------------------------------------------------------------
def outputs_to_coco_results(outputs: Iterable[dict[str, torch.Tensor]], image_ids: Iterable[int],
                            category_id: int = 1) -> list[dict[str, Any]]:
    """Model outputs -> COCO results entries (bbox as x,y,w,h and the flat keypoint list).

    Keypoint visibility in results is unused by COCOeval; we write 1 as detectron2 does.
    """
    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        if len(boxes) == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        keypoints = output.get("keypoints")
        if keypoints is not None:
            keypoints = keypoints.detach().float().cpu().clone()
            keypoints[..., 2] = 1.0
            keypoints = keypoints.reshape(len(boxes), -1).tolist()
        for i in range(len(boxes)):
            entry = {"image_id": int(image_id), "category_id": category_id,
                     "bbox": [round(v, 2) for v in xywh[i]], "score": round(scores[i], 5)}
            if keypoints is not None:
                entry["keypoints"] = [round(v, 2) for v in keypoints[i]]
            results.append(entry)
    return results


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: Iterable, device: torch.device, amp: bool = False,
            progress: bool = True, desc: str = "predict") -> tuple[list[dict[str, Any]], list[int]]:
    """Run `model` over a loader of (images, targets) batches.

    Returns (COCO results entries, the image ids seen), so that evaluation restricted to
    those ids is correct for a --limit subset or a torchrun shard.
    """
    from tqdm import tqdm

    model.eval()
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    autocast = torch.autocast(device.type, enabled=amp and device.type == "cuda")
    for images, targets in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
        images = [img.to(device, non_blocking=True) for img in images]
        with autocast:
            outputs = model(images)
        ids = [int(t["image_id"]) for t in targets]
        results.extend(outputs_to_coco_results(outputs, ids))
        image_ids.extend(ids)
    return results, image_ids


def coco_evaluate(coco_gt, results: list[dict[str, Any]], image_ids: Iterable[int] | None = None,
                  iou_types: Sequence[str] = ("bbox", "keypoints"), verbose: bool = True) -> dict[str, dict[str, float]]:
    """COCOeval for each iou type; prints the standard tables when verbose.

    Returns {"bbox": {"AP": ..., ...}, "keypoints": {...}} with COCOeval's stats in order:
    exactly what pycocotools computes for these detections (loaded once with `loadRes`, one
    COCOeval per iou type). `image_ids` restricts evaluation to those images (a --limit
    subset); default: every image of `coco_gt`. Where pycocotools itself would crash:
      * no detections at all: COCOeval runs on an empty detection set, so each metric is 0
        (-1 where no ground truth falls in that area range), which is what the definition gives;
      * results without boxes or keypoints, or ground truth without labelled keypoints: that
        iou type is skipped with a message and its metrics are all -1 (COCOeval's "no data");
      * results naming images that `coco_gt` lacks, keypoint counts that differ from the ground
        truth's, annotations missing a field COCOeval reads: UserError.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = {"bbox": BBOX_METRICS, "keypoints": KEYPOINT_METRICS}
    gt_anns = coco_gt.dataset.get("annotations") or []
    if not isinstance(coco_gt.dataset.get("categories"), list):
        raise UserError("the annotation file has no 'categories' list; COCOeval needs it")
    for ann in gt_anns:
        missing = [k for k in ("area", "iscrowd") if k not in ann]
        if missing:
            raise UserError(f"annotation {ann.get('id')} of the annotation file has no '{missing[0]}'; "
                            "COCOeval needs 'area' and 'iscrowd' on every annotation")
    img_ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise UserError(f"results name image_id {unknown[0]} which the annotation file does not have "
                        f"({len(unknown)} unknown id(s))")
    gt_keypoints = next((len(a["keypoints"]) for a in gt_anns if a.get("keypoints")), None)
    if results and "keypoints" in results[0] and gt_keypoints and len(results[0]["keypoints"]) != gt_keypoints:
        raise UserError(f"results have {len(results[0]['keypoints']) // 3} keypoints per person, "
                        f"the annotation file {gt_keypoints // 3}")

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats about timing
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to each dict
        else:  # loadRes refuses an empty list; COCOeval itself handles an empty detection set
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset.get("images", [])), "annotations": [],
                               "categories": copy.deepcopy(coco_gt.dataset["categories"])}
            coco_dt.createIndex()
    if not results and img_ids and verbose:
        print("no detections: every person in the ground truth counts as missed")

    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        reason = None
        if not img_ids:
            reason = "no images to evaluate"
        elif iou_type == "bbox" and results and "bbox" not in results[0]:
            reason = "the results have no boxes"
        elif iou_type == "keypoints" and results and "keypoints" not in results[0]:
            reason = "the results have no keypoints"
        elif iou_type == "keypoints" and not any(a.get("keypoints") for a in gt_anns):
            reason = "the annotation file has no keypoints"
        elif iou_type == "keypoints" and not all("num_keypoints" in a for a in gt_anns):
            reason = "the annotation file lacks 'num_keypoints' on some annotations"
        elif iou_type == "keypoints" and not any(a["num_keypoints"] > 0 for a in gt_anns):
            reason = "the annotation file has no labelled keypoints"
        if reason:
            if verbose:
                print(f"Evaluation for *{iou_type}*: skipped, {reason}")
            metrics[iou_type] = {name: -1.0 for name in names[iou_type]}
            continue
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = img_ids
        if iou_type == "keypoints" and gt_keypoints and gt_keypoints // 3 != len(evaluator.params.kpt_oks_sigmas):
            # Custom skeletons have no published per-joint sigmas; use a uniform middle value.
            evaluator.params.kpt_oks_sigmas = np.full(gt_keypoints // 3, 0.05)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        if verbose:
            print(f"Evaluation for *{iou_type}*:")
            evaluator.summarize()
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.summarize()
        metrics[iou_type] = {name: float(v) for name, v in zip(names[iou_type], evaluator.stats)}
    return metrics


def _batch_shard(length: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices of `rank`: whole batches, batch b going to rank b % world_size."""
    return [i for start in range(rank * batch_size, length, world_size * batch_size)
            for i in range(start, min(start + batch_size, length))]


def evaluate_dataset(model: torch.nn.Module, dataset, device: torch.device, batch_size: int = 2,
                     workers: int = 2, amp: bool = False, verbose: bool = True,
                     desc: str = "eval") -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Predict over `dataset` (a CocoKeypoints or a Subset of one) and run COCOeval.

    Under torchrun every rank predicts its own shard and rank 0 merges and evaluates; other
    ranks get ({}, []). Shards are made of whole batches, so every batch, hence every output,
    is the one a single process computes (a batch is padded to its largest image, which moves
    the outputs a little), and the merged results come back in dataset order: the numbers and
    the results list equal a single-process run's with the same batch size.
    """
    from torch.utils.data import DataLoader, Subset

    from dataset import collate_fn  # imported here: dataset.py imports this module

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    shard = Subset(dataset, _batch_shard(len(dataset), batch_size, rank, world)) if world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_fn, pin_memory=device.type == "cuda")
    results, image_ids = predict(model, loader, device, amp=amp, progress=verbose and rank == 0, desc=desc)
    gathered = all_gather_objects((results, image_ids))
    if rank != 0:
        return {}, []
    position = {image_id: index for r, (_, ids) in enumerate(gathered)
                for index, image_id in zip(_batch_shard(len(dataset), batch_size, r, world), ids)}
    image_ids = sorted(position, key=position.__getitem__)
    results = sorted((x for part, _ in gathered for x in part), key=lambda x: position[x["image_id"]])  # stable
    return coco_evaluate(base.coco, results, image_ids, verbose=verbose), results


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------
# BGR colours. Left limbs are warm (reds, oranges, yellows), right limbs cool (blues, cyans,
# violets), the limbs that join both sides green: a mirrored pose looks visibly wrong. Every
# limb and every keypoint has its own colour, so crossed arms or legs can still be told apart.
LEFT_COLOR = (0, 140, 255)     # orange, the left upper arm
RIGHT_COLOR = (255, 120, 0)    # blue, the right upper arm
CENTER_COLOR = (80, 200, 60)   # green, the shoulder line
SEGMENT_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (left, right)
    "face": ((170, 110, 255), (255, 190, 120)),       # nose-eye: pink, light blue
    "ear": ((100, 160, 255), (255, 170, 200)),        # eye-ear: peach, lavender
    "neck": ((90, 90, 255), (200, 200, 100)),         # ear-shoulder: salmon, teal
    "upper_arm": (LEFT_COLOR, RIGHT_COLOR),           # orange, blue
    "forearm": ((0, 220, 255), (255, 230, 0)),        # yellow, cyan
    "torso": ((30, 180, 255), (220, 150, 40)),        # amber, steel blue
    "thigh": ((40, 40, 235), (235, 60, 40)),          # red, royal blue
    "shin": ((140, 50, 230), (210, 40, 150)),         # rose, violet
}
CENTER_COLORS: dict[str, tuple[int, int, int]] = {
    "shoulder": CENTER_COLOR, "hip": (60, 160, 40), "eye": (150, 230, 150), "nose": (150, 230, 150),
}
OUTLINE_COLOR = (30, 30, 30)   # a dark rim keeps limbs readable on any background
BOX_COLOR = (60, 220, 255)
_SEGMENTS = {frozenset(("nose", "eye")): "face", frozenset(("eye", "ear")): "ear",
             frozenset(("ear", "shoulder")): "neck", frozenset(("shoulder", "elbow")): "upper_arm",
             frozenset(("elbow", "wrist")): "forearm", frozenset(("shoulder", "hip")): "torso",
             frozenset(("hip", "knee")): "thigh", frozenset(("knee", "ankle")): "shin"}
# A keypoint takes the colour of the limb that ends at it, coming from the body's centre.
_KEYPOINT_SEGMENT = {"eye": "face", "ear": "ear", "shoulder": "neck", "elbow": "upper_arm",
                     "wrist": "forearm", "hip": "torso", "knee": "thigh", "ankle": "shin"}


def _side(name: str) -> int | None:
    """0 for a left keypoint, 1 for a right one, None for the nose."""
    return 0 if name.startswith("left_") else 1 if name.startswith("right_") else None


def _limb_color(a: int, b: int) -> tuple[int, int, int]:
    na, nb = COCO_KEYPOINT_NAMES[a], COCO_KEYPOINT_NAMES[b]
    sides = {_side(na), _side(nb)} - {None}
    if len(sides) == 2:  # shoulders, hips, eyes
        return CENTER_COLORS[na.split("_")[-1]]
    segment = _SEGMENTS.get(frozenset((na.split("_")[-1], nb.split("_")[-1])))
    return SEGMENT_COLORS[segment][sides.pop()] if segment and sides else CENTER_COLOR


def _keypoint_color(name: str) -> tuple[int, int, int]:
    side, joint = _side(name), name.split("_")[-1]
    if side is None or joint not in _KEYPOINT_SEGMENT:
        return CENTER_COLORS.get(joint, CENTER_COLOR)
    return SEGMENT_COLORS[_KEYPOINT_SEGMENT[joint]][side]


KEYPOINT_COLORS: tuple[tuple[int, int, int], ...] = tuple(_keypoint_color(n) for n in COCO_KEYPOINT_NAMES)
LIMB_COLORS: tuple[tuple[int, int, int], ...] = tuple(_limb_color(a, b) for a, b in COCO_SKELETON)


def draw_poses(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray | None = None,
    score_thresh: float = 0.0,
    kp_thresh: float = 0.0,
    draw_boxes: bool = True,
    line_width: int | None = None,
) -> np.ndarray:
    """Draw skeletons in place on a BGR uint8 image and return it.

    boxes (N,4) x1y1x2y2, scores (N,), keypoints (N,K,2 or 3), keypoint_scores (N,K) or
    None (then the third keypoint column, if present, is used: visibility > 0). Persons with
    score < score_thresh and keypoints with score < kp_thresh are not drawn, nor limbs with
    such an end. The line width scales with the image (about 1/160 of its shorter side, or
    `line_width`) and shrinks for small persons, so that a crowd does not turn into a blot.
    Persons are drawn from the lowest score up, so the surest skeleton ends on top.
    """
    import cv2

    h, w = image.shape[:2]
    base = line_width or max(1, round(min(h, w) / 160))
    font_scale = max(0.4, min(h, w) / 1000)
    font_thickness = max(1, round(font_scale * 2))
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    for i in order:
        if scores[i] < score_thresh:
            continue
        pts = np.asarray(keypoints[i], dtype=float)
        if keypoint_scores is not None:
            ok = np.asarray(keypoint_scores[i]) >= kp_thresh
        elif pts.shape[-1] > 2:
            ok = pts[:, 2] > 0
        else:
            ok = np.ones(len(pts), dtype=bool)
        ok = ok & np.isfinite(pts[:, :2]).all(axis=1)
        x1, y1, x2, y2 = (float(v) for v in boxes[i][:4])
        # A person 60 px tall gets 1-2 px lines whatever the image size.
        thickness = max(1, min(base, round(max(x2 - x1, y2 - y1) / 40)))
        radius = thickness + 1
        xy = [(int(round(x)), int(round(y))) for x, y in pts[:, :2].tolist()] if ok.any() else []
        limbs = [(xy[a], xy[b], color) for (a, b), color in zip(COCO_SKELETON, LIMB_COLORS)
                 if a < len(xy) and b < len(xy) and ok[a] and ok[b]]
        joints = [(p, KEYPOINT_COLORS[j % len(KEYPOINT_COLORS)]) for j, p in enumerate(xy) if ok[j]]
        for pa, pb, _ in limbs:
            cv2.line(image, pa, pb, OUTLINE_COLOR, thickness + 2, cv2.LINE_AA)
        for p, _ in joints:
            cv2.circle(image, p, radius + 1, OUTLINE_COLOR, -1, cv2.LINE_AA)
        for pa, pb, color in limbs:
            cv2.line(image, pa, pb, color, thickness, cv2.LINE_AA)
        for p, color in joints:
            cv2.circle(image, p, radius, color, -1, cv2.LINE_AA)
        if draw_boxes:
            p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
            cv2.rectangle(image, p1, p2, BOX_COLOR, max(1, thickness // 2), cv2.LINE_AA)
            label = f"{float(scores[i]):.2f}"
            (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
            y_text = max(th + baseline, p1[1])
            cv2.rectangle(image, (p1[0], y_text - th - baseline), (p1[0] + tw + 2, y_text), BOX_COLOR, -1)
            cv2.putText(image, label, (p1[0] + 1, y_text - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        (0, 0, 0), font_thickness, cv2.LINE_AA)
    return image


# --------------------------------------------------------------------------------------
# Small things the scripts share
# --------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def format_metrics_line(metrics: dict[str, dict[str, float]]) -> str:
    """`box AP 0.534 | keypoint AP 0.642` for logs."""
    parts = []
    for key, label in (("bbox", "box AP"), ("keypoints", "keypoint AP")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]['AP']:.3f}")
    return " | ".join(parts)



def fold_batchnorm(model: torch.nn.Module) -> int:
    """For inference only: fold every eval-mode BatchNorm2d / FrozenBatchNorm2d into the
    convolution that feeds it (in nn.Sequential stacks, torchvision's ResNet blocks and its
    backbone stem), replacing it by nn.Identity. Same outputs up to float rounding, one pass over the
    feature maps fewer per layer (benchmark.py: ~1.1x on a CPU). Returns how many were folded."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.ops import FrozenBatchNorm2d

    folded = 0
    for parent in list(model.modules()):
        if isinstance(parent, (torch.nn.Sequential, IntermediateLayerGetter)):  # children run in order
            names = list(dict(parent.named_children()))
            pairs = list(zip(names, names[1:]))
        elif isinstance(parent, (BasicBlock, Bottleneck)):
            pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(parent, f"bn{i}")]
        else:
            continue
        for conv_name, bn_name in pairs:
            conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
            trained_bn = isinstance(bn, torch.nn.BatchNorm2d) and not bn.training and bn.track_running_stats
            if not isinstance(conv, torch.nn.Conv2d) or not (trained_bn or isinstance(bn, FrozenBatchNorm2d)) \
                    or bn.weight is None or bn.running_var.numel() != conv.out_channels:
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight = torch.nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
                conv.bias = torch.nn.Parameter(bias, requires_grad=False)
            setattr(parent, bn_name, torch.nn.Identity())
            folded += 1
    return folded
