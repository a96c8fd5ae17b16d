"""export.py's check: ONNX Runtime against the PyTorch model on real images, person by person.

Both run in float32 on the same images at the same box score threshold. Persons are paired by
box overlap (each PyTorch person, surest first, with the ONNX person whose box overlaps it most);
for the pairs the table gives the largest box-corner, keypoint and score differences. The two
answers agree when every person scoring clearly above the threshold is in both, and the pairs
are within BOX_TOLERANCE_PX and KEYPOINT_TOLERANCE_PX. A person scoring within SCORE_MARGIN of
the threshold may be in one answer only: float rounding decides which side of it it falls. A
keypoint is the first maximum of its resized heatmap; where two pixels hold the same maximum (a flat
map, as on a sliver of a box at the image's edge), rounding picks either: a keypoint placed apart
but with the same score (within TIE_SCORE) is such a tie, not counted in the keypoint difference,
as long as ties are one, or under TIE_FRACTION of the paired keypoints (a real coordinate error
moves them all).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torchvision.ops import box_iou

from dataset import read_image
from sample_data import make_sample_dataset
from utils import UserError, coco_paths

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_CHECK_ROOT = "coco"  # test.py's --data-root: its val2017 when present
BOX_TOLERANCE_PX = 1.0
KEYPOINT_TOLERANCE_PX = 2.0
SCORE_MARGIN = 0.01
PAIR_IOU = 0.5
TIE_SCORE = 1e-4  # relative to 1 + |score|
TIE_FRACTION = 0.01


@dataclass(frozen=True)
class Row:
    """One image of the check: what each side found and how far the paired persons differ."""
    image: str
    size: tuple[int, int]  # width, height
    torch_persons: int
    onnx_persons: int
    paired: int
    unpaired_clear: int  # persons in one answer only that score clearly above the threshold
    box_px: float
    keypoint_px: float
    score: float
    ties: int = 0  # keypoints placed apart at equal heatmap maxima (left out of keypoint_px)
    keypoints: int = 0  # keypoints of the paired persons

    @property
    def ok(self) -> bool:
        return (self.unpaired_clear == 0 and self.box_px <= BOX_TOLERANCE_PX
                and self.keypoint_px <= KEYPOINT_TOLERANCE_PX and self.ties <= max(1.0, TIE_FRACTION * self.keypoints))


def describe_tolerance() -> str:
    return (f"boxes within {BOX_TOLERANCE_PX:g} px, keypoints within {KEYPOINT_TOLERANCE_PX:g} px, every person "
            f"scoring more than {SCORE_MARGIN:g} above the threshold in both, under {TIE_FRACTION:.0%} of the "
            "keypoints tied")


def check_images(folder: Path | None, count: int, scratch: Path, max_pixels: int) -> list[tuple[str, torch.Tensor]]:
    """(name, float 3 x H x W image in [0, 1]) of the first `count` images of `folder` by name; without
    a folder, those of coco/val2017 when it exists, else `count` synthetic sample images made in
    `scratch`. A given folder without images is a UserError."""
    if folder is None:
        folder = coco_paths(DEFAULT_CHECK_ROOT, "val")[0]
        if not _image_files(folder):
            folder = coco_paths(make_sample_dataset(scratch, images=1, val_images=count), "val")[0]
            print(f"check images: {count} synthetic sample images (no {DEFAULT_CHECK_ROOT}/val2017; "
                  "--check-images DIR for real ones)")
    elif not folder.is_dir():
        raise UserError(f"--check-images {folder}: not a folder")
    files = _image_files(folder)[:count]
    if not files:
        raise UserError(f"--check-images {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return [(path.name, read_image(path, max_pixels).float().div_(255)) for path in files]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def pair_persons(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(index in first, index in second) of the persons of two answers that are the same person:
    each of `first`'s, surest first, with the unpaired one of `second` its box overlaps most
    (IoU at least PAIR_IOU)."""
    if not len(first["boxes"]) or not len(second["boxes"]):
        return []
    overlap = box_iou(first["boxes"], second["boxes"])
    pairs, taken = [], set()
    for i in torch.argsort(first["scores"], descending=True).tolist():
        for j in torch.argsort(overlap[i], descending=True).tolist():
            if overlap[i, j] < PAIR_IOU:
                break
            if j not in taken:
                pairs.append((i, j))
                taken.add(j)
                break
    return pairs


def compare_answers(name: str, image: torch.Tensor, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                    score_thresh: float) -> Row:
    """One table row: the persons of `expected` (PyTorch) and `got` (ONNX Runtime) on `image`."""
    pairs = pair_persons(expected, got)
    first, second = [i for i, _ in pairs], [j for _, j in pairs]
    unpaired = torch.cat([_unpaired_scores(expected["scores"], first), _unpaired_scores(got["scores"], second)])
    clear = int((unpaired > score_thresh + SCORE_MARGIN).sum())

    def largest(difference: torch.Tensor) -> float:
        return float(difference.max()) if difference.numel() else 0.0

    keypoint_px = (expected["keypoints"][first][..., :2] - got["keypoints"][second][..., :2]).abs().amax(-1)
    tied = torch.zeros_like(keypoint_px, dtype=torch.bool)
    if "keypoints_scores" in expected:
        score, other = expected["keypoints_scores"][first], got["keypoints_scores"][second]
        tied = (keypoint_px > KEYPOINT_TOLERANCE_PX) & ((score - other).abs() <= TIE_SCORE * (1 + score.abs()))
    return Row(name, (image.shape[2], image.shape[1]), len(expected["scores"]), len(got["scores"]), len(pairs),
               clear, largest((expected["boxes"][first] - got["boxes"][second]).abs()), largest(keypoint_px[~tied]),
               largest((expected["scores"][first] - got["scores"][second]).abs()), int(tied.sum()), keypoint_px.numel())


def _unpaired_scores(scores: torch.Tensor, paired: list[int]) -> torch.Tensor:
    keep = torch.ones(len(scores), dtype=torch.bool)
    keep[paired] = False
    return scores[keep]


@torch.no_grad()
def compare(model: torch.nn.Module, onnx_model, images: Sequence[tuple[str, torch.Tensor]]) -> list[Row]:
    """The PyTorch `model` (float32, evaluation mode) and the ONNX one, a row per image."""
    model.eval()
    rows = []
    for name, image in images:
        expected = model([image])[0]
        rows.append(compare_answers(name, image, expected, onnx_model([image])[0], onnx_model.score_thresh))
    return rows


def format_table(rows: Sequence[Row], score_thresh: float) -> str:
    """The check's table: a line per image, then the verdict with the tolerance."""
    header = (f"{'image':<24} {'size':>9}  {'persons torch/onnx':>18}  {'paired':>6}  {'box px':>8}  "
              f"{'keypoint px':>11}  {'ties':>4}  {'score':>8}")
    lines = [f"ONNX Runtime vs PyTorch (float32, box score threshold {score_thresh:g}):", header]
    for row in rows:
        persons = f"{row.torch_persons}/{row.onnx_persons}"
        note = "" if row.ok else f"  MISMATCH ({row.unpaired_clear} unpaired)" if row.unpaired_clear else "  MISMATCH"
        lines.append(f"{row.image[:24]:<24} {row.size[0]:>4}x{row.size[1]:<4}  {persons:>18}  {row.paired:>6}  "
                     f"{row.box_px:>8.4f}  {row.keypoint_px:>11.4f}  {row.ties:>4}  {row.score:>8.5f}{note}")
    verdict = "match" if all(r.ok for r in rows) else "DIFFER"
    lines.append(f"{verdict}: {describe_tolerance()}")
    return "\n".join(lines)
