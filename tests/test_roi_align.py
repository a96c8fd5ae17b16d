"""roi_align: the numba RoIAlign gives torchvision's numbers (random and real feature maps, every
edge case, float32 and bfloat16 maps), FastMultiScaleRoIAlign gives MultiScaleRoIAlign's, training
keeps torchvision's op, and detect.py finds the same boxes and keypoints with either op.

Bounds: float32, max abs difference <= 1e-4 (the kernel repeats torchvision's float32 arithmetic
in its order, so it is in fact equal). bfloat16 maps: the float32 result equals torchvision's op
on the maps cast to float32 to the same 1e-4; the bfloat16 result is that rounded to nearest,
so it is within half a bfloat16 step of it: |ours - theirs| <= |theirs| * 2**-8."""
from __future__ import annotations

import copy
from collections import OrderedDict

import cv2
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

import detect
import models
import roi_align
from precision import cpu_has_fast_bf16

FLOAT32_BOUND = 1e-4
BFLOAT16_STEP = 2.0 ** -8  # relative: half the spacing of bfloat16 numbers (8 significant bits)
COCO_IMAGES = ("000000000139.jpg", "000000192699.jpg")

pytestmark = pytest.mark.skipif(not roi_align.available(), reason=f"numba cannot load: {roi_align.NUMBA_ERROR}")


def edge_case_rois(batch: int, height: int, width: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """(K, 5) rois in image pixels: ordinary, partly and fully outside the map, tiny (under a
    feature pixel), huge (larger than the map), inverted (x2 < x1), on the borders, and points."""
    image_w, image_h = width / scale, height / scale
    n = 40
    corner = torch.rand(n, 2, generator=generator) * torch.tensor([image_w, image_h])
    size = torch.rand(n, 2, generator=generator) * torch.tensor([image_w, image_h]) / 2
    ordinary = torch.cat([corner, corner + size], 1)
    partly = ordinary - torch.tensor([image_w, image_h]).repeat(2) / 2
    fully = ordinary + torch.tensor([image_w, image_h]).repeat(2) * 1.2
    tiny = torch.cat([corner, corner + torch.rand(n, 2, generator=generator) / scale * 0.3], 1)
    huge = torch.tensor([[-image_w, -image_h, 2 * image_w, 2 * image_h], [0, 0, image_w, image_h],
                         [-3.0, -3.0, image_w + 3, image_h + 3]])
    inverted = ordinary[:, [2, 3, 0, 1]]
    border = torch.tensor([[image_w - 1, image_h - 1, image_w, image_h], [0.0, 0.0, 0.0, 0.0],
                           [image_w, image_h, image_w, image_h], [-1 / scale, 0, 0, 1 / scale]])
    boxes = torch.cat([ordinary, partly, fully, tiny, huge, inverted, border])
    index = torch.randint(0, batch, (len(boxes), 1), generator=generator).float()
    return torch.cat([index, boxes], 1)


def ours(features: torch.Tensor, rois: torch.Tensor, scale: float, output_size, sampling_ratio: int,
         aligned: bool, dtype: torch.dtype | None = None) -> torch.Tensor:
    levels = torch.zeros(len(rois), dtype=torch.int64)
    return roi_align.roi_align_levels([features], rois, levels, [scale], output_size, sampling_ratio, aligned, dtype)


@pytest.mark.parametrize("output_size, sampling_ratio, aligned", [
    ((7, 7), 2, False), ((14, 14), 2, False), ((3, 5), 0, False), ((7, 7), 0, True), ((2, 2), 1, True)])
@pytest.mark.parametrize("scale", [0.25, 1 / 32])
def test_float32_equals_torchvision_on_every_kind_of_box(output_size, sampling_ratio, aligned, scale):
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 16, 23, 31, generator=generator)
    rois = edge_case_rois(2, 23, 31, scale, generator)
    expected = tv_roi_align(features, rois, output_size, scale, sampling_ratio, aligned)
    for layout in (torch.contiguous_format, torch.channels_last):
        found = ours(features.contiguous(memory_format=layout), rois, scale, output_size, sampling_ratio, aligned)
        assert found.shape == expected.shape and found.dtype == torch.float32 and found.is_contiguous()
        assert (found - expected).abs().max() <= FLOAT32_BOUND
    assert expected.abs().sum() > 0 and (expected == 0).all(dim=(1, 2, 3)).any()  # some boxes see nothing


def test_bfloat16_maps_are_torchvision_on_the_maps_cast_to_float32():
    generator = torch.Generator().manual_seed(3)
    features = (torch.randn(2, 32, 30, 40, generator=generator) * 4).to(torch.bfloat16)
    rois = edge_case_rois(2, 30, 40, 0.125, generator)
    expected = tv_roi_align(features.float(), rois, (7, 7), 0.125, 2, False)
    for layout in (torch.contiguous_format, torch.channels_last):
        maps = features.contiguous(memory_format=layout)
        as_float32 = ours(maps, rois, 0.125, (7, 7), 2, False, dtype=torch.float32)
        assert (as_float32 - expected).abs().max() <= FLOAT32_BOUND
        rounded = ours(maps, rois, 0.125, (7, 7), 2, False)
        assert rounded.dtype == torch.bfloat16
        assert ((rounded.float() - expected).abs() <= expected.abs() * BFLOAT16_STEP).all()
        assert torch.equal(rounded, expected.to(torch.bfloat16))  # rounded as PyTorch's cast rounds


def test_empty_box_list_and_empty_maps():
    features = torch.randn(1, 8, 10, 10)
    empty = ours(features, torch.zeros(0, 5), 0.5, (7, 7), 2, False)
    assert empty.shape == (0, 8, 7, 7)
    pool = roi_align.FastMultiScaleRoIAlign(["0"], 7, 2)
    with torch.inference_mode():
        pooled = pool({"0": features}, [torch.zeros(0, 4), torch.zeros(0, 4)], [(20, 20), (20, 20)])
    assert pooled.shape == (0, 8, 7, 7)


def pyramid(generator: torch.Generator, dtype=torch.float32) -> tuple[OrderedDict, list[torch.Tensor], list]:
    """FPN-like maps of 2 images (strides 4 to 32, plus a 'pool' level the pools skip) and boxes
    of every size, so that every level gets some."""
    shapes = [(48, 64), (24, 32), (12, 16), (6, 8)]
    features = OrderedDict((str(i), torch.randn(2, 16, h, w, generator=generator).to(dtype))
                           for i, (h, w) in enumerate(shapes))
    features["pool"] = torch.randn(2, 16, 3, 4, generator=generator).to(dtype)
    boxes = []
    for _ in range(2):
        corner = torch.rand(60, 2, generator=generator) * torch.tensor([256.0, 192.0])
        size = torch.exp(torch.rand(60, 2, generator=generator) * 6.5)  # 1 to 665 px
        boxes.append(torch.cat([corner, corner + size], 1))
    return features, boxes, [(192, 256), (180, 250)]


@pytest.mark.parametrize("output_size", [7, 14])
def test_multiscale_pool_equals_torchvision_on_every_level(output_size):
    features, boxes, shapes = pyramid(torch.Generator().manual_seed(1))
    theirs, fast = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2), \
        roi_align.FastMultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2)
    with torch.inference_mode():
        expected = theirs(features, boxes, shapes)
        found = fast(features, boxes, shapes)
        assert len(set(theirs.map_levels(boxes).tolist())) == 4  # every level used
        channels_last = {k: v.contiguous(memory_format=torch.channels_last) for k, v in features.items()}
        assert (fast(channels_last, boxes, shapes) - expected).abs().max() <= FLOAT32_BOUND
    assert fast.scales == theirs.scales
    assert (found - expected).abs().max() <= FLOAT32_BOUND


def test_multiscale_pool_on_bfloat16_maps_under_autocast():
    """As torchvision's pool under a bfloat16 autocast: computed in float32, given in the maps' dtype."""
    features, boxes, shapes = pyramid(torch.Generator().manual_seed(2), torch.bfloat16)
    names = ["0", "1", "2", "3"]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = MultiScaleRoIAlign(names, 7, 2)(features, boxes, shapes)
        found = roi_align.FastMultiScaleRoIAlign(names, 7, 2)(features, boxes, shapes)
    assert found.dtype == expected.dtype == torch.bfloat16
    assert torch.equal(found, expected)


def test_training_keeps_torchvisions_op_and_its_gradient(monkeypatch):
    features, boxes, shapes = pyramid(torch.Generator().manual_seed(5))
    features = OrderedDict((k, v.requires_grad_()) for k, v in features.items())
    pool = roi_align.FastMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    called = []
    monkeypatch.setattr(roi_align, "roi_align_levels", lambda *a, **k: called.append(1))
    assert not roi_align.uses_fast_op(list(features.values()))
    pooled = pool(features, boxes, shapes)
    pooled.sum().backward()
    assert not called and features["0"].grad is not None and features["0"].grad.abs().sum() > 0
    with torch.no_grad():
        assert roi_align.uses_fast_op(list(features.values()))


def test_without_numba_torchvisions_op_runs_and_the_model_line_says_so(monkeypatch):
    features, boxes, shapes = pyramid(torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(features, boxes, shapes)
    assert roi_align.fallback_note() == ""
    monkeypatch.setattr(roi_align, "numba", None)
    monkeypatch.setattr(roi_align, "NUMBA_ERROR", "ImportError: no numba")
    assert roi_align.fallback_note() == "; RoIAlign: torchvision's op (numba cannot load: ImportError: no numba)"
    with torch.inference_mode():
        found = roi_align.FastMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(features, boxes, shapes)
    assert torch.equal(found, expected)


def test_models_get_the_fast_pools_and_keep_their_state_dict(tiny_checkpoint):
    model, _ = models.load_model(str(tiny_checkpoint))
    assert type(model.roi_heads.box_roi_pool) is roi_align.FastMultiScaleRoIAlign
    assert type(model.roi_heads.keypoint_roi_pool) is roi_align.FastMultiScaleRoIAlign
    keys = list(model.state_dict())
    plain = roi_align.install_torchvision_pools(copy.deepcopy(model))
    assert type(plain.roi_heads.box_roi_pool) is MultiScaleRoIAlign and list(plain.state_dict()) == keys
    assert plain.roi_heads.keypoint_roi_pool.output_size == model.roi_heads.keypoint_roi_pool.output_size == (14, 14)


def test_real_feature_maps_and_proposals(coco_mini, tiny_checkpoint):
    """The FPN maps and RPN proposals of a model on a real image, through both pools."""
    model, _ = models.load_model(str(tiny_checkpoint))
    image = cv2.cvtColor(cv2.imread(str(coco_mini / "val2017" / COCO_IMAGES[1])), cv2.COLOR_BGR2RGB)
    with torch.inference_mode():
        images, _ = model.transform([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        for fast in (model.roi_heads.box_roi_pool, model.roi_heads.keypoint_roi_pool):
            theirs = MultiScaleRoIAlign(fast.featmap_names, fast.output_size, fast.sampling_ratio)
            expected = theirs(features, proposals, images.image_sizes)
            assert (fast(features, proposals, images.image_sizes) - expected).abs().max() <= FLOAT32_BOUND
            bf16 = OrderedDict((k, v.to(torch.bfloat16)) for k, v in features.items())
            found = fast(bf16, proposals, images.image_sizes)
            reference = theirs(OrderedDict((k, v.float()) for k, v in bf16.items()), proposals, images.image_sizes)
            assert ((found.float() - reference).abs() <= reference.abs() * BFLOAT16_STEP).all()
    assert len(proposals[0]) > 100


def detections(model: torch.nn.Module, frames: list, precision: str) -> list[dict]:
    return [detect.detect_frame(model, frame, torch.device("cpu"), precision) for frame in frames]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_detect_finds_the_same_boxes_and_keypoints_with_either_op(coco_mini, tiny_checkpoint, precision):
    """detect.py's model (load_detector: its RoIHeads, channels_last, BatchNorm folded) with the fast
    pools and with torchvision's, on real images: boxes and keypoints within 0.01 px."""
    if precision == "bf16" and not cpu_has_fast_bf16():
        pytest.skip("no native bfloat16 on this CPU")
    args = detect.parse_args(["--file", "x.jpg", "--weights", str(tiny_checkpoint), "--score-thresh", "0",
                              "--max-persons", "5", "--min-size", "320"])
    fast = detect.load_detector(args, torch.device("cpu"), precision).model
    plain = roi_align.install_torchvision_pools(copy.deepcopy(fast))
    frames = [cv2.imread(str(coco_mini / "val2017" / name)) for name in COCO_IMAGES]
    for ours_found, theirs_found in zip(detections(fast, frames, precision), detections(plain, frames, precision)):
        assert len(ours_found["boxes"]) == len(theirs_found["boxes"]) == 5
        for key in ("boxes", "keypoints"):
            assert abs(ours_found[key] - theirs_found[key]).max() <= 0.01, key
        assert abs(ours_found["scores"] - theirs_found["scores"]).max() <= 1e-5
