"""utils.py: constants, atomic files, devices, one-line errors."""
from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

import models
import utils


# --- constants ------------------------------------------------------------------------
def test_skeleton_matches_the_coco_annotation_file(coco_mini):
    categories = json.loads((coco_mini / "annotations" / "person_keypoints_val2017.json").read_text())["categories"]
    person = next(c for c in categories if c["name"] == "person")
    assert tuple(person["keypoints"]) == utils.COCO_KEYPOINT_NAMES
    assert person["skeleton"] == utils.COCO_PERSON_CATEGORY["skeleton"]
    assert len(utils.COCO_SKELETON) == 19


# --- checkpoints ----------------------------------------------------------------------


def test_atomic_save_leaves_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "last.pth"
    utils.atomic_save({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        utils.atomic_save({"epoch": 2, "bad": Unpicklable()}, path)
    assert models.load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left behind


# --- model ----------------------------------------------------------------------------


# --- devices and errors ---------------------------------------------------------------
def test_select_device():
    assert utils.select_device("cpu") == torch.device("cpu")
    assert utils.select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(utils.UserError):
        utils.select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(utils.UserError, match="CUDA is not available"):
            utils.select_device("cuda:0")


def test_cli_errors_turn_into_one_line_exit():
    with pytest.raises(SystemExit) as e:
        with utils.cli_errors():
            raise utils.UserError("bad flag")
    assert str(e.value.code) == "error: bad flag"
    with pytest.raises(SystemExit) as e:
        with utils.cli_errors():
            open("/nonexistent/file.json")
    assert "/nonexistent/file.json" in str(e.value.code)


# --- drawing --------------------------------------------------------------------------


def test_errors_from_dataloader_workers_keep_only_their_message(tmp_path):
    from torch.utils.data import DataLoader

    from dataset import DatasetError

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise DatasetError(f"cannot decode image {tmp_path}/x.jpg: truncated")

    with pytest.raises(SystemExit) as e:
        with utils.cli_errors():
            next(iter(DataLoader(Broken(), num_workers=1)))
    assert e.value.code == f"error: cannot decode image {tmp_path}/x.jpg: truncated"


def test_keypoint_head_flag():
    assert utils.keypoint_head_arg("512x8") == [512] * 8
    assert utils.keypoint_head_arg("256,128") == [256, 128]
    for bad in ("", "x", "128x", "0x4", "a,b"):
        with pytest.raises(Exception):
            utils.keypoint_head_arg(bad)

@pytest.mark.parametrize("parse, good, bad", [
    (utils.positive_int, {"1": 1, "42": 42}, ["0", "-1", "1.5", "x", ""]),
    (utils.nonnegative_int, {"0": 0, "3": 3}, ["-1", "nan"]),
    (utils.positive_float, {"0.02": 0.02, "1e-4": 1e-4}, ["0", "-0.1", "nan", "inf"]),
    (utils.nonnegative_float, {"0": 0.0, "1e-4": 1e-4}, ["-1e-4", "nan", "inf"]),
    (utils.momentum, {"0": 0.0, "0.9": 0.9}, ["-0.1", "1", "nan"]),
    (utils.probability, {"0": 0.0, "0.5": 0.5, "1": 1.0}, ["2", "-0.1", "nan"]),
    (utils.threshold, {"2": 2.0, "-inf": float("-inf"), "inf": float("inf")}, ["nan", "x"]),
    (utils.image_side, {"32": 32, "800": 800, "4096": 4096}, ["31", "4097", "100000", "800.5"]),
    (utils.int_or_off, {"-1": -1, "0": 0, "3": 3}, ["-2", "x"]),
    (utils.oks_sigmas_arg, {"0.1,0.2 0.3": [0.1, 0.2, 0.3], "0.05": [0.05]}, ["0.1,-2", "0.1,nan", "0", "nofile.json"]),
    (utils.flip_pair_arg, {"left_paw:right_paw": ("left_paw", "right_paw"), "a : b": ("a", "b")},
     ["a", "a:a", "a:b:c", ":b"]),
])
def test_argparse_types_accept_good_and_refuse_bad_values(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text).replace("-", "\\-").replace(".", "\\.")):
            parse(text)


# --- hostile input: flags, temp files, folders, huge images ------------------------------
def test_url_type():
    assert utils.url("http://images.cocodataset.org") == "http://images.cocodataset.org"
    assert utils.url("https://mirror.example/coco/") == "https://mirror.example/coco/"
    for bad in ("foo", "images.cocodataset.org", "file:///etc", "http://", "/tmp/coco"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a URL"):
            utils.url(bad)


def test_stale_temp_files_of_ours_are_removed_and_nothing_else(tmp_path):
    ours = [tmp_path / "last.pth.tmpab12_x9z", tmp_path / "e2_b2_lr0.01_m0.9.json.tmp0000abcd"]
    theirs = [tmp_path / "notes.txt.tmpab12_x9z", tmp_path / "last.pth.tmp", tmp_path / "last.pth.tmpTOOLONG123",
              tmp_path / "last.pth", tmp_path / "sub" / "last.pth.tmpab12_x9z"]
    (tmp_path / "sub").mkdir()
    for path in ours + theirs:
        path.write_bytes(b"x")
    names = re.compile(r"last\.pth|e\d+_b\d+_lr[^_]+_m[^_]+\.(pth|json|png)")
    assert utils.remove_stale_temp_files(tmp_path, names) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)
    assert utils.remove_stale_temp_files(tmp_path / "missing", names) == []


def test_check_writable_folder(tmp_path):
    assert utils.check_writable_folder(tmp_path / "a" / "b", "--output-dir") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("x")
    with pytest.raises(utils.UserError, match="is a file, not a folder"):
        utils.check_writable_folder(tmp_path / "file", "--output-dir")
    with pytest.raises(utils.UserError, match="cannot write there"):
        utils.check_writable_folder("/proc/i13", "--output-dir")


def test_check_image_pixels_reads_the_header_only(tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (10000, 10000)).save(bomb)  # 12 KB on disk, 100 million pixels
    assert bomb.stat().st_size < 50_000
    with pytest.raises(utils.DatasetError, match="bomb.png is 10000x10000 pixels, over the limit of 89478485"):
        utils.check_image_pixels(bomb, bomb)
    pillow_default = Image.MAX_IMAGE_PIXELS
    utils.check_image_pixels(bomb, bomb, limit=10**8)
    assert Image.MAX_IMAGE_PIXELS == pillow_default  # a raised limit does not outlive the call
    with pytest.raises(utils.DatasetError, match="over the limit of 99"):
        utils.check_image_pixels(bomb, bomb, limit=99)
    (tmp_path / "text.png").write_text("not an image")  # the decoders decide about these
    utils.check_image_pixels(tmp_path / "text.png", "text.png", limit=1)


def test_oks_sigmas_from_a_json_file(tmp_path):
    (tmp_path / "list.json").write_text("[0.05, 0.07]")
    (tmp_path / "named.json").write_text('{"nose": 0.026, "tail": 0.1}')
    (tmp_path / "bad.json").write_text('{"nose": -1}')
    assert utils.oks_sigmas_arg(str(tmp_path / "list.json")) == [0.05, 0.07]
    assert utils.oks_sigmas_arg(str(tmp_path / "named.json")) == {"nose": 0.026, "tail": 0.1}
    with pytest.raises(argparse.ArgumentTypeError, match="expected OKS sigmas"):
        utils.oks_sigmas_arg(str(tmp_path / "bad.json"))
