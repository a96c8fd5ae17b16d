"""utils.py: constants, checkpoint naming/saving/loading, the model builder, devices, drawing."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import draw
import models
import utils
from conftest import TINY_MODEL

TINY_HEAD = [64, 64]


def tiny_model(**kwargs):
    settings = dict(TINY_MODEL, keypoint_head=TINY_HEAD, box_detections_per_img=10)
    settings.update(kwargs)
    return models.build_model(weights="none", **settings)


# --- constants ------------------------------------------------------------------------
def test_flip_index_swaps_left_and_right_and_keeps_the_nose():
    names = utils.COCO_KEYPOINT_NAMES
    assert len(names) == 17 and names[0] == "nose"
    for i, j in enumerate(utils.KEYPOINT_FLIP_INDEX):
        assert utils.KEYPOINT_FLIP_INDEX[j] == i  # an involution
        if names[i].startswith("left_"):
            assert names[j] == "right_" + names[i][len("left_"):]
    assert utils.KEYPOINT_FLIP_INDEX[0] == 0


def test_skeleton_matches_the_coco_annotation_file(coco_mini):
    categories = json.loads((coco_mini / "annotations" / "person_keypoints_val2017.json").read_text())["categories"]
    person = next(c for c in categories if c["name"] == "person")
    assert tuple(person["keypoints"]) == utils.COCO_KEYPOINT_NAMES
    assert person["skeleton"] == utils.COCO_PERSON_CATEGORY["skeleton"]
    assert len(utils.COCO_SKELETON) == 19


# --- checkpoints ----------------------------------------------------------------------
@pytest.mark.parametrize("args, name", [
    ((42, 8, 0.02, 0.9), "e42_b8_lr0.02_m0.9.pth"),
    ((1, 2, 0.01, 0.9), "e1_b2_lr0.01_m0.9.pth"),
    ((3, 4, 1e-05, 0.95), "e3_b4_lr1e-05_m0.95.pth"),
])
def test_checkpoint_name(args, name):
    assert models.checkpoint_name(*args) == name
    assert models.WEIGHTS_NAME_PATTERN.match(name)


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


def test_loader_accepts_raw_ddp_and_full_checkpoints(tmp_path):
    model = tiny_model()
    state = model.state_dict()
    config = models.model_config(backbone="resnet18", min_size=160, max_size=256, frozen_bn=False,
                                keypoint_head=TINY_HEAD)
    variants = {
        "raw.pth": state,
        "ddp.pth": {"module." + k: v for k, v in state.items()},
        "full.pth": {"model": state, "model_config": config, "epoch": 3, "args": {"lr": 0.02}},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        loaded, saved_config = models.load_weights(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
        assert saved_config == (config if name == "full.pth" else None)
        rebuilt, used = models.load_model(str(tmp_path / name), min_size=160, max_size=256)
        assert used["backbone"] == "resnet18" and used["keypoint_head"] == TINY_HEAD
        assert all(torch.equal(rebuilt.state_dict()[k], state[k]) for k in state)


def test_loader_refuses_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    for name in ("evil.pth", "garbage.pth", "missing.pth"):
        with pytest.raises(utils.UserError, match=name):
            models.load_checkpoint(tmp_path / name)


def test_mismatched_weights_name_the_problem(tmp_path):
    other = tiny_model(keypoint_head=[32, 32])
    with pytest.raises(utils.UserError, match="wrong shape"):
        models.apply_state_dict(tiny_model(), other.state_dict(), "x.pth")
    state = tiny_model().state_dict()
    state.pop("rpn.head.conv.0.0.weight")
    with pytest.raises(utils.UserError, match="1 missing"):
        models.apply_state_dict(tiny_model(), state, "x.pth")


def test_find_latest_weights_and_default_rule(tmp_path):
    assert models.resolve_weights(None, tmp_path) == "coco"
    (tmp_path / "last.pth").write_bytes(b"")
    older, newer = tmp_path / "e1_b2_lr0.01_m0.9.pth", tmp_path / "e2_b2_lr0.01_m0.9.pth"
    older.write_bytes(b"")
    newer.write_bytes(b"")
    os.utime(older, (1, 1))
    assert models.resolve_weights(None, tmp_path) == str(newer)
    assert models.resolve_weights("mine.pth", tmp_path) == "mine.pth"


# --- model ----------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_guess_backbone_from_weights(backbone):
    assert models.guess_backbone(tiny_model(backbone=backbone).state_dict()) == backbone


def test_guess_backbone_of_torchvision_resnet50():
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    state = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    assert models.guess_backbone(state) == "resnet50"
    assert models.guess_keypoint_head(state) == list(models.DEFAULT_KEYPOINT_HEAD)


def test_model_forward_train_and_eval_on_a_sample_batch(sample_root):
    from torch.utils.data import DataLoader

    from dataset import CocoKeypoints, coco_paths, collate_fn

    torch.manual_seed(0)
    image_dir, ann_file = coco_paths(sample_root, "train")
    loader = DataLoader(CocoKeypoints(image_dir, ann_file, train=True), batch_size=2, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    model = tiny_model()
    model.train()
    losses = model(list(images), list(targets))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_keypoint", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.inference_mode():
        outputs = model(list(images))
    assert len(outputs) == 2
    for out in outputs:
        n = len(out["boxes"])
        assert out["boxes"].shape == (n, 4) and out["keypoints"].shape == (n, 17, 3)
        assert out["keypoints_scores"].shape == (n, 17)


def test_offline_weights_download_gives_one_line_error(monkeypatch, tmp_path):
    # Point torch's hub cache at an empty folder and make every download fail like no network.
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    for weights, backbone in (("coco", "resnet50"), ("imagenet", "resnet18")):
        with pytest.raises(models.WeightsError) as error:
            models.build_model(backbone, weights)
        message = str(error.value)
        assert "\n" not in message and "--weights" in message


def test_coco_weights_only_for_resnet50():
    with pytest.raises(utils.UserError, match="resnet50"):
        models.build_model("resnet18", "coco")
    with pytest.raises(utils.UserError, match="backbone"):
        models.build_model("vgg16", "none")


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
