"""export.py and its runtime: the suite's trained model and torchvision's R50-FPN architecture exported
to ONNX, ONNX Runtime matching PyTorch float32 on real coco-mini images (the same persons, boxes within
1 px, keypoints within 2 px), test.py and detect.py running the file, and the one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from conftest import help_text, one_line_error

import detect
import export
import export_check
import models
import onnx_model
import test as test_script
from dataset import read_image
from keypoints import KeypointSet

# The two coco-mini images the trained model overfits (persons found), and two others of other sizes.
LEARNED = ("train2017/000000463557.jpg", "train2017/000000535506.jpg")
OTHERS = ("val2017/000000000802.jpg", "val2017/000000011813.jpg")


def real_images(coco_mini: Path, names: tuple[str, ...]) -> list[tuple[str, torch.Tensor]]:
    return [(name, read_image(coco_mini / name).float() / 255) for name in names]


@pytest.fixture(scope="module")
def trained_onnx(overfit_run, coco_mini, tmp_path_factory) -> tuple[Path, Path]:
    """(the suite's trained checkpoint, its export), written beside it as export.py does by default."""
    weights = tmp_path_factory.mktemp("trained") / "last.pth"
    weights.write_bytes((overfit_run[1] / "last.pth").read_bytes())
    written = export.main(["--weights", str(weights), "--check-images", str(coco_mini / "val2017"),
                           "--check-count", "1"])
    assert written == weights.with_suffix(".onnx") and written.is_file()
    return weights, written


def both_models(weights: Path, exported: Path, score_thresh: float = onnx_model.DEFAULT_SCORE_THRESH):
    """(torchvision's model of `weights`, float32; the ONNX Runtime model of `exported`; its config)."""
    torch_model, _ = models.load_model(str(weights), box_score_thresh=score_thresh)
    runtime_model, config = onnx_model.load_model(exported, torch.device("cpu"), score_thresh=score_thresh)
    return torch_model, runtime_model, config


def test_trained_model_matches_pytorch_on_real_images(trained_onnx, coco_mini):
    weights, exported = trained_onnx
    onnx.checker.check_model(str(exported), full_check=True)
    torch_model, runtime_model, config = both_models(weights, exported)
    assert KeypointSet.from_config(config) == models.read_weights(str(weights)).keypoint_set
    assert config["min_size"] == [192] and runtime_model.inputs == ["image", "score_thresh"]
    rows = export_check.compare(torch_model, runtime_model, real_images(coco_mini, LEARNED + OTHERS))
    assert all(row.ok for row in rows), export_check.format_table(rows, onnx_model.DEFAULT_SCORE_THRESH)
    assert all(row.paired >= 1 and row.torch_persons == row.onnx_persons for row in rows[:2])
    # The same persons, boxes within 1 px and keypoints within 2 px (what Row.ok means), checked here by hand.
    assert all(row.unpaired_clear == 0 for row in rows)
    assert max(row.box_px for row in rows) <= 1.0 and max(row.keypoint_px for row in rows) <= 2.0


def test_random_r50_fpn_of_torchvisions_coco_architecture(coco_mini, tmp_path, capsys):
    """A raw torchvision state_dict of keypointrcnn_resnet50_fpn (random, BatchNorm frozen as in
    torchvision's COCO model), exported at a small size to keep it quick."""
    torch.manual_seed(0)
    weights = tmp_path / "r50.pth"
    torch.save(models.build_model("resnet50", "none", frozen_bn=True).state_dict(), weights)
    output = tmp_path / "elsewhere" / "r50.onnx"
    written = export.main(["--weights", str(weights), "--min-size", "128", "--max-size", "192", "--output", str(output),
                           "--check-images", str(coco_mini / "val2017"), "--check-count", "1"])
    out = capsys.readouterr().out
    assert written == output and "match: boxes within 1 px" in out and "onnx.checker passed" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("0000")]
    assert len(rows) == 1 and int(rows[0][2].split("/")[0]) > 0 and int(rows[0][3]) > 0  # persons found and paired
    config = onnx_model.load_model(written, torch.device("cpu"))[1]
    assert config["backbone"] == "resnet50" and config["min_size"] == [128] and config["max_size"] == 192


def test_test_py_on_the_file_gives_the_checkpoints_ap(trained_onnx, overfit_run, tmp_path, capsys):
    weights, exported = trained_onnx
    common = ["--data-root", str(overfit_run[0]), "--device", "cpu", "-j", "0", "--save-results", ""]
    from_torch = test_script.main([*common, "--weights", str(weights), "--precision", "fp32",
                                   "--save-metrics", str(tmp_path / "torch.json")])
    from_onnx = test_script.main([*common, "--weights", str(exported), "--save-metrics", str(tmp_path / "onnx.json")])
    assert "ONNX Runtime" in capsys.readouterr().out
    assert from_torch["keypoints"]["AP"] > 0.3  # it learned: a difference below would mean something
    for kind in ("bbox", "keypoints"):
        assert abs(from_onnx[kind]["AP"] - from_torch[kind]["AP"]) <= 0.01, (kind, from_onnx, from_torch)


def test_detect_py_draws_the_same_persons_from_the_file(trained_onnx, coco_mini, tmp_path, capsys):
    weights, exported = trained_onnx
    image = coco_mini / LEARNED[0]
    found = {}
    for name, path in (("torch", weights), ("onnx", exported)):
        detect.main(["--weights", str(path), "--file", str(image), "--output", str(tmp_path / name), "--save-json",
                     "--no-show", "--device", "cpu", "--precision", "fp32", "--score-thresh", "0.5"])
        found[name] = json.loads((tmp_path / name / f"{image.stem}.json").read_text())
        assert (tmp_path / name / image.name).is_file()
    assert "ONNX Runtime 1." in capsys.readouterr().out
    torch_persons, onnx_persons = found["torch"]["persons"], found["onnx"]["persons"]
    assert found["onnx"]["keypoint_names"] == found["torch"]["keypoint_names"]
    assert len(onnx_persons) == len(torch_persons) >= 1
    for a, b in zip(torch_persons, onnx_persons):
        assert max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])) <= 2.0  # x, y, w, h: corners within 1 px
        assert max(abs(p[i] - q[i]) for p, q in zip(a["keypoints"], b["keypoints"]) for i in (0, 1)) <= 2.0


def test_baked_score_threshold_and_an_empty_answer(trained_onnx, coco_mini, tmp_path):
    weights, exported = trained_onnx
    proto = onnx.load(str(exported))
    export.bake_input(proto, onnx_model.INPUT_SCORE_THRESH, 0.6)
    info = json.loads(next(p.value for p in proto.metadata_props if p.key == onnx_model.EXPORT_KEY))
    proto.metadata_props[[p.key for p in proto.metadata_props].index(onnx_model.EXPORT_KEY)].value = json.dumps(
        {**info, "score_thresh": 0.6})
    baked = tmp_path / "baked.onnx"
    onnx.save(proto, str(baked))
    onnx.checker.check_model(str(baked))
    torch_model, runtime_model, _ = both_models(weights, baked, score_thresh=0.6)
    assert runtime_model.inputs == ["image"]
    rows = export_check.compare(torch_model, runtime_model, real_images(coco_mini, LEARNED))
    assert all(row.ok and row.torch_persons == row.onnx_persons for row in rows)
    with pytest.raises(onnx_model.UserError, match="cannot give those down to 0.05"):
        onnx_model.load_model(baked, torch.device("cpu"), score_thresh=0.05)
    # No person at all passes 0.9999: an empty answer of the right shapes, not a crash.
    _, runtime_model, config = both_models(weights, exported, score_thresh=0.9999)
    empty = runtime_model(real_images(coco_mini, OTHERS[:1])[0][1:])[0]
    assert empty["boxes"].shape == (0, 4) and empty["keypoints"].shape == (0, config["num_keypoints"], 3)


def test_a_mismatch_exits_with_the_table_and_writes_nothing(trained_onnx, coco_mini, tmp_path, monkeypatch, capsys):
    weights, exported = trained_onnx
    monkeypatch.setattr(export, "export_bytes", lambda *args: exported.read_bytes())  # no second trace
    run_one = onnx_model.OnnxKeypointRCNN.run_one

    def shifted(self, image):
        output = run_one(self, image)
        return {**output, "boxes": output["boxes"] + 3.0}
    monkeypatch.setattr(onnx_model.OnnxKeypointRCNN, "run_one", shifted)
    output = tmp_path / "shifted.onnx"
    message = one_line_error(export.main, ["--weights", str(weights), "--output", str(output), "--check-images",
                                           str(coco_mini / "train2017"), "--check-count", "1"])
    assert "differ from PyTorch's beyond the tolerance" in message and "not written" in message
    assert "MISMATCH" in capsys.readouterr().out and not output.exists()


def test_pairing_finds_lost_persons_and_allows_borderline_ones():
    boxes = torch.tensor([[10.0, 10, 50, 90], [60, 10, 100, 90], [200, 200, 240, 280]])
    keypoints = torch.rand(3, 17, 3) * 100
    answer = {"boxes": boxes, "scores": torch.tensor([0.9, 0.7, 0.055]), "keypoints": keypoints}
    image = torch.zeros(3, 300, 300)
    same = export_check.compare_answers("x", image, answer, {k: v.flip(0) for k, v in answer.items()}, 0.05)
    assert same.ok and same.paired == 3 and same.box_px == 0
    borderline_lost = {k: v[:2] for k, v in answer.items()}  # 0.055 is within 0.01 of 0.05
    assert export_check.compare_answers("x", image, answer, borderline_lost, 0.05).ok
    clear_lost = {k: v[1:] for k, v in answer.items()}
    assert export_check.compare_answers("x", image, answer, clear_lost, 0.05).unpaired_clear == 1
    scored = {**answer, "keypoints_scores": torch.rand(3, 17)}
    one_tie = {**scored, "keypoints": keypoints.clone()}
    one_tie["keypoints"][0, 3, 0] += 10  # the same maximum elsewhere: a tie, not a difference
    row = export_check.compare_answers("x", image, scored, one_tie, 0.05)
    assert row.ok and row.ties == 1 and row.keypoint_px == 0
    moved = {**answer, "keypoints": keypoints + torch.tensor([2.5, 0, 0])}
    row = export_check.compare_answers("x", image, answer, moved, 0.05)
    assert not row.ok and row.keypoint_px == pytest.approx(2.5)


def test_errors_are_one_line(trained_onnx, tiny_checkpoint, coco_mini, tmp_path, monkeypatch):
    weights, exported = trained_onnx
    existing = tmp_path / "taken.onnx"
    existing.write_bytes(b"mine")
    assert "add --exist-ok" in one_line_error(export.main, ["--weights", str(weights), "--output", str(existing)])
    assert existing.read_bytes() == b"mine"
    assert "name it *.onnx" in one_line_error(export.main, ["--weights", str(weights), "--output", "x.pt"])
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    assert str(bad) in one_line_error(export.main, ["--weights", str(bad), "--check-images", str(coco_mini / "val2017")])
    assert "no images" in one_line_error(export.main, ["--weights", str(weights), "--check-images", str(tmp_path),
                                                       "--output", str(tmp_path / "new.onnx")])
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x08\x07garbage")
    image = str(coco_mini / OTHERS[0])
    detect_argv = ["--file", image, "--no-show", "--device", "cpu", "--output", str(tmp_path / "d")]
    assert "ONNX Runtime cannot load" in one_line_error(detect.main, ["--weights", str(damaged), *detect_argv])
    assert "--min-size 480" in one_line_error(detect.main, ["--weights", str(exported), "--min-size", "480",
                                                            *detect_argv])
    assert "runs in float32" in one_line_error(detect.main, ["--weights", str(exported), "--precision", "bf16",
                                                             *detect_argv])
    assert "--runtime onnxruntime runs .onnx" in one_line_error(
        detect.main, ["--weights", str(tiny_checkpoint), "--runtime", "onnxruntime", *detect_argv])
    monkeypatch.setattr(onnx_model, "onnxruntime", None)  # as if it were not installed
    for main, argv in ((detect.main, ["--weights", str(exported), *detect_argv]),
                       (test_script.main, ["--weights", str(exported), "--data-root", str(coco_mini)]),
                       (export.main, ["--weights", str(weights), "--output", str(tmp_path / "new.onnx")])):
        assert "pip install onnxruntime" in one_line_error(main, argv)


def test_output_path_rules_and_help(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert export.output_path("coco", None, False) == Path(export.COCO_OUTPUT)
    assert export.output_path("runs/x/best.pth", None, False) == Path("runs/x/best.onnx")
    Path("best.onnx").write_bytes(b"x")
    assert export.output_path("best.pth", None, True) == Path("best.onnx")
    Path("folder.onnx").mkdir()
    with pytest.raises(onnx_model.UserError, match="is a folder"):
        export.output_path("best.pth", Path("folder.onnx"), False)
    text = help_text(export.parse_args, capsys)
    for flag in ("--weights", "--min-size", "--max-size", "--opset", "--bake-score-thresh", "--output", "--exist-ok",
                 "--check-images", "--check-count", "--proposals"):
        assert flag in text
    assert "--runtime" in help_text(detect.parse_args, capsys) and "--runtime" in help_text(test_script.parse_args, capsys)
