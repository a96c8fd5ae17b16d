"""keypoint_decode: heatmaps -> keypoints for all persons at once equals torchvision's per-person
loop, and KeypointRoIHeads gives a model torchvision's outputs."""
from __future__ import annotations

import copy

import pytest
import torch
from torchvision.models.detection import roi_heads as tv

import keypoint_decode as kd
import models


def random_boxes(n: int, largest: float, generator: torch.Generator) -> torch.Tensor:
    corner = torch.rand(n, 2, generator=generator) * 600
    size = torch.rand(n, 2, generator=generator) * largest
    return torch.cat([corner, corner + size], dim=1)


def peaky_heatmaps(n: int, generator: torch.Generator, keypoints: int = 17) -> torch.Tensor:
    """Like a trained head's logits: one bump per keypoint on a noisy negative floor."""
    yy, xx = torch.meshgrid(torch.arange(56.0), torch.arange(56.0), indexing="ij")
    centre = torch.rand(n, keypoints, 2, 1, 1, generator=generator) * 56
    bump = torch.exp(-((yy - centre[:, :, 0]) ** 2 + (xx - centre[:, :, 1]) ** 2) / 8)
    return 8 * bump - 4 + 0.5 * torch.randn(n, keypoints, 56, 56, generator=generator)


def assert_same_as_torchvision(maps: torch.Tensor, boxes: torch.Tensor, **kwargs) -> None:
    """Every box through the cell bounds (min_area 0) unless the test says otherwise."""
    expected_xy, expected_scores = tv.heatmaps_to_keypoints(maps, boxes)
    xy, scores = kd.heatmaps_to_keypoints(maps, boxes, **{"min_area": 0, **kwargs})
    assert xy.shape == expected_xy.shape and scores.shape == expected_scores.shape
    assert xy.dtype == scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected_scores, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(xy, expected_xy, rtol=0, atol=1e-3)


@pytest.mark.parametrize("kind", ["noise", "peaky"])
@pytest.mark.parametrize("persons, largest", [(1, 40), (7, 150), (23, 400)])
def test_equals_torchvision(kind, persons, largest):
    g = torch.Generator().manual_seed(persons)
    maps = torch.randn(persons, 17, 56, 56, generator=g) if kind == "noise" else peaky_heatmaps(persons, g)
    assert_same_as_torchvision(maps, random_boxes(persons, largest, g))


def test_zero_persons():
    xy, scores = kd.heatmaps_to_keypoints(torch.zeros(0, 17, 56, 56), torch.zeros(0, 4))
    assert xy.shape == (0, 17, 3) and scores.shape == (0, 17)
    logits = torch.zeros(0, 17, 56, 56)
    keypoints, keypoint_scores = kd.keypointrcnn_inference(logits, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert [k.shape for k in keypoints] == [(0, 17, 3)] * 2 and [s.shape for s in keypoint_scores] == [(0, 17)] * 2


def test_tiny_degenerate_and_integer_boxes():
    """Boxes under a pixel (clamped to 1), empty and inverted boxes, exact integer sizes, one
    pixel wide but tall, and a box larger than the heatmap in one side only."""
    g = torch.Generator().manual_seed(1)
    boxes = torch.tensor([[10.0, 10.0, 10.3, 10.2], [5.0, 5.0, 5.0, 5.0], [30.0, 30.0, 20.0, 25.0],
                          [0.0, 0.0, 56.0, 56.0], [0.0, 0.0, 112.0, 28.0], [3.5, 7.25, 4.5, 300.0],
                          [100.0, 50.0, 101.7, 52.9]])
    assert_same_as_torchvision(torch.randn(len(boxes), 17, 56, 56, generator=g), boxes)


def test_ties_take_the_first_maximum_as_torchvision():
    """Flat heatmaps tie everywhere: torchvision's argmax takes the first pixel, row by row."""
    maps = torch.zeros(3, 17, 56, 56)
    maps[1, :, 20:30, 20:30] = 1.0  # a plateau
    boxes = torch.tensor([[0.0, 0.0, 90.0, 70.0], [10.0, 10.0, 200.0, 150.0], [5.0, 5.0, 9.0, 9.0]])
    assert_same_as_torchvision(maps, boxes)


def test_small_batches_and_other_sizes():
    """Many small batches (a small memory budget) give the same; so do 5 keypoints on 28 x 28 maps."""
    g = torch.Generator().manual_seed(2)
    maps, boxes = peaky_heatmaps(12, g), random_boxes(12, 250, g)
    assert_same_as_torchvision(maps, boxes, max_values=1_000_000)
    assert_same_as_torchvision(torch.randn(4, 5, 28, 28, generator=g), random_boxes(4, 90, g))
    assert_same_as_torchvision(maps, boxes, min_area=150 * 150)  # small boxes to torchvision's loop, large not


def test_bfloat16_heatmaps_are_decoded_in_float32():
    g = torch.Generator().manual_seed(3)
    maps, boxes = peaky_heatmaps(4, g).bfloat16(), random_boxes(4, 200, g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xy, scores = kd.heatmaps_to_keypoints(maps, boxes, min_area=0)
    assert xy.dtype == scores.dtype == torch.float32
    expected_xy, expected_scores = tv.heatmaps_to_keypoints(maps.float(), boxes)
    torch.testing.assert_close(xy, expected_xy, rtol=0, atol=1e-3)
    torch.testing.assert_close(scores, expected_scores, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    """A random ResNet-18 Keypoint R-CNN at 96 px that sends 12 boxes per image through a small keypoint head."""
    torch.manual_seed(0)
    model = models.build_model("resnet18", "none", min_size=[96], max_size=128, keypoint_head=[16, 16],
                              box_score_thresh=0.0, box_detections_per_img=12, rpn_post_nms_top_n_test=100)
    return model.eval()


def test_fast_path_decodes_peaky_maps_without_torchvisions_loop():
    g = torch.Generator().manual_seed(5)
    maps, boxes = peaky_heatmaps(10, g), random_boxes(10, 300, g)
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1).ceil().long()
    *_, done = kd._argmax_bounded(maps, size[:, 1], size[:, 0])
    assert done.sum() >= 8  # noise maps (the tests above) mostly go to torchvision's loop instead


def test_roi_heads_give_torchvision_outputs_and_keep_the_state_dict(tiny_model):
    model, reference = copy.deepcopy(tiny_model), tiny_model
    keys = list(model.state_dict())
    assert kd.use_fast_keypoint_decoding(model) is model
    kd.use_fast_keypoint_decoding(model)  # twice: no second hook
    assert isinstance(model.roi_heads, kd.KeypointRoIHeads) and list(model.state_dict()) == keys
    assert len(model.roi_heads.box_predictor._forward_hooks) == 1
    images = [torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(4)), torch.rand(3, 120, 90)]
    with torch.inference_mode():
        ours, theirs = model(images), reference(images)
    assert sum(len(o["boxes"]) for o in ours) > 10
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-3)


def test_roi_heads_train_as_torchvision_and_autocast_keeps_boxes_float32(tiny_model):
    model = kd.use_fast_keypoint_decoding(copy.deepcopy(tiny_model))
    image = torch.rand(3, 150, 200)
    target = {"boxes": torch.tensor([[20.0, 20.0, 120.0, 140.0]]), "labels": torch.tensor([1]),
              "keypoints": torch.cat([torch.rand(1, 17, 2) * 100 + 20, torch.ones(1, 17, 1)], dim=2)}
    model.train()
    losses = model([image], [target])
    assert {"loss_keypoint", "loss_classifier"} <= losses.keys() and all(v.isfinite() for v in losses.values())
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model([image])[0]
    assert len(output["boxes"]) > 0
    for key in ("boxes", "scores", "keypoints", "keypoints_scores"):
        assert output[key].dtype == torch.float32, key


def test_not_a_torchvision_roi_heads():
    class Other(torch.nn.Module):
        roi_heads = torch.nn.Identity()
    with pytest.raises(TypeError):
        kd.use_fast_keypoint_decoding(Other())
