"""Shared fixtures: the real COCO subset, a generated sample dataset, and a tiny model.

`coco_mini` is the real COCO 2017 subset beside the repo (../shared/data/coco-mini). When it
is missing, tests that need it skip with a reason, except under CI=true, where they fail:
CI always has it, so a skip there would hide a broken setup.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COCO_MINI = Path(os.environ.get("COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))

# Tiny settings that keep a Keypoint R-CNN step around a second on 2 CPU cores.
TINY_MODEL = {"backbone": "resnet18", "min_size": 160, "max_size": 256}


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


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A small generated sample dataset in the COCO layout (train2017/, val2017/, annotations/)."""
    from dataset import make_sample_dataset

    root = tmp_path_factory.mktemp("sample")
    make_sample_dataset(root, images=24, seed=0, val_images=8)
    return root


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores on CI: keep torch from oversubscribing when pytest runs helpers in-process.
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture(scope="session")
def xvfb_display():
    """A virtual X display (Xvfb) for real OpenCV windows; skips without Xvfb, fails in CI.

    `.ci/run` installs Debian's xvfb, so CI always runs the real-window tests.
    """
    import shutil
    import subprocess
    import time

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
