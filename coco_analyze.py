"""Why the keypoint AP is what it is: the error taxonomy of Ronchi & Perona, "Benchmarking and
Error Diagnosis in Multi-Instance Pose Estimation" (ICCV 2017), for any keypoint set and OKS sigmas.

Detections are matched to ground-truth persons by pycocotools' own COCOeval matching, at one
low OKS threshold (MATCH_OKS, 0.1), so that badly placed detections are analysed too. Each
labelled joint of a matched person is then one of KINDS, by its keypoint similarity
ks = exp(-d^2 / (2 area (2 sigma)^2)), the per-joint term of OKS:
  good       ks >= 0.85 to its own joint;
  jitter     0.5 <= ks < 0.85 to its own joint;
  inversion  below 0.5 to its own joint, >= 0.5 to the same person's left/right counterpart
             (the keypoint set's flip pairs); tested before swap;
  swap       below 0.5 to its own joint, >= 0.5 to the same joint, or its counterpart, of
             another ground-truth person in the image;
  miss       the rest.
Then the keypoint AP after fixing each error kind alone, as the paper fixes it: a jittered joint
moves to ks 0.85 of its own joint, an inverted or swapped one to the similarity it had to the
joint it was confused with, a missed one to ks 0.5; "scoring" rescores every detection by its
best OKS with a person of its image; "background" drops every detection left unmatched at OKS
0.1. Background false positives and false negatives (persons matched by no detection) are
counted by size and by number of labelled joints. Pure numpy on top of pycocotools.

`analyze` returns the numbers (`KeypointAnalysis`); coco_eval.coco_evaluate(analyze=True)
prints `report` after COCOeval's tables and adds `metrics` to test.py's and train.py's metrics;
`write_pictures` draws them (test.py --analyze, --analyze-examples).
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

import draw
from keypoints import KeypointSet, keypoint_set_of
from media import read_bgr
from utils import DEFAULT_MAX_IMAGE_PIXELS, UserError, write_bytes

MATCH_OKS = 0.1
GOOD_KS = 0.85
JITTER_KS = 0.5
KINDS = ("good", "jitter", "inversion", "swap", "miss")
ERRORS = KINDS[1:]
FIXES = (*ERRORS, "scoring", "background")
UNLABELLED = -1
# COCO's area ranges (pixels of the person's area); keypoint COCOeval reports medium and large.
SIZES = {"small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, math.inf)}
# Detections per image keypoint COCOeval evaluates (its maxDets); the matching looks at the same ones.
MAX_DETECTIONS = int(Params(iouType="keypoints").maxDets[-1])


@dataclass
class MatchedDetection:
    """One detection matched to a ground-truth person at OKS MATCH_OKS."""
    index: int             # its position in the results list
    image_id: int
    gt_id: int
    kinds: np.ndarray      # (K,) index into KINDS; UNLABELLED where the person's joint has no label
    fixed: np.ndarray      # (K, 2): where each joint goes when its error kind is fixed


@dataclass
class Matching:
    """Every evaluated image's detections and persons after COCOeval's matching at MATCH_OKS."""
    matched: list[MatchedDetection] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)           # results matched (also to an ignored person)
    evaluated: list[int] = field(default_factory=list)      # results COCOeval looks at (its maxDets per image)
    background: list[tuple[int, bool]] = field(default_factory=list)  # (result, near a person) left unmatched
    missed: list[dict[str, Any]] = field(default_factory=list)        # persons matched by no detection
    persons: int = 0                                                   # persons COCOeval counts


@dataclass
class KeypointAnalysis:
    keypoint_set: KeypointSet
    counts: np.ndarray     # (K, len(KINDS)) analysed joints per keypoint and kind
    matching: Matching
    ap: float
    ap_if_fixed: dict[str, float]
    false_positive_areas: list[float]

    def metrics(self) -> dict[str, Any]:
        """The JSON of test.py's metrics: keypoint_errors, keypoint_errors_per_keypoint, ap_if_fixed, keypoint_analysis."""
        per_keypoint = {name: fractions(row) for name, row in zip(self.keypoint_set.names, self.counts)}
        total = self.counts.sum(axis=0)
        missed = self.matching.missed
        labelled = [int(sum(v > 0 for v in person["keypoints"][2::3])) for person in missed]
        return {"keypoint_errors": fractions(total), "keypoint_errors_per_keypoint": per_keypoint,
                "ap_if_fixed": dict(self.ap_if_fixed),
                "keypoint_analysis": {
                    "match_oks": MATCH_OKS, "good_ks": GOOD_KS, "jitter_ks": JITTER_KS, "ap": self.ap,
                    "keypoints": int(total.sum()), "persons_matched": len(self.matching.matched),
                    "persons": self.matching.persons, "counts": dict(zip(KINDS, map(int, total))),
                    "costliest": costliest(self.ap, self.ap_if_fixed),
                    "background_false_positives": {
                        "total": len(self.matching.background),
                        "duplicates": sum(near for _, near in self.matching.background),
                        "by_size": size_counts(self.false_positive_areas)},
                    "false_negatives": {"total": len(missed), "by_size": size_counts(p["area"] for p in missed),
                                        "by_labelled_keypoints": joint_count_bins(labelled, self.keypoint_set.num)}}}

    def report(self) -> str:
        """The breakdown as printed after COCOeval's tables."""
        metrics = self.metrics()
        info = metrics["keypoint_analysis"]
        width = max(8, *(len(n) for n in self.keypoint_set.names))
        lines = [f"Keypoint errors (Ronchi & Perona, ICCV 2017): {info['keypoints']} labelled joints of the "
                 f"{info['persons_matched']} ground-truth persons (of {info['persons']}) matched to a detection at "
                 f"OKS >= {MATCH_OKS}; good: ks >= {GOOD_KS} to its own joint, jitter: >= {JITTER_KS}",
                 f"  {'keypoint':<{width}}" + "".join(f"{kind:>11}" for kind in KINDS) + f"{'joints':>8}"]
        rows = [("all", metrics["keypoint_errors"], info["keypoints"])]
        rows += [(name, metrics["keypoint_errors_per_keypoint"][name], int(row.sum()))
                 for name, row in zip(self.keypoint_set.names, self.counts)]
        lines += [f"  {name:<{width}}" + "".join(f"{percent(shares[kind]):>11}" for kind in KINDS) + f"{joints:>8}"
                  for name, shares, joints in rows]
        lines.append(f"Keypoint AP {self.ap:.3f} as it is; with one kind of error fixed:")
        notes = {"scoring": "every detection rescored by its best OKS",
                 "background": f"the {len(self.matching.background)} detections unmatched at OKS {MATCH_OKS} removed"}
        lines += [f"  {kind:<10} {value:.3f} ({value - self.ap:+.3f})" + (f"  {notes[kind]}" if kind in notes else "")
                  for kind, value in self.ap_if_fixed.items()]
        fp, fn = info["background_false_positives"], info["false_negatives"]
        lines.append(f"Background false positives: {fp['total']} detections unmatched at OKS {MATCH_OKS} "
                     f"({fp['duplicates']} of them on a person another detection took); by size: "
                     f"{counts_text(fp['by_size'])}")
        lines.append(f"False negatives: {fn['total']} of {info['persons']} persons matched by no detection; by size: "
                     f"{counts_text(fn['by_size'])}; by labelled joints: {counts_text(fn['by_labelled_keypoints'])}")
        lines.append(costliest_line(metrics))
        return "\n".join(lines)

# --------------------------------------------------------------------------------------
# Keypoint similarity
# --------------------------------------------------------------------------------------
def keypoint_similarity(points: np.ndarray, truth: np.ndarray, labelled: np.ndarray, area: np.ndarray | float,
                        sigmas: np.ndarray) -> np.ndarray:
    """ks of `points` (..., K, 2) to `truth` (..., K, 2), broadcast, with `area` per person of `truth`:
    COCOeval's per-joint term of OKS; NaN where not `labelled`."""
    squared = ((np.asarray(truth, dtype=float) - points) ** 2).sum(axis=-1)
    ks = np.exp(-squared / (2 * (np.asarray(area, dtype=float)[..., None] + np.spacing(1)) * (2 * sigmas) ** 2))
    return np.where(labelled, ks, np.nan)


def distance_at(ks: np.ndarray, area: float, sigmas: np.ndarray) -> np.ndarray:
    """The distance from a joint at which its similarity is `ks` (the inverse of keypoint_similarity)."""
    return np.sqrt(-np.log(np.clip(ks, np.spacing(1), 1.0)) * 2 * (area + np.spacing(1)) * (2 * sigmas) ** 2)


def person_arrays(persons: Sequence[dict[str, Any]], num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy (G, K, 2), labelled (G, K), areas (G,)) of COCO annotations."""
    kps = np.array([p["keypoints"] for p in persons], dtype=float).reshape(len(persons), num, 3)
    return kps[..., :2], kps[..., 2] > 0, np.array([p["area"] for p in persons], dtype=float)


def classify(points: np.ndarray, own: int, xy: np.ndarray, labelled: np.ndarray, areas: np.ndarray,
             sigmas: np.ndarray, flip_index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(kind per joint (K,), fixed positions (K, 2)) of a detection's `points` matched to person
    `own` of the image's persons (xy, labelled, areas)."""
    num = len(sigmas)
    flip = np.array([j if j >= 0 else i for i, j in enumerate(flip_index)])
    has_partner = flip != np.arange(num)
    ks = keypoint_similarity(points, xy, labelled, areas, sigmas)                                   # (G, K)
    ks_flipped = keypoint_similarity(points, xy[:, flip], labelled[:, flip] & has_partner, areas, sigmas)
    others = np.arange(len(xy)) != own
    own_ks, inverted_ks = ks[own], np.nan_to_num(ks_flipped[own])
    swapped_ks = np.nan_to_num(np.concatenate([ks[others], ks_flipped[others]])).max(axis=0, initial=0.0)
    kinds = np.select([own_ks >= GOOD_KS, own_ks >= JITTER_KS, inverted_ks >= JITTER_KS, swapped_ks >= JITTER_KS],
                      [0, 1, 2, 3], default=4)
    kinds[~labelled[own]] = UNLABELLED
    # The similarity each joint gets back when its error is fixed, as the paper fixes it.
    target = np.choose(np.maximum(kinds, 0), [np.ones(num), np.full(num, GOOD_KS), inverted_ks, swapped_ks,
                                              np.full(num, JITTER_KS)])
    offset = points - xy[own]
    norm = np.linalg.norm(offset, axis=1, keepdims=True)
    direction = np.where(norm > 0, offset / np.maximum(norm, np.spacing(1)), [1.0, 0.0])
    fixed = xy[own] + direction * distance_at(target, float(areas[own]), sigmas)[:, None]
    return kinds, np.where(kinds[:, None] <= 0, points, fixed)  # good and unlabelled joints stay


def best_oks(results: Sequence[dict[str, Any]], coco_gt: COCO, image_ids: Iterable[int],
             sigmas: np.ndarray) -> np.ndarray:
    """Each detection's best OKS with a person COCOeval counts in its image (0 without one)."""
    num = len(sigmas)
    best = np.zeros(len(results))
    by_image: dict[int, list[int]] = {}
    for i, r in enumerate(results):
        by_image.setdefault(int(r["image_id"]), []).append(i)
    for image_id in set(image_ids) & set(by_image):
        persons = [p for p in coco_gt.imgToAnns.get(image_id, []) if counted(p)]
        if not persons:
            continue
        xy, labelled, areas = person_arrays(persons, num)
        points = np.array([results[i]["keypoints"] for i in by_image[image_id]], dtype=float).reshape(-1, 1, num, 3)
        ks = keypoint_similarity(points[..., :2], xy, labelled, areas, sigmas)                       # (D, G, K)
        oks = np.nansum(ks, axis=-1) / np.maximum(labelled.sum(axis=-1), 1)
        best[by_image[image_id]] = oks.max(axis=1)
    return best


def counted(person: dict[str, Any]) -> bool:
    """A person keypoint COCOeval counts: not a crowd, with a labelled joint."""
    return not person.get("iscrowd") and person.get("num_keypoints", 0) > 0


# --------------------------------------------------------------------------------------
# Matching, then the joints of each match
# --------------------------------------------------------------------------------------
def load_results(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> COCO:
    """The results as pycocotools' detections, each remembering its position in `results`."""
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes([{**r, "result_index": i} for i, r in enumerate(results)])


def evaluator(coco_gt: COCO, coco_dt: COCO, image_ids: Sequence[int], sigmas: np.ndarray) -> COCOeval:
    """Keypoint COCOeval over `image_ids` with these sigmas (pycocotools' own thresholds and ranges)."""
    evaluation = COCOeval(coco_gt, coco_dt, "keypoints")
    evaluation.params.imgIds = list(image_ids)
    evaluation.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=float)
    return evaluation


def match(coco_gt: COCO, coco_dt: COCO, image_ids: Sequence[int], sigmas: np.ndarray,
          keypoint_set: KeypointSet) -> Matching:
    """COCOeval's matching at OKS MATCH_OKS, over all sizes, then the kind of every matched joint."""
    evaluation = evaluator(coco_gt, coco_dt, image_ids, sigmas)
    evaluation.params.iouThrs = np.array([MATCH_OKS])
    evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    evaluation.params.maxDets = [MAX_DETECTIONS]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
    matching = Matching()
    for image in filter(None, evaluation.evalImgs):
        image_id = image["image_id"]
        persons = [p for p in coco_gt.imgToAnns.get(image_id, []) if not p.get("iscrowd") and "keypoints" in p]
        position = {p["id"]: k for k, p in enumerate(persons)}
        xy, labelled, areas = person_arrays(persons, keypoint_set.num)
        oks = evaluation.ious[image_id, image["category_id"]]
        for d, (dt_id, gt_id) in enumerate(zip(image["dtIds"], image["dtMatches"][0].astype(int))):
            detection = coco_dt.anns[dt_id]
            matching.evaluated.append(detection["result_index"])
            if gt_id:
                matching.kept.append(detection["result_index"])
            if gt_id and not image["dtIgnore"][0][d]:
                points = np.array(detection["keypoints"], dtype=float).reshape(-1, 3)[:, :2]
                kinds, fixed = classify(points, position[gt_id], xy, labelled, areas, sigmas, keypoint_set.flip_index)
                matching.matched.append(MatchedDetection(detection["result_index"], image_id, gt_id, kinds, fixed))
            elif not gt_id:
                near = len(oks) > 0 and float(np.max(oks[d])) >= MATCH_OKS  # a person another detection took
                matching.background.append((detection["result_index"], near))
        for gt_id, taken, ignored in zip(image["gtIds"], image["gtMatches"][0], image["gtIgnore"]):
            if not ignored:
                matching.persons += 1
                if not taken:
                    matching.missed.append(coco_gt.anns[gt_id])
    return matching


# --------------------------------------------------------------------------------------
# The AP with each error fixed
# --------------------------------------------------------------------------------------
def keypoint_ap(coco_gt: COCO, results: Sequence[dict[str, Any]], image_ids: Sequence[int], sigmas: np.ndarray) -> float:
    """COCOeval's keypoint AP (its first `stats` number) of `results`."""
    if not results:  # loadRes refuses an empty list; COCOeval gives 0, or -1 with no person to find
        persons = [p for i in image_ids for p in coco_gt.imgToAnns.get(i, [])]
        return 0.0 if any(counted(p) for p in persons) else -1.0
    evaluation = evaluator(coco_gt, load_results(coco_gt, results), image_ids, sigmas)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # every OKS threshold, area "all", maxDets 20
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def entry(result: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A fresh results entry with `changes` (loadRes writes into the dicts it gets)."""
    kept = {k: result[k] for k in ("image_id", "category_id", "bbox", "keypoints", "score") if k in result}
    return {**kept, **changes}


def fixed_results(results: Sequence[dict[str, Any]], matching: Matching, kind: str) -> list[dict[str, Any]]:
    """The evaluated detections with the joints of error `kind` fixed (the others as they are)."""
    moved = {}
    code = KINDS.index(kind)
    for m in matching.matched:
        wrong = m.kinds == code
        if wrong.any():
            kps = np.array(results[m.index]["keypoints"], dtype=float).reshape(-1, 3)
            kps[wrong, :2] = m.fixed[wrong]
            moved[m.index] = kps.reshape(-1).tolist()
    return [entry(results[i], **({"keypoints": moved[i]} if i in moved else {})) for i in matching.evaluated]


def ap_if_fixed(coco_gt: COCO, results: Sequence[dict[str, Any]], image_ids: Sequence[int], sigmas: np.ndarray,
                matching: Matching) -> dict[str, float]:
    """The keypoint AP with each of FIXES fixed alone."""
    aps = {kind: keypoint_ap(coco_gt, fixed_results(results, matching, kind), image_ids, sigmas) for kind in ERRORS}
    scores = best_oks(results, coco_gt, image_ids, sigmas)
    aps["scoring"] = keypoint_ap(coco_gt, [entry(r, score=float(s)) for r, s in zip(results, scores)],
                                 image_ids, sigmas)
    aps["background"] = keypoint_ap(coco_gt, [entry(results[i]) for i in matching.kept], image_ids, sigmas)
    return aps


def analyze(coco_gt: COCO, results: Sequence[dict[str, Any]], image_ids: Sequence[int],
            sigmas: Sequence[float]) -> KeypointAnalysis:
    """The whole breakdown of `results` on the images `image_ids` of `coco_gt`, with these OKS sigmas."""
    sigmas = np.asarray(sigmas, dtype=float)
    keypoint_set = keypoint_set_of(coco_gt.dataset, "the annotation file")[0]
    image_ids = sorted(set(int(i) for i in image_ids))
    if results:
        matching = match(coco_gt, load_results(coco_gt, results), image_ids, sigmas, keypoint_set)
    else:
        matching = Matching(missed=[p for i in image_ids for p in coco_gt.imgToAnns.get(i, []) if counted(p)])
        matching.persons = len(matching.missed)
    counts = np.zeros((keypoint_set.num, len(KINDS)), dtype=int)
    for m in matching.matched:
        labelled = m.kinds != UNLABELLED
        np.add.at(counts, (np.flatnonzero(labelled), m.kinds[labelled]), 1)
    ap = keypoint_ap(coco_gt, results, image_ids, sigmas)
    fixes = ap_if_fixed(coco_gt, results, image_ids, sigmas, matching) if results else dict.fromkeys(FIXES, ap)
    areas = [box_area(results[i]) for i, _ in matching.background]
    return KeypointAnalysis(keypoint_set, counts, matching, ap, fixes, areas)


def box_area(result: dict[str, Any]) -> float:
    """A detection's area as COCOeval takes it: its box, else the extent of its keypoints."""
    if result.get("bbox"):
        return float(result["bbox"][2] * result["bbox"][3])
    x, y = result["keypoints"][0::3], result["keypoints"][1::3]
    return float((max(x) - min(x)) * (max(y) - min(y)))


# --------------------------------------------------------------------------------------
# Counting and saying it
# --------------------------------------------------------------------------------------
def fractions(counts: np.ndarray) -> dict[str, float | None]:
    """{kind: fraction of the analysed joints}; None for each when there are none."""
    total = int(np.sum(counts))
    return {kind: (float(n) / total if total else None) for kind, n in zip(KINDS, counts)}


def costliest(ap: float, fixes: dict[str, float]) -> str | None:
    """The fix that gains the most AP (None when none gains any)."""
    name = max(fixes, key=lambda k: fixes[k] - ap)
    return name if fixes[name] - ap > 1e-9 else None


def size_counts(areas: Iterable[float]) -> dict[str, int]:
    counts = dict.fromkeys(SIZES, 0)
    for area in areas:
        counts[next(name for name, (low, high) in SIZES.items() if low <= area < high)] += 1
    return counts


def joint_count_bins(labelled: Iterable[int], num: int) -> dict[str, int]:
    """Counts by number of labelled joints in four bins (COCO's 17: 1-5, 6-10, 11-15, 16-17)."""
    step = max(1, math.ceil(num / 4))
    edges = [(low, min(low + step - 1, num)) for low in range(1, num + 1, step)]
    names = [f"{low}-{high}" if low != high else str(low) for low, high in edges]
    counts = dict.fromkeys(names, 0)
    for n in labelled:
        counts[next(name for name, (low, high) in zip(names, edges) if low <= max(n, 1) <= high)] += 1
    return counts


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def costliest_line(metrics: dict[str, Any]) -> str:
    info = metrics["keypoint_analysis"]
    name = info["costliest"]
    if name is None:
        return "Costliest error: none (fixing any one kind gains no AP)"
    gain = metrics["ap_if_fixed"][name] - info["ap"]
    return f"Costliest error: {name} (fixing it alone: keypoint AP {info['ap']:.3f} -> {metrics['ap_if_fixed'][name]:.3f}, {gain:+.3f})"


def summary_line(metrics: dict[str, Any]) -> str:
    """One line for make demo: the error fractions and the costliest error."""
    errors = metrics.get("keypoint_errors")
    if not errors:
        return "keypoint errors: not analysed (no --analyze, or no keypoints to evaluate)"
    if errors["good"] is None:
        return f"keypoint errors: no ground-truth person matched a detection at OKS {MATCH_OKS}"
    shares = ", ".join(f"{kind} {percent(errors[kind])}" for kind in KINDS)
    return f"keypoint errors: {shares}; {costliest_line(metrics)[0].lower()}{costliest_line(metrics)[1:]}"


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------
def picture_paths(metrics_path: str | Path) -> tuple[Path, Path]:
    """(the PNG, the examples' folder) beside a metrics file: metrics.json -> metrics_analysis.png, metrics_examples/."""
    path = Path(metrics_path)
    return path.with_name(f"{path.stem}_analysis.png"), path.with_name(f"{path.stem}_examples")


def worst_images(matching: Matching, count: int) -> list[tuple[int, int, int]]:
    """(image id, inversions, swaps) of the `count` images with the most inversions and swaps (some of either)."""
    found: dict[int, list[int]] = {}
    for m in matching.matched:
        tally = found.setdefault(m.image_id, [0, 0])
        tally[0] += int((m.kinds == KINDS.index("inversion")).sum())
        tally[1] += int((m.kinds == KINDS.index("swap")).sum())
    ranked = sorted(found.items(), key=lambda item: (-sum(item[1]), item[0]))
    return [(image_id, inv, swap) for image_id, (inv, swap) in ranked if inv + swap][:count]


def write_pictures(metrics: dict[str, Any], coco_gt: COCO, results: Sequence[dict[str, Any]], metrics_path: str | Path,
                   examples: int = 0, image_dir: str | Path | None = None, image_ids: Iterable[int] | None = None,
                   max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> list[Path]:
    """The analysis picture beside `metrics_path`, and with `examples` the images with the most
    inversions and swaps (read from `image_dir`), ground truth beside detections."""
    picture, folder = picture_paths(metrics_path)
    info = metrics["keypoint_analysis"]
    written = [draw.plot_keypoint_errors(picture, metrics["keypoint_errors_per_keypoint"], metrics["keypoint_errors"],
                                         info["ap"], metrics["ap_if_fixed"],
                                         f"{info['keypoints']} joints, {info['persons_matched']} persons")]
    if examples:
        sigmas = np.array(list(metrics["oks_sigmas"]["sigmas"].values()), dtype=float)
        keypoint_set = keypoint_set_of(coco_gt.dataset, "the annotation file")[0]
        ids = sorted(set(image_ids) if image_ids is not None else {int(r["image_id"]) for r in results})
        matching = match(coco_gt, load_results(coco_gt, results), ids, sigmas, keypoint_set) if results else Matching()
        worst = worst_images(matching, examples)
        for rank, (image_id, _, _) in enumerate(worst, 1):
            image = example_image(coco_gt, results, matching, image_id, Path(image_dir or "."), keypoint_set, max_pixels)
            name = folder / f"{rank:02d}_{Path(coco_gt.imgs[image_id]['file_name']).stem}.jpg"
            ok, data = cv2.imencode(".jpg", image)
            if not ok:
                raise UserError(f"cannot encode {name.name} as JPEG")
            written.append(write_bytes(name, data.tobytes()))
        if len(worst) < examples:
            print(f"note: {len(worst)} image(s) have an inversion or a swap; --analyze-examples {examples} wrote those")
    return written


def example_image(coco_gt: COCO, results: Sequence[dict[str, Any]], matching: Matching, image_id: int,
                  image_dir: Path, keypoint_set: KeypointSet, max_pixels: int) -> np.ndarray:
    """One image's ground truth beside its matched detections, their wrong joints ringed."""
    path = image_dir / coco_gt.imgs[image_id]["file_name"]
    if not path.is_file():
        raise UserError(f"--analyze-examples needs the images: {path} not found (give --images or --data-root)")
    image = read_bgr(str(path), max_pixels)
    if image is None:
        raise UserError(f"--analyze-examples: cannot read {path} as an image")
    truth = [(xyxy(p["bbox"]), np.array(p["keypoints"], dtype=float).reshape(-1, 3))
             for p in coco_gt.imgToAnns.get(image_id, []) if counted(p)]
    shown, tally = [], Counter()
    for m in (m for m in matching.matched if m.image_id == image_id):
        tally.update(KINDS[k] for k in m.kinds if k >= 0)
        result = results[m.index]
        kps = np.array(result["keypoints"], dtype=float).reshape(-1, 3)
        kps[:, 2] = 1.0
        box = xyxy(result["bbox"]) if result.get("bbox") else np.r_[kps[:, :2].min(0), kps[:, :2].max(0)]
        shown.append((box, kps, float(result["score"]), [KINDS[k] if k >= 0 else None for k in m.kinds]))
    caption = ", ".join(f"{tally[kind]} {kind} ({color})" for kind, color in
                        (("inversion", "magenta"), ("swap", "red"), ("miss", "yellow")))
    return draw.draw_error_example(image, truth, shown, keypoint_set,
                                   (f"ground truth, image {image_id}", f"detections matched at OKS {MATCH_OKS}: {caption}"))


def xyxy(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], dtype=float)
