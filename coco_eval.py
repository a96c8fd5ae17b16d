"""COCO evaluation, shared by train.py (each epoch) and test.py: model outputs to COCO results
entries, and pycocotools' COCOeval for `bbox` and `keypoints` with its standard tables.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import coco_analyze
from dataset import base_dataset, collate_fn
from keypoints import COCO17, KeypointSet, keypoint_set_of
from models import at_inference_size
from precision import autocast
from utils import UserError, all_gather_objects, oks_sigmas_arg

# COCOeval's `stats`, in order.
BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

# Images per forward pass and process in test.py (its default) and train.py's per-epoch AP, so
# that both give the same numbers for a checkpoint: a batch is padded to its largest image, which
# moves the outputs a little. One, as torchvision's reference evaluates.
TEST_BATCH_SIZE = 1


# pycocotools' per-joint OKS sigmas of COCO's 17 person keypoints, from pycocotools itself.
COCO_OKS_SIGMAS: dict[str, float] = dict(zip(COCO17.names, Params(iouType="keypoints").kpt_oks_sigmas.tolist()))


# Joints of other sets that COCO does not name get this sigma when --oks-sigmas is not given:
# between COCO's face (0.025-0.035) and limb (0.062-0.107) sigmas, so a stated middle value.
DEFAULT_OKS_SIGMA = 0.05


def add_oks_sigmas_flag(group: argparse._ArgumentGroup) -> None:
    """--oks-sigmas, for test.py and train.py's evaluation alike."""
    group.add_argument("--oks-sigmas", type=oks_sigmas_arg, default=None, metavar="SIGMAS",
                       help="per-keypoint OKS sigmas of the keypoint AP, in keypoint order: numbers (0.026,0.025,...) "
                            "or a JSON file (a list, or {name: sigma}); default: pycocotools' for COCO's 17, for "
                            f"another set COCO's where a name is COCO's, else {DEFAULT_OKS_SIGMA}, with a warning")


def add_analyze_flag(group: argparse._ArgumentGroup) -> None:
    """--analyze, for test.py and train.py's evaluation alike."""
    group.add_argument("--analyze", action="store_true",
                       help="after COCOeval's tables, break the keypoint AP down (Ronchi & Perona, ICCV 2017): each "
                            "labelled joint of the persons matched to a detection at OKS >= "
                            f"{coco_analyze.MATCH_OKS} is good, jitter, inversion, swap or miss, overall and per "
                            "keypoint; the AP with each error fixed, background false positives, false negatives; "
                            "saved in the metrics as keypoint_errors, keypoint_errors_per_keypoint, ap_if_fixed")


def oks_sigmas(keypoint_set: KeypointSet, given: list[float] | dict[str, float] | None = None,
               verbose: bool = True) -> tuple[list[float], str]:
    """(per-keypoint OKS sigmas, where they come from) for evaluating `keypoint_set`.

    COCO's 17: pycocotools' own. Any other set: `given` (--oks-sigmas: a list in keypoint order,
    or {name: sigma}); else COCO's sigma for each joint named as in COCO and DEFAULT_OKS_SIGMA
    for the rest, with a printed warning, since keypoint AP depends on them.
    """
    if given is None and keypoint_set == COCO17:
        return list(COCO_OKS_SIGMAS.values()), "pycocotools (COCO's 17 person keypoints)"
    if isinstance(given, dict):
        missing = [n for n in keypoint_set.names if n not in given]
        if missing:
            raise UserError(f"--oks-sigmas has no sigma for keypoint {missing[0]!r} "
                            f"({len(missing)} of {keypoint_set.num} missing)")
        return [given[n] for n in keypoint_set.names], "--oks-sigmas"
    if given is not None:
        if len(given) != keypoint_set.num:
            raise UserError(f"--oks-sigmas gives {len(given)} sigmas for {keypoint_set.describe()}")
        return list(given), "--oks-sigmas"
    sigmas = [COCO_OKS_SIGMAS.get(n, DEFAULT_OKS_SIGMA) for n in keypoint_set.names]
    from_coco = sum(n in COCO_OKS_SIGMAS for n in keypoint_set.names)
    others = keypoint_set.num - from_coco
    used = ("COCO's, by name" if not others else f"{DEFAULT_OKS_SIGMA} for each" if not from_coco
            else f"COCO's for the {from_coco} named as in COCO, {DEFAULT_OKS_SIGMA} for the other {others}")
    if verbose:
        print(f"warning: no OKS sigmas given for {keypoint_set.describe()}: using {used}; keypoint AP depends "
              "on them, give the set's own with --oks-sigmas")
    return sigmas, f"default (COCO's where the name is COCO's, else {DEFAULT_OKS_SIGMA})"


def outputs_to_coco_results(outputs: Iterable[dict[str, torch.Tensor]], image_ids: Iterable[int],
                            category_id: int = 1) -> list[dict[str, Any]]:
    """Model outputs -> COCO results entries (bbox as x,y,w,h and the flat keypoint list).

    Keypoint visibility in results is unused by COCOeval; we write 1 as detectron2 does. Every
    entry carries its box, so pycocotools takes a detection's area from the box, which decides
    the keypoint APm/APl ranges: the original project's and detectron2's convention (torchvision's
    references leave the box out, and the area comes from the keypoints' extent).
    """
    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        if len(boxes) == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        keypoints = output.get("keypoints")
        if keypoints is not None:
            keypoints = keypoints.detach().float().cpu().clone()
            keypoints[..., 2] = 1.0
            keypoints = keypoints.reshape(len(boxes), -1).tolist()
        for i in range(len(boxes)):
            entry = {"image_id": int(image_id), "category_id": category_id,
                     "bbox": [round(v, 2) for v in xywh[i]], "score": round(scores[i], 5)}
            if keypoints is not None:
                entry["keypoints"] = [round(v, 2) for v in keypoints[i]]
            results.append(entry)
    return results


@torch.inference_mode()
def predict(model: torch.nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32",
            progress: bool = True, desc: str = "predict", category_id: int = 1) -> tuple[list[dict[str, Any]], list[int]]:
    """Run `model` over a loader of (images, targets) batches.

    Returns (COCO results entries, the image ids seen), so that evaluation restricted to
    those ids is correct for a --limit subset or a torchrun shard.
    """
    model.eval()
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    for images, targets in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True):
        images = [img.to(device, non_blocking=True) for img in images]
        with autocast(device, precision):  # fp32: off; bf16, fp16: autocast (precision.select)
            outputs = model(images)
        ids = [int(t["image_id"]) for t in targets]
        results.extend(outputs_to_coco_results(outputs, ids, category_id))
        image_ids.extend(ids)
    return results, image_ids


def coco_evaluate(coco_gt, results: list[dict[str, Any]], image_ids: Iterable[int] | None = None,
                  iou_types: Sequence[str] = ("bbox", "keypoints"), verbose: bool = True,
                  sigmas: list[float] | dict[str, float] | None = None, analyze: bool = False) -> dict[str, Any]:
    """COCOeval for each iou type; prints the standard tables when verbose; with `analyze`, the
    keypoint error breakdown after them (coco_analyze), its numbers added to the metrics.

    Returns {"bbox": {"AP": ..., ...}, "keypoints": {...}} with COCOeval's stats in order, and
    when keypoints were evaluated "oks_sigmas": {"source": ..., "sigmas": {name: sigma}}, the
    sigmas COCOeval used (`oks_sigmas` of the file's keypoint set and `sigmas`, --oks-sigmas):
    exactly what pycocotools computes for these detections (loaded once with `loadRes`, one
    COCOeval per iou type). `image_ids` restricts evaluation to those images (a --limit
    subset); default: every image of `coco_gt`. Where pycocotools itself would crash:
      * no detections at all: COCOeval runs on an empty detection set, so each metric is 0
        (-1 where no ground truth falls in that area range), which is what the definition gives;
      * results without boxes or keypoints, or ground truth without labelled keypoints: that
        iou type is skipped with a message and its metrics are all -1 (COCOeval's "no data");
      * results naming images that `coco_gt` lacks, keypoint counts that differ from the ground
        truth's, annotations missing a field COCOeval reads: UserError.
    """
    names = {"bbox": BBOX_METRICS, "keypoints": KEYPOINT_METRICS}
    gt_anns = coco_gt.dataset.get("annotations") or []
    if not isinstance(coco_gt.dataset.get("categories"), list):
        raise UserError("the annotation file has no 'categories' list; COCOeval needs it")
    for ann in gt_anns:
        missing = [k for k in ("area", "iscrowd") if k not in ann]
        if missing:
            raise UserError(f"annotation {ann.get('id')} of the annotation file has no '{missing[0]}'; "
                            "COCOeval needs 'area' and 'iscrowd' on every annotation")
    img_ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise UserError(f"results name image_id {unknown[0]} which the annotation file does not have "
                        f"({len(unknown)} unknown id(s))")
    gt_keypoints = keypoint_numbers(coco_gt)
    if results and "keypoints" in results[0] and gt_keypoints and len(results[0]["keypoints"]) != gt_keypoints:
        raise UserError(f"results have {len(results[0]['keypoints']) // 3} keypoints per person, "
                        f"the annotation file {gt_keypoints // 3}")

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools chats about timing
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to each dict
        else:  # loadRes refuses an empty list; COCOeval itself handles an empty detection set
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset.get("images", [])), "annotations": [],
                               "categories": copy.deepcopy(coco_gt.dataset["categories"])}
            coco_dt.createIndex()
    if not results and img_ids and verbose:
        print("no detections: every person in the ground truth counts as missed")

    metrics: dict[str, Any] = {}
    for iou_type in iou_types:
        reason = skip_reason(iou_type, img_ids, results, gt_anns)
        if reason:
            if verbose:
                print(f"Evaluation for *{iou_type}*: skipped, {reason}")
            metrics[iou_type] = {name: -1.0 for name in names[iou_type]}
            continue
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = img_ids
        if iou_type == "keypoints":
            sigma_record = set_oks_sigmas(evaluator, coco_gt, sigmas, verbose)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        if verbose:
            print(f"Evaluation for *{iou_type}*:")
            evaluator.summarize()
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.summarize()
        metrics[iou_type] = {name: float(v) for name, v in zip(names[iou_type], evaluator.stats)}
        if iou_type == "keypoints":
            metrics["oks_sigmas"] = sigma_record
    if analyze:
        metrics.update(analyze_keypoints(coco_gt, results, img_ids, metrics, verbose))
    return metrics


def analyze_keypoints(coco_gt, results: list[dict[str, Any]], img_ids: list[int], metrics: dict[str, Any],
                      verbose: bool) -> dict[str, Any]:
    """coco_analyze's breakdown of the keypoint AP just computed, with its sigmas; printed when verbose."""
    if "oks_sigmas" not in metrics:
        if verbose:
            print("Keypoint error analysis: skipped, there is no keypoint AP to break down")
        return {}
    analysis = coco_analyze.analyze(coco_gt, results, img_ids, list(metrics["oks_sigmas"]["sigmas"].values()))
    if verbose:
        print(analysis.report())
    return analysis.metrics()


def set_oks_sigmas(evaluator: COCOeval, coco_gt, sigmas: list[float] | dict[str, float] | None,
                   verbose: bool) -> dict[str, Any]:
    """Give COCOeval, through its params, the OKS sigmas of the ground truth's keypoint set;
    returns the record for the metrics: {"source": ..., "sigmas": {name: sigma}}."""
    keypoint_set = keypoint_set_of(coco_gt.dataset, "the annotation file")[0]
    used, source = oks_sigmas(keypoint_set, sigmas, verbose)
    evaluator.params.kpt_oks_sigmas = np.array(used)
    return {"source": source, "sigmas": dict(zip(keypoint_set.names, used))}


def skip_reason(iou_type: str, img_ids: list[int], results: list[dict[str, Any]], gt_anns: list[dict]) -> str | None:
    """Why COCOeval cannot evaluate `iou_type` here (it would crash), or None when it can."""
    if not img_ids:
        return "no images to evaluate"
    if iou_type == "bbox" and results and "bbox" not in results[0]:
        return "the results have no boxes"
    if iou_type != "keypoints":
        return None
    if results and "keypoints" not in results[0]:
        return "the results have no keypoints"
    if not any(a.get("keypoints") for a in gt_anns):
        return "the annotation file has no keypoints"
    if not all("num_keypoints" in a for a in gt_anns):
        return "the annotation file lacks 'num_keypoints' on some annotations"
    if not any(a["num_keypoints"] > 0 for a in gt_anns):
        return "the annotation file has no labelled keypoints"
    return None


def keypoint_numbers(coco_gt: COCO) -> int | None:
    """How many numbers (x, y, v per keypoint) a person's `keypoints` holds in the annotation file."""
    return next((len(a["keypoints"]) for a in coco_gt.dataset.get("annotations") or [] if a.get("keypoints")), None)


def _batch_shard(length: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """Dataset indices of `rank`: whole batches, batch b going to rank b % world_size."""
    return [i for start in range(rank * batch_size, length, world_size * batch_size)
            for i in range(start, min(start + batch_size, length))]


def evaluate_dataset(model: torch.nn.Module, dataset, device: torch.device, batch_size: int = TEST_BATCH_SIZE,
                     workers: int = 2, precision: str = "fp32", verbose: bool = True, desc: str = "eval",
                     sigmas: list[float] | dict[str, float] | None = None,
                     analyze: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Predict over `dataset` (a CocoKeypoints or a Subset of one) and run COCOeval (with `analyze`,
    the keypoint error breakdown too: coco_evaluate).

    The one evaluation of test.py and of train.py's epochs: the model runs at its inference size
    (`at_inference_size`: the largest of its training sizes, where test.py loads its checkpoint),
    `batch_size` images per pass and process, in `precision` (float32 by default). With the defaults, these are
    the numbers test.py prints for the model's checkpoint.

    Under torchrun every rank predicts its own shard and rank 0 merges and evaluates; other
    ranks get ({}, []). Shards are made of whole batches, so every batch, hence every output,
    is the one a single process computes (a batch is padded to its largest image, which moves
    the outputs a little), and the merged results come back in dataset order: the numbers and
    the results list equal a single-process run's with the same batch size.
    """
    base = base_dataset(dataset)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    shard = Subset(dataset, _batch_shard(len(dataset), batch_size, rank, world)) if world > 1 else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_fn, pin_memory=device.type == "cuda")
    with at_inference_size(model):
        results, image_ids = predict(model, loader, device, precision=precision, progress=verbose and rank == 0,
                                     desc=desc, category_id=base.category_id)
    gathered = all_gather_objects((results, image_ids))
    if rank != 0:
        return {}, []
    position = {image_id: index for r, (_, ids) in enumerate(gathered)
                for index, image_id in zip(_batch_shard(len(dataset), batch_size, r, world), ids)}
    image_ids = sorted(position, key=position.__getitem__)
    results = sorted((x for part, _ in gathered for x in part), key=lambda x: position[x["image_id"]])  # stable
    return coco_evaluate(base.coco, results, image_ids, verbose=verbose, sigmas=sigmas, analyze=analyze), results


def format_metrics_line(metrics: dict[str, dict[str, float]]) -> str:
    """`box AP 0.534 | keypoint AP 0.642` for logs."""
    parts = []
    for key, label in (("bbox", "box AP"), ("keypoints", "keypoint AP")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]['AP']:.3f}")
    return " | ".join(parts)
