"""The frames and the weights benchmark.py runs on: real images (COCO layout, coco-mini beside
the repo, or generated sample data) and, without --weights, a seeded random model calibrated
so that as many persons pass the display threshold as the frames have annotated people.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
import utils
from dataset import load_coco, read_image
from sample_data import make_sample_dataset
from utils import coco_paths

REPO = Path(__file__).resolve().parents[1]
# The original project drew persons above 0.9 and ran the model at torchvision's default 0.05.
DISPLAY_THRESH = 0.9
ORIGINAL_MODEL_THRESH = 0.05
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


def resolve_data_root(data_root: str | None) -> Path:

    def complete(root: Path) -> bool:
        return all(p.exists() for split in ("train", "val") for p in coco_paths(root, split))

    if data_root is not None:
        root = Path(data_root)
        if not complete(root):
            raise utils.UserError(f"--data-root {root}: needs train2017/, val2017/ and "
                                  "annotations/person_keypoints_{train,val}2017.json")
        return root
    for root in (COCO_MINI, Path("sample")):
        if complete(root):
            return root
    root = Path("runs/benchmark/sample")
    if not complete(root):
        print(f"no COCO data found: generating a sample dataset in {root}")
        make_sample_dataset(root, images=24, seed=0, val_images=8)
    return root


def benchmark_frames(data_root: Path, count: int) -> tuple[list[Path], int]:
    """The first `count` val images (by id) with a labelled, non-crowd person, and how many
    such persons they hold together."""
    image_dir, ann_file = coco_paths(data_root, "val")
    coco = load_coco(ann_file)
    frames, persons = [], 0
    for image_id in sorted(coco.imgs):
        people = [a for a in coco.imgToAnns.get(image_id, [])
                  if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
        if people:
            frames.append(image_dir / coco.imgs[image_id]["file_name"])
            persons += len(people)
        if len(frames) == count:
            break
    if not frames:
        raise utils.UserError(f"{ann_file} has no image with a labelled person to benchmark on")
    return frames, persons


@dataclass
class Calibration:
    scale: float   # the person-vs-background logit becomes scale * logit + shift
    shift: float
    shown: int     # boxes >= DISPLAY_THRESH on the frames, after the box head's NMS
    at_005: int    # boxes >= ORIGINAL_MODEL_THRESH, what the original sends to the keypoint head
    natural_005: int  # the same count for the untouched random model


def calibrate_classifier(model: torch.nn.Module, images: list[torch.Tensor], persons: int,
                         boxes_at_005: int | None = None) -> Calibration:
    """An affine map of the random box classifier's person logit such that, over `images`,
    as many boxes pass DISPLAY_THRESH as the frames have annotated persons (a random classifier
    puts nearly all of them far below 0.9, so our keypoint head would never run) and as many pass
    ORIGINAL_MODEL_THRESH as the untouched random model lets through, or `boxes_at_005` (so the
    original's keypoint head sees the random model's own count, not one chosen here). The map
    keeps the ranking of the boxes; counts are after the box head's NMS, as the keypoint head
    sees them."""
    heads = model.roi_heads
    captured: list[list[Any]] = []
    hooks = [heads.box_roi_pool.register_forward_pre_hook(lambda m, inp: captured.append([inp[1], inp[2]])),
             heads.box_predictor.register_forward_hook(lambda m, inp, out: captured[-1].extend(out))]
    saved_thresh = heads.score_thresh
    heads.score_thresh = 1.01  # nobody reaches the keypoint head while we look
    try:
        with torch.inference_mode():
            for image in images:
                model([image])

            def count(scale: float, shift: float, thresh: float) -> int:
                heads.score_thresh = thresh
                total = 0
                for proposals, shapes, logits, regression in captured:
                    logits = logits * scale
                    logits[:, 1] += shift
                    _, scores, _ = heads.postprocess_detections(logits, regression, proposals, shapes)
                    total += sum(len(s) for s in scores)
                return total

            def smallest_shift(scale: float, wanted: int) -> float:
                """The smallest shift that shows `wanted` boxes (the count grows with the shift)."""
                low, high = -60.0, 60.0
                for _ in range(16):
                    mid = (low + high) / 2
                    low, high = (low, mid) if count(scale, mid, DISPLAY_THRESH) >= wanted else (mid, high)
                return high

            def shift_for(scale: float) -> float:
                """Midway between showing `persons` boxes and showing one more: decoding the JPEG with
                another library or another memory format must not change the count."""
                return (smallest_shift(scale, persons) + smallest_shift(scale, persons + 1)) / 2

            natural = count(1.0, 0.0, ORIGINAL_MODEL_THRESH)
            wanted_005 = max(natural if boxes_at_005 is None else boxes_at_005, persons)
            # A larger scale spreads the logits: fewer boxes between 0.9 and 0.05. Bisect log(scale)
            # for the largest scale that still lets `wanted_005` boxes pass 0.05.
            low, high = math.log(1e-3), math.log(1e3)
            for _ in range(10):
                mid = (low + high) / 2
                scale = math.exp(mid)
                low, high = (mid, high) if count(scale, shift_for(scale), ORIGINAL_MODEL_THRESH) >= wanted_005 \
                    else (low, mid)
            scale = math.exp(low)
            shift = shift_for(scale)
            return Calibration(scale, shift, count(scale, shift, DISPLAY_THRESH),
                               count(scale, shift, ORIGINAL_MODEL_THRESH), natural)
    finally:
        heads.score_thresh = saved_thresh
        for h in hooks:
            h.remove()


def random_weights(args: argparse.Namespace, frames: list[Path], persons: int, folder: Path) -> tuple[str, str]:
    """A seeded random model saved as our checkpoint, its classifier calibrated on `frames`."""
    utils.seed_everything(args.seed)
    settings = dict(min_size=args.min_size, max_size=args.max_size, frozen_bn=False, keypoint_head=args.keypoint_head)
    model = models.build_model(args.backbone, "none", rpn_post_nms_top_n_test=args.proposals, **settings).eval()
    images = [read_image(f).float().div_(255) for f in frames]
    c = calibrate_classifier(model, images, persons, args.boxes_at_005)
    with torch.no_grad():
        classifier = model.roi_heads.box_predictor.cls_score
        classifier.weight.mul_(c.scale)
        classifier.bias.mul_(c.scale)
        classifier.bias[1] += c.shift
    path = folder / "random_calibrated.pth"
    utils.atomic_save({"model": model.state_dict(),
                       "model_config": models.model_config(args.backbone, **settings)}, path)
    head = args.keypoint_head or models.DEFAULT_KEYPOINT_HEAD
    about = (f"random {args.backbone} (seed {args.seed}, keypoint head {head[0]}x{len(head)}), person logit x "
             f"{c.scale:.3g} {c.shift:+.2f}: {c.shown} box(es) >= {DISPLAY_THRESH} ({persons} annotated person(s)) "
             f"and {c.at_005} >= {ORIGINAL_MODEL_THRESH} (untouched random model: {c.natural_005}) "
             f"on {len(frames)} frame(s) at {args.min_size} px")
    return str(path), about


def synthetic_detections(coco, per_image: int, seed: int) -> list[dict[str, Any]]:
    """COCO results for every val image: a jittered copy of each annotated person (score 0.5-1)
    and random boxes with random keypoints (score 0.05-0.5) up to `per_image` per image."""
    rng = np.random.default_rng(seed)
    results = []
    for image_id in sorted(coco.imgs):
        w, h = coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]
        dets = []
        for ann in coco.imgToAnns.get(image_id, []):
            x, y, bw, bh = ann["bbox"]
            box = [x + rng.normal(0, 0.05) * bw, y + rng.normal(0, 0.05) * bh, bw * rng.uniform(0.9, 1.1),
                   bh * rng.uniform(0.9, 1.1)]
            kps = np.array(ann.get("keypoints") or [0] * 3 * utils.NUM_KEYPOINTS, dtype=float).reshape(-1, 3)
            kps[:, 0] += rng.normal(0, 0.03 * max(bw, 1), len(kps))
            kps[:, 1] += rng.normal(0, 0.03 * max(bh, 1), len(kps))
            dets.append((box, kps, rng.uniform(0.5, 1.0)))
        while len(dets) < per_image:
            bw, bh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.1, 0.8) * h
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            kps = np.stack([rng.uniform(x, x + bw, utils.NUM_KEYPOINTS), rng.uniform(y, y + bh, utils.NUM_KEYPOINTS),
                            np.ones(utils.NUM_KEYPOINTS)], axis=1)
            dets.append(([x, y, bw, bh], kps, rng.uniform(0.05, 0.5)))
        for box, kps, score in dets:
            kps[:, 2] = 1
            results.append({"image_id": int(image_id), "category_id": 1, "bbox": [round(float(v), 2) for v in box],
                            "keypoints": [round(float(v), 2) for v in kps.reshape(-1)], "score": round(float(score), 5)})
    return results
