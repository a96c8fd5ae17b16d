"""detect.py: images, videos, folders and the live loop, on a tiny randomly initialised model.

A random model finds random "persons" (scores around 0.5-0.9): the tests check what
detect.py writes (sizes, frame counts, fps, JSON structure) and how it fails, not what it
finds. `--max-persons` keeps the keypoint head cheap. The drawing itself is checked on
hand-made poses at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, flag_error, help_text, one_line_error
from PIL import Image

import detect
import images
import media
import sequences
import models
import utils

# Few persons per frame: the keypoint head and the per-person bicubic upsampling stay cheap.
FAST = ["--device", "cpu", "--score-thresh", "0.5", "--max-persons", "3"]
COCO_IMAGE = "000000192699.jpg"  # 640 x 457, two people


def write_video(path: Path, images: list[Path], frames: int, fps: float, size: tuple[int, int] = (320, 240)) -> Path:
    """A video of `frames` frames cycling through `images`, resized to `size` (w, h)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.resize(cv2.imread(str(images[i % len(images)])), size))
    writer.release()
    return path


def video_info(path: Path) -> tuple[int, int, int, float]:
    """(frames actually decoded, width, height, fps)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, width, height, fps


@pytest.fixture(scope="module")
def sample_images(sample_root) -> list[Path]:
    return sorted((sample_root / "val2017").glob("*.jpg"))


@pytest.fixture(scope="module")
def clip(sample_images, tmp_path_factory) -> Path:
    """5 frames, 8 fps, 320 x 240."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", sample_images, frames=5, fps=8)


@pytest.fixture(scope="module")
def long_clip(sample_images, tmp_path_factory) -> Path:
    """40 frames at 2 fps: 20 s when played in real time, far longer than 3 frames take."""
    return write_video(tmp_path_factory.mktemp("video") / "stream.mp4", sample_images, frames=40, fps=2)


def check_person(person: dict, score_thresh: float, kp_thresh: float) -> None:
    assert set(person) == {"bbox", "score", "keypoints", "keypoint_scores"}
    x, y, w, h = person["bbox"]
    assert w >= 0 and h >= 0
    assert score_thresh <= person["score"] <= 1
    assert len(person["keypoints"]) == utils.NUM_KEYPOINTS
    assert all(len(k) == 3 for k in person["keypoints"])
    assert len(person["keypoint_scores"]) == utils.NUM_KEYPOINTS
    assert [k[2] for k in person["keypoints"]] == [int(s >= kp_thresh) for s in person["keypoint_scores"]]


def run_fails(argv: list[str]) -> str:
    return one_line_error(detect.main, argv)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def test_image_from_coco_mini(coco_mini, tiny_checkpoint, tmp_path, capsys):
    source = coco_mini / "val2017" / COCO_IMAGE
    out = tmp_path / "out"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(source), "--output", str(out), "--save-json",
                 "--no-show", *FAST])
    saved = cv2.imread(str(out / COCO_IMAGE))
    original = cv2.imread(str(source))
    assert saved is not None and saved.shape == original.shape
    result = json.loads((out / "000000192699.json").read_text())
    assert result["source"] == str(source)
    assert (result["width"], result["height"]) == (640, 457)
    assert 1 <= len(result["persons"]) <= 3  # --max-persons 3; a random model finds "persons" everywhere
    for person in result["persons"]:
        check_person(person, 0.5, 2.0)
    if any(k[2] for p in result["persons"] for k in p["keypoints"]):
        assert np.abs(saved.astype(int) - original.astype(int)).max() > 100  # a skeleton was drawn
    printed = capsys.readouterr().out
    assert f"-> {out / COCO_IMAGE}" in printed and f"weights: {tiny_checkpoint}" in printed


def test_video_keeps_frame_count_size_and_fps(clip, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(clip), "--output", str(out), "--save-json",
                 "--no-show", *FAST])
    assert video_info(out / "clip.mp4") == (5, 320, 240, 8.0)
    result = json.loads((out / "clip.json").read_text())
    assert (result["width"], result["height"], result["fps"]) == (320, 240, 8.0)
    assert [f["frame"] for f in result["frames"]] == [0, 1, 2, 3, 4]
    for frame in result["frames"]:
        assert len(frame["persons"]) <= 3
        for person in frame["persons"]:
            check_person(person, 0.5, 2.0)


def test_kind_comes_from_content_in_folders_and_globs(sample_images, tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "photo.dat").write_bytes(sample_images[0].read_bytes())  # a JPEG under an odd name
    write_video(folder / "movie.mp4", sample_images, frames=2, fps=5, size=(160, 128))
    (folder / "movie.mp4").rename(folder / "movie.bin")  # an MP4 likewise
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / ".hidden.jpg").write_bytes(b"")
    out = tmp_path / "out"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(folder), "--output", str(out), "--no-show", *FAST])
    assert sorted(p.name for p in out.iterdir()) == ["movie.mp4", "photo.jpg"]
    assert cv2.imread(str(out / "photo.jpg")).shape == cv2.imread(str(sample_images[0])).shape
    assert video_info(out / "movie.mp4") == (2, 160, 128, 5.0)
    printed = capsys.readouterr().out
    assert "skipped 1 file(s)" in printed and "notes.txt" in printed

    out2 = tmp_path / "out2"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(folder / "*.dat"), "--output", str(out2),
                 "--no-show", *FAST])
    assert [p.name for p in out2.iterdir()] == ["photo.jpg"]


def test_default_weights_and_raw_state_dict(coco_mini, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """--weights left out: the newest e*_b*_lr*_m*.pth here, as in test.py; a raw state dict works too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e1_b2_lr0.01_m0.9.pth").write_bytes(tiny_checkpoint.read_bytes())
    image = str(coco_mini / "val2017" / COCO_IMAGE)
    detect.main(["--file", image, "--output", "a", "--no-show", *FAST])
    assert "weights: e1_b2_lr0.01_m0.9.pth  (the newest e*_b*_lr*_m*.pth here and in runs/train/*/)" in \
        capsys.readouterr().out
    assert (tmp_path / "a" / COCO_IMAGE).is_file()
    # Final weights of a newer run in train.py's run folder, with its log: found, and run at the
    # size they were trained at, which the plain state_dict itself does not record.
    run = tmp_path / "runs" / "train" / "exp"
    run.mkdir(parents=True)
    state, config = models.load_weights(tiny_checkpoint)
    torch.save(state, run / "e3_b2_lr0.01_m0.9.pth")
    utils.write_json(run / "e3_b2_lr0.01_m0.9.json", {"model_config": {**config, "min_size": [96, 128]}})
    detect.main(["--file", image, "--output", "c", "--no-show", *FAST])
    printed = capsys.readouterr().out
    assert "weights: runs/train/exp/e3_b2_lr0.01_m0.9.pth  (the newest" in printed
    assert "images resized to 128 (max 256)" in printed

    raw = tmp_path / "raw.pth"
    torch.save(models.load_weights(tiny_checkpoint)[0], raw)
    detect.main(["--weights", str(raw), "--file", image, "--output", "b", "--no-show", "--min-size", "160",
                 "--max-size", "256", *FAST])
    assert "model: resnet18, images resized to 160" in capsys.readouterr().out
    assert (tmp_path / "b" / COCO_IMAGE).is_file()


# --------------------------------------------------------------------------------------
# Live loop
# --------------------------------------------------------------------------------------
def test_live_loop_on_a_video_stream_with_show(long_clip, tiny_checkpoint, tmp_path):
    """The real CLI in a child process: --show under QT_QPA_PLATFORM=offscreen never crashes
    (a window where Qt can make one, a warning and no window where it cannot)."""
    out = tmp_path / "live"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [sys.executable, str(REPO / "detect.py"), "--weights", str(tiny_checkpoint), "--camera", str(long_clip),
         "--show", "--max-frames", "3", "--save-json", "--output", str(out), *FAST],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads((out / "stream.json").read_text())
    assert (data["width"], data["height"], data["fps"]) == (320, 240, 2.0)
    indices = [f["frame"] for f in data["frames"]]
    assert len(indices) == 3 and indices == sorted(set(indices))
    assert all(a < b for a, b in zip([f["time"] for f in data["frames"]], [f["time"] for f in data["frames"]][1:]))
    # Each processed frame stands for the camera frames since the previous one: real time kept.
    assert video_info(out / "stream.mp4") == (indices[-1] + 1, 320, 240, 2.0)
    assert "3 frames processed" in result.stdout


def test_live_loop_opens_a_real_window_under_xvfb(long_clip, tiny_checkpoint, tmp_path, xvfb_display):
    """The same live loop with a real X display: the window opens (no fallback warning),
    frames are shown and the run ends cleanly after --max-frames."""
    out = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = xvfb_display
    result = subprocess.run(
        [sys.executable, str(REPO / "detect.py"), "--weights", str(tiny_checkpoint), "--camera", str(long_clip),
         "--show", "--max-frames", "3", "--save-json", "--output", str(out), *FAST],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no display" not in result.stderr and "Traceback" not in result.stderr
    assert len(json.loads((out / "stream.json").read_text())["frames"]) == 3


class FakeWindow:
    """Stands in for OpenCV's HighGUI: records the frames shown and answers waitKey with `keys`
    in turn (-1, no key, once they run out)."""

    def __init__(self, keys: list[int]) -> None:
        self.shown: list[np.ndarray] = []
        self.keys = list(keys)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(media, "display_available", lambda: True)
        monkeypatch.setattr(cv2, "namedWindow", lambda *a, **k: None)
        monkeypatch.setattr(cv2, "imshow", lambda title, image: self.shown.append(image.copy()))
        monkeypatch.setattr(cv2, "waitKey", lambda ms=0: self.keys.pop(0) if self.keys else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
        monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)


def test_live_window_shows_fps_and_quits_on_q(long_clip, tiny_checkpoint, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    window = FakeWindow(keys=[-1, ord("q")])
    window.install(monkeypatch)
    detect.main(["--weights", str(tiny_checkpoint), "--camera", str(long_clip), "--max-frames", "10", *FAST])
    assert len(window.shown) == 2  # q on the second frame, long before --max-frames
    assert "2 frames processed" in capsys.readouterr().out
    for frame in window.shown:
        assert frame.shape == (240, 320, 3)
        assert (frame[1, 1] == 0).all()  # the FPS label's black box, top left
    assert not (tmp_path / "runs").exists()  # live mode saves only when asked


def test_image_window_waits_for_a_key(sample_images, tiny_checkpoint, monkeypatch, tmp_path, capsys):
    folder = tmp_path / "three"
    folder.mkdir()
    for image in sample_images[:3]:
        (folder / image.name).write_bytes(image.read_bytes())
    # Image 1: no key twice (the window waits), then space: next. Image 2: Esc: stop.
    window = FakeWindow(keys=[-1, -1, ord(" "), 27])
    window.install(monkeypatch)
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(folder), "--output", str(tmp_path / "out"), *FAST])
    assert len(window.shown) == 2 and not window.keys
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [p.name for p in sample_images[:2]]
    assert "stopped by the user" in capsys.readouterr().out


def test_show_without_display_warns_and_goes_on(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert media.decide_show(None) is False
    assert "warning" not in capsys.readouterr().err
    assert media.decide_show(True) is False
    assert "warning: --show: no display" in capsys.readouterr().err
    assert media.decide_show(False) is False


# --------------------------------------------------------------------------------------
# Bad input: one line, exit 1
# --------------------------------------------------------------------------------------
def test_bad_inputs_fail_with_one_line(tiny_checkpoint, tmp_path):
    weights = ["--weights", str(tiny_checkpoint), "--no-show", *FAST, "--output", str(tmp_path / "out")]
    assert "file not found" in run_fails([*weights, "--file", str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    assert "has no files" in run_fails([*weights, "--file", str(tmp_path / "empty")])
    assert "no files match" in run_fails([*weights, "--file", str(tmp_path / "*.png")])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    assert "cannot read image" in run_fails([*weights, "--file", str(broken)])
    no_frames = tmp_path / "no_frames.mp4"
    cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"mp4v"), 8, (64, 64)).release()
    assert "no frames" in run_fails([*weights, "--file", str(no_frames)])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("text")
    assert "no readable images or videos" in run_fails([*weights, "--file", str(junk)])
    assert "cannot open camera 57" in run_fails([*weights, "--camera", "57"])
    assert "no such camera index, URL or file" in run_fails([*weights, "--camera", str(tmp_path / "nope.mp4")])
    assert "gave no frames" in run_fails([*weights, "--camera", str(broken)])
    assert "weights file not found" in run_fails(["--weights", str(tmp_path / "none.pth"), "--file", str(broken)])
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


@pytest.mark.parametrize("flags, message", [
    (["--kp-thresh", "nan"], "argument --kp-thresh: 'nan': expected a number (inf and -inf allowed, not nan)"),
    (["--score-thresh", "2"], "argument --score-thresh: '2': expected a number from 0 to 1"),
    (["--min-size", "100000"], "argument --min-size: '100000': expected an image side from 32 to 4096"),
    (["--max-image-pixels", "-5"], "argument --max-image-pixels"),
])
def test_nonsense_flags_are_refused_by_argparse(tmp_path, capsys, flags, message):
    assert message in flag_error(detect.main, ["--file", str(tmp_path), "--output", str(tmp_path / "out"), *flags],
                                 capsys)
    assert list(tmp_path.iterdir()) == []


def test_hostile_files_fail_with_one_line_and_write_nothing(tiny_checkpoint, tmp_path):
    weights = ["--weights", str(tiny_checkpoint), "--no-show", *FAST, "--output", str(tmp_path / "out")]
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)  # 12 KB, 100 million pixels: 1.2 GB decoded
    assert f"image {bomb} is 10000x10000 pixels, over the limit of 89478485 pixels" in \
        run_fails([*weights, "--file", str(bomb)])
    url = "http://127.0.0.1:9/clip.mp4"  # nothing listens on the discard port
    assert run_fails([*weights, "--file", url]) == \
        f"error: cannot read {url}: unreachable, or not an image or video OpenCV can decode"
    text = tmp_path / "weights.pth"
    text.write_text("these are not weights\n")
    message = run_fails(["--weights", str(text), "--file", str(bomb), "--no-show"])
    assert message.startswith(f"error: cannot load {text}: not a PyTorch checkpoint (")
    assert not (tmp_path / "out").exists()


def test_truncated_jpeg_is_drawn_with_a_warning(sample_images, tiny_checkpoint, tmp_path, capsys):
    data = sample_images[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 2])
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(cut), "--output", str(tmp_path / "out"),
                 "--no-show", *FAST])
    assert f"warning: {cut} is a truncated JPEG" in capsys.readouterr().err
    assert (tmp_path / "out" / "cut.jpg").is_file()
    assert images.jpeg_truncated(cut.read_bytes()) and not images.jpeg_truncated(sample_images[0].read_bytes())


def test_same_stem_never_shares_an_output(sample_images, tiny_checkpoint, tmp_path, capsys):
    """x.jpg and x.png of one folder once wrote one x.json over the other."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(sample_images[0].read_bytes())
    Image.open(sample_images[1]).save(folder / "x.png")
    out = tmp_path / "out"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(folder), "--output", str(out), "--save-json",
                 "--no-show", *FAST])
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg", "x.json", "x_png.json", "x_png.png"]
    assert json.loads((out / "x.json").read_text())["source"] == str(folder / "x.jpg")
    assert json.loads((out / "x_png.json").read_text())["source"] == str(folder / "x.png")
    assert f"-> {out / 'x_png.png'}" in capsys.readouterr().out


def test_cli_error_is_one_line_on_stderr(tiny_checkpoint, tmp_path):
    """The real CLI on a damaged JPEG: exit 1 and exactly one line, not even libjpeg's own warning."""
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    result = subprocess.run([sys.executable, str(REPO / "detect.py"), "--weights", str(tiny_checkpoint),
                             "--file", str(broken), "--no-show", "--device", "cpu"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"error: cannot read image {broken} (damaged, or not an image)\n"


def test_help_names_every_flag(capsys):
    text = help_text(detect.parse_args, capsys)
    for flag in ("--file", "--camera", "--weights", "--output", "--save-json", "--show", "--no-show",
                 "--score-thresh", "--kp-thresh", "--min-size", "--device", "--max-frames", "--half",
                 "--backbone", "--max-size", "--max-persons", "--boxes", "--line-width", "--track",
                 "--track-buffer", "--smooth", "--smooth-min-cutoff", "--smooth-beta", "--frame-rate"):
        assert flag in text, flag
    assert "logits" in text  # --kp-thresh explains its scale


# --------------------------------------------------------------------------------------
# The model call and the drawing
# --------------------------------------------------------------------------------------
def test_detect_frame_returns_numpy_and_respects_the_score_threshold(tiny_checkpoint, sample_images):
    model, _ = models.load_model(str(tiny_checkpoint))
    model.roi_heads.detections_per_img = 3
    frame = cv2.imread(str(sample_images[0]))
    model.roi_heads.score_thresh = 0.5
    found = detect.detect_frame(model, frame, torch.device("cpu"))
    n = len(found["scores"])
    assert 1 <= n <= 3
    assert found["boxes"].shape == (n, 4) and found["keypoints"].shape == (n, 17, 3)
    assert found["keypoint_scores"].shape == (n, 17)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in found.values())
    assert (found["scores"] > 0.5).all() and (np.diff(found["scores"]) <= 0).all()
    model.roi_heads.score_thresh = 0.999
    none = detect.detect_frame(model, frame, torch.device("cpu"))
    assert none["keypoints"].shape == (0, 17, 3) and none["boxes"].shape == (0, 4)


# --------------------------------------------------------------------------------------
# --track
# --------------------------------------------------------------------------------------
def test_track_on_a_synthetic_video_and_a_folder_of_frames(tiny_checkpoint, tmp_path, capsys):
    video = sequences.write_sequence(tmp_path / "video", sequences.SequenceSpec(192, 108, frames=5))
    frames = sequences.write_sequence(tmp_path / "frames", sequences.SequenceSpec(192, 108, frames=4),
                                      frames_folder=True)
    out = tmp_path / "out"
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(video), "--output", str(out), "--save-json",
                 "--no-show", "--track", "--smooth", *FAST])
    result = json.loads((out / "sequence.json").read_text())
    assert [f["frame"] for f in result["frames"]] == list(range(5))
    ids = [[p["track_id"] for p in f["persons"]] for f in result["frames"]]
    assert sum(map(len, ids)) > 0 and all(len(set(i)) == len(i) for i in ids)  # one person, one id, per frame
    assert all(isinstance(i, int) and i >= 1 for frame in ids for i in frame)
    assert ids[0] == list(range(1, len(ids[0]) + 1))  # numbered from 1 in the first frame
    for frame in result["frames"]:
        for person in frame["persons"]:
            check_person({k: v for k, v in person.items() if k != "track_id"}, 0.5, 2.0)
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(frames), "--output", str(out / "f"),
                 "--save-json", "--no-show", "--track", *FAST])
    per_image = [json.loads((out / "f" / f"{i:06d}.json").read_text()) for i in range(4)]
    assert all("track_id" in p for image in per_image for p in image["persons"])
    assert sum(len(image["persons"]) for image in per_image) > 0
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(frames), "--output", str(out / "plain"),
                 "--save-json", "--no-show", *FAST])
    assert not any("track_id" in p for i in range(4)
                   for p in json.loads((out / "plain" / f"{i:06d}.json").read_text())["persons"])
