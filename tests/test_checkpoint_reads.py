"""Each script reads a checkpoint once per run: the settings, the keypoint set and the weights
all flow from that one torch.load (detect.py, test.py, train.py --weights PATH and --resume)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import detect
import test as test_script
import train
from conftest import TINY_HEAD, TINY_MODEL

TRAIN = ["--device", "cpu", "--backbone", TINY_MODEL["backbone"], "--min-size", "128", "--max-size", "192",
         "--keypoint-head", "x".join(map(str, (TINY_HEAD[0], len(TINY_HEAD)))), "--box-batch-size-per-image", "32",
         "--workers", "0", "-b", "1", "--limit", "1", "--val-limit", "0", "--warmup-iters", "0", "--milestones"]


@pytest.fixture
def loads(monkeypatch) -> list[Path]:
    """The resolved paths torch.load is called with, in order."""
    seen: list[Path] = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):
        seen.append(Path(f).resolve() if isinstance(f, (str, Path)) else f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    return seen


def test_detect_and_test_read_the_checkpoint_once(tiny_checkpoint, sample_root, tmp_path, loads):
    image = next((sample_root / "val2017").iterdir())
    detect.main(["--weights", str(tiny_checkpoint), "--file", str(image), "--output", str(tmp_path / "d"),
                 "--no-show", "--device", "cpu", "--max-persons", "2"])
    assert loads.count(tiny_checkpoint.resolve()) == 1
    loads.clear()
    test_script.main(["--weights", str(tiny_checkpoint), "--data-root", str(sample_root), "--limit", "1",
                      "--device", "cpu", "--workers", "0", "--save-results", "", "--save-metrics", ""])
    assert loads.count(tiny_checkpoint.resolve()) == 1


def test_train_reads_weights_and_resume_checkpoint_once(tiny_checkpoint, sample_root, tmp_path, loads):
    out = tmp_path / "run"
    train.main([*TRAIN, "--weights", str(tiny_checkpoint), "--data-root", str(sample_root), "--output-dir", str(out),
                "--epochs", "1"])
    assert loads.count(tiny_checkpoint.resolve()) == 1
    loads.clear()
    train.main(["--resume", str(out / "last.pth"), "--epochs", "2"])
    assert loads.count((out / "last.pth").resolve()) == 1
    assert loads == [(out / "last.pth").resolve()]  # and no other checkpoint
