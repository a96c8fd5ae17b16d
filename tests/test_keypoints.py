"""keypoints.py: keypoint sets from COCO categories, flip pairs from names, and a 13-keypoint set
(COCO's 17 without eyes and ears) through train.py, test.py and detect.py with unchanged commands.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, TINY_HEAD, TINY_MODEL, one_line_error

import coco_eval
import dataset
import detect
import models
import train
import utils
from keypoints import COCO13, COCO17, NO_PARTNER, KeypointSet, check_same, flip_index_from_names, flip_warning
from sample_data import make_sample_dataset

VAL_ANN = Path("annotations") / "person_keypoints_val2017.json"
# The tiny settings of conftest; the keypoint head (32x2) is read off the weights trained from.
TINY = ["--device", "cpu", "--backbone", "resnet18", "--min-size", "96", "--max-size", "128",
        "--box-batch-size-per-image", "16", "--workers", "0"]


def load_test_script():
    spec = importlib.util.spec_from_file_location("keypoint_rcnn_test_script_kp", REPO / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# The value type
# --------------------------------------------------------------------------------------
def test_coco17_is_the_old_constants():
    assert COCO17.names == utils.COCO_KEYPOINT_NAMES and COCO17.skeleton == utils.COCO_SKELETON
    assert COCO17.flip_index == (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
    for i, j in enumerate(COCO17.flip_index):
        assert COCO17.flip_index[j] == i  # an involution
        if COCO17.names[i].startswith("left_"):
            assert COCO17.names[j] == "right_" + COCO17.names[i][len("left_"):]
    assert COCO17.category() == utils.COCO_PERSON_CATEGORY
    assert KeypointSet.from_config(models.model_config()) == COCO17
    assert KeypointSet.from_config({"num_keypoints": 17}) == COCO17  # older checkpoints, raw weights


@pytest.mark.parametrize("names, expected", [
    (["head", "left_paw", "right_paw"], (0, 2, 1)),
    (["l_wrist", "r_wrist", "neck"], (1, 0, 2)),
    (["wrist_left", "wrist_right"], (1, 0)),
    (["LeftHand", "RightHand", "Spine"], (1, 0, 2)),
    (["L-Knee", "R-Knee"], (1, 0)),
    (["hand_l", "hand_r", "tail"], (1, 0, 2)),
    (["bright_spot", "left_ear"], (0, NO_PARTNER)),  # "bright" is no side; an ear without partner
])
def test_flip_pairs_from_names(names, expected):
    assert flip_index_from_names(names) == expected


def test_explicit_pairs_unpaired_joints_and_warnings():
    animal = KeypointSet.from_category({"name": "dog", "keypoints": ["nose", "front_a", "front_b", "left_ear"],
                                        "skeleton": [[1, 2], [1, 3]]})
    assert animal.skeleton == ((0, 1), (0, 2)) and animal.unpaired == ["left_ear"]
    assert "left_ear have a side but no partner" in flip_warning(animal)
    explicit = animal.with_flip_pairs([("front_a", "front_b")])
    assert explicit.flip_index == (0, 2, 1, 3) and explicit.pairs == [("front_a", "front_b")]
    assert animal.with_flip_pairs([]).flip_index == (0, 1, 2, 3)
    assert "no left/right pairs" in flip_warning(KeypointSet.from_category({"keypoints": ["a", "b"]}))
    assert flip_warning(COCO13) is None and flip_warning(COCO17) is None
    with pytest.raises(utils.UserError, match="no keypoint named 'paw'"):
        animal.with_flip_pairs([("paw", "nose")])
    with pytest.raises(utils.UserError, match="must be two keypoint numbers from 1 to 4"):
        KeypointSet.from_category({"keypoints": list(animal.names), "skeleton": [[0, 1]]})
    with pytest.raises(utils.UserError, match="occurs twice"):
        KeypointSet.from_category({"keypoints": ["a", "a"]})
    assert KeypointSet.from_config(models.model_config(keypoint_set=explicit)) == explicit


def test_flip_of_an_unpaired_joint_unlabels_it():
    keypoints = torch.tensor([[[10.0, 5.0, 2.0], [20.0, 6.0, 2.0], [30.0, 7.0, 1.0]]])
    flipped = dataset.flip_keypoints(keypoints, 100, (0, NO_PARTNER, 2))
    assert flipped.tolist() == [[[89.0, 5.0, 2.0], [0.0, 0.0, 0.0], [69.0, 7.0, 1.0]]]  # pixel k -> 99 - k


def test_model_and_data_of_other_sets_fail_clearly():
    with pytest.raises(utils.UserError) as e:
        check_same(COCO17, COCO13, "weights a.pth predict", "annotation file b.json")
    assert str(e.value) == ("weights a.pth predict COCO's 17 person keypoints, but annotation file b.json has "
                            "13 keypoints (nose, left_shoulder, ..., right_ankle); use a model trained on this "
                            "keypoint set")
    check_same(KeypointSet.from_config({"num_keypoints": 13}), COCO13, "raw weights predict", "x")  # count only


# --------------------------------------------------------------------------------------
# Data: any keypoint set in COCO format
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco13_root(tmp_path_factory) -> Path:
    """The generator's reduced set, through its command line: 6 train + 3 val images, 13 keypoints."""
    root = tmp_path_factory.mktemp("coco13")
    dataset.main(["--sample", str(root), "--images", "6", "--val-images", "3", "--keypoints", "coco13"])
    return root


def test_sample_generator_writes_the_reduced_set(coco13_root, tmp_path):
    full = make_sample_dataset(tmp_path / "full", images=6, val_images=3)
    data = json.loads((coco13_root / VAL_ANN).read_text())
    assert data["categories"] == [COCO13.category()] and len(COCO13.names) == 13
    kept = [COCO17.names.index(n) for n in COCO13.names]
    full_anns = {a["image_id"]: [] for a in data["annotations"]}
    for ann in json.loads((full / VAL_ANN).read_text())["annotations"]:
        full_anns.setdefault(ann["image_id"], []).append(ann)
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 39 and ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3]) > 0
        source = next(a for a in full_anns[ann["image_id"]] if a["bbox"] == ann["bbox"])
        assert ann["keypoints"] == [v for i in kept for v in source["keypoints"][3 * i:3 * i + 3]]
    name = data["images"][0]["file_name"]
    assert (coco13_root / "val2017" / name).read_bytes() == (full / "val2017" / name).read_bytes()
    ds = dataset.CocoKeypoints(coco13_root / "val2017", coco13_root / VAL_ANN)
    assert ds.keypoint_set == COCO13 and ds.get_target(0)["keypoints"].shape[1:] == (13, 3)


def test_keypoint_count_without_names_is_a_clear_error(coco13_root, tmp_path):
    data = json.loads((coco13_root / VAL_ANN).read_text())
    data["categories"] = [{"id": 1, "name": "person"}]
    path = tmp_path / "unnamed.json"
    path.write_text(json.dumps(data))
    with pytest.raises(utils.DatasetError, match=r"has 39 keypoint values, expected 51 \(COCO's 17 person "
                                                 r"keypoints\); no category names its keypoints"):
        dataset.load_coco(path)


# --------------------------------------------------------------------------------------
# The scripts, unchanged commands, on 13 keypoints
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw17(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny model's raw torchvision-style state_dict of 17 keypoints (no recorded keypoint set)."""
    torch.manual_seed(0)
    state_dict = models.build_model(TINY_MODEL["backbone"], "none", keypoint_head=TINY_HEAD, frozen_bn=False).state_dict()
    path = tmp_path_factory.mktemp("raw17") / "raw17.pth"
    torch.save(state_dict, path)
    return path, state_dict


@pytest.fixture(scope="module")
def coco13_run(coco13_root, raw17, tmp_path_factory) -> tuple[Path, str]:
    """One tiny epoch on the 13-keypoint set, fine-tuned from 17-keypoint weights: (folder, stdout)."""
    out = tmp_path_factory.mktemp("run13")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        train.main([*TINY, "--weights", str(raw17[0]), "--data-root", str(coco13_root), "--output-dir", str(out),
                    "--epochs", "1", "-b", "2", "--lr", "0.01", "--limit", "2", "--val-limit", "1",
                    "--warmup-iters", "1", "--aspect-ratio-group-factor", "-1", "--milestones"])
    return out, printed.getvalue()


def test_train_records_the_keypoint_set(coco13_run):
    coco13_run, printed = coco13_run
    assert "warning: no OKS sigmas given for 13 keypoints" in printed and "no left/right pairs" not in printed
    assert ("(COCO's 17 person keypoints) to 13 keypoints (nose, left_shoulder, ..., right_ankle): keeping the "
            "backbone, RPN and box head, starting a new keypoint predictor") in printed  # fine-tuned from raw17
    last = torch.load(coco13_run / "last.pth", map_location="cpu", weights_only=True)
    assert last["model_config"]["keypoint_head"] == TINY_HEAD  # read off the raw weights
    final = torch.load(coco13_run / "e1_b2_lr0.01_m0.9.pth", map_location="cpu", weights_only=True)
    assert final["roi_heads.keypoint_predictor.kps_score_lowres.weight"].shape[1] == 13
    last = torch.load(coco13_run / "last.pth", map_location="cpu", weights_only=True)
    config = last["model_config"]
    assert config["keypoint_names"] == list(COCO13.names) and config["num_keypoints"] == 13
    assert config["skeleton"] == [list(limb) for limb in COCO13.skeleton]
    assert config["flip_index"] == list(COCO13.flip_index)
    assert json.loads((coco13_run / "e1_b2_lr0.01_m0.9.json").read_text())["model_config"] == config
    metrics = last["history"][-1]["metrics"]
    assert metrics["oks_sigmas"]["source"].startswith("default")
    assert metrics["oks_sigmas"]["sigmas"] == {n: coco_eval.COCO_OKS_SIGMAS[n] for n in COCO13.names}


def test_ground_truth_of_13_keypoints_scores_ap_1_with_its_sigmas(coco13_root, tmp_path, capsys):
    ann_file = coco13_root / VAL_ANN
    data = json.loads(ann_file.read_text())
    results = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0,
                "keypoints": a["keypoints"]} for a in data["annotations"]]
    (tmp_path / "results.json").write_text(json.dumps(results))
    sigmas = [0.03 + 0.005 * i for i in range(13)]
    metrics = load_test_script().main(["--results", str(tmp_path / "results.json"), "--ann-file", str(ann_file),
                                       "--oks-sigmas", ",".join(map(str, sigmas)),
                                       "--save-metrics", str(tmp_path / "metrics.json")])
    assert metrics["keypoints"]["AP"] == 1.0 and metrics["bbox"]["AP"] == 1.0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["oks_sigmas"] == {"source": "--oks-sigmas", "sigmas": dict(zip(COCO13.names, sigmas))}
    assert "warning" not in capsys.readouterr().out
    metrics = load_test_script().main(["--results", str(tmp_path / "results.json"), "--ann-file", str(ann_file),
                                       "--save-metrics", ""])
    assert metrics["keypoints"]["AP"] == 1.0
    assert "warning: no OKS sigmas given for 13 keypoints" in capsys.readouterr().out
    message = one_line_error(load_test_script().main, ["--results", str(tmp_path / "results.json"),
                                                       "--ann-file", str(ann_file), "--oks-sigmas", "0.1,0.2"])
    assert message == "error: --oks-sigmas gives 2 sigmas for 13 keypoints (nose, left_shoulder, ..., right_ankle)"


def test_coco17_keeps_pycocotools_sigmas(coco_mini):
    coco_gt = dataset.load_coco(coco_mini / VAL_ANN)
    ann = next(a for a in coco_gt.dataset["annotations"] if a["num_keypoints"] > 0)
    result = {"image_id": ann["image_id"], "category_id": 1, "bbox": ann["bbox"], "score": 1.0,
              "keypoints": ann["keypoints"]}
    metrics = coco_eval.coco_evaluate(coco_gt, [result], [ann["image_id"]], verbose=False)
    assert metrics["oks_sigmas"]["source"].startswith("pycocotools")
    assert list(metrics["oks_sigmas"]["sigmas"].values()) == coco_eval.Params(iouType="keypoints").kpt_oks_sigmas.tolist()


def test_test_py_reads_the_set_back_and_refuses_another(coco13_root, coco13_run, tiny_checkpoint, tmp_path, capsys):
    coco13_run = coco13_run[0]
    script = load_test_script()
    common = ["--data-root", str(coco13_root), "--device", "cpu", "--limit", "1", "--workers", "0",
              "--save-results", "", "--save-metrics", ""]
    metrics = script.main([*common, "--weights", str(coco13_run / "last.pth")])
    assert set(metrics["oks_sigmas"]["sigmas"]) == set(COCO13.names)
    message = one_line_error(script.main, [*common, "--weights", str(tiny_checkpoint)])
    assert message.startswith(f"error: weights {tiny_checkpoint} predict COCO's 17 person keypoints, but annotation "
                              "file") and "has 13 keypoints" in message


def test_detect_draws_and_writes_13_keypoints(coco13_root, coco13_run, tmp_path):
    coco13_run = coco13_run[0]
    image = next((coco13_root / "val2017").iterdir())
    detect.main(["--weights", str(coco13_run / "last.pth"), "--file", str(image), "--output", str(tmp_path),
                 "--save-json", "--no-show", "--device", "cpu", "--score-thresh", "0", "--max-persons", "2",
                 "--kp-thresh=-inf"])
    result = json.loads((tmp_path / image.with_suffix(".json").name).read_text())
    assert result["keypoint_names"] == list(COCO13.names) and result["persons"]
    for person in result["persons"]:
        assert len(person["keypoints"]) == 13 and len(person["keypoint_scores"]) == 13
    drawn = cv2.imread(str(tmp_path / image.name))
    assert np.abs(drawn.astype(int) - cv2.imread(str(image)).astype(int)).max() > 100
