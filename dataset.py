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
import contextlib
import io
import json
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

from images import read_image
from download import COCO_URL_BASE, DOWNLOAD_SPLITS, URL_BASE_ENV, download_coco
from keypoints import COCO17, SAMPLE_SETS, KeypointSet, keypoint_category, keypoint_set_of
from sample_data import SampleStyle, is_sample_dataset, make_sample_dataset
from utils import (DEFAULT_MAX_IMAGE_PIXELS, SPLITS, DatasetError, UserError, check_image_pixels, cli_errors,
                   coco_paths, is_number, nonnegative_int, pillow_pixel_limit, positive_float, positive_int,
                   probability, read_json, url)


Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


# --------------------------------------------------------------------------------------
# COCO keypoints dataset
# --------------------------------------------------------------------------------------


def load_coco(ann_file: str | os.PathLike) -> COCO:
    """Load and sanity-check a COCO keypoint annotation file into a pycocotools `COCO` (quietly)."""
    data = read_json(ann_file, "annotation file")
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
        if not all(map(is_number, bbox)):
            raise DatasetError(f"annotation file {ann_file}: annotation {ann.get('id')} has a bbox that is not "
                               f"4 numbers: {bbox!r:.60}")
        kps = ann.get("keypoints")
        if kps is not None and not (isinstance(kps, list) and all(map(is_number, kps))):
            raise DatasetError(f"annotation file {ann_file}: annotation {ann.get('id')} has keypoints that are not "
                               f"a list of numbers: {kps!r:.60}")
    try:
        keypoint_set, _ = keypoint_set_of(data, f"annotation file {ann_file}")
    except UserError as e:
        raise DatasetError(str(e)) from None
    expected = 3 * keypoint_set.num
    for ann in data["annotations"]:
        kps = ann.get("keypoints")
        if kps is not None and len(kps) != expected:
            hint = "" if keypoint_category(data, str(ann_file)) else \
                "; no category names its keypoints (COCO's format: the category's 'keypoints' list)"
            raise DatasetError(f"annotation file {ann_file}: annotation {ann.get('id')} has {len(kps)} "
                               f"keypoint values, expected {expected} ({keypoint_set.describe()}){hint}")


def has_person_keypoints(coco: COCO) -> bool:
    """Whether any annotation labels a keypoint (an instances file has boxes and masks only)."""
    return any(num_labelled(a) for a in coco.dataset["annotations"])


def num_labelled(ann: dict) -> int:
    """Number of keypoints with visibility > 0 (labelled, visible or not)."""
    return sum(1 for v in (ann.get("keypoints") or [])[2::3] if v > 0)


# Training leaves out images whose kept persons have fewer labelled joints than this in total:
# torchvision's rule (references/detection, `_has_valid_annotation`), the one its keypoint AP 65.0
# was measured with. We train with its keypoint loss, a mean over the labelled joints of the whole
# batch, so a batch of images with a joint or two would steer the keypoint head as hard as a batch
# of fully labelled people. detectron2's >= 1 keeps those images; nothing we can measure says it
# does better. An image left out teaches nothing wrong: none of its persons becomes background.
# (The original project used >= 11, but kept crowds as person targets.)
MIN_KEYPOINTS_PER_IMAGE = 10


def keep_for_training(ann: dict, width: int, height: int) -> bool:
    """Train-time filter of one person: not a crowd, box >= 1 px after clipping.

    A person without labelled joints stays a box target (torchvision and detectron2 do the
    same): dropped, the region would be taught as background. Its keypoints are all (0, 0, 0),
    visibility 0, which torchvision's keypoint loss leaves out.
    """
    if ann.get("iscrowd", 0):
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
                          height: int | None = None, num_keypoints: int = COCO17.num) -> Target:
    """COCO annotations of one image -> a torchvision detection target.

    Boxes go from COCO's xywh to x1y1x2y2; they are clipped to the image only when width and
    height are given (training). Annotations without keypoints get (K, 3) zeros.
    """
    boxes = [_xywh_to_xyxy(a["bbox"]) for a in anns]
    if width is not None and height is not None:
        boxes = [_clip_box(b, width, height) for b in boxes]
    keypoints = [a.get("keypoints") or [0] * (3 * num_keypoints) for a in anns]
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(anns), dtype=torch.int64),
        "keypoints": torch.tensor(keypoints, dtype=torch.float32).reshape(-1, num_keypoints, 3),
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
    int64 (all 1), `keypoints` (N, K, 3) float32 (x, y, visibility), `image_id` a plain Python
    int (torchvision ignores it; COCOeval wants the int), `area` (N,) float32, `iscrowd` (N,) int64.
    K and the names come from the file's keypoint category (`keypoint_set`; COCO's 17 when no
    category names keypoints), and only that category's annotations are used (`category_id`).

    train=True drops crowds and boxes under 1 px, keeps every other person (also those without
    labelled keypoints: box targets), clips boxes to the image, and skips images left without a
    person or with fewer than `min_keypoints_per_image` (at most K) labelled keypoints in total.
    train=False keeps every image of the file (COCOeval must see them all) and every person
    annotation unchanged, crowds flagged by `iscrowd`.

    `transforms(image, target)` runs on the float image; invisible keypoints are zeroed after it.
    """

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, train: bool = False,
                 transforms: Transform | None = None, min_keypoints_per_image: int = MIN_KEYPOINTS_PER_IMAGE,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.train = train
        self.transforms = transforms
        self.min_keypoints_per_image = min_keypoints_per_image
        self.max_image_pixels = max_image_pixels
        self.coco = load_coco(ann_file)
        self.keypoint_set, self.category_id = keypoint_set_of(self.coco.dataset, f"annotation file {ann_file}")
        _check_image_dir(self.image_dir, self.ann_file, [img["file_name"] for img in self.coco.dataset["images"]])

        self._anns: dict[int, list[dict]] = {}
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            anns = [a for a in self.coco.imgToAnns.get(image_id, []) if a.get("category_id") == self.category_id]
            if train:
                anns = [a for a in anns if keep_for_training(a, info["width"], info["height"])]
                # torchvision also needs >= 1 box per image; a set of fewer joints than the
                # threshold asks at most one fully labelled person's worth
                if not anns or sum(map(num_labelled, anns)) < min(min_keypoints_per_image, self.keypoint_set.num):
                    continue
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
            return annotations_to_target(self._anns[image_id], image_id, info["width"], info["height"],
                                         self.keypoint_set.num)
        return annotations_to_target(self._anns[image_id], image_id, num_keypoints=self.keypoint_set.num)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Target]:
        info = self.coco.imgs[self.ids[idx]]
        path = self.image_dir / info["file_name"]
        image = read_image(path, self.max_image_pixels)
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
    """Mirror x1y1x2y2 boxes in an image `width` pixels wide (box edges: x -> width - x)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def flip_keypoints(keypoints: torch.Tensor, width: int, flip_index: Sequence[int] = COCO17.flip_index) -> torch.Tensor:
    """Mirror (N, K, 3) keypoints in an image `width` pixels wide and swap left/right joints by
    `flip_index` (a joint whose index is -1 has no partner and is unlabelled after the flip).

    COCO keypoints are pixel indices (0 .. width - 1; torchvision's heatmap encoding takes them
    as they are), and the flip moves pixel column k to column width - 1 - k, so that is where
    a keypoint goes. (Boxes are edges, spanning [0, width]: their mirror is width - x.) Twice is
    the identity.
    """
    flipped = keypoints[:, [max(i, 0) for i in flip_index]].clone()
    flipped[..., 0] = width - 1 - flipped[..., 0]
    flipped[:, [j for j, i in enumerate(flip_index) if i < 0]] = 0
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
    """Flip image, boxes and keypoints (left/right joints swapped by `flip_index`) with probability `p`."""

    def __init__(self, p: float = 0.5, flip_index: Sequence[int] = COCO17.flip_index) -> None:
        self.p = p
        self.flip_index = tuple(flip_index)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        # torch's RNG, not numpy's: DataLoader seeds it differently in every worker.
        if torch.rand(()) >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        target["boxes"] = flip_boxes(target["boxes"], width)
        target["keypoints"] = flip_keypoints(target["keypoints"], width, self.flip_index)
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


def get_transforms(train: bool, flip_prob: float = 0.5, jitter: bool = False,
                   keypoint_set: KeypointSet = COCO17) -> Compose:
    """Training: random flip (and optional colour jitter). Evaluation: nothing."""
    if not train:
        return Compose([])
    transforms: list[Transform] = []
    if flip_prob > 0:
        transforms.append(RandomHorizontalFlip(flip_prob, keypoint_set.flip_index))
    if jitter:
        transforms.append(ColorJitter())
    return Compose(transforms)


def collate_fn(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[tuple, ...]:
    """Keep images of different sizes apart: `(images, targets)` as two tuples."""
    return tuple(zip(*batch))


def first_images(dataset: torch.utils.data.Dataset, limit: int | None) -> torch.utils.data.Dataset:
    """The first `limit` items (--limit, --val-limit), the whole dataset for None."""
    return torch.utils.data.Subset(dataset, range(min(limit, len(dataset)))) if limit is not None else dataset


def base_dataset(dataset: torch.utils.data.Dataset) -> CocoKeypoints:
    """The CocoKeypoints under a `first_images` Subset (or the dataset itself)."""
    return dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset


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


def epoch_batches(sampler: torch.utils.data.DistributedSampler, group_ids: list[int] | None, batch_size: int,
                  epoch: int) -> list[list[int]]:
    """This process's batches of dataset indices for `epoch`: a fixed function of (seed, epoch),
    so a resumed run sees the same order and can skip the batches it already trained on."""
    sampler.set_epoch(epoch)
    if group_ids is None:
        batches = list(torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True))
    else:
        # Its batch count depends on len(sampler) only: every process runs the same number of steps.
        batches = list(GroupedBatchSampler(sampler, group_ids, batch_size))
    return batches


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
                        help="write a synthetic person-keypoint dataset in the COCO layout to DIR (a new or empty "
                             "folder, or an earlier sample set, which is replaced)")
    parser.add_argument("--force", action="store_true",
                        help="let --sample write into a folder that holds other files (they may be overwritten)")
    parser.add_argument("--images", type=positive_int, default=200, metavar="N", help="training images for --sample (default 200)")
    parser.add_argument("--val-images", type=positive_int, default=None, metavar="N",
                        help="validation images for --sample (default max(8, images // 5))")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S", help="random seed for --sample (default 0)")
    parser.add_argument("--keypoints", choices=sorted(SAMPLE_SETS), default="coco",
                        help="keypoint set --sample annotates: coco (COCO's 17) or coco13 (without eyes and ears, "
                             "an example of your own set) (default coco)")
    parser.add_argument("--max-people", type=positive_int, default=SampleStyle.max_people, metavar="K",
                        help=f"--sample: 1..K people per image, fewer more often (default {SampleStyle.max_people})")
    parser.add_argument("--scale", type=positive_float, nargs=2, default=SampleStyle.scale, metavar=("LOW", "HIGH"),
                        help="--sample: person height / image height, log-uniform (default %(default)s)")
    parser.add_argument("--occluders", type=probability, default=SampleStyle.occluders, metavar="P",
                        help=f"--sample: chance of a table, wall or pole in front of a person "
                             f"(default {SampleStyle.occluders})")
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
    download.add_argument("--url-base", metavar="URL", type=url, default=None,
                          help=f"a mirror with the same paths (default ${URL_BASE_ENV}, else {COCO_URL_BASE})")
    return parser.parse_args(argv)


def check_sample_target(root: Path, force: bool) -> None:
    """--sample writes only into a new or empty folder, or over an earlier sample set: never over
    a downloaded COCO or other files, unless --force."""
    if force or not root.exists() or is_sample_dataset(root):
        return
    if not root.is_dir():
        raise DatasetError(f"--sample {root} is a file, not a folder")
    if any(root.iterdir()):
        raise DatasetError(f"--sample {root}: the folder holds files that are not a sample set of this command "
                           "(a real dataset?); choose a new folder, or add --force to write into it anyway")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.download is not None:
        with cli_errors():
            download_coco(args.root, args.splits, url_base=args.url_base, keep_zips=args.keep_zips)
        return
    if args.sample is not None:
        start = time.perf_counter()
        with cli_errors():
            check_sample_target(args.sample, args.force)
        style = SampleStyle(args.max_people, tuple(args.scale), args.occluders)
        try:
            with cli_errors():
                root = make_sample_dataset(args.sample, images=args.images, seed=args.seed, val_images=args.val_images,
                                           keypoint_set=SAMPLE_SETS[args.keypoints], style=style)
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
