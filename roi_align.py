"""RoIAlign for inference on the CPU: torchvision's numbers, every FPN level in one parallel call.

torchvision's CPU `roi_align` runs on one core, one FPN level per call, in float32 on NCHW maps:
under a bfloat16 autocast or with channels_last feature maps, each call first copies the maps.
`roi_align_levels` computes the same numbers with a numba kernel: boxes spread over the cores,
channels-last maps read where they lie (the channel is the innermost loop, so the four corners
of a sample are four contiguous rows), bfloat16 maps widened to float32 inside the kernel (no cast
pass), and the result written in the features' dtype (bfloat16 rounded to nearest even, as a
cast would). Every step is torchvision's float32 arithmetic in torchvision's order: the sample
points, the edge rules (samples outside [-1, H] x [-1, W] add zero, the rest clamp to the map),
`aligned`, `sampling_ratio` (0: adaptive), the truncated batch index, the average over the grid.

`FastMultiScaleRoIAlign` is torchvision's `MultiScaleRoIAlign` (same level assignment and scales)
that uses this kernel where no gradient is needed (inference, also a training model's
evaluation) and torchvision's op otherwise (training needs its backward), or where numba cannot
load (`fallback_note` says so in one line). `install_fast_pools` puts it in a Keypoint R-CNN at
construction (models.build_model); `install_torchvision_pools` puts torchvision's own back, for
the baselines of benchmarks and tests.

The kernel is compiled on first use (a few seconds per kind of input) and cached on disk
(numba's `cache=True`: `__pycache__` beside this file, or numba's user cache directory where that
is read-only; NUMBA_CACHE_DIR overrides both), so later runs load it in well under a second. Where
no cache directory is writable at all, it is compiled in every process (docs/performance.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

try:  # numba is a requirement, but a platform without a wheel still runs, on torchvision's op
    import numba
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic, overload
    NUMBA_ERROR = ""
except Exception as error:  # noqa: BLE001 (any failure to load means: use torchvision's op)
    numba = None
    NUMBA_ERROR = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"

FAST_DTYPES = (torch.float32, torch.bfloat16)


def available() -> bool:
    """Whether the numba kernel can run here."""
    return numba is not None


def fallback_note() -> str:
    """'' where the fast RoIAlign runs, else the clause for the model line that says it does not."""
    return "" if available() else f"; RoIAlign: torchvision's op (numba cannot load: {NUMBA_ERROR})"


if numba is not None:
    @intrinsic
    def _bits_to_float32(typingctx, bits):
        if bits != types.uint32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())
        return types.float32(types.uint32), codegen

    @intrinsic
    def _float32_to_bits(typingctx, value):
        if value != types.float32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))
        return types.uint32(types.float32), codegen

    def _widen(value):
        """A feature value as float32 (bfloat16 arrives as its raw 16 bits)."""

    @overload(_widen, inline="always")
    def _widen_impl(value):
        if value == types.float32:
            return lambda value: value
        if value == types.int16:  # bfloat16's bits (int16: torch < 2.3 has no uint16 view)
            return lambda value: _bits_to_float32(np.uint32(np.uint32(np.uint16(value)) << np.uint32(16)))
        return None

    def _narrow(value, like):
        """float32 `value` in the dtype of the array element `like` (bfloat16: its raw bits)."""

    @overload(_narrow, inline="always")
    def _narrow_impl(value, like):
        if like == types.float32:
            return lambda value, like: value
        if like == types.int16:
            def to_bfloat16(value, like):  # rounded to nearest even, as PyTorch casts
                if value != value:
                    return np.int16(0x7FC0)  # PyTorch's NaN
                bits = np.uint64(_float32_to_bits(value))
                return np.int16(np.uint16((bits + ((bits >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF))
                                          >> np.uint64(16)))
            return to_bfloat16
        return None

    @numba.njit(inline="always")
    def _grid(size: np.float32, pooled: int, sampling_ratio: int) -> int:
        return sampling_ratio if sampling_ratio > 0 else int(np.ceil(size / np.float32(pooled)))

    @numba.njit(inline="always")
    def _corner(pos: np.float32, size: int):
        """torchvision's edge rule on one axis: (low index, high index, fraction) of a sample inside."""
        pos = max(pos, np.float32(0.0))
        low = int(pos)
        if low >= size - 1:
            return size - 1, size - 1, np.float32(0.0)
        return low, low + 1, pos - np.float32(low)

    def _roi_align_kernel(features, rois, levels, scales, output, pooled_h, pooled_w, sampling_ratio, aligned):
        """features: a tuple of (N, H, W, C) maps, one per level (float32, or bfloat16's bits as int16);
        rois: (K, 5) float32 batch index, x1, y1, x2, y2; levels: (K,) int64; scales: (L,) float32;
        output: (K, C, pooled_h, pooled_w) float32 or int16 (bfloat16's bits), written in full."""
        offset = np.float32(0.5) if aligned else np.float32(0.0)
        bins = pooled_h * pooled_w
        for k in numba.prange(rois.shape[0]):
            level = levels[k]
            maps = features[level]
            height, width, channels = maps.shape[1], maps.shape[2], maps.shape[3]
            batch = int(rois[k, 0])
            scale = scales[level]
            start_w = rois[k, 1] * scale - offset
            start_h = rois[k, 2] * scale - offset
            roi_w = rois[k, 3] * scale - offset - start_w
            roi_h = rois[k, 4] * scale - offset - start_h
            if not aligned:  # malformed boxes become 1 x 1
                roi_w = max(roi_w, np.float32(1.0))
                roi_h = max(roi_h, np.float32(1.0))
            bin_h = roi_h / np.float32(pooled_h)
            bin_w = roi_w / np.float32(pooled_w)
            grid_h = _grid(roi_h, pooled_h, sampling_ratio)
            grid_w = _grid(roi_w, pooled_w, sampling_ratio)
            count = np.float32(max(grid_h * grid_w, 1))
            acc = np.zeros((bins, channels), dtype=np.float32)
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    row = acc[ph * pooled_w + pw]
                    for iy in range(grid_h):
                        y = start_h + np.float32(ph) * bin_h + (np.float32(iy) + np.float32(0.5)) * bin_h / np.float32(grid_h)
                        for ix in range(grid_w):
                            x = start_w + np.float32(pw) * bin_w + \
                                (np.float32(ix) + np.float32(0.5)) * bin_w / np.float32(grid_w)
                            if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
                                continue  # torchvision adds 0 x the map's first pixel here
                            y_low, y_high, ly = _corner(y, height)
                            x_low, x_high, lx = _corner(x, width)
                            hy = np.float32(1.0 - np.float64(ly))  # torchvision: 1. - ly in double
                            hx = np.float32(1.0 - np.float64(lx))
                            w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
                            v1, v2 = maps[batch, y_low, x_low], maps[batch, y_low, x_high]
                            v3, v4 = maps[batch, y_high, x_low], maps[batch, y_high, x_high]
                            for c in range(channels):
                                row[c] += w1 * _widen(v1[c]) + w2 * _widen(v2[c]) + w3 * _widen(v3[c]) + \
                                    w4 * _widen(v4[c])
            for b in range(bins):
                for c in range(channels):
                    output[k, c, b // pooled_w, b % pooled_w] = _narrow(acc[b, c] / count, output[k, c, 0, 0])


    try:
        _roi_align_kernel = numba.njit(parallel=True, cache=True)(_roi_align_kernel)
    except RuntimeError:  # no writable cache directory at all (numba's message: "no locator available")
        _roi_align_kernel = numba.njit(parallel=True)(_roi_align_kernel)  # compiled in every process instead


def _kernel_view(tensor: torch.Tensor) -> np.ndarray:
    """A (N, C, H, W) map as the kernel reads it: (N, H, W, C), float32 or bfloat16's raw bits.
    No copy for channels_last maps; NCHW ones are copied once."""
    nhwc = tensor.detach().permute(0, 2, 3, 1).contiguous()
    return nhwc.view(torch.int16).numpy() if nhwc.dtype == torch.bfloat16 else nhwc.numpy()


def roi_align_levels(features: Sequence[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                     scales: Sequence[float], output_size: tuple[int, int], sampling_ratio: int,
                     aligned: bool = False, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torchvision's `roi_align` of every box on the map of its level, in one parallel call.

    features: per level an (N, C, H_l, W_l) map, float32 or bfloat16 (any memory format;
    channels_last is read without a copy); rois: (K, 5) batch index, x1, y1, x2, y2 in image
    pixels; levels: (K,) the level of each box; scales: each level's spatial scale. Returns
    (K, C, output_size) in `dtype` (default: the maps'), contiguous, as torchvision's op gives
    it: bfloat16 maps give exactly torchvision's float32 result on the maps cast to float32,
    rounded to bfloat16 when `dtype` is bfloat16."""
    dtype = dtype or features[0].dtype
    channels = features[0].shape[1]
    output = torch.empty((len(rois), channels, *output_size), dtype=dtype)
    if len(rois) == 0:
        return output
    maps = tuple(_kernel_view(f) for f in features)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _roi_align_kernel(maps, rois.detach().float().contiguous().numpy(), levels.to(torch.int64).contiguous().numpy(),
                      np.asarray(scales, dtype=np.float32),
                      output.view(torch.int16).numpy() if dtype == torch.bfloat16 else output.numpy(),
                      int(output_size[0]), int(output_size[1]), int(sampling_ratio), bool(aligned))
    return output


def uses_fast_op(features: Sequence[torch.Tensor]) -> bool:
    """Whether `FastMultiScaleRoIAlign` computes on these maps with the kernel: numba loads, the maps
    are float32 or bfloat16 on the CPU, and no gradient has to flow back through them."""
    return available() and all(f.device.type == "cpu" and f.dtype == features[0].dtype for f in features) \
        and features[0].dtype in FAST_DTYPES and not (torch.is_grad_enabled() and any(f.requires_grad for f in features))


class FastMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign; where no gradient is needed, all levels go through
    `roi_align_levels` in one call, the output in the maps' dtype (as torchvision's op gives it
    under an autocast). Elsewhere (training, another device or dtype) torchvision's own code."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        if not uses_fast_op(x_filtered):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes) if len(x_filtered) > 1 else torch.zeros(len(rois), dtype=torch.int64)
        return roi_align_levels(x_filtered, rois, levels, self.scales, self.output_size, self.sampling_ratio)


def _rebuilt(pool: MultiScaleRoIAlign, kind: type) -> MultiScaleRoIAlign:
    return kind(list(pool.featmap_names), pool.output_size, pool.sampling_ratio,
                canonical_scale=pool.canonical_scale, canonical_level=pool.canonical_level)


def install_pools(model: torch.nn.Module, kind: type) -> torch.nn.Module:
    """A torchvision R-CNN's RoI pools rebuilt as `kind` (a MultiScaleRoIAlign with the same
    settings; the pools hold no weights, so the state_dict is unchanged). Returns `model`."""
    heads = model.roi_heads
    for name in ("box_roi_pool", "keypoint_roi_pool", "mask_roi_pool"):
        pool = getattr(heads, name, None)
        if isinstance(pool, MultiScaleRoIAlign) and type(pool) is not kind:
            setattr(heads, name, _rebuilt(pool, kind))
    return model


def install_fast_pools(model: torch.nn.Module) -> torch.nn.Module:
    """A torchvision R-CNN's RoI pools as `FastMultiScaleRoIAlign` (same settings; the pools hold no
    weights, so the state_dict is unchanged). Returns `model`."""
    return install_pools(model, FastMultiScaleRoIAlign)


def install_torchvision_pools(model: torch.nn.Module) -> torch.nn.Module:
    """torchvision's own MultiScaleRoIAlign back in the RoI pools (baselines). Returns `model`."""
    return install_pools(model, MultiScaleRoIAlign)


def pool_ready(features: dict[str, torch.Tensor], pools: Sequence[MultiScaleRoIAlign]) -> dict[str, torch.Tensor]:
    """The feature maps as the RoI pools compute on them, converted once for all of them: unchanged
    where every pool runs the kernel (it reads bfloat16 and channels_last maps as they are), else
    float32 NCHW, what torchvision's op would copy them to in each pool."""
    names = {name for pool in pools for name in pool.featmap_names}
    pooled = [v for k, v in features.items() if k in names]
    if all(isinstance(pool, FastMultiScaleRoIAlign) for pool in pools) and uses_fast_op(pooled):
        return features
    return {k: v.float().contiguous() if k in names else v for k, v in features.items()}
