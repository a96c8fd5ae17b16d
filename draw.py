"""Pictures: skeletons drawn with OpenCV (left limbs warm, right limbs cool, the body's centre line
green), train.py's training curves and test.py --analyze's keypoint error pictures (matplotlib, and
ground truth beside detections with their wrong joints ringed).

Any keypoint set is drawn with its own skeleton; colours come from the names: the side from
left/right in the name, the limb from the joints' parts (COCO's parts have their own colours).
"""
from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state

from keypoints import COCO17, KeypointSet, part_of, side_of
from utils import atomic_write

# BGR colours. Left limbs are warm (reds, oranges, yellows), right limbs cool (blues, cyans,
# violets), the limbs that join both sides green: a mirrored pose looks visibly wrong. Every
# limb and every keypoint has its own colour, so crossed arms or legs can still be told apart.
LEFT_COLOR = (0, 140, 255)     # orange, the left upper arm


RIGHT_COLOR = (255, 120, 0)    # blue, the right upper arm


CENTER_COLOR = (80, 200, 60)   # green, the shoulder line


SEGMENT_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (left, right)
    "face": ((170, 110, 255), (255, 190, 120)),       # nose-eye: pink, light blue
    "ear": ((100, 160, 255), (255, 170, 200)),        # eye-ear: peach, lavender
    "neck": ((90, 90, 255), (200, 200, 100)),         # ear-shoulder: salmon, teal
    "upper_arm": (LEFT_COLOR, RIGHT_COLOR),           # orange, blue
    "forearm": ((0, 220, 255), (255, 230, 0)),        # yellow, cyan
    "torso": ((30, 180, 255), (220, 150, 40)),        # amber, steel blue
    "thigh": ((40, 40, 235), (235, 60, 40)),          # red, royal blue
    "shin": ((140, 50, 230), (210, 40, 150)),         # rose, violet
}


CENTER_COLORS: dict[str, tuple[int, int, int]] = {
    "shoulder": CENTER_COLOR, "hip": (60, 160, 40), "eye": (150, 230, 150), "nose": (150, 230, 150),
}


OUTLINE_COLOR = (30, 30, 30)   # a dark rim keeps limbs readable on any background


BOX_COLOR = (60, 220, 255)


_SEGMENTS = {
    frozenset(("nose", "eye")): "face",
    frozenset(("eye", "ear")): "ear",
    frozenset(("ear", "shoulder")): "neck",
    frozenset(("nose", "shoulder")): "neck",  # sets without ears, such as keypoints.COCO13
    frozenset(("shoulder", "elbow")): "upper_arm",
    frozenset(("elbow", "wrist")): "forearm",
    frozenset(("shoulder", "hip")): "torso",
    frozenset(("hip", "knee")): "thigh",
    frozenset(("knee", "ankle")): "shin",
}


def limb_segment(name_a: str, name_b: str) -> str | None:
    """The body segment a limb between two keypoints is ("upper_arm" for left_shoulder and
    left_elbow, in either order), by the joints' parts; None for a pair no segment names."""
    return _SEGMENTS.get(frozenset((part_of(name_a), part_of(name_b))))


# A keypoint takes the colour of the limb that ends at it, coming from the body's centre.
_KEYPOINT_SEGMENT = {"eye": "face", "ear": "ear", "shoulder": "neck", "elbow": "upper_arm",
                     "wrist": "forearm", "hip": "torso", "knee": "thigh", "ankle": "shin"}


def _limb_color(na: str, nb: str) -> tuple[int, int, int]:
    sides = {side_of(na), side_of(nb)} - {None}
    if len(sides) == 2:  # shoulders, hips, eyes
        return CENTER_COLORS.get(part_of(na), CENTER_COLOR)
    if not sides:
        return CENTER_COLOR
    segment = limb_segment(na, nb)
    side = sides.pop()
    return SEGMENT_COLORS[segment][side] if segment else (LEFT_COLOR, RIGHT_COLOR)[side]


def _keypoint_color(name: str) -> tuple[int, int, int]:
    side, joint = side_of(name), part_of(name)
    if side is None:
        return CENTER_COLORS.get(joint, CENTER_COLOR)
    if joint not in _KEYPOINT_SEGMENT:
        return (LEFT_COLOR, RIGHT_COLOR)[side]
    return SEGMENT_COLORS[_KEYPOINT_SEGMENT[joint]][side]


@lru_cache(maxsize=8)
def colors(keypoint_set: KeypointSet) -> tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]:
    """(a colour per keypoint, a colour per limb of the set's skeleton), by side and part."""
    names = keypoint_set.names
    return (tuple(_keypoint_color(n) for n in names),
            tuple(_limb_color(names[a], names[b]) for a, b in keypoint_set.skeleton))


KEYPOINT_COLORS, LIMB_COLORS = colors(COCO17)


def draw_poses(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray | None = None,
    score_thresh: float = 0.0,
    kp_thresh: float = 0.0,
    draw_boxes: bool = True,
    line_width: int | None = None,
    keypoint_set: KeypointSet = COCO17,
) -> np.ndarray:
    """Draw skeletons in place on a BGR uint8 image and return it.

    boxes (N,4) x1y1x2y2, scores (N,), keypoints (N,K,2 or 3), keypoint_scores (N,K) or
    None (then the third keypoint column, if present, is used: visibility > 0). Persons with
    score < score_thresh and keypoints with score < kp_thresh are not drawn, nor limbs with
    such an end. The line width scales with the image (about 1/160 of its shorter side, or
    `line_width`) and shrinks for small persons, so that a crowd does not turn into a blot.
    Persons are drawn from the lowest score up, so the surest skeleton ends on top.
    Limbs are `keypoint_set`'s skeleton (COCO's 17 by default).
    """
    keypoint_colors, limb_colors = colors(keypoint_set)
    h, w = image.shape[:2]
    base = line_width or max(1, round(min(h, w) / 160))
    font_scale = max(0.4, min(h, w) / 1000)
    font_thickness = max(1, round(font_scale * 2))
    order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
    for i in order:
        if scores[i] < score_thresh:
            continue
        pts = np.asarray(keypoints[i], dtype=float)
        if keypoint_scores is not None:
            ok = np.asarray(keypoint_scores[i]) >= kp_thresh
        elif pts.shape[-1] > 2:
            ok = pts[:, 2] > 0
        else:
            ok = np.ones(len(pts), dtype=bool)
        ok = ok & np.isfinite(pts[:, :2]).all(axis=1)
        x1, y1, x2, y2 = (float(v) for v in boxes[i][:4])
        # A person 60 px tall gets 1-2 px lines whatever the image size.
        thickness = max(1, min(base, round(max(x2 - x1, y2 - y1) / 40)))
        radius = thickness + 1
        xy = [(int(round(x)), int(round(y))) for x, y in pts[:, :2].tolist()] if ok.any() else []
        limbs = [(xy[a], xy[b], color) for (a, b), color in zip(keypoint_set.skeleton, limb_colors)
                 if a < len(xy) and b < len(xy) and ok[a] and ok[b]]
        joints = [(p, keypoint_colors[j % len(keypoint_colors)]) for j, p in enumerate(xy) if ok[j]]
        for pa, pb, _ in limbs:
            cv2.line(image, pa, pb, OUTLINE_COLOR, thickness + 2, cv2.LINE_AA)
        for p, _ in joints:
            cv2.circle(image, p, radius + 1, OUTLINE_COLOR, -1, cv2.LINE_AA)
        for pa, pb, color in limbs:
            cv2.line(image, pa, pb, color, thickness, cv2.LINE_AA)
        for p, color in joints:
            cv2.circle(image, p, radius, color, -1, cv2.LINE_AA)
        if draw_boxes:
            p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
            cv2.rectangle(image, p1, p2, BOX_COLOR, max(1, thickness // 2), cv2.LINE_AA)
            _label(image, f"{float(scores[i]):.2f}", p1, BOX_COLOR, font_scale, font_thickness)
    return image


def _label(image: np.ndarray, text: str, corner: tuple[int, int], color: tuple[int, int, int], font_scale: float,
           font_thickness: int) -> None:
    """`text` on a patch of `color` just above `corner` (inside the image), in black or white, whichever reads."""
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
    y_text = max(th + baseline, corner[1])
    cv2.rectangle(image, (corner[0], y_text - th - baseline), (corner[0] + tw + 2, y_text), color, -1)
    ink = (0, 0, 0) if 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2] > 128 else (255, 255, 255)
    cv2.putText(image, text, (corner[0] + 1, y_text - baseline), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink,
                font_thickness, cv2.LINE_AA)


def track_color(track_id: int) -> tuple[int, int, int]:
    """A BGR colour of a track id's own: hues a golden ratio of the circle apart, so that ids close
    in number, which are often people close in the frame, differ most."""
    red, green, blue = colorsys.hsv_to_rgb((int(track_id) * 0.618033988749895) % 1.0, 0.8, 1.0)
    return round(blue * 255), round(green * 255), round(red * 255)


def draw_track_ids(image: np.ndarray, boxes: np.ndarray, track_ids: np.ndarray, scores: np.ndarray | None = None,
                   line_width: int | None = None) -> np.ndarray:
    """Each person's box and id (`#3`, and the score when `scores` are given) in the id's own
    colour, in place on a BGR uint8 image, over the skeletons of draw_poses; returns the image."""
    h, w = image.shape[:2]
    base = line_width or max(1, round(min(h, w) / 160))
    font_scale = max(0.4, min(h, w) / 1000)
    for i, track_id in enumerate(np.asarray(track_ids).tolist()):
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i][:4])
        color = track_color(track_id)
        thickness = max(1, min(base, round(max(x2 - x1, y2 - y1) / 40)))
        cv2.rectangle(image, (x1, y1), (x2, y2), color, max(1, thickness // 2), cv2.LINE_AA)
        text = f"#{track_id}" + ("" if scores is None else f" {float(scores[i]):.2f}")
        _label(image, text, (x1, y1), color, font_scale, max(1, round(font_scale * 2)))
    return image


# The kinds of keypoint error (coco_analyze.KINDS) in the plots, and the rings that mark the wrong
# joints on an example image (BGR): the paper's warm shades, good in green.
ERROR_COLORS = {"good": "#5aa469", "jitter": "#8c4646", "inversion": "#d96459", "swap": "#f2ae72", "miss": "#f2e394"}


ERROR_RINGS = {"inversion": (255, 0, 255), "swap": (0, 0, 255), "miss": (0, 230, 255)}


FIX_COLORS = {"scoring": "#4f82bd", "background": "#8063a3"}  # the other two bars of the AP-improvement plot


def plot_history(path: Path, history: list[dict], title: str) -> None:
    """train.py's curves as a PNG: the train and val loss per epoch, and COCO AP where it was computed."""
    evaluated = [h for h in history if h.get("keypoint_AP") is not None]
    analysed = [h for h in evaluated if ((h.get("metrics") or {}).get("keypoint_errors") or {}).get("good") is not None]
    panels = 1 + bool(evaluated) + bool(analysed)
    fig = Figure(figsize=(5.5 * panels, 4), dpi=100)
    ax = fig.add_subplot(1, panels, 1)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if any(h.get("val_loss") is not None for h in history):
        ax.plot([h["epoch"] for h in history if h.get("val_loss") is not None],
                [h["val_loss"] for h in history if h.get("val_loss") is not None], "s-", label="val")
    ax.set(xlabel="epoch", ylabel="loss (sum of the 5 losses)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    if evaluated:
        ax = fig.add_subplot(1, panels, 2)
        ax.plot([h["epoch"] for h in evaluated], [h["box_AP"] for h in evaluated], "o-", label="box AP")
        ax.plot([h["epoch"] for h in evaluated], [h["keypoint_AP"] for h in evaluated], "s-", label="keypoint AP")
        ax.set(xlabel="epoch", ylabel="COCO AP (val)", title="validation AP")
        ax.grid(alpha=0.3)
        ax.legend()
    if analysed:
        plot_error_history(fig.add_subplot(1, panels, 3), analysed)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_error_history(ax, analysed: list[dict]) -> None:
    """train.py --analyze: each kind of keypoint error's share per evaluated epoch, stacked."""
    epochs = np.array([h["epoch"] for h in analysed])
    bottom = np.zeros(len(analysed))
    for kind, color in ERROR_COLORS.items():
        share = np.array([100 * h["metrics"]["keypoint_errors"][kind] for h in analysed])
        ax.bar(epochs, share, bottom=bottom, color=color, label=kind, width=0.8)
        bottom += share
    ax.set(xlabel="epoch", ylabel="% of the matched persons' labelled joints", ylim=(0, 100),
           title="keypoint errors (val, --analyze)")
    ax.legend(fontsize=8, loc="lower left")


def plot_keypoint_errors(path: Path, per_keypoint: dict[str, dict[str, float | None]],
                         overall: dict[str, float | None], ap: float, ap_if_fixed: dict[str, float], title: str) -> Path:
    """test.py --analyze's picture: the error fractions per keypoint as stacked bars, and the keypoint
    AP gained by fixing each kind of error alone."""
    rows = {"all": overall, **per_keypoint}
    fig = Figure(figsize=(13, max(4.0, 0.32 * len(rows) + 1.6)), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    names = list(rows)[::-1]  # "all" on top
    left = np.zeros(len(names))
    for kind, color in ERROR_COLORS.items():
        share = np.array([100 * (rows[n].get(kind) or 0.0) for n in names])
        ax.barh(names, share, left=left, color=color, label=kind, edgecolor="white", linewidth=0.5)
        left += share
    ax.set(xlim=(0, 100), xlabel="% of the labelled joints of matched persons", title=f"keypoint errors: {title}")
    ax.legend(ncol=len(ERROR_COLORS), loc="lower center", bbox_to_anchor=(0.5, 1.06), fontsize=8, frameon=False)
    ax = fig.add_subplot(1, 2, 2)
    fixes = list(ap_if_fixed)[::-1]
    gains = [ap_if_fixed[k] - ap for k in fixes]
    bars = ax.barh(fixes, gains, color=[{**ERROR_COLORS, **FIX_COLORS}.get(k, "gray") for k in fixes], edgecolor="#444444")
    ax.bar_label(bars, labels=[f"{ap_if_fixed[k]:.3f}" for k in fixes], padding=3, fontsize=8)
    ax.set(xlabel="keypoint AP gained (AP after the fix at the bar's end)", xlim=(0, max(max(gains, default=0), 0.01) * 1.25),
           title=f"keypoint AP {ap:.3f}: fixing one kind alone")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def draw_error_example(image: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]],
                       detections: list[tuple[np.ndarray, np.ndarray, float, list[str | None]]],
                       keypoint_set: KeypointSet, captions: tuple[str, str]) -> np.ndarray:
    """Ground truth (boxes x1y1x2y2 and (K, 3) keypoints) beside the detections matched to it, each
    joint ringed by its kind of error (ERROR_RINGS); a caption above each side. Returns a new BGR image."""
    left, right = image.copy(), image.copy()
    if truth:
        boxes, kps = (np.array(v, dtype=float) for v in zip(*truth))
        draw_poses(left, boxes, np.ones(len(boxes)), kps, draw_boxes=False, keypoint_set=keypoint_set)
    if detections:
        boxes, kps, scores = (np.array([d[i] for d in detections], dtype=float) for i in range(3))
        draw_poses(right, boxes, scores, kps, keypoint_set=keypoint_set)
    radius = max(4, round(min(image.shape[:2]) / 60))
    for _, kps, _, marks in detections:
        for (x, y, *_), mark in zip(kps, marks):
            if mark in ERROR_RINGS:
                cv2.circle(right, (int(round(x)), int(round(y))), radius, ERROR_RINGS[mark], 2, cv2.LINE_AA)
    scale = max(0.45, min(image.shape[:2]) / 900)
    band = int(round(34 * scale))
    panels = []
    for panel, caption in zip((left, right), captions):
        header = np.full((band, panel.shape[1], 3), 32, dtype=np.uint8)
        thickness = max(1, round(scale * 2))
        fit = scale  # a long caption on a narrow image shrinks (OpenCV's text sizes go in steps)
        while fit > 0.25 and cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, fit, thickness)[0][0] > panel.shape[1] - 12:
            fit *= 0.9
        cv2.putText(header, caption, (6, band - int(10 * scale)), cv2.FONT_HERSHEY_SIMPLEX, fit, (255, 255, 255),
                    thickness, cv2.LINE_AA)
        panels.append(np.vstack([header, panel]))
    return np.hstack(panels)
