"""Synthetic people for offline use: stick-limb figures drawn with PIL, annotated like COCO.

`python dataset.py --sample DIR` calls `make_sample_dataset`; the images and the annotation
files follow COCO 2017's person-keypoint layout exactly, so every script runs on them as on
the real data. Same arguments give byte-identical files.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from keypoints import COCO17, KeypointSet
from utils import COCO_KEYPOINT_NAMES, NUM_KEYPOINTS, PERSON_ID, DatasetError, coco_paths

# --------------------------------------------------------------------------------------
# Synthetic sample dataset: stick-limb people drawn with PIL, annotated like COCO
# --------------------------------------------------------------------------------------
# Body proportions as fractions of the standing height (top of head to soles).
_HEAD_R, _NECK, _TORSO = 0.062, 0.118, 0.31
_SHOULDER_W, _HIP_W = 0.115, 0.085
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.175, 0.16, 0.245, 0.245
_WIDTH = {"upper_arm": 0.058, "forearm": 0.047, "thigh": 0.088, "shin": 0.066, "neck": 0.05, "shoe": 0.045}

_SKIN = [(255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 90), (161, 102, 64), (112, 72, 48), (80, 52, 36)]
_HAIR = [(25, 20, 18), (60, 40, 25), (105, 68, 38), (185, 150, 90), (200, 200, 195), (135, 55, 30)]
_PANTS = [(40, 60, 110), (30, 30, 35), (95, 85, 65), (70, 70, 75), (120, 30, 40), (50, 80, 60), (160, 150, 130)]

# pose name -> (probability, views it is drawn in)
_POSES = {
    "stand": (0.22, ("front", "front", "back", "side")),
    "walk": (0.16, ("side",)),
    "run": (0.08, ("side",)),
    "arms_up": (0.09, ("front", "back")),
    "wave": (0.1, ("front", "front", "back")),
    "arms_out": (0.07, ("front", "back")),
    "hands_on_hips": (0.08, ("front",)),
    "sit": (0.1, ("side",)),
    "squat": (0.04, ("front",)),
    "kick": (0.06, ("side",)),
}
_LEFT, _RIGHT = 0, 1
# Label-map value offset for the far-side limbs of a side view, so that joints hidden behind the
# person's own torso also count as "labelled but not visible" (v=1), as COCO annotators mark them.
_FAR = 100
_KEYPOINT_SIDE = [_LEFT if n.startswith("left_") and i >= 5 else _RIGHT if n.startswith("right_") and i >= 5
                  else None for i, n in enumerate(COCO_KEYPOINT_NAMES)]


def _unit(deg: float) -> np.ndarray:
    """Direction in image coordinates: 0 deg points down, +90 to the right, 180 up."""
    a = math.radians(deg)
    return np.array([math.sin(a), math.cos(a)])


def _pose_angles(rng: np.random.Generator, pose: str) -> dict[str, Any]:
    """Joint angles of a pose, degrees. Per side: arm (a, b, c, d), leg (a, b, c, d), where `a`/`c`
    open sideways (away from the body) and `b`/`d` swing forwards (towards where the person faces);
    a, b move the upper limb, c, d bend the lower one. `lean` tilts the torso forwards."""
    U = rng.uniform
    arms = [[U(4, 20), U(-8, 8), U(-5, 20), U(0, 20)] for _ in range(2)]
    legs = [[U(2, 8), U(-4, 4), U(-4, 3), U(0, 8)] for _ in range(2)]
    lean, thigh_scale, seat = U(-5, 5), 1.0, False
    if pose in ("walk", "run"):
        run = pose == "run"
        s = rng.choice([-1, 1]) * U(0.5, 1.0)
        for side, sign in ((_LEFT, 1), (_RIGHT, -1)):
            swing = sign * s * (U(30, 50) if run else U(18, 30))
            legs[side] = [U(1, 4), swing, 0, (U(50, 100) if run else U(15, 35)) if swing < 0 else U(5, 30)]
            arms[side] = [U(2, 8), -swing * U(0.6, 1.0), 0, U(70, 110) if run else U(10, 40)]
        lean = U(6, 16) if run else U(-2, 5)  # leaning into the run
    elif pose == "arms_up":
        arms = [[U(125, 172), 0, U(-15, 15), 0] for _ in range(2)]
        if rng.random() < 0.4:
            legs = [[U(12, 25), 0, U(-4, 2), 0] for _ in range(2)]
    elif pose == "wave":
        side = int(rng.integers(2))
        arms[side] = [U(90, 140), 0, U(25, 70), 0]
    elif pose == "arms_out":
        arms = [[U(70, 105), 0, U(-25, 25), 0] for _ in range(2)]
    elif pose == "hands_on_hips":
        arms = [[U(35, 50), 0, -U(100, 120), 0] for _ in range(2)]
        if rng.random() < 0.5:  # only one hand on the hip
            arms[int(rng.integers(2))] = [U(4, 15), 0, U(0, 15), 0]
    elif pose == "sit":
        for side in (_LEFT, _RIGHT):
            t = U(70, 95)
            legs[side] = [0, t, 0, t + U(-15, 15)]
            arms[side] = [U(2, 6), U(10, 35), 0, U(30, 70)]
        lean, seat = U(-10, 2), True
    elif pose == "squat":
        legs = [[U(30, 45), 0, -U(50, 75), 0] for _ in range(2)]
        arms = [[U(10, 35), 0, -U(0, 40), 0] for _ in range(2)]
        thigh_scale = U(0.55, 0.75)  # thighs point at the camera
    elif pose == "kick":
        side = int(rng.integers(2))
        legs[side] = [0, U(50, 85), 0, U(0, 25)]
        legs[1 - side] = [U(0, 3), -U(0, 10), 0, U(0, 10)]
        arms = [[U(40, 80), U(-20, 20), U(-20, 20), 0] for _ in range(2)]
        lean = -U(2, 12)
    return {"arms": arms, "legs": legs, "lean": lean, "thigh_scale": thigh_scale, "seat": seat}


def _figure(rng: np.random.Generator, pose: str | None = None) -> dict[str, Any]:
    """A random person in body units (height 1, hip centre at the origin, y down), in `pose` or a random one.

    Returns the 17 keypoints, per-keypoint visibility (0 for face parts the view hides) and the
    drawing parts, back to front.
    """
    names = list(_POSES)
    pose = pose or names[int(rng.choice(len(names), p=[_POSES[n][0] for n in names]))]
    views = _POSES[pose][1]
    view = views[int(rng.integers(len(views)))]
    ang = _pose_angles(rng, pose)
    # sigma: which image side a body side is on (a person facing us has their left on our right).
    sigma = {_LEFT: 1.0, _RIGHT: -1.0} if view != "back" else {_LEFT: -1.0, _RIGHT: 1.0}
    face = 0.0 if view != "side" else float(rng.choice([-1.0, 1.0]))  # side view: facing left/right
    c = rng.uniform(0.82, 1.0) if view != "side" else rng.uniform(0.25, 0.5)  # body width, turned
    # Torso angle; positive `lean` from _pose_angles is forwards, i.e. towards where a side view faces.
    lean = -face * ang["lean"] if face else ang["lean"]
    tilt = rng.uniform(-12, 12)

    kp = np.zeros((NUM_KEYPOINTS, 2))
    vis = np.full(NUM_KEYPOINTS, 2)
    up, across = _unit(180 + lean), _unit(90 + lean)
    hip_c = np.zeros(2)
    sh_c = hip_c + _TORSO * up
    head = sh_c + _NECK * _unit(180 + lean + tilt)
    ends = {}
    for side in (_LEFT, _RIGHT):
        s = sigma[side]
        shoulder = sh_c + s * _SHOULDER_W * c * across
        hip = hip_c + s * _HIP_W * c * across
        a, b, cc, d = ang["arms"][side]
        upper = s * a + face * b
        fore = upper + s * cc + face * d
        elbow = shoulder + _UPPER_ARM * _unit(upper)
        wrist = elbow + _FOREARM * _unit(fore)
        a, b, cc, d = ang["legs"][side]
        thigh = s * a + face * b
        shin = thigh + s * cc - face * d  # knees bend backwards
        knee = hip + _THIGH * ang["thigh_scale"] * _unit(thigh)
        ankle = knee + _SHIN * _unit(shin)
        toe_dir = face * 85 if face else s * 35
        ends[side] = (wrist + 0.035 * _unit(fore), ankle + 0.06 * _unit(toe_dir))
        for name, p in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist),
                        ("hip", hip), ("knee", knee), ("ankle", ankle)):
            kp[COCO_KEYPOINT_NAMES.index(("left_" if side == _LEFT else "right_") + name)] = p

    # Face, in the head's frame; a turned head shifts its features towards where it faces.
    r = _HEAD_R
    hx, hy = _unit(90 + lean + tilt), _unit(lean + tilt)
    shift = face * (1 - c) * 0.6 * r
    kp[0] = head + shift * 1.45 * hx + 0.3 * r * hy
    for side, eye, ear in ((_LEFT, 1, 3), (_RIGHT, 2, 4)):
        s = sigma[side]
        kp[eye] = head + (s * 0.38 * r * c + shift) * hx - 0.02 * r * hy
        kp[ear] = head + (s * 0.95 * r * c + 0.3 * shift) * hx + 0.05 * r * hy
        far = face != 0 and s == face  # the side turned away from the camera
        if far and c < 0.6:
            vis[ear] = 0
        if far and c < 0.4:
            vis[eye] = 0
    if view == "back":
        vis[:3] = 0

    parts = _figure_parts(kp, vis, sigma, face, c, lean, head, sh_c, hip_c, ends, view, r)
    far = (_LEFT if sigma[_LEFT] == face else _RIGHT) if face else None
    return {"kp": kp, "vis": vis, "parts": parts, "seat": ang["seat"], "face": face, "far": far}


def _figure_parts(kp, vis, sigma, face, c, lean, head, sh_c, hip_c, ends, view, r) -> list[tuple]:
    """Drawing primitives of a figure in body units, back to front: (kind, colour key, side, geometry)."""
    K = {n: i for i, n in enumerate(COCO_KEYPOINT_NAMES)}
    up, across = _unit(180 + lean), _unit(90 + lean)
    W = _WIDTH

    def limbs(side: int) -> tuple[list[tuple], list[tuple]]:
        n = "left_" if side == _LEFT else "right_"
        hand, toe = ends[side]
        leg = [("limb", "thigh", side, (kp[K[n + "hip"]], kp[K[n + "knee"]], W["thigh"])),
               ("limb", "shin", side, (kp[K[n + "knee"]], kp[K[n + "ankle"]], W["shin"])),
               ("limb", "shoe", side, (kp[K[n + "ankle"]], toe, W["shoe"]))]
        arm = [("limb", "sleeve", side, (kp[K[n + "shoulder"]], kp[K[n + "elbow"]], W["upper_arm"])),
               ("limb", "forearm", side, (kp[K[n + "elbow"]], kp[K[n + "wrist"]], W["forearm"])),
               ("disc", "skin", side, (hand, 0.028))]
        return leg, arm

    # Torso: wide at the shoulders, narrower waist, hips; at least some depth when seen from the side.
    tw, ww, hw = max(_SHOULDER_W * c, 0.06) + 0.03, max(0.085 * c, 0.055) + 0.005, max(_HIP_W * c, 0.055) + 0.04
    waist = hip_c + 0.45 * _TORSO * up
    torso = [sh_c + tw * across + 0.02 * up, waist + ww * across, hip_c + hw * across + 0.02 * up,
             hip_c - hw * across + 0.02 * up, waist - ww * across, sh_c - tw * across + 0.02 * up]
    belt = (ww + hw) / 2
    pelvis = [hip_c + 0.15 * _TORSO * up + belt * across, hip_c + hw * across - 0.03 * up,
              hip_c - hw * across - 0.03 * up, hip_c + 0.15 * _TORSO * up - belt * across]
    body = [("poly", "shirt", None, torso), ("poly", "pants", None, pelvis)]
    neck = [("limb", "skin", None, (sh_c, head + 0.3 * r * _unit(lean), W["neck"]))]

    hx = _unit(90 + lean)
    shift = face * (1 - c) * 0.6 * r
    headparts: list[tuple] = [("disc", "hair", None, (head - 0.3 * shift * hx - 0.12 * r * up, r * 1.02))]
    if view != "back":
        headparts.append(("disc", "skin", None, (head + 0.5 * shift * hx + 0.1 * r * _unit(lean), r * 0.86)))
    for ear in (3, 4):
        if vis[ear]:
            headparts.append(("disc", "skin_dark", None, (kp[ear], 0.2 * r)))
    if view != "back":
        for eye in (1, 2):
            if vis[eye]:
                headparts.append(("dot", "eye", None, (kp[eye], 0.13 * r)))
        headparts.append(("dot", "skin_dark", None, (kp[0], 0.12 * r)))
        mouth = head + 1.1 * shift * hx + 0.58 * r * _unit(lean)
        headparts.append(("dot", "mouth", None, (mouth, 0.1 * r)))

    legs = {s: limbs(s)[0] for s in (_LEFT, _RIGHT)}
    arms = {s: limbs(s)[1] for s in (_LEFT, _RIGHT)}
    if face:  # side view: the far side first, the near side over the torso
        far = _LEFT if sigma[_LEFT] == face else _RIGHT
        near = 1 - far
        return arms[far] + legs[far] + body + legs[near] + neck + headparts + arms[near]
    if view == "back":
        return legs[_LEFT] + legs[_RIGHT] + arms[_LEFT] + arms[_RIGHT] + body + neck + headparts
    return legs[_LEFT] + legs[_RIGHT] + body + neck + headparts + arms[_LEFT] + arms[_RIGHT]


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> tuple[int, int, int]:
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v))
    return tuple(int(round(255 * x)) for x in rgb)


def _shade(color: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(x * f)))) for x in color)


def _palette(rng: np.random.Generator) -> dict[str, tuple[int, int, int]]:
    skin = _shade(_SKIN[int(rng.integers(len(_SKIN)))], rng.uniform(0.92, 1.05))
    shirt = _hsv(rng, (0.25, 0.9), (0.35, 0.95))
    pants = _shade(_PANTS[int(rng.integers(len(_PANTS)))], rng.uniform(0.8, 1.2))
    long_sleeves, shorts = rng.random() < 0.5, rng.random() < 0.25
    return {"skin": skin, "skin_dark": _shade(skin, 0.85), "shirt": shirt, "sleeve": shirt,
            "forearm": shirt if long_sleeves else skin, "pants": pants, "thigh": pants,
            "shin": skin if shorts else pants, "shoe": _shade(_PANTS[int(rng.integers(2))], rng.uniform(0.4, 1.0)),
            "hair": _HAIR[int(rng.integers(len(_HAIR)))], "eye": (20, 20, 25), "mouth": _shade(skin, 0.6)}


class _Painter:
    """Draws on the image and, with the same shapes, on a label map (person index per pixel),
    so that visibility and mask area come from what is actually on screen."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.labels = Image.new("L", image.size, 0)
        self.draws = (ImageDraw.Draw(image), ImageDraw.Draw(self.labels))

    def limb(self, p, q, width: float, color, label: int) -> None:
        w = max(1, int(round(width)))
        for draw, fill in zip(self.draws, (color, label)):
            draw.line([tuple(p), tuple(q)], fill=fill, width=w)
        for c in (p, q):  # rounded ends
            self.disc(c, width / 2, color, label)

    def disc(self, c, r: float, color, label: int | None) -> None:
        box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
        for draw, fill in zip(self.draws, (color, label)):
            if fill is not None:
                draw.ellipse(box, fill=fill)

    def poly(self, points, color, label: int) -> None:
        pts = [tuple(p) for p in points]
        for draw, fill in zip(self.draws, (color, label)):
            draw.polygon(pts, fill=fill)

    def rect(self, box, color, label: int) -> None:
        for draw, fill in zip(self.draws, (color, label)):
            draw.rectangle(box, fill=fill)


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, float]:
    """Sky/wall over ground/floor, plus clutter (buildings, furniture, bushes, poles). Returns the horizon y."""
    horizon = rng.uniform(0.3, 0.65) * height
    top, mid = np.array(_hsv(rng, (0.05, 0.5), (0.55, 1.0))), np.array(_hsv(rng, (0.05, 0.5), (0.4, 0.95)))
    ground0, ground1 = np.array(_hsv(rng, (0.1, 0.6), (0.25, 0.7))), np.array(_hsv(rng, (0.1, 0.6), (0.3, 0.8)))
    y = np.arange(height, dtype=np.float64)[:, None]
    t_sky = np.clip(y / max(horizon, 1), 0, 1)
    t_ground = np.clip((y - horizon) / max(height - horizon, 1), 0, 1)
    rows = np.where(y < horizon, top * (1 - t_sky) + mid * t_sky, ground0 * (1 - t_ground) + ground1 * t_ground)
    image = Image.fromarray(np.repeat(rows[:, None, :], width, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        kind = rng.random()
        color = _hsv(rng, (0.0, 0.7), (0.2, 0.95))
        x0 = rng.uniform(-0.1, 1.0) * width
        if kind < 0.45:  # buildings / furniture standing on the horizon
            w, h = rng.uniform(0.05, 0.35) * width, rng.uniform(0.1, 0.6) * height
            base = horizon + rng.uniform(-0.05, 0.25) * height
            draw.rectangle([x0, base - h, x0 + w, base], fill=color)
            if rng.random() < 0.5:  # windows / shelves
                wc = _shade(color, rng.uniform(0.5, 1.4))
                for k in range(int(rng.integers(1, 5))):
                    yy = base - h + (k + 0.5) * h / 5
                    draw.rectangle([x0 + 0.15 * w, yy, x0 + 0.85 * w, yy + 0.08 * h], fill=wc)
        elif kind < 0.75:  # bushes, trees, blobs
            rx, ry = rng.uniform(0.03, 0.18) * width, rng.uniform(0.03, 0.15) * height
            cy = rng.uniform(0.1, 1.0) * height
            draw.ellipse([x0 - rx, cy - ry, x0 + rx, cy + ry], fill=color)
        elif kind < 0.9:  # poles and bars: thin limb-like distractors
            x1, y1 = x0 + rng.uniform(-0.2, 0.2) * width, rng.uniform(0, 1) * height
            draw.line([(x0, rng.uniform(0, 1) * height), (x1, y1)], fill=color, width=int(rng.integers(2, 9)))
        else:  # floor tiles / rug
            y0 = rng.uniform(horizon, height)
            draw.rectangle([x0, y0, x0 + rng.uniform(0.1, 0.5) * width, y0 + rng.uniform(0.03, 0.15) * height],
                           fill=color)
    return image, horizon


def _draw_seat(painter: _Painter, rng: np.random.Generator, fig: dict, scale: float, origin: np.ndarray) -> None:
    """A stool under a sitting figure (background, not part of the person)."""
    kp = fig["kp"] * scale + origin
    hip_y = (kp[11, 1] + kp[12, 1]) / 2 + _WIDTH["thigh"] * scale * 0.5
    knee_x = (kp[13, 0] + kp[14, 0]) / 2
    hip_x = (kp[11, 0] + kp[12, 0]) / 2
    x0, x1 = sorted([hip_x - fig["face"] * 0.08 * scale, knee_x - fig["face"] * 0.03 * scale])
    floor = max(kp[15, 1], kp[16, 1]) + 0.02 * scale
    color = _hsv(rng, (0.2, 0.6), (0.25, 0.6))
    t = max(2.0, 0.03 * scale)
    painter.rect([x0, hip_y, x1, hip_y + t], color, 0)
    for x in (x0 + t, x1 - t):
        painter.limb((x, hip_y), (x, floor), t * 0.8, _shade(color, 0.8), 0)


def _draw_figure(painter: _Painter, fig: dict, scale: float, origin: np.ndarray, colors: dict,
                 label: int) -> tuple[float, float, float, float]:
    """Draw a figure at `origin` (hip centre, pixels), `scale` pixels tall; returns its extent."""
    xs, ys = [], []
    shades = {_LEFT: 0.82, _RIGHT: 1.0, None: 1.0}  # left limbs a little darker: left/right cue
    for kind, key, side, geom in fig["parts"]:
        color = _shade(colors[key], shades[side])
        part_label = label + _FAR if side is not None and side == fig["far"] else label
        if kind == "limb":
            p, q, w = geom[0] * scale + origin, geom[1] * scale + origin, geom[2] * scale
            painter.limb(p, q, w, color, part_label)
            for pt in (p, q):
                xs += [pt[0] - w / 2, pt[0] + w / 2]
                ys += [pt[1] - w / 2, pt[1] + w / 2]
        elif kind in ("disc", "dot"):
            c, r = geom[0] * scale + origin, max(geom[1] * scale, 1.0 if kind == "dot" else 0.0)
            painter.disc(c, r, color, part_label if kind == "disc" else None)
            xs += [c[0] - r, c[0] + r]
            ys += [c[1] - r, c[1] + r]
        else:
            pts = [p * scale + origin for p in geom]
            painter.poly(pts, color, part_label)
            xs += [p[0] for p in pts]
            ys += [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class SampleStyle:
    """What the generated images look like: people per image (1..max_people, fewer more often),
    their height as a fraction of the image height (log-uniform in `scale`), and how often
    something stands in front of one of them (`occluders`). The defaults are the varied set the
    tests use; fewer, larger, unoccluded people teach a from-scratch model faster (docs/demo.md)."""
    max_people: int = 3
    scale: tuple[float, float] = (0.3, 1.25)
    occluders: float = 0.35


_PEOPLE_P = (0.45, 0.35, 0.2, 0.1, 0.05)  # relative chance of 1, 2, 3... people


def _sample_image(rng: np.random.Generator, style: SampleStyle = SampleStyle()) -> tuple[Image.Image, list[dict]]:
    """One synthetic image and its person annotations (without ids)."""
    long_side = int(rng.integers(320, 481))
    short_side = int(round(long_side / rng.uniform(1.0, 1.8)))
    width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
    image, horizon = _background(rng, width, height)
    painter = _Painter(image)

    # Smaller people are further away: draw them first so nearer ones may cover them.
    p = np.array(_PEOPLE_P[:style.max_people])
    lo, hi = (math.log(v) for v in style.scale)
    scales = sorted(height * math.exp(rng.uniform(lo, hi))
                    for _ in range(int(rng.choice(np.arange(1, style.max_people + 1), p=p / p.sum()))))
    people = []
    for label, scale in enumerate(scales, start=1):
        fig = _figure(rng)
        # Camera at about chest height: everyone's chest near the horizon, near people lower down.
        hip_y = horizon + scale * rng.uniform(-0.05, 0.3)
        lo, hi = max(0.12 * height, 0.5 * scale - 0.12 * height), min(0.9 * height, 1.1 * height - 0.45 * scale)
        hip_y = min(max(hip_y, lo), hi) if lo < hi else (lo + hi) / 2
        hip_y = min(max(hip_y, 0.05 * height), 0.95 * height)  # hips stay in the picture
        for _ in range(10):  # keep people apart a little
            hip_x = rng.uniform(0.05, 0.95) * width
            if all(abs(hip_x - p["origin"][0]) > 0.2 * (scale + p["scale"]) / 2 for p in people):
                break
        origin = np.array([hip_x, hip_y])
        if fig["seat"]:
            _draw_seat(painter, rng, fig, scale, origin)
        extent = _draw_figure(painter, fig, scale, origin, _palette(rng), label)
        people.append({"fig": fig, "scale": scale, "origin": origin, "label": label, "extent": extent})

    if people and rng.random() < style.occluders:  # something in front of one person: a table, a wall, a pole
        x0, y0, x1, y1 = people[int(rng.integers(len(people)))]["extent"]
        bw, bh = x1 - x0, y1 - y0
        color = _hsv(rng, (0.1, 0.7), (0.2, 0.8))
        if rng.random() < 0.6:
            top = y0 + rng.uniform(0.5, 0.8) * bh
            painter.rect([x0 - rng.uniform(0, 0.25) * bw, top, x1 + rng.uniform(0, 0.25) * bw, height], color, 255)
        else:
            left = x0 + rng.uniform(0.15, 0.6) * bw
            painter.rect([left, 0, left + rng.uniform(0.12, 0.3) * bw, height], color, 255)

    labels = np.asarray(painter.labels)
    anns = []
    for p in people:
        ann = _annotate(p, labels, width, height)
        if ann is not None:
            anns.append(ann)

    return _as_photographed(image, rng), anns


def _as_photographed(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The hard drawn edges softened, then sensor-like noise added."""
    pixels = np.asarray(image.filter(ImageFilter.BoxBlur(0.7)), dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * rng.uniform(2, 7)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _annotate(person: dict, labels: np.ndarray, width: int, height: int) -> dict | None:
    """COCO annotation of a drawn person: integer keypoints, v=1 where something covers them,
    (0, 0, 0) outside the image; tight box clipped to the image; area = visible mask pixels."""
    fig, scale, origin, label = person["fig"], person["scale"], person["origin"], person["label"]
    pts = np.rint(fig["kp"] * scale + origin).astype(np.int64)
    keypoints = []
    for (x, y), v, side in zip(pts, fig["vis"], _KEYPOINT_SIDE):
        if v == 0 or not (0 <= x < width and 0 <= y < height):
            keypoints += [0, 0, 0]
        else:
            own = label + _FAR if side is not None and side == fig["far"] else label
            keypoints += [int(x), int(y), 2 if labels[y, x] == own else 1]
    num = sum(1 for v in keypoints[2::3] if v > 0)
    area = int(np.isin(labels, (label, label + _FAR)).sum())
    if num == 0 or area == 0:
        return None
    x0, y0, x1, y1 = person["extent"]
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    return {"category_id": PERSON_ID, "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(area), "iscrowd": 0, "keypoints": keypoints, "num_keypoints": num,
            "segmentation": []}


# --------------------------------------------------------------------------------------
# Scenes of chosen people, drawn again and again: sequences.py's moving figures
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """One person as the sample images draw them: the pose in body units and the colours."""
    body: dict[str, Any]
    colors: dict[str, tuple[int, int, int]]

    @property
    def facing(self) -> float:
        """1 for a side view facing right, -1 facing left, 0 for a front or back view."""
        return float(self.body["face"])

    def keypoints(self, height: float, hips: Sequence[float]) -> np.ndarray:
        """The 17 keypoints (x, y) in pixels of the figure drawn `height` pixels tall, hip centre at `hips`."""
        return self.body["kp"] * height + np.asarray(hips, dtype=float)


def random_figure(rng: np.random.Generator, pose: str | None = None) -> Figure:
    """A random person, in `pose` (stand, walk, run, wave, ...: the sample set's poses) or a random pose."""
    if pose is not None and pose not in _POSES:
        raise DatasetError(f"unknown pose {pose!r}; one of {', '.join(_POSES)}")
    return Figure(_figure(rng, pose), _palette(rng))


def random_background(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, float]:
    """A sample image's background (sky or wall over the ground, clutter) and its horizon's y."""
    return _background(rng, width, height)


def draw_scene(background: Image.Image, people: Sequence[tuple[Figure, float, Sequence[float]]],
               rng: np.random.Generator) -> tuple[Image.Image, list[dict | None]]:
    """(image, annotations): `people` (figure, height in pixels, hip centre) drawn in order, later ones in front,
    on a copy of `background`, noised by `rng` like a sample image; their COCO annotations (None: not in view)."""
    image = background.copy()
    painter = _Painter(image)
    drawn = []
    for label, (figure, height, hips) in enumerate(people, start=1):
        origin = np.asarray(hips, dtype=float)
        drawn.append({"fig": figure.body, "scale": height, "origin": origin, "label": label,
                      "extent": _draw_figure(painter, figure.body, height, origin, figure.colors, label)})
    labels = np.asarray(painter.labels)
    return _as_photographed(image, rng), [_annotate(p, labels, image.width, image.height) for p in drawn]


# Written into the annotation files' "info", so that an earlier sample set is known as one.
SAMPLE_CONTRIBUTOR = "dataset.py make_sample_dataset"
SAMPLE_FOLDERS = {"annotations", "train2017", "val2017"}


def is_sample_dataset(root: str | os.PathLike) -> bool:
    """Whether `root` holds a sample set of `make_sample_dataset` and nothing else of note: only
    its three folders, and annotation files it wrote (so replacing them loses no one's data)."""
    root = Path(root)
    if not root.is_dir() or not {p.name for p in root.iterdir()} <= SAMPLE_FOLDERS:
        return False
    found = False
    for split in ("train", "val"):
        ann_file = coco_paths(root, split)[1]
        if not ann_file.exists():
            continue
        # "info" comes first in the files we write: no need to parse COCO's 450 MB to tell.
        try:
            with open(ann_file, encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
        except OSError:
            return False
        if json.dumps({"contributor": SAMPLE_CONTRIBUTOR})[1:-1] not in head:
            return False
        found = True
    return found


def reduce_annotation(ann: dict, indices: Sequence[int]) -> dict | None:
    """A 17-keypoint annotation with only the keypoints at `indices`; None when none is labelled."""
    triples = [ann["keypoints"][3 * i:3 * i + 3] for i in indices]
    num = sum(1 for t in triples if t[2] > 0)
    return {**ann, "keypoints": [v for t in triples for v in t], "num_keypoints": num} if num else None


def make_sample_dataset(root: str | os.PathLike, images: int = 200, seed: int = 0,
                        val_images: int | None = None, keypoint_set: KeypointSet = COCO17,
                        style: SampleStyle = SampleStyle()) -> Path:
    """Write a synthetic person-keypoint dataset in the COCO 2017 layout under `root`; returns root.

    `images` training images and `val_images` (default max(8, images // 5)) validation images,
    1-3 people each (`style`: SampleStyle), 320-480 px on the long side, portrait and landscape.
    Image ids are 1..images for train and continue for val. Same arguments -> byte-identical files.
    `keypoint_set` may be any subset of COCO's 17 names (such as keypoints.COCO13): the images stay
    the same, the annotations keep those keypoints and the category lists them.
    """
    unknown = [n for n in keypoint_set.names if n not in COCO_KEYPOINT_NAMES]
    if unknown:
        raise DatasetError(f"sample people have COCO's 17 keypoints only, not {unknown[0]!r}")
    indices = [COCO_KEYPOINT_NAMES.index(n) for n in keypoint_set.names]
    if images < 1 or (val_images is not None and val_images < 1):
        raise DatasetError(f"sample dataset needs at least 1 image per split, got {images} / {val_images}")
    if seed < 0:
        raise DatasetError(f"sample dataset seed must be >= 0, got {seed}")
    if not (1 <= style.max_people <= len(_PEOPLE_P) and 0 < style.scale[0] <= style.scale[1] <= 2
            and 0 <= style.occluders <= 1):
        raise DatasetError(f"sample style out of range: {style} (people 1-{len(_PEOPLE_P)}, "
                           "0 < scale low <= high <= 2, occluders 0-1)")
    root = Path(root)
    n_val = max(8, images // 5) if val_images is None else val_images
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    next_image_id, next_ann_id = 1, 1
    for split_index, (split, count) in enumerate((("train", images), ("val", n_val))):
        image_dir, ann_file = coco_paths(root, split)
        image_dir.mkdir(parents=True, exist_ok=True)
        image_entries, annotations = [], []
        for i in range(count):
            # One generator per image: image i is the same whatever the total count.
            rng = np.random.default_rng([seed, split_index, i])
            image, anns = _sample_image(rng, style)
            image_id = next_image_id
            next_image_id += 1
            file_name = f"{image_id:012d}.jpg"
            image.save(image_dir / file_name, format="JPEG", quality=90)
            image_entries.append({"id": image_id, "file_name": file_name, "width": image.width,
                                  "height": image.height, "license": 1})
            for ann in filter(None, (reduce_annotation(a, indices) for a in anns)):
                annotations.append({"id": next_ann_id, "image_id": image_id, **ann})
                next_ann_id += 1
        data = {
            "info": {"description": f"Synthetic stick-figure people (dataset.py, seed {seed})", "version": "1.0",
                     "year": 2017, "contributor": SAMPLE_CONTRIBUTOR, "date_created": ""},
            "licenses": [{"id": 1, "name": "Public Domain (generated)", "url": ""}],
            "images": image_entries,
            "annotations": annotations,
            "categories": [keypoint_set.category()],
        }
        ann_file.write_text(json.dumps(data), encoding="utf-8")
    return root


