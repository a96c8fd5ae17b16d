"""sequences.py: the synthetic crossing sequence (video or frames, and its tracks.json), the
simulated detections made from it, and the measures of a tracker against it."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import flag_error, one_line_error

import sequences
import utils

SMALL = ["--size", "192x108", "--frames", "6"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    """The default sequence as a video, and its tracks.json."""
    video = sequences.write_sequence(tmp_path_factory.mktemp("sequence") / "out")
    return video, json.loads((video.parent / sequences.TRACKS_FILE).read_text())


def test_the_video_and_its_tracks(written):
    video, tracks = written
    capture = cv2.VideoCapture(str(video))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    spec = sequences.SequenceSpec()
    assert size == (spec.width, spec.height) == (tracks["width"], tracks["height"])
    assert count == len(tracks["frames"]) >= sequences.MIN_FRAMES and tracks["fps"] == spec.fps
    assert tracks["keypoint_names"] == list(utils.COCO_KEYPOINT_NAMES)
    figures = {f["track_id"]: f for f in tracks["figures"]}
    assert sorted(figures) == [1, 2, 3]
    # The walkers go at the speed asked for (the frame's width in 2 s), towards each other; one stands still.
    speeds = sorted(f["velocity"][0] for f in figures.values())
    assert speeds == pytest.approx([-spec.width / 60, 0, spec.width / 60])
    for frame in tracks["frames"]:
        assert [p["track_id"] for p in frame["persons"]] == [1, 2, 3]  # all in view, in id order
    # A joint seen in two frames moved exactly by its figure's velocity.
    for tid, figure in figures.items():
        a, b = (np.asarray(tracks["frames"][i]["persons"][tid - 1]["keypoints"]) for i in (3, 4))
        both = (a[:, 2] > 0) & (b[:, 2] > 0)
        assert both.sum() >= 10
        assert np.allclose(b[both, :2] - a[both, :2], figure["velocity"], atol=2e-3)
    # The walkers' boxes overlap in one run of frames; the still figure is never reached.
    assert [c[:2] for c in sequences.crossings(tracks)] == [(1, 2)]
    # Some joints are covered during the crossing (v = 1), none before it.
    first, last = sequences.crossings(tracks)[0][2:]
    covered = [sum(k[2] == 1 for p in f["persons"] for k in p["keypoints"]) for f in tracks["frames"]]
    assert max(covered[first:last + 1]) > max(covered[:2])


def test_frames_folder_same_seed_same_bytes(tmp_path, capsys):
    out = tmp_path / "seq"
    folder = sequences.main([str(out), *SMALL, "--frames-folder"])
    assert folder == out / sequences.FRAMES_FOLDER and f"wrote {folder}" in capsys.readouterr().out
    frames = sorted(folder.glob("*.jpg"))
    assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(6)]
    assert cv2.imread(str(frames[0])).shape == (108, 192, 3)
    first = [f.read_bytes() for f in frames] + [(out / sequences.TRACKS_FILE).read_bytes()]
    sequences.main([str(out), *SMALL[:2], "--frames", "4", "--frames-folder", "--exist-ok"])
    assert len(list(folder.glob("*.jpg"))) == 4  # the earlier, longer sequence's frames are gone
    sequences.main([str(out), *SMALL, "--frames-folder", "--exist-ok"])
    assert [f.read_bytes() for f in frames] + [(out / sequences.TRACKS_FILE).read_bytes()] == first
    other = sequences.main([str(tmp_path / "other"), *SMALL, "--frames-folder", "--seed", "1"])
    assert (other / "000000.jpg").read_bytes() != frames[0].read_bytes()


def test_refusals_are_one_line(tmp_path, capsys):
    out = tmp_path / "seq"
    sequences.main([str(out), *SMALL])
    assert "add --exist-ok" in one_line_error(sequences.main, [str(out), *SMALL])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert "files that are not a sequence's (notes.txt)" in one_line_error(sequences.main, [str(mine), "--exist-ok"])
    assert (mine / "notes.txt").read_text() == "keep"
    assert "too narrow" in one_line_error(sequences.main, [str(tmp_path / "narrow"), "--size", "108x192"])
    assert not (tmp_path / "narrow").exists()
    for flags, message in ((["--size", "10x10"], "--size: '10x10': expected WIDTHxHEIGHT"),
                           (["--size", "wide"], "--size: 'wide': expected"),
                           (["--fps", "0"], "--fps: '0': expected"),
                           (["--cross-seconds", "-1"], "--cross-seconds: '-1': expected")):
        assert message in flag_error(sequences.main, [str(tmp_path / "x"), *flags], capsys)


def test_simulated_detections_are_the_truth_plus_the_noise_asked_for(written):
    _, tracks = written
    exact = sequences.simulated_detections(tracks, sequences.DetectionNoise(0, 0, 0, 0, 0, 1, 0), seed=0)
    assert len(exact) == len(tracks["frames"])
    for (detections, figures), frame in zip(exact, tracks["frames"]):
        assert figures.tolist() == [p["track_id"] for p in frame["persons"]]
        for d, person in enumerate(frame["persons"]):
            truth = np.asarray(person["keypoints"])
            seen = detections["keypoint_scores"][d] >= 2.0
            assert (seen == (truth[:, 2] > 0)).all()
            assert np.allclose(detections["keypoints"][d, seen, :2], truth[seen, :2], atol=1e-3)
            x, y, w, h = person["bbox"]
            assert np.allclose(detections["boxes"][d], [x, y, x + w, y + h], atol=1e-3)
    jitter = sequences.DetectionNoise(keypoint_jitter=0.01, keypoint_bias=0, box_jitter=0, person_miss=0,
                                      joint_miss=0, covered_found=1)
    noisy = sequences.simulated_detections(tracks, jitter, seed=0)
    errors = [(d["keypoints"][i, :, :2] - np.asarray(p["keypoints"])[:, :2]) / tracks["figures"][0]["height"]
              for (d, _), f in zip(noisy, tracks["frames"]) for i, p in enumerate(f["persons"])
              if p["track_id"] == tracks["figures"][0]["track_id"]]
    assert np.std(np.concatenate(errors)) == pytest.approx(0.01, rel=0.15)
    nobody = sequences.simulated_detections(tracks, replace(jitter, person_miss=1.0, false_positives=2.0), seed=0)
    assert sum(len(f) for _, f in nobody) > 0  # only spurious persons, each near a figure in view
    assert all(set((-figures).tolist()) <= {p["track_id"] for p in frame["persons"]}
               for (_, figures), frame in zip(nobody, tracks["frames"]))


def test_gaps_jitter_and_lag_measures():
    simulated = [(sequences.detections_of([np.zeros(4)] * 2, [np.zeros((17, 2))] * 2, [np.ones(17, bool)] * 2, 2.0),
                  np.array([1, 2])) for _ in range(5)]
    gapped = sequences.without(simulated, 2, range(1, 3))
    assert [f.tolist() for _, f in gapped] == [[1, 2], [1], [1], [1, 2], [1, 2]]
    assert [len(d["boxes"]) for d, _ in gapped] == [2, 1, 1, 2, 2]
    points = np.zeros((4, 1, 2))
    points[:, 0, 0] = [0, 3, 0, 3]
    seen = np.ones((4, 1), dtype=bool)
    assert sequences.frame_jitter(points, seen) == pytest.approx(3)
    seen[2] = False  # moves from or to an unseen frame do not count
    assert sequences.frame_jitter(points, seen) == pytest.approx(3)
    track = np.arange(10, dtype=float)[:, None, None] * np.array([2.0, 0.0])
    assert sequences.lag_frames(track, track - [3.0, 0.0], np.ones((10, 1), bool), [2.0, 0.0]) == pytest.approx(1.5)
    assert sequences.id_switches([np.array([1, 2]), np.array([2]), np.array([1, 2])],
                                 [np.array([5, 6]), np.array([6]), np.array([6, 5])]) == [(2, 1, 5, 6), (2, 2, 6, 5)]
