"""draw.py: skeleton colours by side, thresholds and line widths."""
from __future__ import annotations

import numpy as np
import pytest

import draw
import keypoints
import utils
from keypoints import COCO13


def pose(cx: float, scale: float) -> np.ndarray:
    """A standing person facing the camera (their left on the image's right), 17 x 3."""
    xy = {"nose": (0, -80), "left_eye": (5, -85), "right_eye": (-5, -85), "left_ear": (10, -82),
          "right_ear": (-10, -82), "left_shoulder": (25, -60), "right_shoulder": (-25, -60),
          "left_elbow": (45, -30), "right_elbow": (-45, -30), "left_wrist": (55, 0), "right_wrist": (-55, 0),
          "left_hip": (15, 0), "right_hip": (-15, 0), "left_knee": (18, 40), "right_knee": (-18, 40),
          "left_ankle": (20, 80), "right_ankle": (-20, 80)}
    points = np.array([[cx + scale * xy[n][0], 100 * scale + scale * xy[n][1], 2] for n in utils.COCO_KEYPOINT_NAMES],
                      dtype=float)
    return points


def limb_pixel(image: np.ndarray, points: np.ndarray, a: str, b: str) -> np.ndarray:
    pa = points[utils.COCO_KEYPOINT_NAMES.index(a), :2]
    pb = points[utils.COCO_KEYPOINT_NAMES.index(b), :2]
    x, y = np.round((pa + pb) / 2).astype(int)
    return image[y, x]


def limb_index(a: str, b: str) -> int:
    ia, ib = utils.COCO_KEYPOINT_NAMES.index(a), utils.COCO_KEYPOINT_NAMES.index(b)
    return next(i for i, pair in enumerate(utils.COCO_SKELETON) if set(pair) == {ia, ib})


def test_draw_poses_draws_only_what_passes_the_thresholds():
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, :, 0] = np.linspace(20, 180, 17)
    keypoints[0, :, 1] = 100
    scores = np.array([0.95])
    boxes = np.array([[10, 50, 190, 150]], np.float32)
    blank = np.zeros((200, 200, 3), np.uint8)
    drawn = draw.draw_poses(blank.copy(), boxes, scores, keypoints, np.full((1, 17), 5.0), 0.9, 2.0)
    assert drawn.any()
    hidden = draw.draw_poses(blank.copy(), boxes, scores, keypoints, np.full((1, 17), 1.0), 0.9, 2.0, draw_boxes=False)
    assert not hidden.any()  # no keypoint passes kp_thresh
    low = draw.draw_poses(blank.copy(), boxes, np.array([0.5]), keypoints, None, 0.9, 0.0)
    assert not low.any()  # the person is below score_thresh


def test_palette_keeps_sides_apart():
    assert len(draw.LIMB_COLORS) == len(utils.COCO_SKELETON) == 19
    assert len(set(draw.LIMB_COLORS)) == 19 and len(set(draw.KEYPOINT_COLORS)) == 17
    for (a, b), (blue, green, red) in zip(utils.COCO_SKELETON, draw.LIMB_COLORS):
        names = utils.COCO_KEYPOINT_NAMES[a] + " " + utils.COCO_KEYPOINT_NAMES[b]
        if "left" in names and "right" in names:
            assert green > max(blue, red), names  # centre: green
        elif "left" in names:
            assert red > blue, names  # left: warm
        else:
            assert blue > red, names  # right: cool


def test_draw_poses_colours_thresholds_and_width():
    size, s = 480, 2.4
    image = np.zeros((size, size, 3), np.uint8)
    points = pose(size / 2, s)
    scores = np.full((1, 17), 5.0)
    scores[0, utils.COCO_KEYPOINT_NAMES.index("right_wrist")] = 0.5  # below kp_thresh: not drawn
    box = np.array([[40, 10, 160, 190]], float) * s
    draw.draw_poses(image, box, np.array([0.95]), points[None], scores, score_thresh=0.9, kp_thresh=2.0,
                     draw_boxes=False)
    for a, b in (("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_hip", "right_hip"),
                 ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("left_eye", "left_ear")):
        pixel = limb_pixel(image, points, a, b).astype(int)
        assert np.abs(pixel - draw.LIMB_COLORS[limb_index(a, b)]).max() <= 10, (a, b, pixel)
    assert limb_pixel(image, points, "right_elbow", "right_wrist").max() == 0  # its wrist is below kp_thresh
    wrist = points[utils.COCO_KEYPOINT_NAMES.index("right_wrist"), :2].astype(int)
    assert image[wrist[1], wrist[0]].max() == 0

    unsure = np.zeros((size, size, 3), np.uint8)
    draw.draw_poses(unsure, box, np.array([0.5]), points[None], scores, score_thresh=0.9, kp_thresh=2.0)
    assert unsure.max() == 0  # the person is below score_thresh

    def width(size: int) -> int:
        canvas = np.zeros((size, size, 3), np.uint8)
        s = size / 200
        points = pose(size / 2, s)
        draw.draw_poses(canvas, box / 2.4 * s, np.array([0.95]), points[None], draw_boxes=False)
        # Pixels of the left shin's colour across it (a near-vertical line), halfway down; the
        # dark outline around it is left out.
        y = int(round(points[utils.COCO_KEYPOINT_NAMES.index("left_knee"), 1] + 20 * s))
        shin = np.array(draw.LIMB_COLORS[limb_index("left_knee", "left_ankle")])
        return int((np.abs(canvas[y].astype(int) - shin).max(axis=1) <= 40).sum())

    thin, thick = width(200), width(800)
    assert 1 <= thin and thick >= 3 * thin  # line width follows the image size


def test_drawing_uses_the_sets_skeleton_and_sides():
    keypoint_colors, limb_colors = draw.colors(COCO13)
    assert len(limb_colors) == len(COCO13.skeleton) == 14
    names = COCO13.names
    for (a, b), (blue, _, red) in zip(COCO13.skeleton, limb_colors):
        sides = {n.split("_")[0] for n in (names[a], names[b])} - {"nose"}
        if sides == {"left"}:
            assert red > blue, (names[a], names[b])
        elif sides == {"right"}:
            assert blue > red, (names[a], names[b])
    image = np.zeros((200, 200, 3), np.uint8)
    points = np.zeros((13, 3))
    points[:, 2] = 1
    points[0, :2], points[1, :2] = (100, 40), (140, 100)  # nose, left_shoulder; the rest at (0, 0)
    draw.draw_poses(image, np.array([[0, 0, 199, 199]]), np.array([1.0]), points[None], draw_boxes=False,
                    line_width=3, keypoint_set=COCO13)
    assert np.abs(image[70, 120].astype(int) - limb_colors[0]).max() <= 10  # the nose-to-left-shoulder limb


@pytest.mark.parametrize("a, b, segment", [
    ("left_shoulder", "left_elbow", "upper_arm"), ("right_elbow", "right_shoulder", "upper_arm"),
    ("left_elbow", "left_wrist", "forearm"), ("nose", "left_eye", "face"), ("left_eye", "left_ear", "ear"),
    ("left_ear", "left_shoulder", "neck"), ("nose", "right_shoulder", "neck"), ("left_shoulder", "left_hip", "torso"),
    ("right_hip", "right_knee", "thigh"), ("left_knee", "left_ankle", "shin"), ("left_wrist", "left_ankle", None),
])
def test_limb_segment_names_every_coco_limb(a, b, segment):
    assert draw.limb_segment(a, b) == segment


def test_every_coco_limb_has_a_segment_or_joins_the_sides():
    names = keypoints.COCO17.names
    for a, b in keypoints.COCO17.skeleton:
        sides = {keypoints.side_of(names[a]), keypoints.side_of(names[b])} - {None}
        assert draw.limb_segment(names[a], names[b]) or len(sides) == 2, (names[a], names[b])


def png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_training_plot_shows_the_keypoint_errors_of_analysed_epochs(tmp_path):
    """train.py --analyze puts keypoint_errors in each evaluated epoch's metrics: a third panel."""
    shares = {"good": 0.6, "jitter": 0.2, "inversion": 0.05, "swap": 0.05, "miss": 0.1}
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": None, "box_AP": 0.1 * e, "keypoint_AP": 0.1 * e,
                "metrics": {"keypoint_errors": shares}} for e in (1, 2)]
    draw.plot_history(tmp_path / "analysed.png", history, "run")
    for h in history:
        del h["metrics"]
    draw.plot_history(tmp_path / "plain.png", history, "run")
    assert png_width(tmp_path / "analysed.png") == png_width(tmp_path / "plain.png") * 3 // 2


def test_error_example_puts_ground_truth_beside_ringed_detections():
    image = np.full((200, 160, 3), 255, dtype=np.uint8)
    truth = pose(80, 1.0)
    detected = truth.copy()
    detected[[5, 6], :2] = detected[[6, 5], :2]  # the shoulders inverted
    marks = [None] * 17
    marks[5] = marks[6] = "inversion"
    out = draw.draw_error_example(image, [(np.array([40, 10, 120, 190]), truth)],
                                  [(np.array([40, 10, 120, 190]), detected, 0.9, marks)], draw.COCO17, ("a", "b"))
    band = out.shape[0] - image.shape[0]
    assert out.shape[1] == 2 * image.shape[1] and band > 0
    assert np.array_equal(out[band:, :160], draw.draw_poses(image.copy(), np.array([[40, 10, 120, 190]]), np.ones(1),
                                                            truth[None], draw_boxes=False))
    radius = max(4, round(160 / 60))
    x, y = detected[5, :2].astype(int)
    assert tuple(out[band + y, 160 + x + radius]) == draw.ERROR_RINGS["inversion"]
    assert np.array_equal(image, np.full_like(image, 255))  # drawn on copies


def test_track_ids_in_their_own_colours_over_unchanged_limbs():
    colors = [draw.track_color(i) for i in range(1, 21)]
    assert len(set(colors)) == 20
    # Neighbouring ids are far apart in colour.
    assert min(np.abs(np.subtract(a, b)).max() for a, b in zip(colors, colors[1:])) > 60
    size, s = 480, 2.4
    points = pose(size / 2, s)
    box = np.array([[40, 10, 160, 190]], float) * s
    image = np.zeros((size, size, 3), np.uint8)
    draw.draw_poses(image, box, np.array([0.95]), points[None], draw_boxes=False)
    limbs = image.copy()
    draw.draw_track_ids(image, box, np.array([7]))
    x1, y1, x2, y2 = box[0].astype(int)
    side = image[(y1 + y2) // 2, x1].astype(int)
    assert np.abs(side - draw.track_color(7)).max() <= 40  # the box in the id's colour (anti-aliased)
    label = image[y1 - 8:y1, x1:x1 + 30].reshape(-1, 3)
    assert (np.abs(label.astype(int) - draw.track_color(7)).max(axis=1) <= 10).sum() > 50  # its label patch
    inside = (slice(y1 + 5, y2 - 5), slice(x1 + 5, x2 - 5))
    assert np.array_equal(image[inside], limbs[inside])  # the limbs keep their left/right colours
    with_score = np.zeros((size, size, 3), np.uint8)
    draw.draw_track_ids(with_score, box, np.array([7]), scores=np.array([0.93]))
    assert (with_score[:y1, x1:] != 0).any(axis=2).sum() > (image[:y1, x1:] != limbs[:y1, x1:]).any(axis=2).sum()
