"""Tests for dataset.py: COCO loading against the raw JSON, transforms, image decoding, batching,
and the synthetic sample generator."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dataset
from dataset import (
    CocoKeypoints,
    GroupedBatchSampler,
    RandomHorizontalFlip,
    collate_fn,
    create_aspect_ratio_groups,
    flip_boxes,
    flip_keypoints,
    get_transforms,
    read_image,
)
from conftest import flag_error
from keypoints import COCO17
from sample_data import SampleStyle, make_sample_dataset
from utils import COCO_KEYPOINT_NAMES, COCO_PERSON_CATEGORY, DatasetError, coco_paths

KEYPOINT_FLIP_INDEX = COCO17.flip_index


def _json_by_image(ann_file: Path) -> tuple[dict, dict[int, list[dict]]]:
    data = json.loads(ann_file.read_text())
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return data, by_image


def _labelled(ann: dict) -> int:
    return sum(1 for v in ann["keypoints"][2::3] if v > 0)


# --------------------------------------------------------------------------------------
# Real COCO subset
# --------------------------------------------------------------------------------------
def test_coco_paths_layout(tmp_path):
    assert coco_paths(tmp_path, "train") == (tmp_path / "train2017",
                                             tmp_path / "annotations" / "person_keypoints_train2017.json")
    assert coco_paths(str(tmp_path), "val")[0] == tmp_path / "val2017"
    with pytest.raises(ValueError):
        coco_paths(tmp_path, "test")


def test_eval_targets_equal_annotation_file(coco_mini):
    image_dir, ann_file = coco_paths(coco_mini, "val")
    data, by_image = _json_by_image(ann_file)
    ds = CocoKeypoints(image_dir, ann_file, train=False)
    # Every image of the file, also those without people, so COCOeval sees them all.
    assert ds.ids == sorted(img["id"] for img in data["images"])
    assert any(not by_image[i] for i in ds.ids)
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    for idx, image_id in enumerate(ds.ids):
        image, target = ds[idx]
        assert set(target) == {"boxes", "labels", "keypoints", "image_id", "area", "iscrowd"}
        assert type(target["image_id"]) is int and target["image_id"] == image_id
        assert image.dtype == torch.float32 and image.shape == (3, *sizes[image_id])
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert ds.get_height_and_width(idx) == sizes[image_id]
        anns = [a for a in by_image[image_id] if a["category_id"] == 1]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                         dtype=np.float64).astype(np.float32).reshape(-1, 4)
        keypoints = np.array([a["keypoints"] for a in anns], dtype=np.float32).reshape(-1, 17, 3)
        assert target["boxes"].dtype == torch.float32 and target["keypoints"].dtype == torch.float32
        np.testing.assert_array_equal(target["boxes"].numpy(), boxes)
        np.testing.assert_array_equal(target["keypoints"].numpy(), keypoints)
        np.testing.assert_array_equal(target["area"].numpy(), np.array([a["area"] for a in anns], np.float32))
        assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns]
        assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [1] * len(anns)


def _kept_for_training(data: dict, by_image: dict, min_keypoints_per_image: int) -> dict[int, list[dict]]:
    """The training targets, straight from the JSON: every non-crowd person whose clipped box is
    at least 1 px, in the images whose kept persons have that many labelled keypoints."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    kept = {}
    for image_id, (h, w) in sizes.items():
        anns = []
        for a in by_image[image_id]:
            x, y, bw, bh = a["bbox"]
            if a["category_id"] == 1 and not a["iscrowd"] and min(x + bw, w) - max(x, 0) >= 1 \
                    and min(y + bh, h) - max(y, 0) >= 1:
                anns.append(a)
        if anns and sum(map(_labelled, anns)) >= min_keypoints_per_image:
            kept[image_id] = anns
    return kept


@pytest.mark.parametrize("min_keypoints_per_image", [0, 1, 10])
def test_train_targets_hold_every_non_crowd_person(coco_mini, min_keypoints_per_image):
    image_dir, ann_file = coco_paths(coco_mini, "train")
    data, by_image = _json_by_image(ann_file)
    kept = _kept_for_training(data, by_image, min_keypoints_per_image)
    # The subset really exercises the filters: crowds, persons without labelled keypoints in kept
    # images (box targets now; they were dropped before), images left out.
    assert sum(a["iscrowd"] for a in data["annotations"]) > 0
    assert sum(_labelled(a) == 0 for anns in kept.values() for a in anns) >= 40
    assert len(kept) < len(data["images"])

    ds = CocoKeypoints(image_dir, ann_file, train=True, min_keypoints_per_image=min_keypoints_per_image)
    assert ds.ids == sorted(kept)
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    for idx, image_id in enumerate(ds.ids):
        target = ds.get_target(idx)
        h, w = sizes[image_id]
        assert len(target["boxes"]) == len(kept[image_id]) > 0
        assert target["iscrowd"].sum() == 0
        assert (target["keypoints"][..., 2] > 0).sum() >= min_keypoints_per_image
        unlabelled = [i for i, a in enumerate(kept[image_id]) if _labelled(a) == 0]
        assert (target["keypoints"][unlabelled] == 0).all()  # no keypoint loss for them
        boxes = target["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
    image, target = ds[0]
    assert image.shape[0] == 3 and len(target["boxes"]) == len(kept[ds.ids[0]])


def test_train_default_is_torchvisions_image_rule(coco_mini):
    """Every non-crowd person of the images torchvision trains on (>= 10 labelled keypoints
    per image): on coco-mini train, 137 persons in 23 images, 56 of them without a labelled joint
    (the filter before kept 86 persons, dropping every one of those)."""
    image_dir, ann_file = coco_paths(coco_mini, "train")
    ds = CocoKeypoints(image_dir, ann_file, train=True)
    assert dataset.MIN_KEYPOINTS_PER_IMAGE == ds.min_keypoints_per_image == 10
    targets = [ds.get_target(i) for i in range(len(ds))]
    persons = sum(len(t["boxes"]) for t in targets)
    unlabelled = sum(int(((t["keypoints"][..., 2] > 0).sum(1) == 0).sum()) for t in targets)
    assert (len(ds), persons, unlabelled) == (23, 137, 56)


def _real_image_and_its_flip(coco_mini: Path) -> tuple[torch.Tensor, dict, torch.Tensor, dict]:
    """The coco-mini val image with the most labelled keypoints (so left and right both occur),
    and the same item through RandomHorizontalFlip(p=1)."""
    image_dir, ann_file = coco_paths(coco_mini, "val")
    plain = CocoKeypoints(image_dir, ann_file)
    flipped = CocoKeypoints(image_dir, ann_file, transforms=RandomHorizontalFlip(p=1.0))
    idx = max(range(len(plain)), key=lambda i: int((plain.get_target(i)["keypoints"][..., 2] > 0).sum()))
    image, target = plain[idx]
    image_f, target_f = flipped[idx]
    assert torch.equal(image_f, image.flip(-1))
    return image, target, image_f, target_f


def test_flip_puts_keypoints_on_the_flipped_pixel_of_a_real_image(coco_mini):
    """A flipped keypoint sits on the pixel its joint moved to: image_f[y, x_f] == image[y, x]."""
    image, target, image_f, target_f = _real_image_and_its_flip(coco_mini)
    kp, kp_f = target["keypoints"], target_f["keypoints"]
    labelled = kp[..., 2] > 0
    pairs = [(kp[n, src], kp_f[n, j]) for j, src in enumerate(KEYPOINT_FLIP_INDEX) for n in range(len(kp))
             if labelled[n, src]]
    assert len(pairs) >= 10
    for (x, y, _), (x_f, y_f, _) in pairs:
        assert y_f == y
        assert torch.equal(image_f[:, int(y_f), int(x_f)], image[:, int(y), int(x)])
    # The test can tell one column apart: under x -> width - x some joints read another colour.
    width = image.shape[-1]
    assert any(not torch.equal(image_f[:, int(y), width - int(x)], image[:, int(y), int(x)])
               for (x, y, _), _ in pairs if x > 0)


def test_flip_real_image_mirrors_and_swaps(coco_mini):
    image, target, image_f, target_f = _real_image_and_its_flip(coco_mini)
    width = image.shape[-1]

    kp, kp_f = target["keypoints"].numpy(), target_f["keypoints"].numpy()
    assert (kp[..., 2] > 0).sum() >= 10
    for j, src in enumerate(KEYPOINT_FLIP_INDEX):
        name, src_name = COCO_KEYPOINT_NAMES[j], COCO_KEYPOINT_NAMES[src]
        assert name.replace("left", "right") == src_name or name.replace("right", "left") == src_name
        labelled = kp[:, src, 2] > 0
        np.testing.assert_array_equal(kp_f[labelled, j, 0], np.float32(width - 1) - kp[labelled, src, 0])
        np.testing.assert_array_equal(kp_f[labelled, j, 1:], kp[labelled, src, 1:])
        np.testing.assert_array_equal(kp_f[~labelled, j], 0)  # invisible stay (0, 0, 0)
    boxes, boxes_f = target["boxes"].numpy(), target_f["boxes"].numpy()
    np.testing.assert_array_equal(boxes_f[:, [0, 2]], np.float32(width) - boxes[:, [2, 0]])
    np.testing.assert_array_equal(boxes_f[:, [1, 3]], boxes[:, [1, 3]])

    # Twice is the identity: exactly for keypoints (integers in COCO); boxes within float32 rounding.
    assert torch.equal(flip_keypoints(target_f["keypoints"], width), target["keypoints"])
    twice = flip_boxes(target_f["boxes"], width)
    assert torch.allclose(twice, target["boxes"], rtol=0, atol=1e-4)
    assert torch.equal(target_f["labels"], target["labels"]) and target_f["image_id"] == target["image_id"]


def test_flip_twice_is_identity_and_keeps_invisible_zero():
    g = torch.Generator().manual_seed(0)
    width = 333
    xy = torch.randint(0, width, (5, 17, 2), generator=g).float() + torch.randint(0, 4, (5, 17, 2), generator=g) / 4
    vis = torch.randint(0, 3, (5, 17, 1), generator=g).float()
    kp = dataset.zero_invisible_keypoints(torch.cat([xy, vis], dim=2))
    once = flip_keypoints(kp, width)
    assert torch.equal(flip_keypoints(once, width), kp)
    assert not torch.equal(once, kp)
    assert (once[once[..., 2] == 0] == 0).all() and (once[..., 2] == 0).sum() == (kp[..., 2] == 0).sum()
    assert KEYPOINT_FLIP_INDEX[:3] == (0, 2, 1)  # the nose stays, the eyes swap
    for j, src in enumerate(KEYPOINT_FLIP_INDEX):
        x, y, v = kp[:, src].unbind(-1)
        mirrored = torch.stack([width - 1 - x, y, v], dim=-1) * (v > 0)[:, None]
        assert torch.equal(once[:, j], mirrored)

    boxes = torch.tensor([[0.0, 1.0, 10.0, 20.0], [100.25, 3.5, 333.0, 40.0]])
    assert torch.equal(flip_boxes(boxes, width), torch.tensor([[323.0, 1.0, 333.0, 20.0], [0.0, 3.5, 232.75, 40.0]]))
    assert torch.equal(flip_boxes(flip_boxes(boxes, width), width), boxes)
    assert flip_boxes(torch.zeros(0, 4), width).shape == (0, 4)
    assert flip_keypoints(torch.zeros(0, 17, 3), width).shape == (0, 17, 3)


def test_flip_transform_probability_and_transforms():
    image = torch.rand(3, 4, 6)
    target = {"boxes": torch.tensor([[1.0, 1.0, 2.0, 3.0]]), "keypoints": torch.zeros(1, 17, 3)}
    same_image, same_target = RandomHorizontalFlip(p=0.0)(image, target)
    assert same_image is image and same_target is target
    flipped_image, flipped_target = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped_image, image.flip(-1)) and flipped_target["boxes"].tolist() == [[4.0, 1.0, 5.0, 3.0]]
    assert target["boxes"].tolist() == [[1.0, 1.0, 2.0, 3.0]]  # the input target is not modified

    assert get_transforms(train=False)(image, target) == (image, target)
    torch.manual_seed(0)
    flips = sum(torch.equal(get_transforms(train=True)(image, target)[0], image.flip(-1)) for _ in range(200))
    assert 60 < flips < 140
    jittered, jt = get_transforms(train=True, flip_prob=0.0, jitter=True)(image, target)
    assert jittered.shape == image.shape and 0 <= jittered.min() and jittered.max() <= 1 and jt is target
    assert not torch.equal(jittered, image)


def test_collate_fn_keeps_sizes_apart():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})]
    images, targets = collate_fn(batch)
    assert [i.shape for i in images] == [(3, 4, 5), (3, 6, 2)] and targets == ({"a": 1}, {"a": 2})


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------
RGB = (200, 30, 100)


def _rgb_image(size=(5, 4)) -> Image.Image:
    return Image.new("RGB", size, RGB)


@pytest.mark.parametrize("name, make, expected, tol", [
    ("rgb.jpg", lambda p: _rgb_image().save(p, quality=95), RGB, 3),
    ("gray.png", lambda p: Image.new("L", (5, 4), 77).save(p), (77, 77, 77), 0),
    ("gray_alpha.png", lambda p: Image.new("LA", (5, 4), (77, 255)).save(p), (77, 77, 77), 0),
    ("cmyk.jpg", lambda p: _rgb_image().convert("CMYK").save(p, quality=95), RGB, 3),
    ("rgba.png", lambda p: _rgb_image().convert("RGBA").save(p), RGB, 0),
    ("palette.png", lambda p: _rgb_image().convert("P", palette=Image.Palette.ADAPTIVE).save(p), RGB, 0),
    ("gray16.png", lambda p: Image.fromarray(np.full((4, 5), 51200, np.uint16)).save(p), (200, 200, 200), 0),
    ("gray16.tif", lambda p: Image.fromarray(np.full((4, 5), 7680, np.uint16)).save(p), (30, 30, 30), 0),
    ("rgb.bmp", lambda p: _rgb_image().save(p), RGB, 0),
])
def test_read_image_formats(tmp_path, name, make, expected, tol):
    path = tmp_path / name
    make(path)
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 4, 5)
    for y, x in ((0, 0), (3, 4)):
        assert max(abs(int(a) - b) for a, b in zip(image[:, y, x], expected)) <= tol, image[:, y, x]


def test_read_image_16bit_rgb_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    pixels = np.zeros((4, 5, 3), np.uint16)
    pixels[...] = (100 * 256 + 255, 30 * 256, 200 * 256)  # BGR; the high byte is the 8-bit value
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), pixels)
    assert read_image(path)[:, 2, 3].tolist() == [200, 30, 100]


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.png", "garbage.jpg", "empty.png", "text.jpg"])
def test_read_image_bad_files_raise_dataset_error(tmp_path, name):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / name
    if name.startswith("truncated"):
        noise.save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif name == "garbage.jpg":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    elif name == "empty.png":
        path.write_bytes(b"")
    else:
        path.write_text("not an image")
    with pytest.raises(DatasetError, match=name) as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_read_image_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


# --------------------------------------------------------------------------------------
# Bad datasets
# --------------------------------------------------------------------------------------
def test_missing_annotation_file(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="missing.json"):
        CocoKeypoints(tmp_path / "images", tmp_path / "missing.json")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"images": [{"id": 1}], "annotations": []}',
                                     '{"images": [], "annotations": [{"image_id": 1}]}'])
def test_invalid_annotation_file(tmp_path, content):
    (tmp_path / "images").mkdir()
    ann_file = tmp_path / "bad.json"
    ann_file.write_text(content)
    with pytest.raises(DatasetError, match="bad.json") as info:
        CocoKeypoints(tmp_path / "images", ann_file)
    assert "\n" not in str(info.value)


def test_image_folder_missing_or_mismatched(coco_mini, tmp_path):
    _, ann_file = coco_paths(coco_mini, "val")
    with pytest.raises(DatasetError, match="not-there"):
        CocoKeypoints(tmp_path / "not-there", ann_file)
    train_dir, _ = coco_paths(coco_mini, "train")
    with pytest.raises(DatasetError, match=r"train2017.*\d{12}\.jpg"):
        CocoKeypoints(train_dir, ann_file)  # val annotations, train images
    # Only some of the listed images present.
    partial = tmp_path / "partial"
    partial.mkdir()
    data = json.loads(ann_file.read_text())
    for img in data["images"][:-1]:
        (partial / img["file_name"]).symlink_to(coco_paths(coco_mini, "val")[0] / img["file_name"])
    with pytest.raises(DatasetError, match=data["images"][-1]["file_name"]):
        CocoKeypoints(partial, ann_file)


@pytest.fixture()
def small_copy(sample_root, tmp_path) -> tuple[Path, Path]:
    """A writable copy of the sample val split."""
    image_dir, ann_file = coco_paths(sample_root, "val")
    shutil.copytree(image_dir, tmp_path / "val2017")
    shutil.copy(ann_file, tmp_path / "val.json")
    return tmp_path / "val2017", tmp_path / "val.json"


def test_unreadable_or_wrong_size_image_in_getitem(small_copy):
    image_dir, ann_file = small_copy
    data = json.loads(ann_file.read_text())
    first = data["images"][0]["file_name"]
    path = image_dir / first
    path.write_bytes(path.read_bytes()[:300])
    ds = CocoKeypoints(image_dir, ann_file)
    with pytest.raises(DatasetError, match=first):
        ds[0]
    data["images"][1]["width"] += 1
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=data["images"][1]["file_name"]):
        CocoKeypoints(image_dir, ann_file)[1]


def test_annotation_without_keypoints_and_invisible_zeroed(small_copy):
    image_dir, ann_file = small_copy
    data = json.loads(ann_file.read_text())
    image_id = data["annotations"][0]["image_id"]
    del data["annotations"][0]["keypoints"]
    data["annotations"][1]["keypoints"][:3] = [5, 6, 0]  # visibility 0 with coordinates
    ann_file.write_text(json.dumps(data))
    ds = CocoKeypoints(image_dir, ann_file, transforms=RandomHorizontalFlip(p=1.0))
    _, target = ds[ds.ids.index(image_id)]
    assert torch.equal(target["keypoints"][0], torch.zeros(17, 3))
    image_id = data["annotations"][1]["image_id"]
    _, target = ds[ds.ids.index(image_id)]
    nth = [a["id"] for a in data["annotations"] if a["image_id"] == image_id].index(data["annotations"][1]["id"])
    assert target["keypoints"][nth, 0].tolist() == [0.0, 0.0, 0.0]
    # Training keeps the person without keypoints as a box target, its keypoints all zero.
    train = CocoKeypoints(image_dir, ann_file, train=True, min_keypoints_per_image=0)
    total = sum(len(train.get_target(i)["boxes"]) for i in range(len(train)))
    assert total == len(data["annotations"])
    image_id = data["annotations"][0]["image_id"]
    nth = [a["id"] for a in data["annotations"] if a["image_id"] == image_id].index(data["annotations"][0]["id"])
    assert torch.equal(train.get_target(train.ids.index(image_id))["keypoints"][nth], torch.zeros(17, 3))


# --------------------------------------------------------------------------------------
# Aspect-ratio grouping
# --------------------------------------------------------------------------------------
def _check_batches(batches, expected_indices, group_ids, batch_size):
    flat = [i for b in batches for i in b]
    assert Counter(flat) == Counter(expected_indices)  # every index exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len({group_ids[i] for i in b}) == 1  # one group per batch


@pytest.mark.parametrize("n, groups, batch_size", [(0, 2, 2), (1, 1, 4), (10, 1, 3), (23, 3, 4), (50, 8, 2),
                                                   (7, 5, 8), (100, 4, 1)])
def test_grouped_batch_sampler_uses_every_index_once(n, groups, batch_size):
    rng = np.random.default_rng(n)
    group_ids = rng.integers(0, groups, n).tolist()
    sampler = torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(1)) if n else []
    batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
    for _ in range(2):  # two epochs
        batches = list(batch_sampler)
        assert len(batches) == len(batch_sampler)
        _check_batches(batches, range(n), group_ids, batch_size)
    if n and groups == 1:
        assert len(batch_sampler) == math.ceil(n / batch_size)


def test_grouped_batch_sampler_distributed_ranks_agree():
    n, batch_size = 37, 3
    group_ids = np.random.default_rng(0).integers(0, 4, n).tolist()
    lengths = set()
    for epoch in range(3):
        for rank in range(2):
            sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=2, rank=rank, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            batch_sampler = GroupedBatchSampler(sampler, group_ids, batch_size)
            batches = list(batch_sampler)
            assert len(batches) == len(batch_sampler)
            lengths.add(len(batches))
            _check_batches(batches, list(sampler), group_ids, batch_size)
    assert len(lengths) == 1  # all ranks, all epochs: the same number of steps


def test_aspect_ratio_groups(sample_root):
    image_dir, ann_file = coco_paths(sample_root, "train")
    ds = CocoKeypoints(image_dir, ann_file)
    groups = create_aspect_ratio_groups(ds, k=3)
    assert len(groups) == len(ds)
    ratios = [w / h for h, w in (ds.get_height_and_width(i) for i in range(len(ds)))]
    assert any(r < 1 for r in ratios) and any(r > 1 for r in ratios)
    for gi, ri in zip(groups, ratios):
        for gj, rj in zip(groups, ratios):
            if ri < rj:
                assert gi <= gj  # groups are ordered bins of the aspect ratio
    portrait = {g for g, r in zip(groups, ratios) if r < 1}
    landscape = {g for g, r in zip(groups, ratios) if r > 1}
    assert not portrait & landscape
    assert create_aspect_ratio_groups(ds, k=0) == [int(r >= 1) for r in ratios]

    subset = torch.utils.data.Subset(ds, [5, 0, 3])
    assert create_aspect_ratio_groups(subset) == [groups[5], groups[0], groups[3]]
    nested = torch.utils.data.Subset(subset, [2, 0])
    assert create_aspect_ratio_groups(nested) == [groups[3], groups[5]]

    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=GroupedBatchSampler(torch.utils.data.SequentialSampler(ds), groups, 2),
        collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert len({img.shape[-1] > img.shape[-2] for img in images}) == 1 and len(targets) == len(images)


# --------------------------------------------------------------------------------------
# Sample dataset
# --------------------------------------------------------------------------------------
def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_dataset_is_deterministic(tmp_path):
    a = make_sample_dataset(tmp_path / "a", images=3, seed=7, val_images=2)
    b = make_sample_dataset(tmp_path / "b", images=3, seed=7, val_images=2)
    c = make_sample_dataset(tmp_path / "c", images=3, seed=8, val_images=2)
    files_a, files_b, files_c = _all_bytes(a), _all_bytes(b), _all_bytes(c)
    assert len(files_a) == 3 + 2 + 2
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert all(files_a[k] != files_c[k] for k in files_a)


def test_sample_style_sets_people_per_image_size_and_occluders(tmp_path):
    root = make_sample_dataset(tmp_path / "s", images=12, val_images=2, style=SampleStyle(1, (0.8, 0.9), 0.0))
    data = json.loads(coco_paths(root, "train")[1].read_text())
    per_image = Counter(a["image_id"] for a in data["annotations"])
    assert set(per_image.values()) == {1} and len(per_image) == 12
    heights = {i["id"]: i["height"] for i in data["images"]}
    # Box height / image height: the figure's scale, less what a pose folds away or the border cuts.
    assert all(0.5 < a["bbox"][3] / heights[a["image_id"]] <= 1.0 for a in data["annotations"])
    with pytest.raises(DatasetError, match="sample style out of range"):
        make_sample_dataset(tmp_path / "bad", images=1, style=SampleStyle(0))


def test_sample_dataset_is_valid_coco(sample_root):
    from pycocotools.coco import COCO

    train_data, val_data = (json.loads(coco_paths(sample_root, s)[1].read_text()) for s in ("train", "val"))
    assert train_data["images"] and val_data["images"]
    assert {"info", "licenses", "images", "annotations", "categories"} <= train_data.keys()
    assert not {i["id"] for i in train_data["images"]} & {i["id"] for i in val_data["images"]}
    ann_ids = [a["id"] for d in (train_data, val_data) for a in d["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1

    counts = Counter()
    for split in ("train", "val"):
        image_dir, ann_file = coco_paths(sample_root, split)
        coco = COCO(str(ann_file))
        assert coco.loadCats(1)[0] == COCO_PERSON_CATEGORY
        for image_id, img in coco.imgs.items():
            assert img["file_name"] == f"{image_id:012d}.jpg"
            with Image.open(image_dir / img["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"])
            assert 320 <= max(img["width"], img["height"]) <= 480
            counts["portrait" if img["height"] > img["width"] else "landscape"] += 1
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert 1 <= len(anns) <= 3
            for ann in anns:
                x, y, w, h = ann["bbox"]
                assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and ann["area"] > 0
                assert 0 <= x and 0 <= y and w >= 1 and h >= 1
                assert x + w <= img["width"] and y + h <= img["height"]
                kp = np.array(ann["keypoints"]).reshape(17, 3)
                labelled = kp[:, 2] > 0
                assert ann["num_keypoints"] == labelled.sum() > 0
                assert (kp[~labelled] == 0).all()
                kx, ky = kp[labelled, 0], kp[labelled, 1]
                assert ((kx >= x) & (kx <= x + w) & (ky >= y) & (ky <= y + h)).all()
                assert ((kx >= 0) & (kx < img["width"]) & (ky >= 0) & (ky < img["height"])).all()
                counts["hidden"] += int((kp[:, 2] == 1).sum())
                counts["cut"] += int(x == 0 or y == 0 or x + w == img["width"] or y + h == img["height"])
    # The generator really makes portraits and landscapes, occlusions and people cut by the border.
    assert counts["portrait"] and counts["landscape"] and counts["hidden"] and counts["cut"]


def test_sample_dataset_trains_through_the_dataset(sample_root):
    image_dir, ann_file = coco_paths(sample_root, "train")
    ds = CocoKeypoints(image_dir, ann_file, train=True, transforms=get_transforms(train=True))
    assert len(ds) == len(json.loads(ann_file.read_text())["images"])  # every image has a trainable person
    image, target = ds[3]
    assert image.shape[1:] == ds.get_height_and_width(3)
    assert target["keypoints"].shape[1:] == (17, 3) and len(target["boxes"]) >= 1


def test_cli_writes_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    dataset.main(["--sample", str(out), "--images", "6", "--seed", "1"])
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "6 train images" in line and "8 val images" in line and str(out) in line
    assert len(list((out / "train2017").glob("*.jpg"))) == 6 and len(list((out / "val2017").glob("*.jpg"))) == 8
    CocoKeypoints(*coco_paths(out, "val"))


def test_cli_bad_input(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match=r"^error: .*file"):
        dataset.main(["--sample", str(blocker / "sub"), "--images", "1"])
    assert flag_error(dataset.main, ["--sample", str(tmp_path / "x"), "--images", "0"], capsys).startswith(
        "error: argument --images")
    assert flag_error(dataset.main, ["--sample", str(tmp_path / "x"), "--seed", "-1"], capsys).startswith(
        "error: argument --seed")
    with pytest.raises(SystemExit):
        dataset.parse_args([])
    assert not (tmp_path / "x").exists()


def test_cli_sample_never_overwrites_a_dataset(tmp_path, capsys):
    """--sample into a folder holding other data (here a stand-in for a downloaded COCO) is refused
    and changes nothing; an earlier sample set is replaced; --force writes anyway."""
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    real = coco / "annotations" / "person_keypoints_val2017.json"
    real.write_text('{"info": {"contributor": "COCO Consortium"}, "images": [], "annotations": []}')
    before = real.read_bytes()
    with pytest.raises(SystemExit, match=r"^error: --sample .*coco: the folder holds files that are not a sample "
                                         r"set .*--force"):
        dataset.main(["--sample", str(coco), "--images", "1", "--val-images", "1"])
    assert real.read_bytes() == before and sorted(p.name for p in coco.rglob("*")) == ["annotations",
                                                                                         real.name]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not a sample set"):
        dataset.main(["--sample", str(tmp_path / "notes"), "--images", "1", "--val-images", "1"])
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"

    sample = tmp_path / "sample"
    dataset.main(["--sample", str(sample), "--images", "1", "--val-images", "1"])
    dataset.main(["--sample", str(sample), "--images", "2", "--val-images", "1", "--seed", "3"])  # replaced
    assert len(json.loads(coco_paths(sample, "train")[1].read_text())["images"]) == 2
    (sample / "extra.txt").write_text("mine")  # no longer only a sample set
    with pytest.raises(SystemExit, match="not a sample set"):
        dataset.main(["--sample", str(sample), "--images", "1", "--val-images", "1"])
    dataset.main(["--sample", str(coco), "--images", "1", "--val-images", "1", "--force"])
    assert real.read_bytes() != before


@pytest.mark.parametrize("field, value, message", [
    ("keypoints", 5, "keypoints that are not a list of numbers"),
    ("keypoints", ["a"] * 51, "keypoints that are not a list of numbers"),
    ("bbox", ["1", "2", "3", "4"], "bbox that is not 4 numbers"),
    ("bbox", [1, 2, None, 4], "bbox that is not 4 numbers"),
])
def test_annotation_values_of_the_wrong_type(tmp_path, field, value, message):
    (tmp_path / "images").mkdir()
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "keypoints": [0] * 51, field: value}
    ann_file = tmp_path / "bad.json"
    ann_file.write_text(json.dumps({"images": [], "annotations": [ann]}))
    with pytest.raises(DatasetError, match=f"bad.json: annotation 7 has a {message}|bad.json: annotation 7 has "
                                           f"{message}") as info:
        CocoKeypoints(tmp_path / "images", ann_file)
    assert "\n" not in str(info.value)


def test_read_image_refuses_a_decompression_bomb(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)  # 12 KB that decode to 100 million pixels
    with pytest.raises(DatasetError, match="bomb.png is 10000x10000 pixels, over the limit"):
        read_image(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    assert read_image(small, max_pixels=1200).shape == (3, 30, 40)
    with pytest.raises(DatasetError, match="--max-image-pixels"):
        read_image(small, max_pixels=1199)


def test_cli_url_base_must_be_a_url(tmp_path, capsys):
    error = flag_error(dataset.main, ["--download", "coco", "--root", str(tmp_path / "c"), "--url-base", "mirror"],
                       capsys)
    assert error.startswith("error: argument --url-base: 'mirror': expected a URL")
    assert not (tmp_path / "c").exists()
