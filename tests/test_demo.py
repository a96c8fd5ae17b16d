"""`make demo` itself, at a tiny size: the same Makefile commands, smaller variables.

This checks the wiring (data step -> train.py -> test.py -> detect.py -> the tracked synthetic video
-> summary), not the AP:
the full-size demo's numbers are in docs/demo.md.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import coco_analyze

REPO = Path(__file__).resolve().parents[1]
TINY = {"DEMO_IMAGES": "4", "DEMO_VAL_IMAGES": "2", "DEMO_EPOCHS": "1", "DEMO_BATCH": "2",
        "DEMO_SIZE": "64", "DEMO_MAX_SIZE": "96", "DEMO_WARMUP": "1",
        "DEMO_SEQUENCE": "--size 192x108 --frames 4"}


def make_demo(out: Path, **variables: str) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in {**TINY, "DEMO_OUT": str(out), **variables}.items()]
    return subprocess.run(["make", "--no-print-directory", "demo", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if not shutil.which("make"):
        pytest.skip("make not installed")
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, make_demo(out)


def test_make_demo_runs_end_to_end(demo_run):
    out, run = demo_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = out / "data"
    val = json.loads((data / "annotations" / "person_keypoints_val2017.json").read_text())
    # The drawing step drew exactly the val images the data step wrote, whatever their names.
    drawn = sorted(p.name for p in (out / "detect").glob("*.jpg"))
    assert drawn == sorted(image["file_name"] for image in val["images"])
    assert len(list((out / "detect").glob("*.json"))) == len(drawn)
    metrics = json.loads((out / "metrics.json").read_text())
    ap = metrics["keypoints"]["AP"]
    # The summary prints the AP that test.py measured, its keypoint error breakdown, and where everything is.
    assert f"demo done: keypoint AP {ap:.3f}" in run.stdout
    assert f"\n  {coco_analyze.summary_line(metrics)}\n" in run.stdout
    assert "keypoint_errors" in metrics and (out / "metrics_analysis.png").is_file()
    for name in ("e1_b2_lr0.001_m0.9.pth", "e1_b2_lr0.001_m0.9.png", "last.pth", "metrics.json"):
        assert (out / name).is_file(), name
        assert str(out / name) in run.stdout
    assert str(out / "detect") in run.stdout
    # The tracked video of the synthetic walkers, with a track id for every person in its JSON.
    tracked = json.loads((out / "tracked" / "sequence.json").read_text())
    assert len(tracked["frames"]) == 4 and (out / "tracked" / "sequence.mp4").is_file()
    assert all("track_id" in p for f in tracked["frames"] for p in f["persons"])
    assert str(out / "tracked" / "sequence.mp4") in run.stdout


def test_make_demo_refuses_data_folders_it_did_not_write(demo_run, tmp_path):
    out, first = demo_run
    assert first.returncode == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not the demo's")
    run = make_demo(tmp_path / "out", DEMO_DATA=str(foreign))
    assert run.returncode != 0
    assert f"error: --sample {foreign}: the folder holds files that are not a sample set" in run.stderr
    assert (foreign / "keep.txt").read_text() == "not the demo's"
    assert "train.py" not in run.stdout  # stopped before training
