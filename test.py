"""Evaluate a Keypoint R-CNN on COCO val2017 (or any COCO-format set) with pycocotools.

Prints COCOeval's standard tables for `bbox` (12 lines) and `keypoints` (10 lines), writes the
detections in the COCO results format and the metrics as JSON. The numbers are exactly the
ones pycocotools computes for the same detections: `--results FILE` re-evaluates a saved
results file (ours or anyone's) without a model and gives the same tables.

Usage:
    python test.py                                    # newest e*_b*_lr*_m*.pth here or in runs/train/*/, else COCO weights
    python test.py --weights e42_b8_lr0.02_m0.9.pth   # our checkpoint or a raw torchvision state_dict
    python test.py --weights coco --data-root /data/coco --batch-size 4 --precision fp16   # on a GPU
    python test.py --ann-file my/annotations.json --images my/images --weights best.pth
    python test.py --limit 100                        # only the first 100 images (sorted by id)
    python test.py --results runs/test/results.json   # evaluate a results file, no model
    python test.py --results runs/test/results.json --analyze --analyze-examples 8   # why the AP is what it is
    torchrun --nproc_per_node=4 test.py --weights e42_b8_lr0.02_m0.9.pth

Outputs (rank 0 only under torchrun): runs/test/results.json and runs/test/metrics.json by
default; metrics.json holds {"bbox": {"AP", "AP50", ..., "ARl"}, "keypoints": {"AP", ..., "ARl"}}
with COCOeval's `stats` in order (-1 where COCOeval has no data, e.g. no labelled keypoints),
and "oks_sigmas": {"source", "sigmas": {keypoint name: sigma}}, the sigmas of the keypoint AP.
--analyze adds the keypoint error breakdown (coco_analyze, docs/analysis.md): "keypoint_errors",
"keypoint_errors_per_keypoint", "ap_if_fixed", "keypoint_analysis", and its picture metrics_analysis.png.

Any keypoint set (the annotation file's category `keypoints`) is evaluated: COCO's 17 with
pycocotools' sigmas, another set with --oks-sigmas (numbers or a JSON file) or, with a
warning, COCO's sigma for each joint named as in COCO and 0.05 for the rest:
    python test.py --ann-file my/val.json --images my/val --weights best.pth --oks-sigmas my/sigmas.json
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

import coco_analyze
import coco_eval
import keypoints
import models
import onnx_model
import precision
import roi_align
import runs
import utils
from dataset import CocoKeypoints, base_dataset, coco_paths, first_images, load_coco

DEFAULT_RESULTS = "runs/test/results.json"
DEFAULT_METRICS = "runs/test/metrics.json"
CUDA_PRECISION = "fp32"  # what --precision auto is on CUDA: torchvision's reference evaluates in float32


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="COCO bbox and keypoint evaluation (pycocotools COCOeval) of a Keypoint R-CNN.",
        epilog="Exit status: 0 when the tables were printed (also for an empty results file: every "
               "metric is then 0, as COCOeval defines it), 1 with a one-line error otherwise.")
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", default="coco",
                      help="COCO layout root; evaluates val2017/ with annotations/person_keypoints_val2017.json "
                           "(default: coco)")
    data.add_argument("--ann-file", type=Path, default=None,
                      help="a COCO-format annotation file (default: the one under --data-root)")
    data.add_argument("--images", type=Path, default=None,
                      help="the folder of the images --ann-file lists (default: val2017/ under --data-root); "
                           "images are read as stored, EXIF orientation not applied (COCO's labels refer to "
                           "the stored pixels; detect.py reads them the same way)")
    data.add_argument("--limit", type=utils.positive_int, default=None, metavar="N",
                      help="evaluate only the first N images (in image-id order)")
    utils.add_max_image_pixels_flag(data)
    coco_eval.add_oks_sigmas_flag(data)

    model = parser.add_argument_group("model")
    models.add_model_flags(model)

    run = parser.add_argument_group("inference")
    run.add_argument("--batch-size", type=utils.positive_int, default=coco_eval.TEST_BATCH_SIZE,
                     help="images per forward pass and per GPU; larger is faster on a GPU, but a batch is padded "
                          f"to its largest image, which can move the last digit; {coco_eval.TEST_BATCH_SIZE} (default) "
                          "matches torchvision's reference and train.py's per-epoch AP")
    run.add_argument("--workers", "-j", type=utils.nonnegative_int, default=2, help="data-loading processes (default: 2)")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N; under torchrun each rank uses its own GPU")
    precision.add_inference_flags(run, cuda_default=CUDA_PRECISION)
    onnx_model.add_runtime_flag(run)

    io = parser.add_argument_group("results files")
    io.add_argument("--results", type=Path, default=None, metavar="FILE",
                    help="evaluate this COCO results file (a JSON list of detections) instead of running a model")
    io.add_argument("--save-results", default=DEFAULT_RESULTS, metavar="FILE",
                    help=f"write the detections here in the COCO results format (default: {DEFAULT_RESULTS}; "
                         "'' to skip; model runs only)")
    io.add_argument("--save-metrics", default=DEFAULT_METRICS, metavar="FILE",
                    help=f"write the metrics here as JSON (default: {DEFAULT_METRICS}; '' to skip)")

    analysis = parser.add_argument_group("error analysis (docs/analysis.md)")
    coco_eval.add_analyze_flag(analysis)
    analysis.add_argument("--analyze-examples", type=utils.positive_int, default=0, metavar="N",
                          help="with --analyze (implied): also draw the N images with the most inversions and swaps, "
                               "ground truth beside the detections, into METRICS_examples/ beside the metrics (the "
                               "analysis picture is METRICS_analysis.png; in runs/test/ with --save-metrics ''); with "
                               "--results this needs the images (--data-root or --images)")
    args = parser.parse_args(argv)
    args.analyze = args.analyze or bool(args.analyze_examples)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the evaluation; returns the metrics ({} on ranks other than 0 under torchrun)."""
    args = parse_args(argv)
    with utils.cli_errors():
        return run(args)


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    default_images, default_ann = coco_paths(args.data_root, "val")
    ann_file = args.ann_file or default_ann
    image_dir = args.images or default_images
    if args.results is not None:
        if int(os.environ.get("RANK", 0)) != 0:
            return {}  # no model to share out: under torchrun, rank 0 does it all
        if args.analyze_examples and not image_dir.is_dir():
            raise utils.UserError(f"--analyze-examples needs the images: {image_dir} is not a folder "
                                  "(give --images or --data-root)")
        return evaluate_results_file(args.results, ann_file, args.limit, args.save_metrics, args.oks_sigmas,
                                     analysis_pictures(args, image_dir))

    info, device = utils.init_distributed(args.device)
    try:
        onnx = onnx_model.selected(args.weights, args.runtime)
        chosen, precision_note = (onnx_model.onnx_precision(precision.requested(args)), "") if onnx else \
            precision.resolve(args, device, CUDA_PRECISION)
        dataset = CocoKeypoints(image_dir, ann_file, train=False, max_image_pixels=args.max_image_pixels)
        dataset = first_images(dataset, args.limit)
        weights, how = runs.resolve_weights(args.weights)
        if info.is_main:
            print(f"weights: {models.describe_weights(weights)}{how}")
        if onnx:
            model, config = onnx_model.load_model(weights, device, args.runtime, args.backbone, args.min_size,
                                                  args.max_size)
        else:
            model, config = models.load_model(weights, args.backbone, args.min_size, args.max_size,
                                              rpn_post_nms_top_n_test=args.proposals)
        data_keypoints = base_dataset(dataset).keypoint_set
        keypoints.check_same(keypoints.KeypointSet.from_config(config), data_keypoints, f"weights {weights} predict",
                             f"annotation file {ann_file}")
        coco_eval.oks_sigmas(data_keypoints, args.oks_sigmas, verbose=False)  # fails before predicting
        if not onnx:
            models.prepare_for_inference(model, device, chosen)
            precision_note += roi_align.fallback_note()
        if info.is_main:
            print(f"model: {config['backbone']}, images resized to {config['min_size'][0]} "
                  f"(max {config['max_size']}); device {device}, {model.describe() if onnx else precision_note}"
                  + (f", {info.world_size} processes" if info.distributed else ""))
            print(f"data: {len(dataset)} images from {image_dir} ({ann_file}), {data_keypoints.describe()}")
        metrics, results = coco_eval.evaluate_dataset(model, dataset, device, args.batch_size, args.workers,
                                                      precision=chosen, verbose=info.is_main, desc="test",
                                                      sigmas=args.oks_sigmas, analyze=args.analyze)
        if info.is_main:
            if args.save_results:
                print(f"wrote {len(results)} detections to {utils.write_json(args.save_results, results, indent=None)}")
            finish(metrics, args.save_metrics, analysis_pictures(args, image_dir),
                   base_dataset(dataset).coco, results)
        return metrics
    finally:
        utils.cleanup_distributed()


def evaluate_results_file(path: Path, ann_file: Path, limit: int | None, save_metrics: str,
                          sigmas: list[float] | dict[str, float] | None = None,
                          pictures: dict[str, Any] | None = None) -> dict[str, Any]:
    coco_gt = load_coco(ann_file)
    results = read_results(path, coco_gt)
    image_ids = sorted(coco_gt.getImgIds())[:limit]  # the images a --limit run of the model sees
    detected = {r["image_id"] for r in results}
    print(f"results: {len(results)} detections on {len(detected & set(image_ids))} of the "
          f"{len(image_ids)} images evaluated ({path})")
    with_people = {a["image_id"] for a in coco_gt.dataset["annotations"] if not a.get("iscrowd")} & set(image_ids)
    if detected and len(with_people - detected) > len(with_people) / 2:
        print(f"note: {len(with_people - detected)} of {len(with_people)} images with people have no detections "
              "and count as misses; evaluate results of a --limit N run with --limit N")
    unknown_categories = {r["category_id"] for r in results} - set(coco_gt.getCatIds())
    if unknown_categories:
        print(f"note: category_id {sorted(unknown_categories)} not in {ann_file}; COCOeval ignores those detections")
    metrics = coco_eval.coco_evaluate(coco_gt, results, image_ids, sigmas=sigmas, analyze=pictures is not None)
    finish(metrics, save_metrics, pictures and {**pictures, "image_ids": image_ids}, coco_gt, results)
    return metrics


def read_results(path: Path, coco_gt) -> list[dict[str, Any]]:
    """A COCO results file, checked so that pycocotools never meets an entry it would crash on."""
    results = utils.read_json(path, "results file")
    if not isinstance(results, list):
        raise utils.UserError(f"results file {path} holds a JSON {type(results).__name__}; the COCO results "
                              "format is a list of detections")
    gt_keypoints = coco_eval.keypoint_numbers(coco_gt)
    kinds = None
    for index, entry in enumerate(results):
        problem = result_problem(entry, gt_keypoints)
        if problem:
            raise utils.UserError(f"results file {path}, detection {index}: {problem}")
        # pycocotools decides from the first entry what every entry holds.
        entry_kinds = ("bbox" in entry, "keypoints" in entry)
        if kinds is None:
            kinds = entry_kinds
        elif entry_kinds != kinds:
            raise utils.UserError(f"results file {path}, detection {index}: has "
                                  f"{' and '.join(k for k, on in zip(('bbox', 'keypoints'), entry_kinds) if on)}, "
                                  "unlike detection 0; every detection needs the same fields")
    return results


def result_problem(entry: Any, gt_keypoints: int | None) -> str | None:
    """What is wrong with one detection of a results file, or None."""
    if not isinstance(entry, dict):
        return f"a JSON {type(entry).__name__}, expected an object with image_id, category_id, score, bbox/keypoints"
    for key in ("image_id", "category_id"):
        if not isinstance(entry.get(key), int) or isinstance(entry.get(key), bool):
            return f"'{key}' must be an integer, got {entry.get(key)!r}"
    if not utils.is_number(entry.get("score")):
        return f"'score' must be a number, got {entry.get('score')!r}"
    if "bbox" not in entry and "keypoints" not in entry:
        return "needs 'bbox' ([x, y, width, height]) or 'keypoints' (x1, y1, v1, x2, ...) or both"
    if "bbox" in entry:
        box = entry["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(map(utils.is_number, box)) and box[2] >= 0 and box[3] >= 0):
            return f"'bbox' must be [x, y, width, height] with width, height >= 0, got {box!r:.60}"
    if "keypoints" in entry:
        kps = entry["keypoints"]
        if not (isinstance(kps, list) and kps and all(map(utils.is_number, kps))):
            return f"'keypoints' must be a flat list of x, y, v numbers, got {kps!r:.60}"
        # The count before the multiple of 3: a list one number short is a wrong count, not a wrong shape.
        if gt_keypoints and len(kps) != gt_keypoints:
            return (f"'keypoints' has {len(kps)} numbers, expected {gt_keypoints} "
                    f"(x, y, v for each of the annotation file's {gt_keypoints // 3} keypoints)")
        if len(kps) % 3:
            return f"'keypoints' has {len(kps)} numbers, not a multiple of 3 (x, y, v per keypoint)"
    return None


def analysis_pictures(args: argparse.Namespace, image_dir: Path) -> dict[str, Any] | None:
    """What coco_analyze.write_pictures needs besides the metrics and results (None without --analyze)."""
    if not args.analyze:
        return None
    return {"metrics_path": args.save_metrics or DEFAULT_METRICS, "examples": args.analyze_examples,
            "image_dir": image_dir, "max_pixels": args.max_image_pixels}


def finish(metrics: dict[str, dict[str, float]], save_metrics: str, pictures: dict[str, Any] | None = None,
           coco_gt=None, results: list[dict[str, Any]] | None = None) -> None:
    if save_metrics:
        print(f"wrote metrics to {utils.write_json(save_metrics, metrics)}")
    if pictures and "keypoint_errors" in metrics:
        written = coco_analyze.write_pictures(metrics, coco_gt, results, **pictures)
        print(f"wrote the keypoint error analysis to {written[0]}"
              + (f", {len(written) - 1} example(s) to {written[1].parent}" if len(written) > 1 else ""))
    print(coco_eval.format_metrics_line(metrics))


if __name__ == "__main__":
    main()
