"""Shared fixtures: the real COCO subset, a generated sample dataset, and a tiny model.

`coco_mini` is the real COCO 2017 subset beside the repo (../shared/data/coco-mini). When it
is missing, tests that need it skip with a reason, except under CI=true, where they fail:
CI always has it, so a skip there would hide a broken setup.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import models  # noqa: E402  (these need the repo on sys.path)
import train  # noqa: E402
from sample_data import make_sample_dataset  # noqa: E402

COCO_MINI = Path(os.environ.get("COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))

# Tiny settings that keep a Keypoint R-CNN step around a second on 2 CPU cores.
TINY_MODEL = {"backbone": "resnet18", "min_size": 160, "max_size": 256}
TINY_HEAD = [32, 32]  # the keypoint head runs on up to 100 detections per image: keep it small


def one_line_error(main, argv: list[str]) -> str:
    """Run a script's `main(argv)`, expecting a one-line error and a non-zero exit; returns the line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def flag_error(main, argv: list[str], capsys) -> str:
    """Run a script's `main(argv)`, expecting argparse to refuse a flag: exit status 2 and one
    `error:` line on stderr; returns that line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.split(": ", 1)[1].startswith("error: "), line
    return line.split(": ", 1)[1]


def help_text(parse_args, capsys) -> str:
    """What `--help` prints; it must exit 0."""
    with pytest.raises(SystemExit) as exc:
        parse_args(["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    ann = COCO_MINI / "annotations" / "person_keypoints_val2017.json"
    if not ann.is_file():
        message = f"real COCO subset not found at {COCO_MINI}"
        if _in_ci():
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    return COCO_MINI


# coco-mini train2017: one large person with 15-16 labelled keypoints each.
OVERFIT_IMAGES = (463557, 535506)


def overfit_data_root(coco_mini: Path, root: Path, copies: int) -> Path:
    """A COCO layout whose val2017 is the chosen images and whose train2017 lists them `copies`
    times under new ids (so an epoch is `copies` passes: fewer epochs, fewer checkpoint writes).
    The image folders are links to coco-mini's train2017; nothing is copied."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / split).symlink_to(coco_mini / "train2017", target_is_directory=True)
    data = json.loads((coco_mini / "annotations" / "person_keypoints_train2017.json").read_text())
    images = [i for i in data["images"] if i["id"] in OVERFIT_IMAGES]
    anns = [a for a in data["annotations"] if a["image_id"] in OVERFIT_IMAGES]
    assert len(images) == len(OVERFIT_IMAGES)
    val = {**data, "images": images, "annotations": anns}
    (root / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(val))
    offset = 10 ** 7  # above every COCO id
    train_data = {**data,
                  "images": [{**i, "id": k * offset + i["id"]} for k in range(1, copies + 1) for i in images],
                  "annotations": [{**a, "id": k * offset + a["id"], "image_id": k * offset + a["image_id"]}
                                  for k in range(1, copies + 1) for a in anns]}
    (root / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(train_data))
    return root


@pytest.fixture(scope="session")
def overfit_run(coco_mini, tmp_path_factory) -> tuple[Path, Path]:
    """A model that has learned: train.py overfits the 2 OVERFIT_IMAGES (MobileNetV3 at 192 px,
    4 epochs x 20 steps, no flips, COCO AP after the last epoch). Trained once per session, shared
    by test_train.py (it learned) and test_precision.py (bfloat16 keeps its outputs).
    Returns (data root, whose val2017 is those 2 images; the run's output folder)."""
    tmp = tmp_path_factory.mktemp("overfit")
    root = overfit_data_root(coco_mini, tmp / "data", copies=20)
    model_flags = ["--device", "cpu", "--backbone", "mobilenet_v3_large", "--weights", "none", "--min-size", "192",
                   "--max-size", "288", "--keypoint-head", "128x4", "--box-batch-size-per-image", "64", "-j", "0"]
    train.main([*model_flags, "--data-root", str(root), "--output-dir", str(tmp / "run"), "--epochs", "4",
                "-b", "2", "--lr", "0.02", "--warmup-iters", "20", "--milestones", "--flip-prob", "0",
                "--eval-every", "4"])
    return root, tmp / "run"


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A small generated sample dataset in the COCO layout (train2017/, val2017/, annotations/)."""
    root = tmp_path_factory.mktemp("sample")
    make_sample_dataset(root, images=24, seed=0, val_images=8)
    return root


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores on CI: keep torch from oversubscribing when pytest runs helpers in-process.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def xvfb_display():
    """A virtual X display (Xvfb) for real OpenCV windows; skips without Xvfb, fails in CI.

    `.ci/run` installs Debian's xvfb, so CI always runs the real-window tests.
    """
    if not shutil.which("Xvfb"):
        message = "Xvfb not installed (Debian package xvfb)"
        if _in_ci():
            pytest.fail(message + " (required under CI=true; .ci/run installs it)")
        pytest.skip(message)
    for number in range(90, 120):
        if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                break
            time.sleep(0.1)
        if server.poll() is None:
            try:
                yield f":{number}"
            finally:
                server.terminate()
                server.wait(timeout=10)
            return
    pytest.fail("could not start Xvfb on displays :90-:119")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny model in our full checkpoint format."""
    torch.manual_seed(0)
    settings = dict(min_size=TINY_MODEL["min_size"], max_size=TINY_MODEL["max_size"], frozen_bn=False,
                    keypoint_head=TINY_HEAD)
    model = models.build_model(TINY_MODEL["backbone"], "none", **settings)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": model.state_dict(), "model_config": models.model_config(TINY_MODEL["backbone"], **settings)},
               path)
    return path
