"""The model: torchvision's Keypoint R-CNN, built, loaded from any checkpoint kind, saved.

  * `build_model`: an FPN on ResNet-18/34/50/101 or MobileNetV3-Large, the RPN, the box head
    and the keypoint head, from torchvision's COCO weights, an ImageNet backbone or nothing;
  * checkpoints: the final-weights name, loading with `weights_only=True` (checkpoints come
    from strangers), our full training checkpoints, raw torchvision and DDP state dicts;
  * `load_model`: the inference model of a `--weights` value, with its settings;
  * `fold_batchnorm`, `prepare_for_inference`: the inference model of test.py and detect.py
    (BatchNorm folding, channels_last on a CPU, box and keypoint coordinates in float32).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torchvision.models import MobileNet_V3_Large_Weights, ResNet18_Weights, ResNet34_Weights
from torchvision.models import ResNet50_Weights, ResNet101_Weights, mobilenet_v3_large, resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import KeypointRCNN, KeypointRCNN_ResNet50_FPN_Weights, keypointrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, misc
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

import roi_align
from keypoints import COCO17, KeypointSet
from utils import NUM_KEYPOINTS, UserError, first_line, image_side, positive_int

# Our checkpoints' final-weights name; the regex finds them again for test.py/detect.py defaults.
WEIGHTS_STEM = r"e\d+_b\d+_lr[^_]+_m[^_]+"
WEIGHTS_NAME_PATTERN = re.compile(rf"^{WEIGHTS_STEM}\.pth$")


BACKBONES = ("resnet50", "resnet18", "resnet34", "resnet101", "mobilenet_v3_large")


WEIGHT_CHOICES = ("coco", "imagenet", "none")


# torchvision's recipe: multi-scale training on these shorter sides, 800 at test time.
DEFAULT_MIN_SIZE: tuple[int, ...] = (640, 672, 704, 736, 768, 800)


DEFAULT_MAX_SIZE = 1333


# torchvision's keypoint head: eight 3x3 convs of 512 channels on 14x14 RoIs, about 7 GFLOPs
# per person. It dominates CPU time, so lighter heads (e.g. 4 x 128) are offered for CPU use.
DEFAULT_KEYPOINT_HEAD: tuple[int, ...] = (512,) * 8


KEYPOINT_PREDICTOR = "roi_heads.keypoint_predictor."  # the weight names of the last, per-keypoint layer


# torchvision's FPN width, which the RPN and both heads take in; 128 or 64 make all of them
# cheaper, about 2x faster CPU training of a ResNet-18 model at 160 px (docs/demo.md).
DEFAULT_FPN_CHANNELS = 256


# RPN proposals per image at inference (torchvision's rpn_post_nms_top_n_test), and what fewer cost
# and gain (docs/performance.md).
DEFAULT_PROPOSALS = 1000
PROPOSALS_NOTE = ("fewer is at most a little faster now that RoIAlign is cheap (300: 0.80x of the model time in "
                  "bfloat16, 0.98x in float32 at 480 px on a loaded 2-core Xeon) and may miss persons in crowds; "
                  "on the overfit test model keypoint AP held at 1.0 down to 20 and box AP at 0.39-0.41 down to 50, "
                  "0.35 at 20 (docs/performance.md)")


class WeightsError(UserError):
    pass


# What to do when pretrained weights cannot be downloaded: train.py may also start from scratch,
# test.py and detect.py need trained weights (load_model swaps the advice).
TRAINING_ADVICE = "pass a local checkpoint with --weights PATH, or --weights none to start from scratch"
INFERENCE_ADVICE = "pass a local checkpoint with --weights PATH"


def _download_failed(what: str, error: Exception) -> WeightsError:
    return WeightsError(
        f"could not download {what} ({first_line(error)}); "
        f"this needs internet: {TRAINING_ADVICE}"
    )


def model_config(
    backbone: str = "resnet50",
    keypoint_set: KeypointSet = COCO17,
    min_size: int | Sequence[int] = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    frozen_bn: bool = True,
    keypoint_head: Sequence[int] | None = None,
    fpn_channels: int = DEFAULT_FPN_CHANNELS,
) -> dict[str, Any]:
    """The settings that rebuild a model; stored in our full checkpoints (plain types only),
    the keypoint set included (num_keypoints, keypoint_names, skeleton, flip_index)."""
    sizes = [int(min_size)] if isinstance(min_size, (int, float)) else [int(s) for s in min_size]
    return {
        "backbone": backbone,
        **keypoint_set.to_config(),
        "min_size": sizes,
        "max_size": int(max_size),
        "frozen_bn": bool(frozen_bn),
        "keypoint_head": [int(c) for c in (keypoint_head or DEFAULT_KEYPOINT_HEAD)],
        "fpn_channels": int(fpn_channels),
    }


@dataclass(frozen=True)
class Weights:
    """A --weights value, read once per run: "coco", "imagenet", "none", or a checkpoint file's
    model state dict with the settings it records or shows (`settings_from_weights`)."""
    name: str
    state_dict: dict[str, torch.Tensor] | None = None
    settings: dict[str, Any] | None = None

    @property
    def keypoint_set(self) -> KeypointSet | None:
        """The keypoint set they were trained on (None for imagenet and none: no keypoint head)."""
        if self.settings is not None:
            return self.settings["keypoint_set"]
        return COCO17 if self.name == "coco" else None


def read_weights(weights: str | Weights) -> Weights:
    """A --weights value as `Weights`: a checkpoint path is loaded here, once (torch.load with
    weights_only=True); "coco", "imagenet" and "none" are names, downloaded (or not) by build_model."""
    if isinstance(weights, Weights):
        return weights
    if weights in WEIGHT_CHOICES:
        return Weights(weights)
    state_dict, saved = load_weights(weights)
    return Weights(str(weights), state_dict, settings_from_weights(state_dict, saved))


def default_frozen_bn(weights: Weights) -> bool:
    """torchvision's choice: BatchNorm frozen when starting from pretrained weights, trained from
    scratch (frozen identity statistics would not train); a checkpoint's as it was trained."""
    if weights.settings is not None:
        return bool(weights.settings["frozen_bn"])
    return weights.name in ("coco", "imagenet")


def default_trainable_layers(backbone: str, frozen_bn: bool) -> int:
    """torchvision's choice: 3 backbone stages on frozen (pretrained) BatchNorm, all of them otherwise."""
    return 3 if frozen_bn else (6 if backbone.startswith("mobilenet") else 5)


def build_model(
    backbone: str = "resnet50",
    weights: str | Weights = "none",
    num_keypoints: int = NUM_KEYPOINTS,
    min_size: int | Sequence[int] = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    trainable_layers: int | None = None,
    frozen_bn: bool | None = None,
    keypoint_head: Sequence[int] | None = None,
    new_keypoint_predictor: bool = False,
    fpn_channels: int = DEFAULT_FPN_CHANNELS,
    **kwargs: Any,
):
    """A torchvision Keypoint R-CNN with an FPN on `backbone`.

    weights: "coco" (torchvision's COCO person-keypoint weights, resnet50 only), "imagenet"
    (ImageNet backbone, fresh heads), "none" (random init), or a checkpoint (a path, read by
    `read_weights`, or `Weights` already read: built from scratch, then loaded). Extra kwargs go to `KeypointRCNN` (for instance
    `box_score_thresh`, `box_detections_per_img`). `new_keypoint_predictor`: take everything
    from `weights` but the keypoint predictor, which starts afresh with `num_keypoints` outputs
    (fine-tuning to another keypoint set).

    `frozen_bn` and `trainable_layers` default to `default_frozen_bn` and `default_trainable_layers`.
    The RoI pools are `roi_align.FastMultiScaleRoIAlign`: torchvision's numbers, computed by the
    numba kernel wherever no gradient is needed (test.py, detect.py and train.py's evaluation
    alike), by torchvision's op in training.
    `keypoint_head` lists the conv widths of the keypoint head (default: torchvision's 8 x 512);
    `fpn_channels` is the FPN's width, the input of the RPN and both heads (ResNets only).
    """
    if backbone not in BACKBONES:
        raise UserError(f"--backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    source = read_weights(weights)
    weights = source.name
    if weights == "coco" and backbone != "resnet50":
        raise UserError("--weights coco exists only for --backbone resnet50; use --weights imagenet or none")
    if frozen_bn is None:
        frozen_bn = default_frozen_bn(source)
    norm_layer = misc.FrozenBatchNorm2d if frozen_bn else torch.nn.BatchNorm2d
    if trainable_layers is None:
        trainable_layers = default_trainable_layers(backbone, frozen_bn)
    min_size = tuple(min_size) if not isinstance(min_size, (int, float)) else (int(min_size),)
    kwargs.update(min_size=min_size, max_size=max_size, num_keypoints=num_keypoints)
    keypoint_head = tuple(keypoint_head or DEFAULT_KEYPOINT_HEAD)
    custom_head = keypoint_head != DEFAULT_KEYPOINT_HEAD
    if custom_head and weights == "coco":
        raise UserError("--weights coco needs torchvision's keypoint head (8 x 512)")
    if fpn_channels != DEFAULT_FPN_CHANNELS and (weights == "coco" or not backbone.startswith("resnet")):
        raise UserError(f"--fpn-channels {fpn_channels}: only torchvision's {DEFAULT_FPN_CHANNELS} with "
                        "--weights coco or a mobilenet backbone")
    if custom_head:
        kwargs["keypoint_head"] = KeypointRCNNHeads(fpn_channels, keypoint_head)  # FPN channels in
        kwargs["keypoint_predictor"] = KeypointRCNNPredictor(keypoint_head[-1], num_keypoints)
        del kwargs["num_keypoints"]  # KeypointRCNN refuses it next to a predictor

    if backbone == "resnet50" and weights == "coco":
        kwargs["num_keypoints"] = NUM_KEYPOINTS  # the weights' own; another set gets a new predictor below
        try:
            model = keypointrcnn_resnet50_fpn(weights=KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
                                              trainable_backbone_layers=trainable_layers, **kwargs)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            raise _download_failed("torchvision's COCO Keypoint R-CNN weights", e) from None
        if new_keypoint_predictor or num_keypoints != NUM_KEYPOINTS:
            model.roi_heads.keypoint_predictor = KeypointRCNNPredictor(keypoint_head[-1], num_keypoints)
        return roi_align.install_fast_pools(model)

    model = _build_from_backbone(backbone, weights == "imagenet", norm_layer, trainable_layers, fpn_channels,
                                 **kwargs)
    if source.state_dict is not None:
        state_dict = source.state_dict
        if new_keypoint_predictor:
            own = model.state_dict()
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(KEYPOINT_PREDICTOR)}
            state_dict.update({k: v for k, v in own.items() if k.startswith(KEYPOINT_PREDICTOR)})
        apply_state_dict(model, state_dict)
    return roi_align.install_fast_pools(model)


def _build_from_backbone(backbone: str, imagenet: bool, norm_layer: type, trainable_layers: int,
                         fpn_channels: int = DEFAULT_FPN_CHANNELS, **kwargs: Any) -> KeypointRCNN:
    """KeypointRCNN on an FPN over `backbone`, ImageNet-initialised or random."""
    backbone_weights = {
        "resnet18": ResNet18_Weights.IMAGENET1K_V1, "resnet34": ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": ResNet50_Weights.IMAGENET1K_V1, "resnet101": ResNet101_Weights.IMAGENET1K_V1,
        "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    }[backbone] if imagenet else None
    try:
        if backbone.startswith("resnet"):
            body = getattr(resnet, backbone)(weights=backbone_weights, norm_layer=norm_layer)
            features = _resnet_fpn_extractor(body, min(trainable_layers, 5))
            if fpn_channels != DEFAULT_FPN_CHANNELS:
                features.fpn = FeaturePyramidNetwork([b[0].in_channels for b in features.fpn.inner_blocks],
                                                     fpn_channels, extra_blocks=LastLevelMaxPool())
                features.out_channels = fpn_channels
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


def checkpoint_name(epochs: int, batch_size: int, lr: float, momentum: float) -> str:
    """`e42_b8_lr0.02_m0.9.pth`: lr and momentum exactly as Python prints them."""
    return f"e{epochs}_b{batch_size}_lr{lr}_m{momentum}.pth"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with weights_only=True (checkpoints come from strangers), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names a GLOBAL it refused (a class or function, code that would
        # run); anything else it stumbles on is not a pickle at all: random bytes, another format.
        if "GLOBAL" in str(e):  # torch's advice to turn the check off is not passed on
            raise UserError(f"refused {path}: it holds Python objects that could run code when loaded; "
                            "only tensors, numbers, strings and containers of them are accepted") from None
        detail = str(e).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0]
        raise UserError(f"cannot load {path}: not a PyTorch checkpoint ({' '.join(detail.split())})") from None
    except Exception as e:  # other unpickling errors come in many types, some with a bare key as message
        raise UserError(f"cannot load {path}: not a PyTorch checkpoint ({first_line(e)})") from None
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
    """(state_dict, model config or None): the config recorded in a full checkpoint, else the one
    train.py's log beside final weights holds (`e42_b8_lr0.02_m0.9.json` for `...pth`)."""
    state_dict, config = split_checkpoint(load_checkpoint(path), str(path))
    return state_dict, config if config is not None else sidecar_config(path)


def sidecar_config(weights_path: str | os.PathLike) -> dict[str, Any] | None:
    """The whole "model_config" of the JSON log train.py writes beside its final weights, or
    None when there is no such file or it holds none (a log is never required)."""
    log = Path(weights_path).with_suffix(".json")
    try:
        with open(log, encoding="utf-8") as f:
            config = json.load(f).get("model_config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


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


def keypoint_transfer(weights: Weights, keypoint_set: KeypointSet) -> str | None:
    """When `weights` were trained on another keypoint set than `keypoint_set` (the data's): the
    line saying what fine-tuning keeps; build_model(new_keypoint_predictor=True) does it. Else None."""
    source_set = weights.keypoint_set
    if source_set is None or source_set.same_as(keypoint_set):
        return None
    return (f"fine-tuning {describe_weights(weights.name)} ({source_set.describe()}) to {keypoint_set.describe()}: "
            "keeping the backbone, RPN and box head, starting a new keypoint predictor")


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
    Returns (model in eval mode on the CPU, the config it was built with, its keypoint set
    included: `KeypointSet.from_config(config)` reads it back).
    """
    if weights in ("imagenet", "none"):
        raise UserError(f"--weights {weights} gives a model with untrained heads; "
                        "pass a checkpoint or 'coco'")
    if weights == "coco":
        config = model_config(backbone or "resnet50", min_size=min_size or 800, max_size=max_size or DEFAULT_MAX_SIZE)
        try:
            model = build_model(config["backbone"], "coco", min_size=config["min_size"], max_size=config["max_size"],
                                **kwargs)
        except WeightsError as e:  # no model trained from scratch here: do not advise --weights none
            raise WeightsError(str(e).replace(TRAINING_ADVICE, INFERENCE_ADVICE)) from None
        return model.eval(), config
    source = read_weights(weights)
    found = source.settings
    config = model_config(
        backbone=backbone or found["backbone"] or "resnet50",
        keypoint_set=found["keypoint_set"],
        min_size=min_size or inference_min_size(found["min_size"]),
        max_size=max_size or found["max_size"] or DEFAULT_MAX_SIZE,
        frozen_bn=found["frozen_bn"],
        keypoint_head=found["keypoint_head"],
        fpn_channels=found["fpn_channels"],
    )
    model = build_model(config["backbone"], "none", config["num_keypoints"], config["min_size"],
                        config["max_size"], frozen_bn=config["frozen_bn"],
                        keypoint_head=config["keypoint_head"], fpn_channels=config["fpn_channels"], **kwargs)
    apply_state_dict(model, source.state_dict, source=str(weights))
    return model.eval(), config


def inference_min_size(train_min_sizes: Sequence[int] | None) -> int:
    """The shorter side test.py and detect.py run a checkpoint at (unless --min-size): the
    largest it was trained at (torchvision trains on 640..800 and tests at 800), else 800."""
    return max(train_min_sizes or [800])


@contextlib.contextmanager
def at_inference_size(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block, `model` (a training model) resizes images to `inference_min_size` of its
    training sizes, as `load_model` builds its checkpoint for test.py. (In eval mode torchvision
    takes the last size listed, the largest only when the sizes were typed in order.)"""
    transform = model.transform
    train_sizes = transform.min_size
    transform.min_size = (inference_min_size(train_sizes),)
    try:
        yield model
    finally:
        transform.min_size = train_sizes


def settings_from_weights(state_dict: dict[str, torch.Tensor], saved: dict | None) -> dict[str, Any]:
    """The model settings of a checkpoint: as recorded in our full checkpoints (`saved`), else
    read off the weights (backbone None and sizes None where nothing tells)."""
    saved = saved or {}
    return {
        "backbone": saved.get("backbone") or guess_backbone(state_dict),
        "num_keypoints": saved.get("num_keypoints") or _keypoints_in(state_dict),
        "keypoint_set": KeypointSet.from_config({"num_keypoints": _keypoints_in(state_dict), **saved}),
        "min_size": saved.get("min_size"),
        "max_size": saved.get("max_size"),
        # Trained BatchNorm layers carry a step counter; frozen ones (torchvision's) do not.
        "frozen_bn": bool(saved.get("frozen_bn", not any(k.endswith("num_batches_tracked") for k in state_dict))),
        "keypoint_head": saved.get("keypoint_head") or guess_keypoint_head(state_dict),
        "fpn_channels": saved.get("fpn_channels") or guess_fpn_channels(state_dict),
    }


def guess_keypoint_head(state_dict: dict[str, torch.Tensor]) -> list[int]:
    """The conv widths of the keypoint head, read off the weight shapes."""
    convs = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"roi_heads\.keypoint_head\.(\d+)\.weight", key)
        if m and value.ndim == 4:
            convs[int(m.group(1))] = int(value.shape[0])
    return [convs[i] for i in sorted(convs)] or list(DEFAULT_KEYPOINT_HEAD)


def guess_fpn_channels(state_dict: dict[str, torch.Tensor]) -> int:
    """The FPN's width, read off its first output conv (torchvision's 256 when there is none)."""
    conv = state_dict.get("backbone.fpn.layer_blocks.0.0.weight")
    return int(conv.shape[0]) if conv is not None else DEFAULT_FPN_CHANNELS


def _keypoints_in(state_dict: dict[str, torch.Tensor]) -> int:
    logits = state_dict.get(KEYPOINT_PREDICTOR + "kps_score_lowres.weight")
    return int(logits.shape[1]) if logits is not None else NUM_KEYPOINTS


def describe_weights(weights: str) -> str:
    return "torchvision COCO weights (KeypointRCNN_ResNet50_FPN_Weights.COCO_V1)" if weights == "coco" else str(weights)


def fold_batchnorm(model: torch.nn.Module) -> int:
    """For inference only: fold every eval-mode BatchNorm2d / FrozenBatchNorm2d into the
    convolution that feeds it (in nn.Sequential stacks, torchvision's ResNet blocks and its
    backbone stem), replacing it by nn.Identity. Same outputs up to float rounding, one pass over the
    feature maps fewer per layer (benchmark.py: ~1.1x on a CPU). Returns how many were folded."""

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


def _to_float32(module: torch.nn.Module, inputs: tuple, output: Any) -> Any:
    """Forward hook: floating tensors in the output (nested in tuples/lists) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(module, inputs, o) for o in output)
    return output


def keep_float32_outputs(model: torch.nn.Module) -> torch.nn.Module:
    """Make the heads whose outputs place boxes and keypoints (the RPN head's deltas, the box
    predictor's deltas and scores, the keypoint predictor's heatmaps) hand float32 onward under an
    autocast, so that bfloat16 does not round box coordinates to 8 bits of mantissa (a box edge at
    x = 600 would move in steps of 4 px). Forward hooks: the weights, the state_dict and training
    stay as they are. Returns `model`."""
    heads = model.roi_heads
    for module in (model.rpn.head, heads.box_predictor, heads.keypoint_predictor):
        if module is not None and not getattr(module, "_outputs_float32", False):
            module.register_forward_hook(_to_float32)
            module._outputs_float32 = True
    return model


# The layers a CPU bfloat16 autocast runs in bfloat16, casting their weights on every call.
AUTOCAST_LOWERED = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


def store_autocast_weights(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """For inference under an autocast to `dtype` only: the weights and biases of the layers it
    runs in `dtype` (convolutions, linear layers) stored in `dtype`, as autocast would cast them
    on every call (about 60 M weights per frame for the R50-FPN model): the same numbers reach the
    same kernels. Without that autocast the model no longer runs. Returns how many layers."""
    layers = [m for m in model.modules() if isinstance(m, AUTOCAST_LOWERED)]
    for layer in layers:
        layer.to(dtype)
    return len(layers)


def prepare_for_inference(model: torch.nn.Module, device: torch.device, precision: str = "fp32") -> torch.nn.Module:
    """test.py's and detect.py's model for `precision` (precision.select's): eval mode, BatchNorm
    folded into the convolutions, on `device`, channels_last weights on a CPU (oneDNN's fast
    layout, in float32 and bfloat16), convolution and linear weights stored in bfloat16 for a
    bfloat16 autocast on a CPU (`store_autocast_weights`), and box and keypoint coordinates kept in
    float32 under an autocast (`keep_float32_outputs`). Each step keeps the outputs to float
    rounding (tests/test_models.py, tests/test_roi_align.py). Returns `model`."""
    model.eval()
    fold_batchnorm(model)  # benchmarks: ~1.1x on a CPU
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # faster in float32, more so in bfloat16 (benchmarks)
        if precision == "bf16":
            store_autocast_weights(model)
    return keep_float32_outputs(model)


def add_model_flags(group: argparse._ArgumentGroup, min_size_note: str = "") -> None:
    """The --weights, --backbone, --min-size, --max-size and --proposals flags of test.py and detect.py."""
    group.add_argument("--weights", default=None,
                       help="our checkpoint, a raw torchvision state_dict (.pth), or 'coco' for torchvision's "
                            "COCO weights (default: the newest e*_b*_lr*_m*.pth in the current folder or in "
                            "train.py's run folders runs/train/*/, else 'coco')")
    group.add_argument("--backbone", choices=BACKBONES, default=None,
                       help="override the backbone (default: as recorded in the checkpoint, or guessed from it)")
    group.add_argument("--min-size", type=image_side, default=None,
                       help=f"shorter image side the model sees{min_size_note} "
                            "(default: the checkpoint's largest training size, else 800)")
    group.add_argument("--max-size", type=image_side, default=None,
                       help=f"longer image side cap (default: the checkpoint's, else {DEFAULT_MAX_SIZE})")
    group.add_argument("--proposals", type=positive_int, default=DEFAULT_PROPOSALS,
                       help=f"RPN proposals the box head scores per image (default: torchvision's {DEFAULT_PROPOSALS}); "
                            f"{PROPOSALS_NOTE}")
