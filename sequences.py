"""Synthetic videos whose tracks are known: the sample set's figures moving along straight paths,
for the tests of detect.py --track and for `make demo`'s tracked video; and the measures of a
tracker's output against them (identity switches, jitter, lag).

Usage:
    python sequences.py runs/sequence                  # runs/sequence/sequence.mp4 + tracks.json
    python sequences.py runs/sequence --frames-folder  # runs/sequence/frames/000000.jpg, ... + tracks.json
    python sequences.py runs/slow --cross-seconds 4 --size 640x360 --seed 3

The scene: three people. Two walk towards each other, each at a speed that would take them across
the whole frame in --cross-seconds, and pass once, the nearer one in front; the third stands still
on the right, where neither walker reaches before the sequence ends (--frames 0: the last frame
before the far walker would touch them). Every frame is drawn afresh, sensor noise included, as
the sample set's images are: a still figure's joints stay put, what a detector sees of them does not.

tracks.json: {"fps", "width", "height", "keypoint_names", "figures": [path, ...], "frames": [{"frame",
"persons": [{"track_id", "bbox": [x, y, w, h], "keypoints": 17 x [x, y, v]}, ...]}, ...]}, a path
being {"track_id", "pose", "height", "start": [x, y], "velocity": [dx, dy]} (the hip centre in
pixels, its motion in pixels per frame). Keypoints are at their exact, sub-pixel places; v is the
sample set's: 2 seen, 1 covered (by another person or the figure's own body), and (0, 0, 0) outside
the frame. A figure wholly out of view in a frame has no entry in it.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

import tracking
import utils
from keypoints import COCO17
from sample_data import Figure, draw_scene, random_background, random_figure

TRACKS_FILE = "tracks.json"
VIDEO_FILE = "sequence.mp4"
FRAMES_FOLDER = "frames"
FIGURE_PAD = 0.08  # of a figure's height: its limbs' and head's reach beyond the keypoints
MIN_FRAMES = 8


@dataclass(frozen=True)
class SequenceSpec:
    """The frame size, the clock, how fast the walkers go (`cross_seconds`: the time to cross the
    whole frame width), how many frames (0: as many as the scene allows) and the random seed."""
    width: int = 384
    height: int = 216
    fps: float = 30.0
    cross_seconds: float = 2.0
    frames: int = 0
    seed: int = 0


@dataclass(frozen=True)
class FigurePath:
    """A figure `height` pixels tall whose hip centre is at `start` in frame 0 and moves `velocity`
    pixels per frame."""
    track_id: int
    pose: str
    height: float
    start: tuple[float, float]
    velocity: tuple[float, float]

    def hips(self, frame: int) -> np.ndarray:
        return np.asarray(self.start) + frame * np.asarray(self.velocity)


def crossing_scene(spec: SequenceSpec) -> tuple[list[tuple[FigurePath, Figure]], int]:
    """(the figures, far to near, with their paths; the number of frames). The still figure stands
    at the right edge, the near walker starts just left of it and the far one at the left edge,
    each placed by how far its own limbs reach."""
    w, h = spec.width, spec.height
    speed = w / (spec.cross_seconds * spec.fps)
    margin = 0.03 * h
    layout = ((1, "walk", 0.6, 0.47, 1.0), (3, "stand", 0.66, 0.5, 0.0), (2, "walk", 0.72, 0.53, -1.0))
    scene, reach = [], []
    for track_id, pose, tall, hips_y, direction in layout:
        path = FigurePath(track_id, pose, tall * h, (0.0, hips_y * h), (direction * speed, 0.0))
        figure = _figure_for(path, spec.seed)
        scene.append((path, figure))
        reach.append(extent(figure, path, 0)[::2])  # (left, right) of the hips
    (far_left, far_right), (still_left, still_right), (near_left, near_right) = reach
    still_x = w - margin - still_right
    near_x = still_x + still_left - margin - near_right
    far_x = margin - far_left
    scene = [(replace(path, start=(x, path.start[1])), figure)
             for (path, figure), x in zip(scene, (far_x, still_x, near_x))]
    frames = math.floor((still_x + still_left - far_x - far_right) / speed)  # until the far walker reaches it
    if near_x + near_left <= far_x + far_right or (not spec.frames and frames < MIN_FRAMES):
        raise utils.UserError(f"a {w}x{h} frame is too narrow for the walkers to pass before reaching the "
                              f"still figure ({max(frames, 0)} frames); choose a wider --size or give --frames")
    return scene, spec.frames or frames


def _figure_for(path: FigurePath, seed: int) -> Figure:
    """The figure of a path: the same for a seed and track id; a walker faces the way it goes."""
    rng = np.random.default_rng([seed, path.track_id])
    wanted = float(np.sign(path.velocity[0]))
    for _ in range(100):
        figure = random_figure(rng, path.pose)
        if figure.facing == wanted or not wanted:
            return figure
    raise AssertionError(f"no {path.pose} figure facing {wanted}")  # each draw faces either way: p = 2^-100


def extent(figure: Figure, path: FigurePath, frame: int) -> tuple[float, float, float, float]:
    """Where a figure reaches in a frame (x1, y1, x2, y2): its keypoints, padded for its limbs and head."""
    points = figure.keypoints(path.height, path.hips(frame))
    pad = FIGURE_PAD * path.height
    return (points[:, 0].min() - pad, points[:, 1].min() - pad, points[:, 0].max() + pad, points[:, 1].max() + pad)


def render(spec: SequenceSpec) -> tuple[list[FigurePath], Iterator[tuple[np.ndarray, list[dict[str, Any]]]]]:
    """(the paths, an iterator of (BGR frame, its persons as in tracks.json)), frame after frame."""
    scene, frames = crossing_scene(spec)
    background, _ = random_background(np.random.default_rng([spec.seed, 0]), spec.width, spec.height)

    def frames_of_scene() -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
        for index in range(frames):
            people = [(figure, path.height, path.hips(index)) for path, figure in scene]
            image, annotations = draw_scene(background, people, np.random.default_rng([spec.seed, 1, index]))
            persons = [truth_entry(path, figure, index, ann) for (path, figure), ann in zip(scene, annotations)
                       if ann is not None]
            yield cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR), sorted(persons, key=lambda p: p["track_id"])
    return [path for path, _ in scene], frames_of_scene()


def truth_entry(path: FigurePath, figure: Figure, frame: int, annotation: dict[str, Any]) -> dict[str, Any]:
    exact = figure.keypoints(path.height, path.hips(frame))
    v = annotation["keypoints"][2::3]
    keypoints = [[round(float(x), 3), round(float(y), 3), int(vis)] if vis else [0, 0, 0]
                 for (x, y), vis in zip(exact, v)]
    return {"track_id": path.track_id, "bbox": annotation["bbox"], "keypoints": keypoints}


def write_sequence(out: str | os.PathLike, spec: SequenceSpec = SequenceSpec(), frames_folder: bool = False,
                   exist_ok: bool = False) -> Path:
    """Write the sequence into the folder `out` (a video, or a folder of JPEG frames) and its
    tracks.json; returns the video or the frames folder. A folder holding anything but an earlier
    sequence's files is refused; an earlier sequence is replaced only with `exist_ok`."""
    out = Path(out)
    ours = {TRACKS_FILE, VIDEO_FILE, FRAMES_FOLDER}
    if out.exists():
        if not out.is_dir():
            raise utils.UserError(f"{out} is a file; give a folder for the sequence")
        found = {p.name for p in out.iterdir()}
        if found - ours or (found and not exist_ok):
            raise utils.UserError(f"{out} already holds " + (
                f"files that are not a sequence's ({sorted(found - ours)[0]})" if found - ours
                else "a sequence; add --exist-ok to replace it"))
    paths, frames = render(spec)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    target = out / (FRAMES_FOLDER if frames_folder else VIDEO_FILE)
    if frames_folder:
        target.mkdir(exist_ok=True)
        for old in target.glob("*.jpg"):
            old.unlink()
    partial = out / f"partial-{VIDEO_FILE}"
    writer = None if frames_folder else cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), spec.fps,
                                                        (spec.width, spec.height))
    if writer is not None and not writer.isOpened():
        raise utils.UserError(f"cannot write video {partial}")
    try:
        for index, (image, persons) in enumerate(frames):
            if writer is None:
                jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                utils.write_bytes(target / f"{index:06d}.jpg", jpeg.tobytes())
            else:
                writer.write(image)
            entries.append({"frame": index, "persons": persons})
    finally:
        if writer is not None:
            writer.release()
    if writer is not None:
        os.replace(partial, target)
    utils.write_json(out / TRACKS_FILE, tracks_json(spec, paths, entries), indent=None)
    return target


def tracks_json(spec: SequenceSpec, paths: Sequence[FigurePath], frames: list[dict[str, Any]]) -> dict[str, Any]:
    return {"fps": spec.fps, "width": spec.width, "height": spec.height,
            "keypoint_names": list(utils.COCO_KEYPOINT_NAMES), "figures": [asdict(p) for p in paths], "frames": frames}


def render_tracks(spec: SequenceSpec) -> dict[str, Any]:
    """What tracks.json of the sequence would hold, without writing it or its frames."""
    paths, frames = render(spec)
    return tracks_json(spec, paths, [{"frame": i, "persons": persons} for i, (_, persons) in enumerate(frames)])


# --------------------------------------------------------------------------------------
# Measures of tracks against the truth
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionNoise:
    """How a detector sees a figure in a frame, heights being the figure's: a joint's error is a
    constant of the figure (`keypoint_bias` heights, standard deviation) plus a new one each frame
    (`keypoint_jitter`); each box edge is off by `box_jitter`. A person in view is missed with
    probability `person_miss`; a seen joint (v=2) scores below the keypoint threshold with
    `joint_miss`, a covered one (v=1) above it with `covered_found`; `false_positives` spurious
    persons a frame on average, each over part of someone (or them and more), its pose theirs but
    a tenth of their height astray. docs/tracking.md: where the defaults were measured."""
    keypoint_jitter: float = 0.0072
    keypoint_bias: float = 0.0275
    box_jitter: float = 0.0209
    person_miss: float = 0.1088
    joint_miss: float = 0.0562
    covered_found: float = 0.9516
    false_positives: float = 0.3163


def simulated_detections(tracks: dict[str, Any], noise: DetectionNoise, seed: int = 0,
                         kp_thresh: float = 2.0) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Per frame of tracks.json: (detections as detect.detect_frame gives them, the figure each
    one comes from, -f for a spurious one made near figure f). Joints taken as seen score kp_thresh + 3,
    the others kp_thresh - 3."""
    rng = np.random.default_rng(seed)
    heights = {f["track_id"]: f["height"] for f in tracks["figures"]}
    k = len(tracks["keypoint_names"])
    bias = {tid: rng.standard_normal((k, 2)) * noise.keypoint_bias * h for tid, h in heights.items()}
    result = []
    for frame in tracks["frames"]:
        boxes, points, seen, figures = [], [], [], []
        for person in frame["persons"]:
            if rng.random() < noise.person_miss:
                continue
            tid, h = person["track_id"], heights[person["track_id"]]
            truth = np.asarray(person["keypoints"], dtype=float)
            x, y, bw, bh = person["bbox"]
            boxes.append(np.array([x, y, x + bw, y + bh]) + rng.standard_normal(4) * noise.box_jitter * h)
            points.append(truth[:, :2] + bias[tid] + rng.standard_normal((k, 2)) * noise.keypoint_jitter * h)
            chance = rng.random(k)
            seen.append(np.where(truth[:, 2] == 2, chance >= noise.joint_miss,
                                 (truth[:, 2] == 1) & (chance < noise.covered_found)))
            figures.append(tid)
        for _ in range(rng.poisson(noise.false_positives) if frame["persons"] else 0):
            # What a model finds besides the people, measured: a box over part of someone, or over them
            # and a neighbour, with a pose of theirs gone astray (its joints a tenth of their height off).
            person = frame["persons"][int(rng.integers(len(frame["persons"])))]
            x, y, bw, bh = person["bbox"]
            grow = rng.uniform(0.6, 1.4, 2)
            x, y = x + rng.uniform(-0.3, 0.3) * bw, y + rng.uniform(-0.15, 0.15) * bh
            boxes.append(np.array([x, y, x + grow[0] * bw, y + grow[1] * bh]))
            truth = np.asarray(person["keypoints"], dtype=float)
            points.append(truth[:, :2] + rng.standard_normal((k, 2)) * 0.1 * heights[person["track_id"]])
            seen.append((truth[:, 2] > 0) & (rng.random(k) < 0.7))
            figures.append(-person["track_id"])
        result.append((detections_of(boxes, points, seen, kp_thresh, k), np.array(figures, dtype=np.int64)))
    return result


def detections_of(boxes: Sequence[np.ndarray], points: Sequence[np.ndarray], seen: Sequence[np.ndarray],
                  kp_thresh: float, num_keypoints: int = utils.NUM_KEYPOINTS) -> dict[str, np.ndarray]:
    """detect.detect_frame's dict of these persons (score 0.9 each), seen joints scoring kp_thresh + 3."""
    n, k = len(boxes), num_keypoints
    keypoints = np.zeros((n, k, 3), dtype=np.float32)
    if n:
        keypoints[..., :2], keypoints[..., 2] = np.stack(points), 1
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(n, 4), "scores": np.full(n, 0.9, dtype=np.float32),
            "keypoints": keypoints,
            "keypoint_scores": np.where(np.array(seen, dtype=bool).reshape(n, k), kp_thresh + 3,
                                        kp_thresh - 3).astype(np.float32)}


def without(simulated: Sequence[tuple[dict[str, np.ndarray], np.ndarray]], figure: int,
            frames: range) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """`simulated` (simulated_detections' list) with `figure` left undetected in `frames`, and nothing
    spurious found near it: a gap."""
    result = []
    for index, (detections, figures) in enumerate(simulated):
        keep = np.abs(figures) != figure if index in frames else np.ones(len(figures), dtype=bool)
        result.append(({k: v[keep] for k, v in detections.items()}, figures[keep]))
    return result


def id_switches(figure_ids: Sequence[np.ndarray], track_ids: Sequence[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """MOT's identity switches (IDSW): (frame, figure, its previous track id, the new one) each time a
    figure is matched to another track id than the last time it was matched. Spurious detections
    (figure 0 or less) are not counted."""
    last: dict[int, int] = {}
    switches = []
    for frame, (figures, tracks) in enumerate(zip(figure_ids, track_ids)):
        for figure, track in zip(np.asarray(figures).tolist(), np.asarray(tracks).tolist()):
            if figure <= 0:
                continue
            if figure in last and last[figure] != track:
                switches.append((frame, figure, last[figure], track))
            last[figure] = track
    return switches


def crossings(tracks: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """(figure a, figure b, first frame, last frame) of each run of frames in which two figures'
    boxes overlap."""
    runs: dict[tuple[int, int], list[int]] = {}
    for frame in tracks["frames"]:
        persons = frame["persons"]
        for i, a in enumerate(persons):
            for b in persons[i + 1:]:
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    runs.setdefault((a["track_id"], b["track_id"]), []).append(frame["frame"])
    found = []
    for (a, b), frames in runs.items():
        start = previous = frames[0]
        for current in frames[1:]:
            if current != previous + 1:
                found.append((a, b, start, previous))
                start = current
            previous = current
        found.append((a, b, start, previous))
    return sorted(found, key=lambda c: c[2])


def switches_by_crossing(switches: Sequence[tuple[int, int, int, int]], tracks: dict[str, Any],
                         figure_ids: Sequence[np.ndarray]) -> tuple[dict[tuple[int, int, int, int], int], list]:
    """({crossing: switches it caused}, switches that no crossing explains). A switch of figure f at
    frame t belongs to a crossing of f that overlaps the frames since f was last matched before t
    (the only time another person could take its place)."""
    per_crossing = {c: 0 for c in crossings(tracks)}
    unexplained = []
    for frame, figure, _, _ in switches:
        since = max((t for t in range(frame) if figure in np.asarray(figure_ids[t]).tolist()), default=frame - 1)
        owners = [c for c in per_crossing if figure in c[:2] and c[2] <= frame and c[3] >= since]
        if owners:
            per_crossing[owners[-1]] += 1
        else:
            unexplained.append((frame, figure))
    return per_crossing, unexplained


def figures_tracked(tracks: dict[str, Any], simulated: Sequence[tuple[dict[str, np.ndarray], np.ndarray]],
                    settings: tracking.TrackerSettings) -> list[dict[int, int]]:
    """{figure: its track id} per frame of `simulated` (simulated_detections' list) tracked by a new tracker."""
    tracker = tracking.Tracker.for_keypoints(COCO17, settings)
    found = []
    for index, (frame, figures) in enumerate(simulated):
        kept = tracking.without_duplicates(frame, tracker.seen(frame), tracker.sigmas)  # as update() keeps them
        ids = tracker.update(frame, index / tracks["fps"], tracks["width"])["track_ids"]
        found.append({f: i for f, i in zip(figures[kept].tolist(), ids.tolist()) if f > 0})
    return found


def mot_figures(persons: list[dict[str, Any]], boxes: np.ndarray, track_ids: np.ndarray, mapping: dict[int, int],
                min_iou: float = 0.5) -> np.ndarray:
    """The figure each tracked detection stands for (0: none), paired as CLEAR MOT pairs them: a
    figure keeps the track it was paired with while their boxes still overlap by `min_iou`; the
    rest are paired by the largest total IoU, at least `min_iou`. `mapping` (figure -> its last
    track id) is read and updated."""
    truth = np.array([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in persons)]).reshape(-1, 4)
    iou = tracking.box_iou(truth, boxes)
    figures = np.zeros(len(boxes), dtype=np.int64)
    for f, person in enumerate(persons):
        kept = np.flatnonzero((track_ids == mapping.get(person["track_id"], -1)) & (iou[f] >= min_iou))
        if len(kept):
            figures[kept[0]] = person["track_id"]
            iou[f], iou[:, kept[0]] = 0, 0
    rows, cols = tracking.match(iou, min_iou)
    figures[cols] = [persons[r]["track_id"] for r in rows]
    for d in np.flatnonzero(figures):
        mapping[int(figures[d])] = int(track_ids[d])
    return figures


def frame_jitter(points: np.ndarray, seen: np.ndarray) -> float:
    """The root mean square of a joint's move from one frame to the next, in pixels, over the joints
    seen in both frames; points (F, K, 2), seen (F, K)."""
    both = seen[1:] & seen[:-1]
    moves = np.linalg.norm(np.diff(points, axis=0), axis=-1)
    return float(np.sqrt((moves[both] ** 2).mean())) if both.any() else 0.0


def lag_frames(reference: np.ndarray, smoothed: np.ndarray, seen: np.ndarray, velocity: Sequence[float]) -> float:
    """How many frames `smoothed` trails `reference` (both (F, K, 2)) of a figure moving `velocity`
    pixels per frame: the least-squares lag, mean((reference - smoothed) . velocity) / |velocity|^2."""
    v = np.asarray(velocity, dtype=float)
    behind = ((reference - smoothed) @ v)[seen]
    return float(behind.mean() / (v @ v)) if behind.size else 0.0


@dataclass(frozen=True)
class TrackingScore:
    """How a tracker did on a sequence: MOT identity switches (all, those no crossing explains, the
    most any one crossing caused), the still figures' frame-to-frame jitter in pixels (detected and
    smoothed; 0 without a still figure) and the walkers' largest lag in frames (smoothed against detected)."""
    id_switches: int
    unexplained_switches: int
    most_per_crossing: int
    jitter_detected: float
    jitter_smoothed: float
    lag_frames: float


def score_tracking(tracks: dict[str, Any], detections: Sequence[dict[str, np.ndarray]],
                   figure_ids: Sequence[np.ndarray] | None, settings: tracking.TrackerSettings) -> TrackingScore:
    """Track `detections` (one dict a frame, as detect.detect_frame gives) with a new tracker of
    COCO's 17 and score it against `tracks` (tracks.json), given the figure each detection is of
    (simulated_detections' second half), or None to pair them as CLEAR MOT does (`mot_figures`)."""
    tracker = tracking.Tracker.for_keypoints(COCO17, settings)
    shape = (len(detections), len(tracks["keypoint_names"]), 2)
    detected = {f["track_id"]: np.zeros(shape) for f in tracks["figures"]}
    smoothed = {tid: np.zeros(shape) for tid in detected}
    seen = {tid: np.zeros(shape[:2], dtype=bool) for tid in detected}
    track_ids, paired, mapping = [], [], {}
    for index, frame in enumerate(detections):
        kept = tracking.without_duplicates(frame, tracker.seen(frame), tracker.sigmas)  # as update() keeps them
        frame = {name: value[kept] for name, value in frame.items()}
        out = tracker.update(frame, index / tracks["fps"], tracks["width"])
        track_ids.append(out["track_ids"])
        paired.append(np.asarray(figure_ids[index])[kept] if figure_ids is not None else
                      mot_figures(tracks["frames"][index]["persons"], frame["boxes"], out["track_ids"], mapping))
        for d, figure in enumerate(np.asarray(paired[-1]).tolist()):
            if figure > 0:
                detected[figure][index] = frame["keypoints"][d, :, :2]
                smoothed[figure][index] = out["keypoints"][d, :, :2]
                seen[figure][index] = frame["keypoint_scores"][d] >= settings.kp_thresh
    figure_ids = paired
    switches = id_switches(figure_ids, track_ids)
    per_crossing, unexplained = switches_by_crossing(switches, tracks, figure_ids)
    still = [f["track_id"] for f in tracks["figures"] if not any(f["velocity"])]
    walkers = [f for f in tracks["figures"] if any(f["velocity"])]
    jitter = [(frame_jitter(detected[t], seen[t]), frame_jitter(smoothed[t], seen[t])) for t in still]
    lags = [lag_frames(detected[f["track_id"]], smoothed[f["track_id"]], seen[f["track_id"]], f["velocity"])
            for f in walkers]
    return TrackingScore(len(switches), len(unexplained), max(per_crossing.values(), default=0),
                         float(np.mean([j[0] for j in jitter])) if jitter else 0.0,
                         float(np.mean([j[1] for j in jitter])) if jitter else 0.0, max(lags, default=0.0))


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def frame_size(text: str) -> tuple[int, int]:
    """`384x216`: width x height, each from 32 to utils.MAX_IMAGE_SIDE."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        width = height = 0
    if not (32 <= width <= utils.MAX_IMAGE_SIDE and 32 <= height <= utils.MAX_IMAGE_SIDE):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT such as 384x216, sides 32 to "
                                         f"{utils.MAX_IMAGE_SIDE}")
    return width, height


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SequenceSpec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=utils.HelpFormatter)
    parser.add_argument("out", metavar="FOLDER", help=f"where {VIDEO_FILE} (or {FRAMES_FOLDER}/) and "
                                                      f"{TRACKS_FILE} go")
    parser.add_argument("--size", type=frame_size, default=(defaults.width, defaults.height), metavar="WxH",
                        help=f"frame size (default: {defaults.width}x{defaults.height})")
    parser.add_argument("--fps", type=utils.positive_float, default=defaults.fps, help="frames per second")
    parser.add_argument("--cross-seconds", type=utils.positive_float, default=defaults.cross_seconds,
                        metavar="S", help="the time a walker would take to cross the whole frame width")
    parser.add_argument("--frames", type=utils.nonnegative_int, default=0,
                        help="frames to write (default 0: until the walker nears the still figure)")
    parser.add_argument("--seed", type=utils.nonnegative_int, default=0, help="same seed, same sequence")
    parser.add_argument("--frames-folder", action="store_true", help=f"JPEG frames in {FRAMES_FOLDER}/ instead "
                                                                     "of a video")
    parser.add_argument("--exist-ok", action="store_true", help="replace an earlier sequence in FOLDER")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    spec = SequenceSpec(*args.size, fps=args.fps, cross_seconds=args.cross_seconds, frames=args.frames,
                        seed=args.seed)
    with utils.cli_errors():
        target = write_sequence(args.out, spec, args.frames_folder, args.exist_ok)
    print(f"wrote {target} and {Path(args.out) / TRACKS_FILE}")
    return target


if __name__ == "__main__":
    main()
