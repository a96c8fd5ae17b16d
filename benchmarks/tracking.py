"""Tracking and smoothing: benchmark.py's row of their cost, and the measurements behind tracking.py's
defaults and the tests' detection noise (docs/tracking.md).

  benchmark.py's row  detect: tracking and smoothing -- tracking.Tracker.update with smoothing on,
                      per frame, for --persons people walking across a 640x480 frame, against our
                      model's own time per frame measured in the same run ("detect: model only").

As a command:
    python -m benchmarks.tracking --weights runs/demo/last.pth   # the model's noise, then the tracker on it
    python -m benchmarks.tracking                                 # the tracker on sequences.DetectionNoise()

With --weights, the model runs on --sequences crossing sequences (sequences.py, seeds 0, 1, ...) and
its detections are compared with the truth: how far its joints are off (a constant part per figure
and a part that changes from frame to frame, in figure heights), how often it misses a person or a
joint, how many spurious persons it finds; then tracking.py tracks the model's own detections and
the identity switches are counted. In every case the tracker then runs on simulated detections
(the truth plus that noise, sequences.simulated_detections) for each (min_cutoff, beta) of the grid:
identity switches, ids kept through a gap of --track-buffer frames, the still figure's jitter with
and without smoothing, and the walkers' lag in frames.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import detect
import media
import precision
import sequences
import tracking
import utils
from coco_eval import oks_sigmas
from keypoints import COCO17
from benchmarks.timing import Row, Table, measure
from sample_data import random_figure

CROWD_SIZE = (640, 480)
CROWD_FRAMES = 60
COCO_SIGMAS = np.array(oks_sigmas(COCO17, verbose=False)[0])
GRID = ((0.5, 5.0), (0.5, 10.0), (1.0, 5.0), (1.0, 10.0), (1.0, 20.0), (2.0, 10.0), (4.0, 10.0))


# --------------------------------------------------------------------------------------
# benchmark.py's row
# --------------------------------------------------------------------------------------
def walking_crowd(persons: int, frames: int = CROWD_FRAMES, size: tuple[int, int] = CROWD_SIZE,
                  seed: int = 0) -> dict[str, Any]:
    """tracks.json-like truth of `persons` figures walking straight across a frame, every joint seen
    (no picture is drawn: only the tracker's input is wanted)."""
    rng = np.random.default_rng(seed)
    width, height = size
    figures, frames_out = [], [{"frame": i, "persons": []} for i in range(frames)]
    for track_id in range(1, persons + 1):
        tall = rng.uniform(0.25, 0.6) * height
        path = sequences.FigurePath(track_id, "walk", tall, (rng.uniform(0, width), rng.uniform(0.3, 0.7) * height),
                                    (rng.uniform(-1, 1) * width / 60, rng.uniform(-0.1, 0.1) * height / 60))
        figure = random_figure(rng, "walk")
        figures.append(asdict(path))
        for frame in frames_out:
            x1, y1, x2, y2 = sequences.extent(figure, path, frame["frame"])
            points = figure.keypoints(tall, path.hips(frame["frame"]))
            frame["persons"].append({"track_id": track_id, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                     "keypoints": [[float(x), float(y), 2] for x, y in points]})
    return {"fps": 30.0, "width": width, "height": height, "keypoint_names": list(utils.COCO_KEYPOINT_NAMES),
            "figures": figures, "frames": frames_out}


def tracking_row(table: Table, args: argparse.Namespace, model_row: Row, persons: int = 10) -> Row:
    """The per-frame cost of detect.py --track --smooth for `persons` people, against the model's
    time per frame (`model_row`, measured in the same run)."""
    truth = walking_crowd(persons, seed=args.seed)
    detections = [d for d, _ in sequences.simulated_detections(truth, sequences.DetectionNoise(), args.seed)]
    settings = tracking.TrackerSettings(smooth=True)

    def track_all(_: int) -> None:
        tracker = tracking.Tracker([0.07] * len(utils.COCO_KEYPOINT_NAMES), settings)
        for index, frame in enumerate(detections):
            tracker.update(frame, index / truth["fps"], truth["width"])
    s = measure({"track": track_all}, args.repeats, args.warmup, torch.device("cpu"), per_run=len(detections))
    ms = s["track"].median * 1000
    row = Row("detect", "detect: tracking and smoothing", s["track"].median, model_row.ours,
              "our model time per frame (detect: model only)", "s", note=f"{persons} persons walking, "
              f"{len(utils.COCO_KEYPOINT_NAMES)} joints each: {ms:.2f} ms a frame (issue 21's budget: 2 ms)",
              runs_ours=s["track"].times, runs_baseline=model_row.runs_ours)
    table.add(row)
    return row


# --------------------------------------------------------------------------------------
# A model's noise on the sample figures
# --------------------------------------------------------------------------------------
def truth_boxes(persons: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in persons)], dtype=float).reshape(-1, 4)


def matched_to_truth(detections: dict[str, np.ndarray], persons: list[dict[str, Any]],
                     kp_thresh: float = 2.0) -> np.ndarray:
    """The figure (track_id) of each detection, 0 for one of no figure: paired by the largest total
    similarity, the larger of box IoU and OKS, at least 0.5 (COCO's AP50 match for either)."""
    figures = np.zeros(len(detections["boxes"]), dtype=np.int64)
    truth = np.array([p["keypoints"] for p in persons], dtype=float).reshape(len(persons), -1, 3)
    boxes = truth_boxes(persons)
    oks, _ = tracking.keypoint_similarity(truth[..., :2], truth[..., 2] > 0, detections["keypoints"][..., :2],
                                          detections["keypoint_scores"] >= kp_thresh, tracking.box_areas(boxes),
                                          COCO_SIGMAS)
    rows, cols = tracking.match(np.maximum(oks, tracking.box_iou(boxes, detections["boxes"])), 0.5)
    figures[cols] = [persons[r]["track_id"] for r in rows]
    return figures


def model_runs(weights: str, count: int, device: str, folder: Path,
               score_thresh: float = 0.5) -> list[tuple[dict, list[dict], list[np.ndarray]]]:
    """(truth, detections per frame, figure per detection per frame) of the model on `count` crossing
    sequences (seeds 0, 1, ...) written under `folder`, as detect.py --score-thresh `score_thresh` runs it."""
    videos = [sequences.write_sequence(folder / str(seed), sequences.SequenceSpec(seed=seed)) for seed in range(count)]
    args = detect.parse_args(["--file", str(videos[0]), "--weights", weights, "--score-thresh", str(score_thresh),
                              "--device", device])
    torch_device = utils.select_device(device)
    with contextlib.redirect_stdout(io.StringIO()):
        detector = detect.load_detector(args, torch_device, *precision.resolve(args, torch_device, detect.CUDA_PRECISION))
    runs = []
    for video in videos:
        truth = json.loads((video.parent / sequences.TRACKS_FILE).read_text())
        capture, frame = media.open_video(str(video))
        found, figures = [], []
        for persons in (f["persons"] for f in truth["frames"]):
            detections = detector.detect(frame)
            found.append(detections)
            figures.append(matched_to_truth(detections, persons))
            frame = capture.read()[1]
        capture.release()
        runs.append((truth, found, figures))
    return runs


def measured_noise(runs: list[tuple[dict, list[dict], list[np.ndarray]]], kp_thresh: float) -> sequences.DetectionNoise:
    """sequences.DetectionNoise of the model runs, on the detections the tracker keeps (duplicate poses
    dropped): joint errors split into a constant per figure and joint (bias) and the rest (jitter),
    in figure heights; misses and spurious persons counted."""
    errors: dict[tuple[int, int], list[np.ndarray]] = {}
    box_errors: dict[tuple[int, int], list[np.ndarray]] = {}
    counts = {"persons": 0, "missed": 0, "seen": 0, "seen_missed": 0, "covered": 0, "covered_found": 0, "spurious": 0}
    frames = 0
    tracker = tracking.Tracker.for_keypoints(COCO17, tracking.TrackerSettings(kp_thresh=kp_thresh))
    for run, (truth, found, _) in enumerate(runs):
        heights = {f["track_id"]: f["height"] for f in truth["figures"]}
        for persons, detections in zip((f["persons"] for f in truth["frames"]), found):
            frames += 1
            kept = tracking.without_duplicates(detections, tracker.seen(detections), tracker.sigmas)  # as tracked
            detections = {name: value[kept] for name, value in detections.items()}
            matched = matched_to_truth(detections, persons)
            counts["spurious"] += int((matched == 0).sum())
            for person, box in zip(persons, truth_boxes(persons)):
                tid, h = person["track_id"], heights[person["track_id"]]
                counts["persons"] += 1
                hit = np.flatnonzero(matched == tid)
                if not len(hit):
                    counts["missed"] += 1
                    continue
                truth_points = np.asarray(person["keypoints"], dtype=float)
                scores = detections["keypoint_scores"][hit[0]]
                v = truth_points[:, 2]
                counts["seen"] += int((v == 2).sum())
                counts["seen_missed"] += int(((v == 2) & (scores < kp_thresh)).sum())
                counts["covered"] += int((v == 1).sum())
                counts["covered_found"] += int(((v == 1) & (scores >= kp_thresh)).sum())
                error = (detections["keypoints"][hit[0], :, :2] - truth_points[:, :2]) / h
                errors.setdefault((run, tid), []).append(np.where(((v == 2) & (scores >= kp_thresh))[:, None],
                                                                  error, np.nan))
                box_errors.setdefault((run, tid), []).append((detections["boxes"][hit[0]] - box) / h)
    bias, jitter = split_error(errors)
    box_bias, box_jitter = split_error(box_errors)
    return sequences.DetectionNoise(
        keypoint_jitter=round(jitter, 4), keypoint_bias=round(bias, 4), box_jitter=round(box_jitter, 4),
        person_miss=round(counts["missed"] / max(counts["persons"], 1), 4),
        joint_miss=round(counts["seen_missed"] / max(counts["seen"], 1), 4),
        covered_found=round(counts["covered_found"] / max(counts["covered"], 1), 4),
        false_positives=round(counts["spurious"] / max(frames, 1), 4))


def split_error(errors: dict[Any, list[np.ndarray]]) -> tuple[float, float]:
    """(bias, jitter), robust standard deviations (1.4826 x the median absolute value, so that a joint
    taken for its mirror image now and then does not pass for noise of every frame): of each figure's
    median error, and of the error around it (NaN: not seen)."""
    medians, rests = [], []
    for values in errors.values():
        stack = np.stack(values)
        if np.isnan(stack).all():
            continue
        with warnings.catch_warnings():  # a joint this figure never showed: its median is NaN, as meant
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(stack, axis=0)
        medians.append(median.ravel())
        rests.append((stack - median).ravel())
    def spread(values: list[np.ndarray]) -> float:
        return float(1.4826 * np.nanmedian(np.abs(np.concatenate(values))))
    return spread(medians), spread(rests)


# --------------------------------------------------------------------------------------
# The tracker on simulated detections, and on the model's
# --------------------------------------------------------------------------------------
def gap_kept(truth: dict[str, Any], noise: sequences.DetectionNoise, settings: tracking.TrackerSettings,
             seed: int) -> dict[int, bool]:
    """Per figure: whether it keeps its id through a gap of settings.buffer frames in the middle of its
    sequence (the gap alone: no other miss, nothing spurious)."""
    simulated = sequences.simulated_detections(truth, replace(noise, person_miss=0.0, false_positives=0.0), seed)
    kept = {}
    for figure in (f["track_id"] for f in truth["figures"]):
        first = max(1, (len(simulated) - settings.buffer) // 2)
        gap = sequences.without(simulated, figure, range(first, first + settings.buffer))
        ids = sequences.figures_tracked(truth, gap, settings)
        before = next((i[figure] for i in ids[:first][::-1] if figure in i), None)
        after = next((i[figure] for i in ids[first + settings.buffer:] if figure in i), None)
        kept[figure] = before is not None and before == after
    return kept


def simulated_rows(noise: sequences.DetectionNoise, args: argparse.Namespace) -> list[dict[str, Any]]:
    """For each (min_cutoff, beta) of GRID: scores of the tracker on simulated detections of --sequences
    crossing sequences, --repeats noise draws each."""
    truths = [sequences.render_tracks(sequences.SequenceSpec(seed=seed, cross_seconds=args.cross_seconds))
              for seed in range(args.sequences)]
    # Gaps of --track-buffer frames need room around them: the walkers at half the speed, twice the frames.
    slow_truths = [sequences.render_tracks(sequences.SequenceSpec(seed=seed, cross_seconds=2 * args.cross_seconds))
                   for seed in range(args.sequences)]
    rows = []
    for min_cutoff, beta in GRID:
        settings = tracking.TrackerSettings(buffer=args.track_buffer, smooth=True, min_cutoff=min_cutoff, beta=beta)
        scores, gaps = [], []
        for truth in truths:
            for draw in range(args.repeats):
                simulated = sequences.simulated_detections(truth, noise, draw)
                scores.append(sequences.score_tracking(truth, [d for d, _ in simulated], [f for _, f in simulated],
                                                       settings))
        for truth in slow_truths:
            gaps.extend(gap_kept(truth, noise, settings, 0).values())
        rows.append(summary(scores, min_cutoff=min_cutoff, beta=beta, gap_kept=f"{sum(gaps)}/{len(gaps)}"))
    return rows


def summary(scores: list[sequences.TrackingScore], **extra: Any) -> dict[str, Any]:
    return {**extra, "runs": len(scores), "id_switches": sum(s.id_switches for s in scores),
            "unexplained_switches": sum(s.unexplained_switches for s in scores),
            "most_per_crossing": max(s.most_per_crossing for s in scores),
            "jitter_ratio": round(float(np.mean([s.jitter_smoothed / s.jitter_detected for s in scores
                                                 if s.jitter_detected])), 3),
            "lag_frames_max": round(max(s.lag_frames for s in scores), 3),
            "lag_frames_mean": round(float(np.mean([s.lag_frames for s in scores])), 3)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracking", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="a checkpoint: measure its noise on the sequences "
                                                        "(default: use sequences.DetectionNoise())")
    parser.add_argument("--device", default="cpu", help="for --weights")
    parser.add_argument("--score-thresh", type=utils.probability, default=0.5,
                        help="for --weights: detect.py's --score-thresh (make demo's tracked video uses 0.8)")
    parser.add_argument("--sequences", type=utils.positive_int, default=3, help="crossing sequences (seeds 0, 1, ...)")
    parser.add_argument("--repeats", type=utils.positive_int, default=5, help="noise draws per sequence")
    parser.add_argument("--cross-seconds", type=utils.positive_float, default=2.0,
                        help="the walkers' speed: seconds to cross the frame")
    parser.add_argument("--track-buffer", type=utils.nonnegative_int, default=tracking.DEFAULT_BUFFER)
    parser.add_argument("--json", default="runs/tracking.json", help="write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with utils.cli_errors():
        command = "python -m benchmarks.tracking " + " ".join(sys.argv[1:] if argv is None else argv)
        print(command)
        report: dict[str, Any] = {"command": command}
        noise = sequences.DetectionNoise()
        if args.weights:
            with tempfile.TemporaryDirectory() as tmp:
                runs = model_runs(args.weights, args.sequences, args.device, Path(tmp), args.score_thresh)
            noise = measured_noise(runs, kp_thresh=2.0)
            settings = tracking.TrackerSettings(buffer=args.track_buffer, smooth=True)
            model_scores = [sequences.score_tracking(truth, found, None, settings) for truth, found, _ in runs]
            report["model_tracking"] = summary(model_scores)
            print(f"the model's noise: {noise}\nthe tracker on the model's detections: {report['model_tracking']}")
        report["noise"] = asdict(noise)
        report["simulated"] = simulated_rows(noise, args)
        for row in report["simulated"]:
            print(row)
        utils.write_json(args.json, report, indent=1)
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
