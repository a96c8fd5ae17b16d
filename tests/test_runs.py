"""runs.py: run folders that never overwrite an earlier run, finding the newest run and the newest
final weights again."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import runs
import train
import utils
from conftest import help_text, one_line_error


def test_find_latest_weights_and_default_rule(tmp_path):
    assert runs.resolve_weights(None, tmp_path)[0] == "coco"
    (tmp_path / "last.pth").write_bytes(b"")
    older, newer = tmp_path / "e1_b2_lr0.01_m0.9.pth", tmp_path / "e2_b2_lr0.01_m0.9.pth"
    older.write_bytes(b"")
    newer.write_bytes(b"")
    os.utime(older, (1, 1))
    assert runs.resolve_weights(None, tmp_path) == (str(newer), "  (the newest e*_b*_lr*_m*.pth here and in "
                                                                 "runs/train/*/)")
    assert runs.resolve_weights("mine.pth", tmp_path) == ("mine.pth", "")
    # train.py's run folders count too, the newest file wins wherever it is.
    run = tmp_path / "runs" / "train" / "exp2"
    run.mkdir(parents=True)
    (run / "e3_b2_lr0.01_m0.9.pth").write_bytes(b"")
    assert runs.resolve_weights(None, tmp_path)[0] == str(run / "e3_b2_lr0.01_m0.9.pth")
    os.utime(run / "e3_b2_lr0.01_m0.9.pth", (2, 2))
    assert runs.resolve_weights(None, tmp_path)[0] == str(newer)


def test_run_folders_never_overwrite_an_earlier_run(sample_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runs.prepare_output_dir(None, resuming=False, exist_ok=False) == Path("runs/train/exp")
    assert runs.prepare_output_dir(None, resuming=False, exist_ok=False) == Path("runs/train/exp2")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for name in ("last.pth", "e1_b2_lr0.01_m0.9.pth", "e1_b2_lr0.01_m0.9.json"):
        (earlier / name).write_bytes(b"old")
    # Refused before any model is built: no model flags needed.
    argv = ["--device", "cpu", "--data-root", str(sample_root), "--limit", "2", "-b", "2", "--val-limit", "0"]
    message = one_line_error(train.main, [*argv, "--output-dir", str(earlier)])
    assert f"--output-dir {earlier} holds an earlier run" in message
    assert f"continue it with: python train.py --resume {earlier / 'last.pth'}" in message and "--exist-ok" in message
    assert all(p.read_bytes() == b"old" for p in earlier.iterdir())
    assert runs.prepare_output_dir(str(earlier), resuming=False, exist_ok=True) == earlier
    assert runs.prepare_output_dir(str(earlier), resuming=True, exist_ok=False) == earlier
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in one_line_error(train.main, [*argv, "--output-dir", str(tmp_path / "file")])
    assert "cannot write there" in one_line_error(train.main, [*argv, "--output-dir", "/proc/i13"])
    assert (tmp_path / "file").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == ["exp", "exp2"]


def test_resume_without_path_takes_the_newest_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(utils.UserError, match="no last.pth in runs/train/\\*/ or here"):
        runs.resume_path("", None)
    touched_last, made_later = Path("runs/train/exp/last.pth"), Path("runs/train/exp2/last.pth")
    for path in (touched_last, made_later):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    os.utime(made_later, (1, 1))  # newest by time, not by folder number
    assert runs.resume_path("", None) == touched_last
    assert runs.resume_path("runs/train/exp2", None) == made_later  # a run folder: its last.pth
    with pytest.raises(utils.UserError, match="no checkpoint at mine/last.pth"):
        runs.resume_path("", "mine")
    assert "else the newest runs/train/*/last.pth or ./last.pth" in " ".join(help_text(train.parse_args, capsys).split())
