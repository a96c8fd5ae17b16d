"""Heatmaps -> keypoints for every person at once, and Keypoint R-CNN inference that uses it.

torchvision's `heatmaps_to_keypoints` loops over the persons in Python: each person's 56 x 56
heatmaps are resized (bicubic) to the size of the person's box, often hundreds of pixels a
side, and the argmax of each resized map is the keypoint. Here no heatmap is resized whole.
The resized map is cut into cells, the blocks of output pixels that read the same 4 x 4
input pixels ((56 + 1)^2 cells whatever the box size); on a cell the bicubic surface is a
polynomial whose 16 Bernstein coefficients bound it from above, and these bounds come for
every cell of every person in one convolution. Only the few cells whose bound can reach the
maximum are resized, exactly, with PyTorch's bicubic weights (A = -0.75, half-pixel centres,
border pixels repeated). Where the bounds cannot single out the maximum (flat or noisy maps, as
an untrained model's), the person goes to torchvision's loop. The keypoints and scores equal
torchvision's to float rounding (tests/test_keypoint_decode.py).

`KeypointRoIHeads` is torchvision's `RoIHeads` whose inference uses this decoding and keeps the
numbers that locate things in float32 under a bfloat16 or float16 autocast (RPN deltas, box
deltas and scores, keypoint heatmaps); `use_fast_keypoint_decoding(model)` installs it in a
model without changing its weights or its state_dict.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints

from roi_align import pool_ready

# One batch of persons holds about this many float32 values of cell bounds (64 MiB).
MAX_VALUES_PER_BATCH = 16 * 1024 * 1024
# Boxes at least this large (in the model's pixels) are decoded by the cell bounds; smaller ones
# by torchvision's loop, whose cost grows with the box's area while the bounds' does not (on 2
# busy Xeon cores, per person: 35 vs 34 ms at 64 x 96 px, 48 vs 22 ms at 192 x 288, 61 vs 25 ms
# at 256 x 384, 138 vs 25 ms at 384 x 576; but an overfit model's real heatmaps at 190 x 290 px
# left a quarter of the persons to the loop, for no gain: docs/performance.md).
MIN_AREA_FOR_BOUNDS = 256 * 384
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) bicubic coefficient


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """The 4 bicubic tap weights for fractional offsets `t` (any shape) -> shape (*t.shape, 4),
    in the order PyTorch's upsample_bicubic2d uses them (taps at floor - 1 .. floor + 2)."""
    a = _CUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def _batches(cost: torch.Tensor, max_values: int) -> list[torch.Tensor]:
    """Person indices in batches of similar cost (values held per person), each batch small
    enough that its largest cost times its length stays under `max_values`."""
    order = torch.argsort(cost, stable=True).tolist()
    costs = cost.tolist()
    batches: list[list[int]] = [[]]
    for i in order:  # ascending: the last person added is the batch's largest
        if batches[-1] and (len(batches[-1]) + 1) * costs[i] > max_values:
            batches.append([])
        batches[-1].append(i)
    return [torch.tensor(b, dtype=torch.int64, device=cost.device) for b in batches if b]


def _bernstein_taps() -> torch.Tensor:
    """(4 taps, 4) Bernstein coefficients on [0, 1] of the 4 bicubic tap weights as cubic
    polynomials of the fractional offset t: weight_a(t) = sum_k D[a, k] * binom(3, k) t^k (1-t)^(3-k)."""
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    basis = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t ** 2 * (1 - t), t ** 3], dim=1)  # (t, k)
    values = _cubic_weights(t)                                                    # (t, tap)
    return torch.linalg.solve(basis, values).T                                    # (tap, k)


_BERNSTEIN = _bernstein_taps()


def _cell_bounds(padded: torch.Tensor) -> torch.Tensor:
    """An upper bound of the resized heatmap over each cell: (N, 1, S+4, S+4) border-padded maps
    -> (N, S+1, S+1). Within a cell (output pixels that read the same 4 x 4 input pixels) the
    bicubic surface is a polynomial whose Bernstein coefficients D.T @ patch @ D bound it (convex
    hull property); the 16 coefficients of every cell are one 4 x 4 convolution with 16 kernels."""
    d = _BERNSTEIN.to(padded.device)
    kernels = (d[:, None, :, None] * d[None, :, None, :]).permute(2, 3, 0, 1).reshape(16, 1, 4, 4)
    return torch.nn.functional.conv2d(padded, kernels.to(padded.dtype)).amax(dim=1)


def _groups(size_in: int, out_sizes: torch.Tensor, out_max: int):
    """The output rows (or columns) of a bicubic resize grouped by the 4 input rows they read
    (one group per floor(source position) + 1, size_in + 1 groups). Returns per person the
    rows' tap weights (P, out_max, 4) and each group's first row and row count (P, G)."""
    device = out_sizes.device
    groups = size_in + 1
    dst = torch.arange(out_max, device=device, dtype=torch.float32)
    src = (size_in / out_sizes.to(torch.float32))[:, None] * (dst[None, :] + 0.5) - 0.5
    first = src.floor()
    valid = dst[None, :] < out_sizes[:, None]
    group = torch.where(valid, first.to(torch.int64) + 1, groups)                 # padding rows: a spare group
    count = torch.zeros(len(out_sizes), groups + 1, device=device, dtype=torch.int64)
    count = count.scatter_add_(1, group, torch.ones_like(group))[:, :groups]
    return _cubic_weights(src - first), count.cumsum(1) - count, count


def _argmax_bounded(maps: torch.Tensor, map_h: torch.Tensor, map_w: torch.Tensor, cells_tried: int = 12):
    """Row, column and value of the first maximum of every resized heatmap (as torchvision's
    argmax over it), each (P, K), resizing only the cells that can hold the maximum.

    A cell is the block of output pixels that read the same 4 x 4 input pixels ((S+1)^2 cells
    whatever the box size). The `cells_tried` cells with the highest bounds (`_cell_bounds`)
    are resized exactly; where another cell's bound reaches their maximum (near-ties, flat or
    noisy maps), the person is left over. Returns (rows, columns, values, done)
    where `done` (P,) is False for the persons left over."""
    persons, channels, size_h, size_w = maps.shape
    device = maps.device
    padded = torch.nn.functional.pad(maps, (2, 2, 2, 2), mode="replicate")        # taps clamp at the border
    bounds = _cell_bounds(padded.reshape(-1, 1, size_h + 4, size_w + 4)).reshape(persons, channels, -1)
    wy, start_y, count_y = _groups(size_h, map_h, int(map_h.max()))
    wx, start_x, count_x = _groups(size_w, map_w, int(map_w.max()))
    cell_cols = size_w + 1
    empty = (count_y[:, :, None] == 0) | (count_x[:, None, :] == 0)               # cells with no pixel
    bounds.masked_fill_(empty.reshape(persons, 1, -1), -torch.inf)
    tried = min(cells_tried, bounds.shape[2] - 1)
    top = bounds.topk(tried + 1, dim=2)
    cell = top.indices[..., :tried]                                               # (P, K, m)
    gy, gx = torch.div(cell, cell_cols, rounding_mode="floor"), cell % cell_cols
    person = torch.arange(persons, device=device)[:, None, None]
    channel = torch.arange(channels, device=device)[None, :, None]
    rows_max, cols_max = int(count_y.max()), int(count_x.max())
    r, q = torch.arange(rows_max, device=device), torch.arange(cols_max, device=device)
    y = start_y[person, gy][..., None] + r                                        # (P, K, m, R)
    x = start_x[person, gx][..., None] + q                                        # (P, K, m, C)
    row_ok, col_ok = r < count_y[person, gy][..., None], q < count_x[person, gx][..., None]
    y, x = y.clamp_(max=wy.shape[1] - 1), x.clamp_(max=wx.shape[1] - 1)
    patches = padded.unfold(2, 4, 1).unfold(3, 4, 1)[person, channel, gy, gx]     # (P, K, m, 4, 4)
    exact = wy[person[..., None], y] @ patches @ wx[person[..., None], x].transpose(-1, -2)  # (P, K, m, R, C)
    exact.masked_fill_(~(row_ok[..., None] & col_ok[..., None, :]), -torch.inf)
    value = exact.flatten(2).amax(dim=2)                                          # (P, K)
    # The first maximum in row-major order, as torchvision's argmax over the resized map.
    linear = y[..., None] * wx.shape[1] + x[..., None, :]
    linear = torch.where(exact == value[..., None, None, None], linear, torch.iinfo(torch.int64).max)
    pos = linear.flatten(2).amin(dim=2)
    margin = 1e-4 * (1 + value.abs())                                             # float rounding of the bounds
    done = (top.values[..., tried] < value - margin).all(dim=1)
    return torch.div(pos, wx.shape[1], rounding_mode="floor"), pos % wx.shape[1], value, done


def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor, max_values: int = MAX_VALUES_PER_BATCH,
                          min_area: int = MIN_AREA_FOR_BOUNDS) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's `heatmaps_to_keypoints`, for all persons at once.

    maps: (P, K, S, S) heatmap logits (any float dtype; decoded in float32); rois: (P, 4) boxes
    x1, y1, x2, y2 in the image's pixels. Returns (keypoints (P, K, 3) float32 as x, y, 1;
    scores (P, K) float32, the resized heatmap's value at each keypoint). Persons whose box
    is under `min_area` pixels, and those whose maximum the cell bounds cannot single out (flat
    or noisy heatmaps, as an untrained model's), are decoded by torchvision's own loop."""
    persons, channels = maps.shape[:2]
    if persons == 0:
        return maps.new_zeros((0, channels, 3), dtype=torch.float32), maps.new_zeros((0, channels), dtype=torch.float32)
    maps, rois = maps.float(), rois.float()
    with torch.autocast(maps.device.type, enabled=False):  # the argmax needs float32, even under autocast
        box_w = (rois[:, 2] - rois[:, 0]).clamp(min=1)
        box_h = (rois[:, 3] - rois[:, 1]).clamp(min=1)
        map_w, map_h = box_w.ceil().long(), box_h.ceil().long()  # the resized heatmap's size, as torchvision's
        y_int = maps.new_zeros((persons, channels), dtype=torch.int64)
        x_int, scores = torch.zeros_like(y_int), maps.new_zeros((persons, channels))
        large = (map_w * map_h >= min_area).nonzero()[:, 0]
        left = [(map_w * map_h < min_area).nonzero()[:, 0]]
        per_person = torch.full_like(map_w[large], channels * 16 * (maps.shape[2] + 1) * (maps.shape[3] + 1))
        for index in (large[i] for i in _batches(per_person, max_values)):
            y, x, value, done = _argmax_bounded(maps[index], map_h[index], map_w[index])
            y_int[index], x_int[index], scores[index] = y, x, value
            left.append(index[~done])
        # Keypoint centres back in image pixels, with torchvision's arithmetic.
        xy = torch.stack([(x_int.float() + 0.5) * (box_w / map_w)[:, None] + rois[:, 0, None],
                          (y_int.float() + 0.5) * (box_h / map_h)[:, None] + rois[:, 1, None],
                          torch.ones_like(scores)], dim=2)
        left = torch.cat(left)
        if len(left):
            xy[left], scores[left] = tv_heatmaps_to_keypoints(maps[left], rois[left])
    return xy, scores


def keypointrcnn_inference(logits: torch.Tensor, boxes: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """torchvision's `keypointrcnn_inference`: one decoding call for the persons of all images."""
    keypoints, scores = heatmaps_to_keypoints(logits, torch.cat(boxes) if boxes else logits.new_zeros((0, 4)))
    sizes = [len(b) for b in boxes]
    return list(keypoints.split(sizes)), list(scores.split(sizes))


def _to_float32(module: torch.nn.Module, inputs: tuple, output):
    """Forward hook: floating tensors in the output (nested in tuples/lists) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(module, inputs, o) for o in output)
    return output


class KeypointRoIHeads(RoIHeads):
    """torchvision's RoIHeads; at inference the keypoints are decoded for all persons at once
    (`heatmaps_to_keypoints` above). Training is torchvision's own code path."""

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: D102 (torchvision's signature)
        if self.training or not self.has_keypoint() or self.has_mask():
            return super().forward(features, proposals, image_shapes, targets)
        # torchvision's inference path (RoIHeads.forward, eval mode), step for step, except that
        # the feature maps become what the RoI pools compute on once, not once per pool: as they
        # are for roi_align's kernel, float32 NCHW for torchvision's op (which would copy them
        # in each pool under a bfloat16 autocast or with channels_last).
        features = pool_ready(features, (self.box_roi_pool, self.keypoint_roi_pool))
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        result = [{"boxes": b, "labels": l, "scores": s} for b, l, s in zip(boxes, labels, scores)]
        keypoint_features = self.keypoint_roi_pool(features, boxes, image_shapes)
        logits = self.keypoint_predictor(self.keypoint_head(keypoint_features))
        keypoints, keypoint_scores = keypointrcnn_inference(logits, boxes)
        for r, k, s in zip(result, keypoints, keypoint_scores):
            r["keypoints"], r["keypoints_scores"] = k, s
        return result, {}


def use_fast_keypoint_decoding(model: torch.nn.Module) -> torch.nn.Module:
    """Install `KeypointRoIHeads` in a torchvision Keypoint R-CNN (in place; the weights and
    the state_dict stay as they are), and make the heads whose outputs place boxes and keypoints
    (RPN head, box predictor, keypoint predictor) hand float32 onward under an autocast, so
    that a bfloat16 or float16 autocast does not round box coordinates to 8 bits. Returns `model`."""
    heads = model.roi_heads
    if type(heads) is RoIHeads:
        heads.__class__ = KeypointRoIHeads
    elif not isinstance(heads, KeypointRoIHeads):
        raise TypeError(f"expected torchvision's RoIHeads, got {type(heads).__name__}")
    for module in (model.rpn.head, heads.box_predictor, heads.keypoint_predictor):
        if module is not None and not getattr(module, "_outputs_float32", False):
            module.register_forward_hook(_to_float32)
            module._outputs_float32 = True
    return model
