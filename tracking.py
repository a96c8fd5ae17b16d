"""Who is who from one frame to the next, and joints that hold still: the pose tracker of detect.py
--track (videos, folders of frames, cameras, streams) and a One-Euro filter per joint of a track.

One `Tracker` per source; each frame:

    tracked = tracker.update(detections, time_s, frame_width)

`detections` is detect.detect_frame's dict (boxes, scores, keypoints, keypoint_scores); the
result is the same dict, persons in the same order, with `track_ids` added and, when smoothing,
the boxes and keypoints replaced by their filtered values.

Matching: a track and a detection are as similar as the mean of their box IoU and their OKS
(COCO's object keypoint similarity over the joints both show, the track's box area as the
object's scale), both taken where the track is expected now: its last place moved on at its
velocity. The assignment of the largest total similarity is solved exactly each frame
(`solve_assignment`, the Hungarian method); pairs less similar than `MIN_SIMILARITY` stay apart.
A detection left over starts a new track; a track left over keeps its id, unseen, for `buffer`
frames (`--track-buffer`) and is dropped after that.

Smoothing: the One-Euro filter (Casiez, Roussel and Vogel, CHI 2012), a low-pass filter whose
cutoff rises with the joint's speed, so a still joint is held steady and a moving one followed
closely: cutoff = min_cutoff + beta * speed. Speeds are in frame widths per second, so the two
parameters mean the same at every resolution. A joint below the keypoint threshold is not
filtered (it is not drawn either); its filter starts afresh when it is seen again, instead of
dragging it from where it was last. docs/tracking.md: how the defaults were measured.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

import utils
from coco_eval import oks_sigmas
from keypoints import KeypointSet

# A track and a detection less similar than this ((IoU + OKS) / 2) are never paired: at 30 fps
# the same person scores 0.8-0.95 from one frame to the next, and about 0.3 after a second unseen
# while walking; two people side by side score near 0.
MIN_SIMILARITY = 0.15

# A track and a detection that show joints in common but put them this far apart (OKS) are never
# paired, however their boxes overlap: the same person a frame later scores 0.6-0.9, and still
# about 0.2 after a second unseen.
MIN_OKS = 0.05

# A track is taken for someone once detected this many times: until then it is matched only after
# the others, and dropped once unseen for more than YOUNG_BUFFER frames.
CONFIRMED_HITS = 3
YOUNG_BUFFER = 2

# Two detections whose poses are this similar (OKS) are one person found twice: a weak model finds
# a person again in a box of their upper body, or of them and a neighbour, with nearly the same
# keypoints (OKS 0.8 and more); two people crossing, one behind the other, reach about 0.6.
DUPLICATE_OKS = 0.7

# How much of each new velocity measurement a track takes in (an exponential average, after the
# plain mean of its first 1 / VELOCITY_BLEND moves): enough to follow a turn within about ten
# frames, little enough that the detector's few pixels of noise, divided by 1/30 s, do not throw
# a track that goes unseen far off its path.
VELOCITY_BLEND = 0.1

# One-Euro defaults (docs/tracking.md): on the demo model's measured noise they cut a still
# figure's frame-to-frame jitter by more than half and keep the lag of a figure crossing the
# frame in 2 s at 30 fps under one frame.
DEFAULT_MIN_CUTOFF = 1.0  # Hz
DEFAULT_BETA = 10.0  # Hz per (frame width per second)
DERIVATIVE_CUTOFF = 1.0  # Hz, the paper's fixed value for the speed's own filter
DEFAULT_BUFFER = 30  # frames: one second at 30 fps, ByteTrack's default too
DEFAULT_FRAME_RATE = 30.0  # a folder of images has no clock of its own


# --------------------------------------------------------------------------------------
# Similarity and assignment
# --------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x1 y1 x2 y2 boxes."""
    a, b = np.asarray(a, dtype=float).reshape(-1, 4), np.asarray(b, dtype=float).reshape(-1, 4)
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2:4] - boxes[:, :2], 0, None).prod(-1)


def keypoint_similarity(points_a: np.ndarray, seen_a: np.ndarray, points_b: np.ndarray, seen_b: np.ndarray,
                        areas_a: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(OKS, joints both show), each (len(a), len(b)): COCO's object keypoint similarity of every
    pair, over the joints seen in both, `areas_a` (a's box areas) as the scale; 0 where none is shared.
    points (N, K, 2), seen (N, K) bool, sigmas (K,) COCO-style per-joint sigmas."""
    d2 = ((points_a[:, None, :, :2] - points_b[None, :, :, :2]) ** 2).sum(-1)
    variances = (2 * np.asarray(sigmas, dtype=float)) ** 2
    e = d2 / (variances * (np.asarray(areas_a, dtype=float)[:, None, None] + np.spacing(1)) * 2)
    both = seen_a[:, None, :] & seen_b[None, :, :]
    shared = both.sum(-1)
    total = np.where(both, np.exp(-e), 0.0).sum(-1)
    return np.where(shared > 0, total / np.maximum(shared, 1), 0.0), shared


def pose_similarity(boxes_a: np.ndarray, points_a: np.ndarray, seen_a: np.ndarray, boxes_b: np.ndarray,
                    points_b: np.ndarray, seen_b: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) similarity in [0, 1]: the mean of box IoU and OKS, or the IoU alone for a
    pair that shows no joint in common; 0 for a pair whose common joints are far apart (OKS below
    MIN_OKS), however much their boxes overlap: that is someone else, or nobody."""
    iou = box_iou(boxes_a, boxes_b)
    oks, shared = keypoint_similarity(points_a, seen_a, points_b, seen_b, box_areas(boxes_a), sigmas)
    return np.where(shared > 0, np.where(oks >= MIN_OKS, (iou + oks) / 2, 0.0), iou)


def without_duplicates(detections: dict[str, np.ndarray], seen: np.ndarray, sigmas: np.ndarray,
                       most_similar: float = DUPLICATE_OKS) -> np.ndarray:
    """Which detections to keep (bool, (N,)): a pose whose OKS with a surer kept one reaches
    `most_similar` is the same person found twice (in a box of a part of them, or of them and a
    neighbour) and is dropped, as pose NMS does."""
    boxes = np.asarray(detections["boxes"], dtype=float).reshape(-1, 4)
    points = np.asarray(detections["keypoints"], dtype=float)[..., :2].reshape(len(boxes), len(sigmas), 2)
    oks, _ = keypoint_similarity(points, seen, points, seen, box_areas(boxes), sigmas)
    keep = np.ones(len(boxes), dtype=bool)
    for i in np.argsort(-np.asarray(detections["scores"], dtype=float), kind="stable"):
        if keep[i]:
            duplicates = oks[i] >= most_similar
            duplicates[i] = False
            keep &= ~duplicates
    return keep


def solve_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the assignment of least total cost, min(n, m) pairs of an (n, m) matrix,
    rows ascending: the Hungarian method as shortest augmenting paths with dual potentials
    (Jonker and Volgenant's form), O(n^2 m) for n <= m. Costs must be finite."""
    cost = np.asarray(cost, dtype=float)
    if cost.ndim != 2 or not np.isfinite(cost).all():
        raise ValueError(f"solve_assignment needs a finite 2-D cost matrix, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    c = cost.T if transposed else cost
    n, m = c.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=int)  # owner[j]: the row (1-based) holding column j; column 0 is the root
    way = np.zeros(m + 1, dtype=int)
    for row in range(1, n + 1):
        owner[0], column = row, 0
        reach = np.full(m + 1, np.inf)  # least reduced cost from the tree to each column
        in_tree = np.zeros(m + 1, dtype=bool)
        while True:  # grow the tree of shortest paths from `row` until it reaches a free column
            in_tree[column] = True
            i = owner[column]
            reduced = c[i - 1] - u[i] - v[1:]
            outside = ~in_tree[1:]
            closer = outside & (reduced < reach[1:])
            reach[1:][closer], way[1:][closer] = reduced[closer], column
            candidates = np.where(outside, reach[1:], np.inf)
            nearest = int(np.argmin(candidates)) + 1
            delta = candidates[nearest - 1]
            u[owner[in_tree]] += delta
            v[in_tree] -= delta
            reach[1:][outside] -= delta
            column = nearest
            if owner[column] == 0:
                break
        while column:  # flip the path: each column on it goes to the row before it
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    rows, cols = owner[1:] - 1, np.arange(m)
    rows, cols = rows[rows >= 0], cols[rows >= 0]
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def match(similarity: np.ndarray, min_similarity: float = MIN_SIMILARITY) -> tuple[np.ndarray, np.ndarray]:
    """(tracks, detections): the pairs of the largest total similarity, counting only pairs of at
    least `min_similarity` (the others are never paired)."""
    gated = np.where(similarity >= min_similarity, similarity, 0.0)
    if not gated.any():
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    best = gated.argmax(axis=1)
    if len(similarity) <= similarity.shape[1] and len(np.unique(best)) == len(best):
        rows, cols = np.arange(len(best)), best  # each track's best is its own: no better total exists
    else:
        rows, cols = solve_assignment(1.0 - gated)
    keep = gated[rows, cols] > 0
    return rows[keep], cols[keep]


# --------------------------------------------------------------------------------------
# One-Euro filter
# --------------------------------------------------------------------------------------
def smoothing_factor(cutoff_hz: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    """The weight of a new sample in an exponential low-pass filter of cutoff `cutoff_hz` sampled
    every `dt` seconds: 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff)."""
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff_hz, dtype=float))
    return 1.0 / (1.0 + tau / dt)


@dataclass
class OneEuroState:
    """One-Euro filters over points (..., P, 2): the filtered positions, the filtered velocities in
    pixels per second, and which points have a filtered value (`live`, (..., P); the others start afresh)."""
    value: np.ndarray
    velocity: np.ndarray
    live: np.ndarray

    @classmethod
    def start(cls, points: np.ndarray, seen: np.ndarray) -> OneEuroState:
        points = np.asarray(points, dtype=float)
        return cls(points.copy(), np.zeros_like(points), np.asarray(seen, dtype=bool).copy())


def one_euro_step(state: OneEuroState, points: np.ndarray, seen: np.ndarray, dt: np.ndarray | float,
                  scale: float, min_cutoff: float = DEFAULT_MIN_CUTOFF, beta: float = DEFAULT_BETA,
                  d_cutoff: float = DERIVATIVE_CUTOFF) -> OneEuroState:
    """The filters after the new samples `points` (..., P, 2), taken `dt` s (a number, or one per
    leading index, (...)) after the previous ones; `value` is the smoothed points. Speeds count in
    `scale` pixels (the frame width). A point not `seen` now is not filtered, and one seen again
    after an absence starts at its new sample."""
    points, seen = np.asarray(points, dtype=float), np.asarray(seen, dtype=bool)
    dt = np.asarray(dt, dtype=float)[..., None, None]
    velocity = state.velocity + smoothing_factor(d_cutoff, dt) * ((points - state.value) / dt - state.velocity)
    cutoff = min_cutoff + beta * np.sqrt((velocity ** 2).sum(-1, keepdims=True)) / scale
    value = state.value + smoothing_factor(cutoff, dt) * (points - state.value)
    going_on = (seen & state.live)[..., None]
    return OneEuroState(np.where(going_on, value, points), np.where(going_on, velocity, 0.0), seen.copy())


# --------------------------------------------------------------------------------------
# Tracks and the tracker
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrackerSettings:
    """What detect.py's tracking flags set: frames a track may go unseen (`buffer`), the keypoint
    score a joint needs to count as seen (`kp_thresh`, detect.py's --kp-thresh), and the One-Euro
    filter (`smooth`, `min_cutoff`, `beta`)."""
    buffer: int = DEFAULT_BUFFER
    kp_thresh: float = 2.0
    smooth: bool = False
    min_cutoff: float = DEFAULT_MIN_CUTOFF
    beta: float = DEFAULT_BETA
    min_similarity: float = MIN_SIMILARITY


@dataclass
class Tracks:
    """The tracks of a source, one row each: id, where the person was last detected (box (T, 4),
    keypoints (T, K, 2) and which of them were seen) and when (s), how fast the box centre moves
    (pixels per second), frames detected and frames unseen since, and the One-Euro filters of
    the keypoints and of the box's two corners (T, K + 2, 2)."""
    ids: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    seen: np.ndarray
    times: np.ndarray
    velocity: np.ndarray
    hits: np.ndarray
    missed: np.ndarray
    smoothed: OneEuroState

    @classmethod
    def start(cls, ids: np.ndarray, boxes: np.ndarray, points: np.ndarray, seen: np.ndarray,
              time_s: float) -> Tracks:
        n = len(ids)
        return cls(ids, boxes, points, seen, np.full(n, time_s), np.zeros((n, 2)), np.ones(n, dtype=int),
                   np.zeros(n, dtype=int), OneEuroState.start(filter_points(points, boxes), with_corners(seen)))

    def __len__(self) -> int:
        return len(self.ids)

    def expected(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(boxes, keypoints) where the tracks should be at `time_s`: moved on at their velocity."""
        shift = self.velocity * (time_s - self.times)[:, None]
        return self.boxes + np.tile(shift, 2), self.points + shift[:, None, :]

    def take(self, rows: np.ndarray) -> Tracks:
        s = self.smoothed
        return Tracks(self.ids[rows], self.boxes[rows], self.points[rows], self.seen[rows], self.times[rows],
                      self.velocity[rows], self.hits[rows], self.missed[rows],
                      OneEuroState(s.value[rows], s.velocity[rows], s.live[rows]))

    def extend(self, other: Tracks) -> Tracks:
        s, o = self.smoothed, other.smoothed
        joined = {name: np.concatenate([getattr(self, name), getattr(other, name)])
                  for name in ("ids", "boxes", "points", "seen", "times", "velocity", "hits", "missed")}
        return Tracks(**joined, smoothed=OneEuroState(*(np.concatenate([getattr(s, name), getattr(o, name)])
                                                        for name in ("value", "velocity", "live"))))


def filter_points(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """What a track's filter smooths: its keypoints (N, K, 2), then its box's corners: (N, K + 2, 2)."""
    return np.concatenate([points, boxes.reshape(-1, 2, 2)], axis=1)


def with_corners(seen: np.ndarray) -> np.ndarray:
    return np.concatenate([seen, np.ones((len(seen), 2), dtype=bool)], axis=1)


def centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


class Tracker:
    """The tracks of one source (a video, a folder's frames, a camera), updated frame by frame.
    `sigmas`: the keypoint set's OKS sigmas (COCO's for its 17)."""

    def __init__(self, sigmas: Sequence[float], settings: TrackerSettings = TrackerSettings()) -> None:
        self.sigmas = np.asarray(sigmas, dtype=float)
        self.settings = settings
        k = len(self.sigmas)
        self.tracks = Tracks.start(np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros((0, k, 2)),
                                   np.zeros((0, k), dtype=bool), 0.0)
        self.next_id = 1
        self.time_s = -math.inf

    @classmethod
    def for_keypoints(cls, keypoint_set: KeypointSet, settings: TrackerSettings = TrackerSettings()) -> Tracker:
        """A tracker of `keypoint_set`'s people, with the OKS sigmas COCO's evaluation uses for it."""
        return cls(oks_sigmas(keypoint_set, verbose=False)[0], settings)

    def update(self, detections: dict[str, np.ndarray], time_s: float, frame_width: int) -> dict[str, np.ndarray]:
        """`detections` without the duplicate poses (`without_duplicates`), with `track_ids` (N,) and,
        when smoothing, filtered `boxes` and `keypoints`. `time_s`: the frame's time in seconds,
        later than the previous frame's."""
        if not time_s > self.time_s:
            raise ValueError(f"frame time {time_s} s is not after the previous one ({self.time_s} s)")
        self.time_s = time_s
        seen = self.seen(detections)
        keep = without_duplicates(detections, seen, self.sigmas)
        if not keep.all():
            detections, seen = {name: value[keep] for name, value in detections.items()}, seen[keep]
        boxes = np.asarray(detections["boxes"], dtype=float).reshape(-1, 4)
        n, k = len(boxes), len(self.sigmas)
        points = np.asarray(detections["keypoints"], dtype=float)[..., :2].reshape(n, k, 2)
        tracks = self.tracks
        rows, cols = self._match(boxes, points, seen, time_s)
        self._observe(rows, boxes[cols], points[cols], seen[cols], time_s, frame_width)
        ids = np.zeros(n, dtype=np.int64)
        ids[cols] = tracks.ids[rows]
        smoothed = np.empty((n, k + 2, 2))
        smoothed[cols] = tracks.smoothed.value[rows]
        fresh = np.flatnonzero(ids == 0)
        ids[fresh] = np.arange(self.next_id, self.next_id + len(fresh))
        self.next_id += len(fresh)
        born = Tracks.start(ids[fresh], boxes[fresh], points[fresh], seen[fresh], time_s)
        smoothed[fresh] = born.smoothed.value
        # A young track unseen for a few frames was most likely no one: it goes then, not after the buffer.
        young = tracks.hits < CONFIRMED_HITS
        alive = (tracks.missed <= self.settings.buffer) & (~young | (tracks.missed <= YOUNG_BUFFER))
        self.tracks = tracks.take(alive).extend(born)
        if not self.settings.smooth:
            return {**detections, "track_ids": ids}
        keypoints = np.array(detections["keypoints"], dtype=np.float32)
        keypoints[..., :2] = smoothed[:, :k]
        return {**detections, "track_ids": ids, "keypoints": keypoints,
                "boxes": smoothed[:, k:].reshape(n, 4).astype(np.float32)}

    def _match(self, boxes: np.ndarray, points: np.ndarray, seen: np.ndarray,
               time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(tracks, detections) paired: tracks seen CONFIRMED_HITS times first, then the young ones
        with the detections left, so that a spurious detection's track of a frame or two cannot
        take someone's place from the track that has followed them."""
        tracks = self.tracks
        expected_boxes, expected_points = tracks.expected(time_s)
        similarity = pose_similarity(expected_boxes, expected_points, tracks.seen, boxes, points, seen, self.sigmas)
        confirmed = np.flatnonzero(tracks.hits >= CONFIRMED_HITS)
        young = np.flatnonzero(tracks.hits < CONFIRMED_HITS)
        rows, cols = match(similarity[confirmed], self.settings.min_similarity)
        left = np.setdiff1d(np.arange(len(boxes)), cols)
        young_rows, young_cols = match(similarity[young][:, left], self.settings.min_similarity)
        return (np.concatenate([confirmed[rows], young[young_rows]]).astype(int),
                np.concatenate([cols, left[young_cols]]).astype(int))

    def seen(self, detections: dict[str, np.ndarray]) -> np.ndarray:
        """(N, K) bool: the joints that count, those scoring at least the keypoint threshold."""
        n, k = len(detections["boxes"]), len(self.sigmas)
        points = np.asarray(detections["keypoints"], dtype=float)[..., :2].reshape(n, k, 2)
        return (np.asarray(detections["keypoint_scores"]).reshape(n, k) >= self.settings.kp_thresh) \
            & np.isfinite(points).all(-1)

    def _observe(self, rows: np.ndarray, boxes: np.ndarray, points: np.ndarray, seen: np.ndarray, time_s: float,
                 frame_width: int) -> None:
        """Tracks `rows` detected again now; every other track one more frame unseen."""
        t = self.tracks
        dt = time_s - t.times[rows]
        # How far the joints seen in both frames moved, on average (a box's edges jump more than joints),
        # or the box's centre where no joint is shared.
        both = (seen & t.seen[rows])[..., None]
        shift = np.where(both, points - t.points[rows], 0.0).sum(1) / np.maximum(both.sum(1), 1)
        shift = np.where(both.any(1), shift, centres(boxes) - centres(t.boxes[rows]))
        moved = shift / dt[:, None]
        # The mean of all moves while a track is young (less noisy than the last move alone), then an average
        # that forgets.
        blend = np.maximum(1.0 / t.hits[rows], VELOCITY_BLEND)[:, None]
        t.velocity[rows] += blend * (moved - t.velocity[rows])
        if self.settings.smooth:
            s = t.smoothed
            step = one_euro_step(OneEuroState(s.value[rows], s.velocity[rows], s.live[rows]),
                                 filter_points(points, boxes), with_corners(seen), dt, frame_width,
                                 self.settings.min_cutoff, self.settings.beta)
            s.value[rows], s.velocity[rows], s.live[rows] = step.value, step.velocity, step.live
        t.boxes[rows], t.points[rows], t.seen[rows], t.times[rows] = boxes, points, seen, time_s
        t.hits[rows] += 1
        t.missed += 1
        t.missed[rows] = 0


# --------------------------------------------------------------------------------------
# detect.py's flags
# --------------------------------------------------------------------------------------
def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracking (videos, folders of frames, cameras and streams)")
    group.add_argument("--track", action="store_true",
                       help="give each person an id that stays with them from frame to frame, drawn beside them in "
                            "its own colour and saved as track_id in the JSON; the images of a folder are frames "
                            "of one sequence, in name order")
    group.add_argument("--track-buffer", type=utils.nonnegative_int, default=None, metavar="N",
                       help=f"frames a person may go unseen and keep their id (default: {DEFAULT_BUFFER})")
    group.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                       help="steady the joints of each tracked person with a One-Euro filter (needs --track; "
                            "default: on with --track for --camera, off for --file)")
    group.add_argument("--smooth-min-cutoff", type=utils.positive_float, default=None, metavar="HZ",
                       help="the filter's cutoff for a still joint: lower is steadier, higher follows slow "
                            f"moves sooner (default: {DEFAULT_MIN_CUTOFF:g})")
    group.add_argument("--smooth-beta", type=utils.nonnegative_float, default=None, metavar="B",
                       help="how fast the cutoff rises with a joint's speed (in frame widths per second): higher "
                            f"lags less behind moving people, lower is steadier (default: {DEFAULT_BETA:g})")
    group.add_argument("--frame-rate", type=utils.positive_float, default=None, metavar="FPS",
                       help="frames per second of a folder of images, the filter's clock (videos and cameras "
                            f"have their own; default: {DEFAULT_FRAME_RATE:g})")


def smoothing_on(args: argparse.Namespace, live: bool) -> bool:
    """Whether detect.py smooths: --smooth, or by default with --track on a live source."""
    return bool(args.track and (args.smooth if args.smooth is not None else live))


def check_tracking_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, live: bool) -> None:
    """Refuse (argparse's one-line error, exit 2) tracking flags that would do nothing."""
    if args.smooth and not args.track:
        parser.error("--smooth needs --track (the filter follows each person by their id)")
    for flag, value in {"--track-buffer": args.track_buffer, "--frame-rate": args.frame_rate}.items():
        if value is not None and not args.track:
            parser.error(f"{flag} needs --track")
    for flag, value in {"--smooth-min-cutoff": args.smooth_min_cutoff, "--smooth-beta": args.smooth_beta}.items():
        if value is not None and not smoothing_on(args, live):
            parser.error(f"{flag} needs smoothing on (--track, and --smooth for --file)")


def tracker_for(args: argparse.Namespace, keypoint_set: KeypointSet, live: bool) -> Tracker | None:
    """A new Tracker for one source as detect.py's flags ask (`live`: a camera or a stream), or
    None without --track."""
    if not args.track:
        return None
    given = {"buffer": args.track_buffer, "min_cutoff": args.smooth_min_cutoff, "beta": args.smooth_beta}
    settings = TrackerSettings(kp_thresh=args.kp_thresh, smooth=smoothing_on(args, live),
                               **{name: value for name, value in given.items() if value is not None})
    return Tracker.for_keypoints(keypoint_set, settings)


def frame_rate(args: argparse.Namespace) -> float:
    """The clock of a folder of images (--frame-rate)."""
    return args.frame_rate or DEFAULT_FRAME_RATE
