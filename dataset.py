"""COCO person keypoints for torchvision's Keypoint R-CNN: dataset, transforms, batching, sample data.

Usage as a module (train.py / test.py):

    from dataset import CocoKeypoints, coco_paths, get_transforms, collate_fn
    from dataset import GroupedBatchSampler, create_aspect_ratio_groups

    image_dir, ann_file = coco_paths("coco", "train")
    ds = CocoKeypoints(image_dir, ann_file, train=True, transforms=get_transforms(train=True))
    sampler = torch.utils.data.RandomSampler(ds)          # or DistributedSampler(ds)
    batches = GroupedBatchSampler(sampler, create_aspect_ratio_groups(ds, k=3), batch_size=4)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, collate_fn=collate_fn)
    image, target = ds[0]  # float32 3xHxW in [0, 1]; target: boxes, labels, keypoints, image_id, area, iscrowd

Usage as a script (writes a small synthetic dataset in the COCO layout, the offline default):

    python dataset.py --sample sample --images 200 --seed 0

Getting the real COCO 2017 (resumable, safe to run again; zips deleted once unpacked unless --keep-zips):

    python dataset.py --download coco --root coco                          # all: ~20 GB download
    python dataset.py --download coco --root coco --splits annotations val  # what test.py needs: ~1 GB

Data layout (COCO 2017, and what --sample writes):

    root/train2017/*.jpg  root/val2017/*.jpg
    root/annotations/person_keypoints_train2017.json
    root/annotations/person_keypoints_val2017.json
"""
from __future__ import annotations

import argparse
import colorsys
import contextlib
import hashlib
import http.client
import io
import json
import math
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError
from pycocotools.coco import COCO
from tqdm import tqdm

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # a torchvision without image decoders: PIL does it all
    decode_image = ImageReadMode = None

from utils import COCO_KEYPOINT_NAMES, COCO_PERSON_CATEGORY, KEYPOINT_FLIP_INDEX, UserError, cli_errors

NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)
PERSON_ID = COCO_PERSON_CATEGORY["id"]
SPLITS = ("train", "val")

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


class DatasetError(UserError, ValueError):
    """Bad input data (an image, an annotation file, a folder); the message names the file."""


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as uint8 3xHxW RGB, whatever its mode (gray, CMYK, alpha, palette, 16-bit).

    EXIF orientation is ignored on purpose: COCO's boxes and keypoints refer to the stored pixels.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read image {path}: {e.strerror or e}") from None
    try:
        image = _decode_with_torchvision(data)
    except (RuntimeError, ValueError):
        # Formats torchvision does not decode (BMP, TIFF, ...) or corrupt files: let PIL decide.
        image = _decode_with_pil(data, path)
    if image.dtype == torch.uint16:  # 16-bit PNG: keep the high byte, as an 8-bit export would
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _decode_with_torchvision(data: bytes) -> torch.Tensor:
    if decode_image is None:
        raise RuntimeError("this torchvision has no image decoders")
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec; they are still the fastest
        # way to a CHW tensor, and PIL takes over once they are gone.
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _decode_with_pil(data: bytes, path: str | os.PathLike) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                # PIL's convert("RGB") clips 16-bit gray to 255 instead of scaling it.
                gray = (np.asarray(im, dtype=np.int64) >> 8).clip(0, 255).astype(np.uint8)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise DatasetError(f"cannot decode image {path}: unknown format or not an image") from None
    except Exception as e:  # PIL raises many types for bad data; all mean "not an image"
        raise DatasetError(f"cannot decode image {path}: {' '.join(str(e).split())}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # HWC memory, like torchvision's decoder


# --------------------------------------------------------------------------------------
# COCO keypoints dataset
# --------------------------------------------------------------------------------------
def coco_paths(data_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """`(image_dir, ann_file)` of a COCO 2017 split ("train" or "val") under `data_root`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(data_root)
    return root / f"{split}2017", root / "annotations" / f"person_keypoints_{split}2017.json"


def load_coco(ann_file: str | os.PathLike) -> COCO:
    """Load and sanity-check a COCO keypoint annotation file into a pycocotools `COCO` (quietly)."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {ann_file}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read annotation file {ann_file}: {e}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"annotation file {ann_file} is not valid JSON: {e}") from None
    _check_coco_json(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_coco_json(data: Any, ann_file: str | os.PathLike) -> None:
    # Fail here with the file's name rather than with a KeyError deep inside a DataLoader worker.
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"annotation file {ann_file} is not in COCO format (needs 'images' and 'annotations' lists)")
    for img in data["images"]:
        if not isinstance(img, dict) or not all(k in img for k in ("id", "file_name", "width", "height")):
            raise DatasetError(f"annotation file {ann_file}: image entry without id/file_name/width/height: {img!r:.80}")
    for ann in data["annotations"]:
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(bbox, list) or len(bbox) != 4 or "image_id" not in ann:
            raise DatasetError(f"annotation file {ann_file}: annotation without image_id/bbox: {ann!r:.80}")
        kps = ann.get("keypoints")
        if kps is not None and len(kps) != 3 * NUM_KEYPOINTS:
            raise DatasetError(f"annotation file {ann_file}: annotation {ann.get('id')} has {len(kps)} "
                               f"keypoint values, expected {3 * NUM_KEYPOINTS}")


def num_labelled(ann: dict) -> int:
    """Number of keypoints with visibility > 0 (labelled, visible or not)."""
    return sum(1 for v in (ann.get("keypoints") or [])[2::3] if v > 0)


def keep_for_training(ann: dict, width: int, height: int, min_keypoints: int = 1) -> bool:
    """Train-time filter: no crowds, at least `min_keypoints` labelled, box >= 1 px after clipping."""
    if ann.get("iscrowd", 0) or num_labelled(ann) < min_keypoints:
        return False
    x1, y1, x2, y2 = _clip_box(_xywh_to_xyxy(ann["bbox"]), width, height)
    return x2 - x1 >= 1 and y2 - y1 >= 1  # torchvision's loss asserts positive box sizes


def _xywh_to_xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _clip_box(box: Sequence[float], width: int, height: int) -> list[float]:
    x1, y1, x2, y2 = box
    return [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
            min(max(x2, 0.0), width), min(max(y2, 0.0), height)]


def annotations_to_target(anns: Sequence[dict], image_id: int, width: int | None = None,
                          height: int | None = None) -> Target:
    """COCO annotations of one image -> a torchvision detection target.

    Boxes go from COCO's xywh to x1y1x2y2; they are clipped to the image only when width and
    height are given (training). Annotations without keypoints get (17, 3) zeros.
    """
    boxes = [_xywh_to_xyxy(a["bbox"]) for a in anns]
    if width is not None and height is not None:
        boxes = [_clip_box(b, width, height) for b in boxes]
    keypoints = [a.get("keypoints") or [0] * (3 * NUM_KEYPOINTS) for a in anns]
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(anns), dtype=torch.int64),
        "keypoints": torch.tensor(keypoints, dtype=torch.float32).reshape(-1, NUM_KEYPOINTS, 3),
        "image_id": int(image_id),
        "area": torch.tensor([float(a.get("area", 0.0)) for a in anns], dtype=torch.float32),
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
    }
    zero_invisible_keypoints(target["keypoints"])
    return target


def zero_invisible_keypoints(keypoints: torch.Tensor) -> torch.Tensor:
    """COCO convention, in place: a keypoint with visibility 0 is exactly (0, 0, 0)."""
    keypoints[keypoints[..., 2] <= 0] = 0
    return keypoints


class CocoKeypoints(torch.utils.data.Dataset):
    """COCO person keypoints as `(image, target)` pairs for torchvision's Keypoint R-CNN.

    image: float32 3xHxW in [0, 1]. target: `boxes` (N, 4) float32 x1y1x2y2 pixels, `labels` (N,)
    int64 (all 1), `keypoints` (N, 17, 3) float32 (x, y, visibility), `image_id` a plain Python
    int (torchvision ignores it; COCOeval wants the int), `area` (N,) float32, `iscrowd` (N,) int64.

    train=True drops crowds, boxes under 1 px and persons with fewer than `min_keypoints`
    labelled keypoints, clips boxes to the image, and skips images left without a person.
    train=False keeps every image of the file (COCOeval must see them all) and every person
    annotation unchanged, crowds flagged by `iscrowd`.

    `transforms(image, target)` runs on the float image; invisible keypoints are zeroed after it.
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, train: bool = False,
                 transforms: Transform | None = None, min_keypoints: int = 1) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.train = train
        self.transforms = transforms
        self.min_keypoints = min_keypoints
        self.coco = load_coco(ann_file)
        _check_image_dir(self.image_dir, self.ann_file, [img["file_name"] for img in self.coco.dataset["images"]])

        self._anns: dict[int, list[dict]] = {}
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            anns = [a for a in self.coco.imgToAnns.get(image_id, []) if a.get("category_id") == PERSON_ID]
            if train:
                anns = [a for a in anns if keep_for_training(a, info["width"], info["height"], min_keypoints)]
                if not anns:
                    continue  # nothing to learn from; torchvision also needs >= 1 box per image
            self._anns[image_id] = anns
        self.ids: list[int] = list(self._anns)

    def __len__(self) -> int:
        return len(self.ids)

    def get_height_and_width(self, idx: int) -> tuple[int, int]:
        """Image size from the annotation file, without decoding (for aspect-ratio grouping)."""
        info = self.coco.imgs[self.ids[idx]]
        return int(info["height"]), int(info["width"])

    def get_target(self, idx: int) -> Target:
        """The target of item `idx` before transforms, without reading the image."""
        image_id = self.ids[idx]
        info = self.coco.imgs[image_id]
        if self.train:
            return annotations_to_target(self._anns[image_id], image_id, info["width"], info["height"])
        return annotations_to_target(self._anns[image_id], image_id)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Target]:
        info = self.coco.imgs[self.ids[idx]]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        if tuple(image.shape[-2:]) != (info["height"], info["width"]):
            # Boxes would be silently misplaced: the file does not belong to this annotation file.
            raise DatasetError(f"image {path} is {image.shape[-1]}x{image.shape[-2]}, "
                               f"{self.ann_file} says {info['width']}x{info['height']}")
        image = image.float().div_(255)
        target = self.get_target(idx)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        zero_invisible_keypoints(target["keypoints"])
        return image, target

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        return f"CocoKeypoints({self.image_dir}, {len(self)} images, {mode})"


def _check_image_dir(image_dir: Path, ann_file: Path, file_names: Sequence[str]) -> None:
    if not image_dir.is_dir():
        raise DatasetError(f"image folder not found: {image_dir} (needed by {ann_file})")
    present = set(os.listdir(image_dir))  # one listing instead of a stat per image
    missing = [n for n in file_names if n not in present and ("/" not in n or not (image_dir / n).is_file())]
    if missing:
        raise DatasetError(f"image folder {image_dir} lacks {len(missing)} of the {len(file_names)} images "
                           f"listed in {ann_file}, e.g. {missing[0]}")


# --------------------------------------------------------------------------------------
# Transforms: callables (image, target) -> (image, target)
# --------------------------------------------------------------------------------------
def flip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror x1y1x2y2 boxes in an image `width` pixels wide."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def flip_keypoints(keypoints: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror (N, 17, 3) keypoints: x -> width - x and swap left/right joints.

    COCO coordinates are continuous (the image spans [0, width]), so the mirror of x is
    width - x, and mirroring twice gives x back (exactly for COCO's integer keypoints).
    """
    flipped = keypoints[:, list(KEYPOINT_FLIP_INDEX)].clone()
    flipped[..., 0] = width - flipped[..., 0]
    return zero_invisible_keypoints(flipped)


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class RandomHorizontalFlip:
    """Flip image, boxes and keypoints (left/right joints swapped) with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        # torch's RNG, not numpy's: DataLoader seeds it differently in every worker.
        if torch.rand(()) >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        target["boxes"] = flip_boxes(target["boxes"], width)
        target["keypoints"] = flip_keypoints(target["keypoints"], width)
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Small photometric jitter of the float image; geometry is untouched."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.02) -> None:
        self.jitter = torchvision.transforms.ColorJitter(brightness, contrast, saturation, hue)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        return self.jitter(image), target

    def __repr__(self) -> str:
        return repr(self.jitter)


def get_transforms(train: bool, flip_prob: float = 0.5, jitter: bool = False) -> Compose:
    """Training: random flip (and optional colour jitter). Evaluation: nothing."""
    if not train:
        return Compose([])
    transforms: list[Transform] = []
    if flip_prob > 0:
        transforms.append(RandomHorizontalFlip(flip_prob))
    if jitter:
        transforms.append(ColorJitter())
    return Compose(transforms)


def collate_fn(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[tuple, ...]:
    """Keep images of different sizes apart: `(images, targets)` as two tuples."""
    return tuple(zip(*batch))


# --------------------------------------------------------------------------------------
# Aspect-ratio grouping (same idea as torchvision references/detection/group_by_aspect_ratio.py)
# --------------------------------------------------------------------------------------
def _aspect_ratios(dataset: torch.utils.data.Dataset) -> list[float]:
    if isinstance(dataset, torch.utils.data.Subset):
        ratios = _aspect_ratios(dataset.dataset)
        return [ratios[i] for i in dataset.indices]
    sizes = (dataset.get_height_and_width(i) for i in range(len(dataset)))
    return [w / h for h, w in sizes]


def create_aspect_ratio_groups(dataset: torch.utils.data.Dataset, k: int = 3) -> list[int]:
    """Group id of every item: its width/height bucketed into 2k+2 bins spaced evenly in log2
    between 1/2 and 2 (k=0: one split at 1, i.e. portrait vs landscape)."""
    bins = 2.0 ** np.linspace(-1, 1, 2 * k + 1) if k > 0 else np.array([1.0])
    return np.digitize(_aspect_ratios(dataset), bins).tolist()


class GroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of indices from `sampler` whose `group_ids` agree, so padded batches waste less.

    Every index the sampler yields is used exactly once per epoch. The number of batches is
    fixed by len(sampler) alone: min(ceil(n / batch_size) + groups - 1, n). This matters under
    DistributedSampler, where every rank must run the same number of steps: a group's leftover
    indices form a smaller batch, and if that leaves fewer batches than the fixed count, the
    largest batches are split in two. Shuffling comes from the wrapped sampler.
    """

    def __init__(self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.num_groups = len(set(self.group_ids))

    def __len__(self) -> int:
        n = len(self.sampler)
        return min(-(-n // self.batch_size) + max(self.num_groups - 1, 0), n)

    def __iter__(self) -> Iterator[list[int]]:
        batches: list[list[int]] = []
        pending: dict[int, list[int]] = defaultdict(list)
        for idx in self.sampler:
            bucket = pending[self.group_ids[idx]]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                batches.append(bucket.copy())
                bucket.clear()
        batches += [pending[g] for g in sorted(pending) if pending[g]]
        target = len(self)
        while len(batches) < target:
            i = max(range(len(batches)), key=lambda j: len(batches[j]), default=None)
            if i is None or len(batches[i]) < 2:
                break  # only if the sampler yielded fewer indices than its len() promised
            half = len(batches[i]) // 2
            batches[i:i + 1] = [batches[i][:half], batches[i][half:]]
        yield from batches


# --------------------------------------------------------------------------------------
# Synthetic sample dataset: stick-limb people drawn with PIL, annotated like COCO
# --------------------------------------------------------------------------------------
# Body proportions as fractions of the standing height (top of head to soles).
_HEAD_R, _NECK, _TORSO = 0.062, 0.118, 0.31
_SHOULDER_W, _HIP_W = 0.115, 0.085
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.175, 0.16, 0.245, 0.245
_WIDTH = {"upper_arm": 0.058, "forearm": 0.047, "thigh": 0.088, "shin": 0.066, "neck": 0.05, "shoe": 0.045}

_SKIN = [(255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 90), (161, 102, 64), (112, 72, 48), (80, 52, 36)]
_HAIR = [(25, 20, 18), (60, 40, 25), (105, 68, 38), (185, 150, 90), (200, 200, 195), (135, 55, 30)]
_PANTS = [(40, 60, 110), (30, 30, 35), (95, 85, 65), (70, 70, 75), (120, 30, 40), (50, 80, 60), (160, 150, 130)]

# pose name -> (probability, views it is drawn in)
_POSES = {
    "stand": (0.22, ("front", "front", "back", "side")),
    "walk": (0.16, ("side",)),
    "run": (0.08, ("side",)),
    "arms_up": (0.09, ("front", "back")),
    "wave": (0.1, ("front", "front", "back")),
    "arms_out": (0.07, ("front", "back")),
    "hands_on_hips": (0.08, ("front",)),
    "sit": (0.1, ("side",)),
    "squat": (0.04, ("front",)),
    "kick": (0.06, ("side",)),
}
_LEFT, _RIGHT = 0, 1
# Label-map value offset for the far-side limbs of a side view, so that joints hidden behind the
# person's own torso also count as "labelled but not visible" (v=1), as COCO annotators mark them.
_FAR = 100
_KEYPOINT_SIDE = [_LEFT if n.startswith("left_") and i >= 5 else _RIGHT if n.startswith("right_") and i >= 5
                  else None for i, n in enumerate(COCO_KEYPOINT_NAMES)]


def _unit(deg: float) -> np.ndarray:
    """Direction in image coordinates: 0 deg points down, +90 to the right, 180 up."""
    a = math.radians(deg)
    return np.array([math.sin(a), math.cos(a)])


def _pose_angles(rng: np.random.Generator, pose: str) -> dict[str, Any]:
    """Joint angles of a pose, degrees. Per side: arm (a, b, c, d), leg (a, b, c, d), where `a`/`c`
    open sideways (away from the body) and `b`/`d` swing forwards (towards where the person faces);
    a, b move the upper limb, c, d bend the lower one. `lean` tilts the torso forwards."""
    U = rng.uniform
    arms = [[U(4, 20), U(-8, 8), U(-5, 20), U(0, 20)] for _ in range(2)]
    legs = [[U(2, 8), U(-4, 4), U(-4, 3), U(0, 8)] for _ in range(2)]
    lean, thigh_scale, seat = U(-5, 5), 1.0, False
    if pose in ("walk", "run"):
        run = pose == "run"
        s = rng.choice([-1, 1]) * U(0.5, 1.0)
        for side, sign in ((_LEFT, 1), (_RIGHT, -1)):
            swing = sign * s * (U(30, 50) if run else U(18, 30))
            legs[side] = [U(1, 4), swing, 0, (U(50, 100) if run else U(15, 35)) if swing < 0 else U(5, 30)]
            arms[side] = [U(2, 8), -swing * U(0.6, 1.0), 0, U(70, 110) if run else U(10, 40)]
        lean = U(6, 16) if run else U(-2, 5)  # leaning into the run
    elif pose == "arms_up":
        arms = [[U(125, 172), 0, U(-15, 15), 0] for _ in range(2)]
        if rng.random() < 0.4:
            legs = [[U(12, 25), 0, U(-4, 2), 0] for _ in range(2)]
    elif pose == "wave":
        side = int(rng.integers(2))
        arms[side] = [U(90, 140), 0, U(25, 70), 0]
    elif pose == "arms_out":
        arms = [[U(70, 105), 0, U(-25, 25), 0] for _ in range(2)]
    elif pose == "hands_on_hips":
        arms = [[U(35, 50), 0, -U(100, 120), 0] for _ in range(2)]
        if rng.random() < 0.5:  # only one hand on the hip
            arms[int(rng.integers(2))] = [U(4, 15), 0, U(0, 15), 0]
    elif pose == "sit":
        for side in (_LEFT, _RIGHT):
            t = U(70, 95)
            legs[side] = [0, t, 0, t + U(-15, 15)]
            arms[side] = [U(2, 6), U(10, 35), 0, U(30, 70)]
        lean, seat = U(-10, 2), True
    elif pose == "squat":
        legs = [[U(30, 45), 0, -U(50, 75), 0] for _ in range(2)]
        arms = [[U(10, 35), 0, -U(0, 40), 0] for _ in range(2)]
        thigh_scale = U(0.55, 0.75)  # thighs point at the camera
    elif pose == "kick":
        side = int(rng.integers(2))
        legs[side] = [0, U(50, 85), 0, U(0, 25)]
        legs[1 - side] = [U(0, 3), -U(0, 10), 0, U(0, 10)]
        arms = [[U(40, 80), U(-20, 20), U(-20, 20), 0] for _ in range(2)]
        lean = -U(2, 12)
    return {"arms": arms, "legs": legs, "lean": lean, "thigh_scale": thigh_scale, "seat": seat}


def _figure(rng: np.random.Generator) -> dict[str, Any]:
    """A random person in body units (height 1, hip centre at the origin, y down).

    Returns the 17 keypoints, per-keypoint visibility (0 for face parts the view hides) and the
    drawing parts, back to front.
    """
    names = list(_POSES)
    pose = names[int(rng.choice(len(names), p=[_POSES[n][0] for n in names]))]
    views = _POSES[pose][1]
    view = views[int(rng.integers(len(views)))]
    ang = _pose_angles(rng, pose)
    # sigma: which image side a body side is on (a person facing us has their left on our right).
    sigma = {_LEFT: 1.0, _RIGHT: -1.0} if view != "back" else {_LEFT: -1.0, _RIGHT: 1.0}
    face = 0.0 if view != "side" else float(rng.choice([-1.0, 1.0]))  # side view: facing left/right
    c = rng.uniform(0.82, 1.0) if view != "side" else rng.uniform(0.25, 0.5)  # body width, turned
    # Torso angle; positive `lean` from _pose_angles is forwards, i.e. towards where a side view faces.
    lean = -face * ang["lean"] if face else ang["lean"]
    tilt = rng.uniform(-12, 12)

    kp = np.zeros((NUM_KEYPOINTS, 2))
    vis = np.full(NUM_KEYPOINTS, 2)
    up, across = _unit(180 + lean), _unit(90 + lean)
    hip_c = np.zeros(2)
    sh_c = hip_c + _TORSO * up
    head = sh_c + _NECK * _unit(180 + lean + tilt)
    ends = {}
    for side in (_LEFT, _RIGHT):
        s = sigma[side]
        shoulder = sh_c + s * _SHOULDER_W * c * across
        hip = hip_c + s * _HIP_W * c * across
        a, b, cc, d = ang["arms"][side]
        upper = s * a + face * b
        fore = upper + s * cc + face * d
        elbow = shoulder + _UPPER_ARM * _unit(upper)
        wrist = elbow + _FOREARM * _unit(fore)
        a, b, cc, d = ang["legs"][side]
        thigh = s * a + face * b
        shin = thigh + s * cc - face * d  # knees bend backwards
        knee = hip + _THIGH * ang["thigh_scale"] * _unit(thigh)
        ankle = knee + _SHIN * _unit(shin)
        toe_dir = face * 85 if face else s * 35
        ends[side] = (wrist + 0.035 * _unit(fore), ankle + 0.06 * _unit(toe_dir))
        for name, p in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                        ("hip", hip), ("knee", knee), ("ankle", ankle)):
            kp[COCO_KEYPOINT_NAMES.index(("left_" if side == _LEFT else "right_") + name)] = p

    # Face, in the head's frame; a turned head shifts its features towards where it faces.
    r = _HEAD_R
    hx, hy = _unit(90 + lean + tilt), _unit(lean + tilt)
    shift = face * (1 - c) * 0.6 * r
    kp[0] = head + shift * 1.45 * hx + 0.3 * r * hy
    for side, eye, ear in ((_LEFT, 1, 3), (_RIGHT, 2, 4)):
        s = sigma[side]
        kp[eye] = head + (s * 0.38 * r * c + shift) * hx - 0.02 * r * hy
        kp[ear] = head + (s * 0.95 * r * c + 0.3 * shift) * hx + 0.05 * r * hy
        far = face != 0 and s == face  # the side turned away from the camera
        if far and c < 0.6:
            vis[ear] = 0
        if far and c < 0.4:
            vis[eye] = 0
    if view == "back":
        vis[:3] = 0

    parts = _figure_parts(kp, vis, sigma, face, c, lean, head, sh_c, hip_c, ends, view, r)
    far = (_LEFT if sigma[_LEFT] == face else _RIGHT) if face else None
    return {"kp": kp, "vis": vis, "parts": parts, "seat": ang["seat"], "face": face, "far": far}


def _figure_parts(kp, vis, sigma, face, c, lean, head, sh_c, hip_c, ends, view, r) -> list[tuple]:
    """Drawing primitives of a figure in body units, back to front: (kind, colour key, side, geometry)."""
    K = {n: i for i, n in enumerate(COCO_KEYPOINT_NAMES)}
    up, across = _unit(180 + lean), _unit(90 + lean)
    W = _WIDTH

    def limbs(side: int) -> tuple[list[tuple], list[tuple]]:
        n = "left_" if side == _LEFT else "right_"
        hand, toe = ends[side]
        leg = [("limb", "thigh", side, (kp[K[n + "hip"]], kp[K[n + "knee"]], W["thigh"])),
               ("limb", "shin", side, (kp[K[n + "knee"]], kp[K[n + "ankle"]], W["shin"])),
               ("limb", "shoe", side, (kp[K[n + "ankle"]], toe, W["shoe"]))]
        arm = [("limb", "sleeve", side, (kp[K[n + "shoulder"]], kp[K[n + "elbow"]], W["upper_arm"])),
               ("limb", "forearm", side, (kp[K[n + "elbow"]], kp[K[n + "wrist"]], W["forearm"])),
               ("disc", "skin", side, (hand, 0.028))]
        return leg, arm

    # Torso: wide at the shoulders, narrower waist, hips; at least some depth when seen from the side.
    tw, ww, hw = max(_SHOULDER_W * c, 0.06) + 0.03, max(0.085 * c, 0.055) + 0.005, max(_HIP_W * c, 0.055) + 0.04
    waist = hip_c + 0.45 * _TORSO * up
    torso = [sh_c + tw * across + 0.02 * up, waist + ww * across, hip_c + hw * across + 0.02 * up,
             hip_c - hw * across + 0.02 * up, waist - ww * across, sh_c - tw * across + 0.02 * up]
    belt = (ww + hw) / 2
    pelvis = [hip_c + 0.15 * _TORSO * up + belt * across, hip_c + hw * across - 0.03 * up,
              hip_c - hw * across - 0.03 * up, hip_c + 0.15 * _TORSO * up - belt * across]
    body = [("poly", "shirt", None, torso), ("poly", "pants", None, pelvis)]
    neck = [("limb", "skin", None, (sh_c, head + 0.3 * r * _unit(lean), W["neck"]))]

    hx = _unit(90 + lean)
    shift = face * (1 - c) * 0.6 * r
    headparts: list[tuple] = [("disc", "hair", None, (head - 0.3 * shift * hx - 0.12 * r * up, r * 1.02))]
    if view != "back":
        headparts.append(("disc", "skin", None, (head + 0.5 * shift * hx + 0.1 * r * _unit(lean), r * 0.86)))
    for ear in (3, 4):
        if vis[ear]:
            headparts.append(("disc", "skin_dark", None, (kp[ear], 0.2 * r)))
    if view != "back":
        for eye in (1, 2):
            if vis[eye]:
                headparts.append(("dot", "eye", None, (kp[eye], 0.13 * r)))
        headparts.append(("dot", "skin_dark", None, (kp[0], 0.12 * r)))
        mouth = head + 1.1 * shift * hx + 0.58 * r * _unit(lean)
        headparts.append(("dot", "mouth", None, (mouth, 0.1 * r)))

    legs = {s: limbs(s)[0] for s in (_LEFT, _RIGHT)}
    arms = {s: limbs(s)[1] for s in (_LEFT, _RIGHT)}
    if face:  # side view: the far side first, the near side over the torso
        far = _LEFT if sigma[_LEFT] == face else _RIGHT
        near = 1 - far
        return arms[far] + legs[far] + body + legs[near] + neck + headparts + arms[near]
    if view == "back":
        return legs[_LEFT] + legs[_RIGHT] + arms[_LEFT] + arms[_RIGHT] + body + neck + headparts
    return legs[_LEFT] + legs[_RIGHT] + body + neck + headparts + arms[_LEFT] + arms[_RIGHT]


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return tuple(int(round(255 * x)) for x in rgb)


def _shade(color: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(x * f)))) for x in color)


def _palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    skin = _shade(_SKIN[int(rng.integers(len(_SKIN)))], rng.uniform(0.92, 1.05))
    shirt = _hsv(rng, (0.25, 0.9), (0.35, 0.95))
    pants = _shade(_PANTS[int(rng.integers(len(_PANTS)))], rng.uniform(0.8, 1.2))
    long_sleeves, shorts = rng.random() < 0.5, rng.random() < 0.25
    return {"skin": skin, "skin_dark": _shade(skin, 0.85), "shirt": shirt, "sleeve": shirt,
            "forearm": shirt if long_sleeves else skin, "pants": pants, "thigh": pants,
            "shin": skin if shorts else pants, "shoe": _shade(_PANTS[int(rng.integers(2))], rng.uniform(0.4, 1.0)),
            "hair": _HAIR[int(rng.integers(len(_HAIR)))], "eye": (20, 20, 25), "mouth": _shade(skin, 0.6)}


class _Painter:
    """Draws on the image and, with the same shapes, on a label map (person index per pixel),
    so that visibility and mask area come from what is actually on screen."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.labels = Image.new("L", image.size, 0)
        self.draws = (ImageDraw.Draw(image), ImageDraw.Draw(self.labels))

    def limb(self, p, q, width: float, color, label: int) -> None:
        w = max(1, int(round(width)))
        for draw, fill in zip(self.draws, (color, label)):
            draw.line([tuple(p), tuple(q)], fill=fill, width=w)
        for c in (p, q):  # rounded ends
            self.disc(c, width / 2, color, label)

    def disc(self, c, r: float, color, label: int | None) -> None:
        box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
        for draw, fill in zip(self.draws, (color, label)):
            if fill is not None:
                draw.ellipse(box, fill=fill)

    def poly(self, points, color, label: int) -> None:
        pts = [tuple(p) for p in points]
        for draw, fill in zip(self.draws, (color, label)):
            draw.polygon(pts, fill=fill)

    def rect(self, box, color, label: int) -> None:
        for draw, fill in zip(self.draws, (color, label)):
            draw.rectangle(box, fill=fill)


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, float]:
    """Sky/wall over ground/floor, plus clutter (buildings, furniture, bushes, poles). Returns the horizon y."""
    horizon = rng.uniform(0.3, 0.65) * height
    top, mid = np.array(_hsv(rng, (0.05, 0.5), (0.55, 1.0))), np.array(_hsv(rng, (0.05, 0.5), (0.4, 0.95)))
    ground0, ground1 = np.array(_hsv(rng, (0.1, 0.6), (0.25, 0.7))), np.array(_hsv(rng, (0.1, 0.6), (0.3, 0.8)))
    y = np.arange(height, dtype=np.float64)[:, None]
    t_sky = np.clip(y / max(horizon, 1), 0, 1)
    t_ground = np.clip((y - horizon) / max(height - horizon, 1), 0, 1)
    rows = np.where(y < horizon, top * (1 - t_sky) + mid * t_sky, ground0 * (1 - t_ground) + ground1 * t_ground)
    image = Image.fromarray(np.repeat(rows[:, None, :], width, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        kind = rng.random()
        color = _hsv(rng, (0.0, 0.7), (0.2, 0.95))
        x0 = rng.uniform(-0.1, 1.0) * width
        if kind < 0.45:  # buildings / furniture standing on the horizon
            w, h = rng.uniform(0.05, 0.35) * width, rng.uniform(0.1, 0.6) * height
            base = horizon + rng.uniform(-0.05, 0.25) * height
            draw.rectangle([x0, base - h, x0 + w, base], fill=color)
            if rng.random() < 0.5:  # windows / shelves
                wc = _shade(color, rng.uniform(0.5, 1.4))
                for k in range(int(rng.integers(1, 5))):
                    yy = base - h + (k + 0.5) * h / 5
                    draw.rectangle([x0 + 0.15 * w, yy, x0 + 0.85 * w, yy + 0.08 * h], fill=wc)
        elif kind < 0.75:  # bushes, trees, blobs
            rx, ry = rng.uniform(0.03, 0.18) * width, rng.uniform(0.03, 0.15) * height
            cy = rng.uniform(0.1, 1.0) * height
            draw.ellipse([x0 - rx, cy - ry, x0 + rx, cy + ry], fill=color)
        elif kind < 0.9:  # poles and bars: thin limb-like distractors
            x1, y1 = x0 + rng.uniform(-0.2, 0.2) * width, rng.uniform(0, 1) * height
            draw.line([(x0, rng.uniform(0, 1) * height), (x1, y1)], fill=color, width=int(rng.integers(2, 9)))
        else:  # floor tiles / rug
            y0 = rng.uniform(horizon, height)
            draw.rectangle([x0, y0, x0 + rng.uniform(0.1, 0.5) * width, y0 + rng.uniform(0.03, 0.15) * height],
                           fill=color)
    return image, horizon


def _draw_seat(painter: _Painter, rng: np.random.Generator, fig: dict, scale: float, origin: np.ndarray) -> None:
    """A stool under a sitting figure (background, not part of the person)."""
    kp = fig["kp"] * scale + origin
    hip_y = (kp[11, 1] + kp[12, 1]) / 2 + _WIDTH["thigh"] * scale * 0.5
    knee_x = (kp[13, 0] + kp[14, 0]) / 2
    hip_x = (kp[11, 0] + kp[12, 0]) / 2
    x0, x1 = sorted([hip_x - fig["face"] * 0.08 * scale, knee_x - fig["face"] * 0.03 * scale])
    floor = max(kp[15, 1], kp[16, 1]) + 0.02 * scale
    color = _hsv(rng, (0.2, 0.6), (0.25, 0.6))
    t = max(2.0, 0.03 * scale)
    painter.rect([x0, hip_y, x1, hip_y + t], color, 0)
    for x in (x0 + t, x1 - t):
        painter.limb((x, hip_y), (x, floor), t * 0.8, _shade(color, 0.8), 0)


def _draw_figure(painter: _Painter, fig: dict, scale: float, origin: np.ndarray, colors: dict,
                 label: int) -> tuple[float, float, float, float]:
    """Draw a figure at `origin` (hip centre, pixels), `scale` pixels tall; returns its extent."""
    xs, ys = [], []
    shades = {_LEFT: 0.82, _RIGHT: 1.0, None: 1.0}  # left limbs a little darker: left/right cue
    for kind, key, side, geom in fig["parts"]:
        color = _shade(colors[key], shades[side])
        part_label = label + _FAR if side is not None and side == fig["far"] else label
        if kind == "limb":
            p, q, w = geom[0] * scale + origin, geom[1] * scale + origin, geom[2] * scale
            painter.limb(p, q, w, color, part_label)
            for pt in (p, q):
                xs += [pt[0] - w / 2, pt[0] + w / 2]
                ys += [pt[1] - w / 2, pt[1] + w / 2]
        elif kind in ("disc", "dot"):
            c, r = geom[0] * scale + origin, max(geom[1] * scale, 1.0 if kind == "dot" else 0.0)
            painter.disc(c, r, color, part_label if kind == "disc" else None)
            xs += [c[0] - r, c[0] + r]
            ys += [c[1] - r, c[1] + r]
        else:
            pts = [p * scale + origin for p in geom]
            painter.poly(pts, color, part_label)
            xs += [p[0] for p in pts]
            ys += [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def _sample_image(rng: np.random.Generator) -> tuple[Image.Image, list[dict]]:
    """One synthetic image and its person annotations (without ids)."""
    long_side = int(rng.integers(320, 481))
    short_side = int(round(long_side / rng.uniform(1.0, 1.8)))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    image, horizon = _background(rng, width, height)
    painter = _Painter(image)

    # Smaller people are further away: draw them first so nearer ones may cover them.
    scales = sorted(height * math.exp(rng.uniform(math.log(0.3), math.log(1.25)))
                    for _ in range(int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))))
    people = []
    for label, scale in enumerate(scales, start=1):
        fig = _figure(rng)
        # Camera at about chest height: everyone's chest near the horizon, near people lower down.
        hip_y = horizon + scale * rng.uniform(-0.05, 0.3)
        lo, hi = max(0.12 * height, 0.5 * scale - 0.12 * height), min(0.9 * height, 1.1 * height - 0.45 * scale)
        hip_y = min(max(hip_y, lo), hi) if lo < hi else (lo + hi) / 2
        hip_y = min(max(hip_y, 0.05 * height), 0.95 * height)  # hips stay in the picture
        for _ in range(10):  # keep people apart a little
            hip_x = rng.uniform(0.05, 0.95) * width
            if all(abs(hip_x - p["origin"][0]) > 0.2 * (scale + p["scale"]) / 2 for p in people):
                break
        origin = np.array([hip_x, hip_y])
        if fig["seat"]:
            _draw_seat(painter, rng, fig, scale, origin)
        extent = _draw_figure(painter, fig, scale, origin, _palette(rng), label)
        people.append({"fig": fig, "scale": scale, "origin": origin, "label": label, "extent": extent})

    if people and rng.random() < 0.35:  # something in front of one person: a table, a wall, a pole
        x0, y0, x1, y1 = people[int(rng.integers(len(people)))]["extent"]
        bw, bh = x1 - x0, y1 - y0
        color = _hsv(rng, (0.1, 0.7), (0.2, 0.8))
        if rng.random() < 0.6:
            top = y0 + rng.uniform(0.5, 0.8) * bh
            painter.rect([x0 - rng.uniform(0, 0.25) * bw, top, x1 + rng.uniform(0, 0.25) * bw, height], color, 255)
        else:
            left = x0 + rng.uniform(0.15, 0.6) * bw
            painter.rect([left, 0, left + rng.uniform(0.12, 0.3) * bw, height], color, 255)

    labels = np.asarray(painter.labels)
    anns = []
    for p in people:
        ann = _annotate(p, labels, width, height)
        if ann is not None:
            anns.append(ann)

    # Soften the hard drawn edges, then add sensor-like noise.
    pixels = np.asarray(image.filter(ImageFilter.BoxBlur(0.7)), dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(2, 7)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), anns


def _annotate(person: dict, labels: np.ndarray, width: int, height: int) -> dict | None:
    """COCO annotation of a drawn person: integer keypoints, v=1 where something covers them,
    (0, 0, 0) outside the image; tight box clipped to the image; area = visible mask pixels."""
    fig, scale, origin, label = person["fig"], person["scale"], person["origin"], person["label"]
    pts = np.rint(fig["kp"] * scale + origin).astype(np.int64)
    keypoints = []
    for (x, y), v, side in zip(pts, fig["vis"], _KEYPOINT_SIDE):
        if v == 0 or not (0 <= x < width and 0 <= y < height):
            keypoints += [0, 0, 0]
        else:
            own = label + _FAR if side is not None and side == fig["far"] else label
            keypoints += [int(x), int(y), 2 if labels[y, x] == own else 1]
    num = sum(1 for v in keypoints[2::3] if v > 0)
    area = int(np.isin(labels, (label, label + _FAR)).sum())
    if num == 0 or area == 0:
        return None
    x0, y0, x1, y1 = person["extent"]
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    return {"category_id": PERSON_ID, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(area), "iscrowd": 0, "keypoints": keypoints, "num_keypoints": num,
            "segmentation": []}


def make_sample_dataset(root: str | os.PathLike, images: int = 200, seed: int = 0,
                        val_images: int | None = None) -> Path:
    """Write a synthetic person-keypoint dataset in the COCO 2017 layout under `root`; returns root.

    `images` training images and `val_images` (default max(8, images // 5)) validation images,
    1-3 people each, 320-480 px on the long side, portrait and landscape. Image ids are 1..images
    for train and continue for val. Same arguments -> byte-identical files.
    """
    if images < 1 or (val_images is not None and val_images < 1):
        raise DatasetError(f"sample dataset needs at least 1 image per split, got {images} / {val_images}")
    if seed < 0:
        raise DatasetError(f"sample dataset seed must be >= 0, got {seed}")
    root = Path(root)
    n_val = max(8, images // 5) if val_images is None else val_images
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    next_image_id, next_ann_id = 1, 1
    for split_index, (split, count) in enumerate((("train", images), ("val", n_val))):
        image_dir, ann_file = coco_paths(root, split)
        image_dir.mkdir(parents=True, exist_ok=True)
        image_entries, annotations = [], []
        for i in range(count):
            # One generator per image: image i is the same whatever the total count.
            rng = np.random.default_rng([seed, split_index, i])
            image, anns = _sample_image(rng)
            image_id = next_image_id
            next_image_id += 1
            file_name = f"{image_id:012d}.jpg"
            image.save(image_dir / file_name, format="JPEG", quality=90)
            image_entries.append({"id": image_id, "file_name": file_name, "width": image.width,
                                  "height": image.height, "license": 1})
            for ann in anns:
                annotations.append({"id": next_ann_id, "image_id": image_id, **ann})
                next_ann_id += 1
        data = {
            "info": {"description": f"Synthetic stick-figure people (dataset.py, seed {seed})", "version": "1.0",
                     "year": 2017, "contributor": "dataset.py make_sample_dataset", "date_created": ""},
            "licenses": [{"id": 1, "name": "Public Domain (generated)", "url": ""}],
            "images": image_entries,
            "annotations": annotations,
            "categories": [COCO_PERSON_CATEGORY],
        }
        ann_file.write_text(json.dumps(data), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------
# Download: the official COCO 2017 zips -> the layout above
# --------------------------------------------------------------------------------------
COCO_URL_BASE = "http://images.cocodataset.org"
URL_BASE_ENV = "COCO_URL_BASE"  # or --url-base: a mirror with the same paths (zips/..., annotations/...)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CocoArchive:
    """One COCO 2017 zip: where it is under the URL base, what it unpacks to, how to check it."""

    split: str          # its name for --splits
    path: str           # under the URL base
    folder: str         # the top-level folder inside the zip, which lands in root
    size: int | None    # bytes; None trusts the server's Content-Length
    md5: str | None     # the published checksum; None checks the size only
    unpacked: int       # about how many bytes it takes once unpacked (for the disk-space check)

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


# Smallest first: the annotations are useful on their own and fail fast if something is wrong.
COCO_ARCHIVES: tuple[CocoArchive, ...] = (
    CocoArchive("annotations", "annotations/annotations_trainval2017.zip", "annotations",
                252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c", 900_000_000),
    CocoArchive("val", "zips/val2017.zip", "val2017", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80", 815_585_330),
    CocoArchive("train", "zips/train2017.zip", "train2017",
                19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2", 19_336_861_798),
)
DOWNLOAD_SPLITS = tuple(a.split for a in COCO_ARCHIVES)


def download_coco(root: str | os.PathLike = "coco", splits: Iterable[str] = DOWNLOAD_SPLITS, *,
                  url_base: str | None = None, keep_zips: bool = False, retries: int = 3,
                  retry_delay: float = 2.0, timeout: float = 60.0, progress: bool = True,
                  archives: Sequence[CocoArchive] | None = None) -> Path:
    """Download the COCO 2017 zips of `splits` and unpack them into `root` (layout above); returns root.

    Each zip goes to `root/NAME.zip.part`, resumes with an HTTP Range request after a cut (up to
    `retries` failed attempts in a row, so a long download survives many cuts that each make
    progress), is checked against its size and published md5, then renamed to `NAME.zip`. It is
    unpacked into a hidden folder in root and moved into place, and `root/.NAME.zip.done` marks
    the step finished: running again skips finished zips without touching the network, and an
    interrupted run continues where it stopped. A zip already in root (kept, or fetched by hand)
    is used after a size check; zips are deleted once unpacked unless `keep_zips`.
    `url_base` (default: $COCO_URL_BASE, else the official server) selects a mirror; `archives`
    (default COCO_ARCHIVES) is the table of zips.
    """
    archives = COCO_ARCHIVES if archives is None else archives
    wanted = list(dict.fromkeys(splits))
    known = [a.split for a in archives]
    if not wanted or any(s not in known for s in wanted):
        raise DatasetError(f"splits to download must be among {known}, got {wanted}")
    base = (url_base or os.environ.get(URL_BASE_ENV) or COCO_URL_BASE).rstrip("/")
    root = Path(root)
    todo = [a for a in archives if a.split in wanted]
    try:
        root.mkdir(parents=True, exist_ok=True)
        pending = []
        for archive in todo:
            if _download_done(root, archive):
                print(f"{archive.file_name}: already done ({root / archive.folder})")
            else:
                pending.append(archive)
        _check_disk_space(root, pending, keep_zips)
        for archive in pending:
            zip_path = root / archive.file_name
            if zip_path.is_file():
                if archive.size is not None and zip_path.stat().st_size != archive.size:
                    raise DatasetError(f"{zip_path} is {zip_path.stat().st_size} bytes, expected {archive.size}: "
                                       "not the published file; move it away and run again")
                print(f"{archive.file_name}: using the zip already in {root}")
            else:
                _download(f"{base}/{archive.path}", zip_path, archive.size, archive.md5, retries=retries,
                          retry_delay=retry_delay, timeout=timeout, progress=progress)
            _unpack(zip_path, root, archive.folder, progress)
            _write_marker(root, archive, base)
            if not keep_zips:
                zip_path.unlink()  # after the marker: a cut here must not cost a new download
        summary = ", ".join(f"{a.folder}/ ({_count_files(root / a.folder)} files)" for a in todo)
    except OSError as e:  # the disk, not the network: network errors are handled in _download
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        raise DatasetError(f"cannot write the COCO download in {root}:{name} {e.strerror or e}") from None
    print(f"COCO 2017 in {root}: {summary}")
    return root


def _marker(root: Path, archive: CocoArchive) -> Path:
    return root / f".{archive.file_name}.done"


def _download_done(root: Path, archive: CocoArchive) -> bool:
    # The folder check catches a user who deleted it: the marker alone would skip forever.
    return _marker(root, archive).is_file() and (root / archive.folder).is_dir()


def _write_marker(root: Path, archive: CocoArchive, base: str) -> None:
    marker = _marker(root, archive)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"url": f"{base}/{archive.path}", "size": archive.size, "md5": archive.md5,
                               "folder": archive.folder, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n",
                   encoding="utf-8")
    os.replace(tmp, marker)


def _count_files(folder: Path) -> int:
    return sum(1 for entry in os.scandir(folder) if entry.is_file())


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n} bytes"


def _check_disk_space(root: Path, pending: Sequence[CocoArchive], keep_zips: bool) -> None:
    """Fail before downloading anything if the zips and their contents cannot fit."""
    used = peak = 0  # bytes on top of what is on disk now, archives processed one after the other
    for archive in pending:
        size = archive.size or 0
        zip_path, part = root / archive.file_name, root / (archive.file_name + ".part")
        have = zip_path.stat().st_size if zip_path.is_file() else part.stat().st_size if part.is_file() else 0
        used += max(size - have, 0)
        peak = max(peak, used + archive.unpacked)  # zip and contents both exist while unpacking
        used += archive.unpacked - (0 if keep_zips else size)
    free = shutil.disk_usage(root).free
    if peak > free:
        names = ", ".join(a.file_name for a in pending)
        raise DatasetError(f"not enough disk space in {root}: {names} need about {_gb(peak)}, "
                           f"{_gb(free)} free (download fewer --splits, or choose another --root)")


class _ConnectionCut(Exception):
    """The connection broke while the body was being received."""

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(reason)
        self.received = received


class _Md5:
    """md5 of a .part file's first `length` bytes, kept up to date as bytes are appended."""

    def __init__(self) -> None:
        self.hasher, self.length = hashlib.md5(), 0

    def update(self, data: bytes) -> None:
        self.hasher.update(data)
        self.length += len(data)

    def sync(self, part: Path, length: int, progress: bool) -> None:
        """Hash the file again when it is not the data seen so far (a resumed .part, a restart)."""
        if self.length == length:
            return
        self.hasher, self.length = hashlib.md5(), 0
        if length == 0:
            return
        with open(part, "rb") as f, tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=f"md5 of {part.name}", disable=not progress, leave=False) as bar:
            while self.length < length:
                data = f.read(min(_CHUNK * 8, length - self.length))
                if not data:
                    break
                self.update(data)
                bar.update(len(data))


def _download(url: str, dest: Path, size: int | None, md5: str | None, *, retries: int, retry_delay: float,
              timeout: float, progress: bool) -> None:
    """Fetch `url` into `dest` via `dest.part`, resuming after cuts; rename only once size and md5 match."""
    part = dest.with_name(dest.name + ".part")
    host = urllib.parse.urlsplit(url).netloc
    opener = urllib.request.build_opener()  # honours http_proxy / no_proxy like any urllib client
    digest = _Md5() if md5 else None
    total, answered, failures = size, False, 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
              disable=not progress, delay=0.5) as bar:  # delay: no empty bar before an offline error
        while True:
            have = part.stat().st_size if part.is_file() else 0
            if total is not None and have > total:  # longer than the file: not a part of it
                part.unlink()
                have = 0
            if total is not None and have == total:
                break
            if have and not answered:
                tqdm.write(f"{dest.name}: resuming at {_gb(have)} of {_gb(total) if total else '?'}")
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            received, reason = 0, ""
            try:
                with opener.open(request, timeout=timeout) as response:
                    answered = True
                    start, total = _response_range(response, have, total, url)
                    bar.total = total
                    bar.n = start
                    bar.refresh()
                    if digest is not None:
                        digest.sync(part, start, progress)
                    received = _receive(response, part, start, bar, digest)
                    done = part.stat().st_size
                    if total is None:
                        total = done  # no length from the server: the end of the body is the end
                    elif done < total:
                        reason = f"connection closed at {done} of {total} bytes"
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # nothing after `have`
                    if _range_total(e.headers.get("Content-Range")) == have:
                        total = have  # the .part is already the whole file
                    else:
                        tqdm.write(f"{dest.name}: the server has no byte {have}; starting over")
                        part.unlink()
                    continue
                raise DatasetError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                reason = _reason(e.reason)
                if not answered:
                    raise DatasetError(f"cannot reach {host} ({reason}): check your connection, "
                                       "or use --sample DIR for the offline sample dataset") from None
            except _ConnectionCut as e:
                reason, received = str(e), e.received
            except (http.client.HTTPException, ConnectionError, TimeoutError) as e:  # while reading headers
                reason = _reason(e)
                if not answered:
                    raise DatasetError(f"cannot download {url}: {reason}") from None
            if not reason:
                continue
            failures = 1 if received else failures + 1  # only attempts that bring nothing count against retries
            if failures > retries:
                have = part.stat().st_size if part.is_file() else 0
                raise DatasetError(f"download of {url} failed {failures} times in a row ({reason}); "
                                   f"{_gb(have)} kept in {part}: run the same command again to resume")
            tqdm.write(f"{dest.name}: {reason}; resuming")
            time.sleep(min(60.0, retry_delay * 2 ** (failures - 1)))
    if digest is not None:
        if digest.length != total:
            print(f"{dest.name}: verifying md5 ({_gb(total)})")
            digest.sync(part, total, progress)
        if digest.hasher.hexdigest() != md5:
            part.unlink()
            raise DatasetError(f"{dest.name}: md5 {digest.hasher.hexdigest()} is not the published {md5}; "
                               "the download was deleted, run again to fetch it afresh")
    os.replace(part, dest)


def _response_range(response: Any, have: int, expected: int | None, url: str) -> tuple[int, int | None]:
    """Where the body of `response` starts in the file, and the file's size (None if not told)."""
    if response.status == 206:
        start = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
        if not start.isdigit() or int(start) != have:
            raise DatasetError(f"cannot resume {url}: asked for bytes {have}-, the server sent "
                               f"{response.headers.get('Content-Range')!r}")
        served = _range_total(response.headers.get("Content-Range"))
    elif response.status == 200:  # a server without Range support sends everything: start over
        if have:
            tqdm.write(f"{url}: the server does not resume downloads; starting over")
        have = 0
        length = response.headers.get("Content-Length", "")
        served = int(length) if length.isdigit() else None
    else:
        raise DatasetError(f"cannot download {url}: unexpected HTTP {response.status}")
    if expected is not None and served is not None and served != expected:
        raise DatasetError(f"{url} is {served} bytes, expected {expected}: not the published file")
    return have, expected if expected is not None else served


def _range_total(content_range: str | None) -> int | None:
    total = (content_range or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _receive(response: Any, part: Path, start: int, bar: tqdm, digest: _Md5 | None) -> int:
    """Write the body at offset `start` of `part` (truncating the rest); returns the bytes received."""
    received = 0
    with open(part, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        while True:
            try:
                data = response.read(_CHUNK)
            except (http.client.HTTPException, OSError) as e:  # reset, timeout, truncated chunk
                raise _ConnectionCut(_reason(e), received) from None
            if not data:
                return received
            f.write(data)
            received += len(data)
            bar.update(len(data))
            if digest is not None:
                digest.update(data)


def _reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return " ".join(str(error).split()) or type(error).__name__


def _unpack(zip_path: Path, root: Path, folder: str, progress: bool) -> None:
    """Unpack into a hidden folder in root, then move into place, so that a cut never leaves a
    folder that looks complete; a top-level folder that already exists is merged file by file."""
    staging = root / f".{zip_path.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)  # left by an unpacking that was cut
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = archive.infolist()
                need, free = sum(m.file_size for m in members), shutil.disk_usage(root).free
                if need > free:
                    raise DatasetError(f"not enough disk space in {root} to unpack {zip_path.name}: "
                                       f"needs {_gb(need)}, {_gb(free)} free")
                for member in tqdm(members, desc=f"unpacking {zip_path.name}", unit="file", disable=not progress):
                    archive.extract(member, staging)  # extract() drops absolute and ".." parts of names
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DatasetError(f"{zip_path} is not a valid zip ({_reason(e)}): delete it and run again") from None
        if not (staging / folder).is_dir():
            raise DatasetError(f"{zip_path} has no {folder}/ folder at its top: not the expected COCO zip")
        for item in sorted(staging.iterdir()):
            _move_into(item, root / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _move_into(child, dst / child.name)
    else:
        os.replace(src, dst)  # a whole new folder appears in one rename


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Dataset tools for the Keypoint R-CNN scripts.",
        epilog="examples: python dataset.py --sample sample --images 200; "
               "python dataset.py --download coco --root coco --splits annotations val")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--sample", metavar="DIR", type=Path,
                        help="write a synthetic person-keypoint dataset in the COCO layout to DIR")
    parser.add_argument("--images", type=int, default=200, metavar="N", help="training images for --sample (default 200)")
    parser.add_argument("--val-images", type=int, default=None, metavar="N",
                        help="validation images for --sample (default max(8, images // 5))")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed for --sample (default 0)")
    action.add_argument("--download", choices=("coco",),
                        help="download COCO 2017 from the official server and unpack it into --root "
                             "(resumes after a cut; running it again skips what is done)")
    download = parser.add_argument_group("--download options")
    download.add_argument("--root", type=Path, default=Path("coco"), metavar="DIR",
                          help="where COCO goes: DIR/annotations, DIR/train2017, DIR/val2017 (default coco)")
    download.add_argument("--splits", nargs="+", choices=DOWNLOAD_SPLITS, default=list(DOWNLOAD_SPLITS),
                          help="zips to fetch (default all: annotations 0.25 GB, val 0.8 GB, train 19.3 GB)")
    download.add_argument("--keep-zips", action="store_true",
                          help="keep the zips in DIR after unpacking (default: delete them to save the space)")
    download.add_argument("--url-base", metavar="URL", default=None,
                          help=f"a mirror with the same paths (default ${URL_BASE_ENV}, else {COCO_URL_BASE})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.download is not None:
        with cli_errors():
            download_coco(args.root, args.splits, url_base=args.url_base, keep_zips=args.keep_zips)
        return
    if args.sample is not None:
        if args.images < 1:
            raise SystemExit(f"error: --images must be at least 1, got {args.images}")
        if args.val_images is not None and args.val_images < 1:
            raise SystemExit(f"error: --val-images must be at least 1, got {args.val_images}")
        if args.seed < 0:
            raise SystemExit(f"error: --seed must be >= 0, got {args.seed}")
        start = time.perf_counter()
        try:
            root = make_sample_dataset(args.sample, images=args.images, seed=args.seed, val_images=args.val_images)
        except OSError as e:
            raise SystemExit(f"error: cannot write the sample dataset to {args.sample}: {e.strerror or e}") from None
        counts = []
        for split in SPLITS:
            with open(coco_paths(root, split)[1], encoding="utf-8") as f:
                data = json.load(f)
            counts.append(f"{len(data['images'])} {split} images ({len(data['annotations'])} people)")
        print(f"wrote {' + '.join(counts)} to {root} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
