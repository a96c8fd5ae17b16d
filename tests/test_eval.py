"""test.py: COCO evaluation that gives exactly pycocotools' numbers.

test.py shares its name with Python's stdlib `test` package, so it is loaded here by path
(never `import test`), and run as a subprocess under torchrun.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import numba
import pytest
import torch
from conftest import REPO, flag_error, help_text, one_line_error

import coco_eval
from dataset import load_coco

SCRIPT = REPO / "test.py"
VAL_ANN = Path("annotations") / "person_keypoints_val2017.json"
TABLE_LINES = {"bbox": 12, "keypoints": 10}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("keypoint_rcnn_test_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def ground_truth_as_results(ann_file: Path) -> list[dict]:
    """Every person COCOeval counts, detected perfectly with score 1.

    * Crowd regions (iscrowd=1) are not people to find: COCOeval ignores detections that fall
      on them, so they are left out.
    * Every other person is a detection: its box is the ground-truth box (bbox IoU 1).
    * Its keypoints are the labelled ones (OKS 1). A joint with no label (v=0) has no place
      to be right or wrong, but a detection must put it somewhere: at the box centre. That
      matters for persons with no labelled keypoint at all: keypoint COCOeval ignores them,
      and a detection of one is ignored only if it matches it, which for an unlabelled person
      means its keypoints lie in the (enlarged) box. Left at (0, 0) they would be false
      positives (keypoint AP 0.64 on coco-mini), as a real model's would not.
    """
    data = json.loads(ann_file.read_text())
    results = []
    for ann in data["annotations"]:
        if ann.get("iscrowd"):
            continue
        x, y, w, h = ann["bbox"]
        keypoints = list(ann["keypoints"])
        for j in range(0, len(keypoints), 3):
            if keypoints[j + 2] == 0:
                keypoints[j:j + 2] = [x + w / 2, y + h / 2]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(ann["bbox"]),
                        "score": 1.0, "keypoints": keypoints})
    return results


def perturb(results: list[dict], image_ids: list[int], seed: int = 0) -> list[dict]:
    """Imperfect detections: jittered boxes and keypoints, random scores, dropped persons,
    duplicates and false positives (also on images without people)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in results:
        if rng.random() < 0.2:
            continue  # missed person
        x, y, w, h = r["bbox"]
        scale = max(w, h)
        box = [x + rng.normal(0, 0.05) * w, y + rng.normal(0, 0.05) * h,
               w * rng.uniform(0.85, 1.15), h * rng.uniform(0.85, 1.15)]
        kps = np.asarray(r["keypoints"], dtype=float).reshape(-1, 3)
        kps[:, :2] += rng.normal(0, 0.015 * scale, size=(len(kps), 2))
        kps[:, 2] = 1
        entry = {"image_id": r["image_id"], "category_id": 1, "bbox": [round(v, 2) for v in box],
                 "score": round(float(rng.uniform(0.05, 1.0)), 5),
                 "keypoints": [round(float(v), 2) for v in kps.ravel()]}
        out.append(entry)
        if rng.random() < 0.1:  # a duplicate, with a lower score
            out.append({**entry, "score": round(entry["score"] * 0.5, 5)})
    for _ in range(40):  # false positives anywhere
        x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 300), rng.uniform(10, 200), rng.uniform(10, 300)
        kps = np.column_stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.ones(17)])
        out.append({"image_id": int(rng.choice(image_ids)), "category_id": 1,
                    "bbox": [round(v, 2) for v in (x, y, w, h)], "score": round(float(rng.uniform(0.05, 1.0)), 5),
                    "keypoints": [round(float(v), 2) for v in kps.ravel()]})
    return out


def direct_cocoeval(ann_file: Path, results_file: Path, limit: int | None = None) -> dict[str, tuple[list[str], list]]:
    """Plain pycocotools, as its README does it: {iou_type: (summary lines, stats)}."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        coco_dt = coco_gt.loadRes(str(results_file))
    for iou_type in ("bbox", "keypoints"):
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if limit:
            evaluator.params.imgIds = sorted(coco_gt.getImgIds())[:limit]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            evaluator.summarize()
        out[iou_type] = (printed.getvalue().splitlines(), [float(v) for v in evaluator.stats])
    return out


def printed_tables(stdout: str) -> dict[str, list[str]]:
    """The COCOeval lines test.py printed under each `Evaluation for *type*:` header."""
    lines = stdout.splitlines()
    tables = {}
    for iou_type, count in TABLE_LINES.items():
        header = f"Evaluation for *{iou_type}*:"
        assert lines.count(header) == 1, f"expected one '{header}' line in:\n{stdout}"
        start = lines.index(header) + 1
        tables[iou_type] = lines[start:start + count]
        assert all(line.startswith(" Average ") for line in tables[iou_type]), tables[iou_type]
    return tables


def check_metrics_shape(metrics: dict) -> None:
    # "oks_sigmas" only where keypoints were evaluated: COCO's 17 here, so pycocotools' own sigmas.
    assert list(metrics) in (["bbox", "keypoints"], ["bbox", "keypoints", "oks_sigmas"])
    assert list(metrics["bbox"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert list(metrics["keypoints"]) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    assert all(isinstance(v, float) for table in ("bbox", "keypoints") for v in metrics[table].values())
    if "oks_sigmas" in metrics:
        assert metrics["oks_sigmas"]["source"] == "pycocotools (COCO's 17 person keypoints)"
        assert list(metrics["oks_sigmas"]["sigmas"].values()) == list(coco_eval.COCO_OKS_SIGMAS.values())


def run_fails(script, argv: list[str]) -> str:
    return one_line_error(script.main, argv)


# --------------------------------------------------------------------------------------
# --results: pycocotools' own numbers
# --------------------------------------------------------------------------------------
def test_ground_truth_as_results_scores_perfect(script, coco_mini, tmp_path, capsys):
    ann_file = coco_mini / VAL_ANN
    results_file = tmp_path / "gt_results.json"
    results_file.write_text(json.dumps(ground_truth_as_results(ann_file)))
    metrics_file = tmp_path / "metrics.json"

    metrics = script.main(["--results", str(results_file), "--ann-file", str(ann_file),
                           "--save-metrics", str(metrics_file)])

    stdout = capsys.readouterr().out
    tables = printed_tables(stdout)
    assert json.loads(metrics_file.read_text()) == metrics
    # Over all areas every person is found exactly once: AP and AR are exactly 1.
    # (Per-area numbers may dip below 1: a detection of a person outside the area range may
    # match one inside it, e.g. keypoint APl 0.992 on coco-mini. That is COCOeval's rule.)
    for iou_type, keys in (("bbox", ("AP", "AP50", "AP75", "AR100")), ("keypoints", ("AP", "AP50", "AP75", "AR"))):
        assert {k: metrics[iou_type][k] for k in keys} == {k: 1.0 for k in keys}, iou_type
        assert tables[iou_type][0].endswith("] = 1.000")
    assert "box AP 1.000 | keypoint AP 1.000" in stdout
    expected = direct_cocoeval(ann_file, results_file)
    assert tables == {t: lines for t, (lines, _) in expected.items()}


@pytest.mark.parametrize("limit", [None, 30])
def test_perturbed_results_match_pycocotools(script, coco_mini, tmp_path, capsys, limit):
    ann_file = coco_mini / VAL_ANN
    image_ids = [img["id"] for img in json.loads(ann_file.read_text())["images"]]
    results = perturb(ground_truth_as_results(ann_file), image_ids)
    results_file = tmp_path / "perturbed.json"
    results_file.write_text(json.dumps(results))
    metrics_file = tmp_path / "metrics.json"

    argv = ["--results", str(results_file), "--ann-file", str(ann_file), "--save-metrics", str(metrics_file)]
    script.main(argv + (["--limit", str(limit)] if limit else []))

    tables = printed_tables(capsys.readouterr().out)
    metrics = json.loads(metrics_file.read_text())
    check_metrics_shape(metrics)
    expected = direct_cocoeval(ann_file, results_file, limit)
    for iou_type, (lines, stats) in expected.items():
        assert tables[iou_type] == lines, iou_type
        assert list(metrics[iou_type].values()) == stats, iou_type  # exact, not approximately
    # The perturbation must matter, or this test would pass on an evaluator that prints 1.000.
    assert 0.1 < metrics["bbox"]["AP"] < 0.95 and 0.1 < metrics["keypoints"]["AP"] < 0.95, metrics


def test_keypoint_apm_apl_take_each_detection_area_from_its_box(coco_mini):
    """Our results carry each person's box and keypoints, so pycocotools takes a detection's area
    from its box (as the original project's test.py and detectron2 do); torchvision's references
    write keypoints without the box, and the area comes from the keypoints' extent. AP, AP50,
    AP75 and every AR agree; APm and APl do not, and ours are the box-area ones (README, Testing)."""
    ann_file = coco_mini / VAL_ANN
    coco_gt = load_coco(ann_file)
    detections = perturb(ground_truth_as_results(ann_file), sorted(coco_gt.getImgIds()))
    outputs = {}  # the detections as model outputs, per image
    for d in detections:
        x, y, w, h = d["bbox"]
        out = outputs.setdefault(d["image_id"], {"boxes": [], "scores": [], "keypoints": []})
        out["boxes"].append([x, y, x + w, y + h])
        out["scores"].append(d["score"])
        out["keypoints"].append(np.reshape(d["keypoints"], (17, 3)).tolist())
    ids = sorted(outputs)
    results = coco_eval.outputs_to_coco_results(
        [{k: torch.tensor(v, dtype=torch.float64) for k, v in outputs[i].items()} for i in ids], ids)
    assert all({"bbox", "keypoints"} <= set(r) for r in results)

    ours = coco_eval.coco_evaluate(coco_gt, results, verbose=False)["keypoints"]
    without_boxes = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    torchvision_style = coco_eval.coco_evaluate(coco_gt, without_boxes, iou_types=("keypoints",),
                                                verbose=False)["keypoints"]
    same = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "ARm", "ARl")
    assert {k: ours[k] for k in same} == {k: torchvision_style[k] for k in same}
    assert ours["APm"] != torchvision_style["APm"] and ours["APl"] != torchvision_style["APl"]
    assert 0.1 < ours["AP"] < 0.95  # imperfect detections, or every number would be 1


def test_empty_results_file_gives_zero_not_a_crash(script, coco_mini, tmp_path, capsys):
    results_file = tmp_path / "empty.json"
    results_file.write_text("[]")
    metrics = script.main(["--results", str(results_file), "--ann-file", str(coco_mini / VAL_ANN),
                           "--save-metrics", str(tmp_path / "m.json")])
    stdout = capsys.readouterr().out
    assert "no detections" in stdout
    printed_tables(stdout)
    # coco-mini val has people of every size, so nothing is -1 ("no ground truth"): all missed.
    assert set(metrics["bbox"].values()) == {0.0} and set(metrics["keypoints"].values()) == {0.0}


def test_annotation_file_without_keypoints(script, coco_mini, tmp_path, capsys):
    data = json.loads((coco_mini / VAL_ANN).read_text())
    results = ground_truth_as_results(coco_mini / VAL_ANN)
    for ann in data["annotations"]:
        del ann["keypoints"], ann["num_keypoints"]
    for cat in data["categories"]:
        cat.pop("keypoints", None), cat.pop("skeleton", None)
    ann_file, results_file = tmp_path / "boxes_only.json", tmp_path / "results.json"
    ann_file.write_text(json.dumps(data))
    results_file.write_text(json.dumps(results))

    metrics = script.main(["--results", str(results_file), "--ann-file", str(ann_file),
                           "--save-metrics", str(tmp_path / "m.json")])
    stdout = capsys.readouterr().out
    assert "Evaluation for *keypoints*: skipped, the annotation file has no keypoints" in stdout
    assert "Evaluation for *bbox*:" in stdout
    assert metrics["bbox"]["AP"] == 1.0
    assert set(metrics["keypoints"].values()) == {-1.0}


def test_results_without_keypoints_evaluate_boxes_only(script, coco_mini, tmp_path, capsys):
    results = [{k: v for k, v in r.items() if k != "keypoints"} for r in ground_truth_as_results(coco_mini / VAL_ANN)]
    results_file = tmp_path / "boxes.json"
    results_file.write_text(json.dumps(results))
    metrics = script.main(["--results", str(results_file), "--ann-file", str(coco_mini / VAL_ANN),
                           "--save-metrics", ""])
    assert "Evaluation for *keypoints*: skipped, the results have no keypoints" in capsys.readouterr().out
    assert metrics["bbox"]["AP"] == 1.0 and set(metrics["keypoints"].values()) == {-1.0}


@pytest.mark.parametrize("content, message", [
    pytest.param(None, "results file not found", id="missing"),
    pytest.param("{not json", "is not valid JSON", id="not-json"),
    pytest.param('{"image_id": 1}', "holds a JSON dict", id="not-a-list"),
    pytest.param('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]', "'score' must be a number",
                 id="no-score"),
    pytest.param('[{"image_id": "139", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]',
                 "'image_id' must be an integer", id="string-id"),
    pytest.param('[{"image_id": 139, "category_id": 1, "score": 1}]', "needs 'bbox'", id="no-box-no-keypoints"),
    pytest.param('[{"image_id": 139, "category_id": 1, "bbox": [1, 2, 3], "score": 1}]',
                 "'bbox' must be [x, y, width, height]", id="short-box"),
    pytest.param('[{"image_id": 139, "category_id": 1, "keypoints": [1, 2, 1], "score": 1}]',
                 "'keypoints' has 3 numbers", id="one-keypoint"),
    # One number short once said "must be a flat list", which it is.
    pytest.param(json.dumps([{"image_id": 139, "category_id": 1, "keypoints": [1] * 50, "score": 1}]),
                 "'keypoints' has 50 numbers, expected 51 (x, y, v for each of the annotation file's 17 keypoints)",
                 id="50-numbers"),
    pytest.param(json.dumps([{"image_id": 139, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1},
                             {"image_id": 139, "category_id": 1, "keypoints": [1, 2, 1] * 17, "score": 1}]),
                 "detection 1: has keypoints", id="mixed-fields"),
    pytest.param('[{"image_id": 999999999, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]',
                 "image_id 999999999", id="unknown-image"),
])
def test_bad_results_file_fails_with_one_line(script, coco_mini, tmp_path, content, message):
    results_file = tmp_path / "results.json"
    if content is not None:
        results_file.write_text(content)
    error = run_fails(script, ["--results", str(results_file), "--ann-file", str(coco_mini / VAL_ANN),
                               "--save-metrics", ""])
    assert message in error


# --------------------------------------------------------------------------------------
# With a model
# --------------------------------------------------------------------------------------
def test_model_run_prints_tables_and_writes_both_files(script, sample_root, tiny_checkpoint, tmp_path,
                                                       monkeypatch, capsys):
    # No --weights: the newest e*_b*_lr*_m*.pth in the current folder is used, and named.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e1_b2_lr0.02_m0.9.pth").write_bytes(tiny_checkpoint.read_bytes())
    metrics = script.main(["--data-root", str(sample_root), "--limit", "4", "--batch-size", "2",
                           "--device", "cpu", "--workers", "0"])

    stdout = capsys.readouterr().out
    assert "weights: e1_b2_lr0.02_m0.9.pth" in stdout
    assert "data: 4 images" in stdout
    printed_tables(stdout)
    assert stdout.rstrip().splitlines()[-1] == coco_eval.format_metrics_line(metrics)
    results_file, metrics_file = tmp_path / "runs/test/results.json", tmp_path / "runs/test/metrics.json"
    saved = json.loads(metrics_file.read_text())
    check_metrics_shape(saved)
    assert saved == metrics
    results = json.loads(results_file.read_text())
    first_four = sorted(img["id"] for img in json.loads((sample_root / VAL_ANN).read_text())["images"])[:4]
    assert results and {r["image_id"] for r in results} <= set(first_four)
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "keypoints"}
        assert len(r["bbox"]) == 4 and len(r["keypoints"]) == 51 and 0 <= r["score"] <= 1

    # The saved detections evaluate to the same numbers without the model.
    again = script.main(["--results", str(results_file), "--data-root", str(sample_root), "--limit", "4",
                         "--save-metrics", str(tmp_path / "again.json")])
    assert again == metrics


def test_proposals_limit_what_the_box_head_scores(script, sample_root, tiny_checkpoint, tmp_path):
    """--proposals (detect.py's flag, models.add_model_flags) reaches test.py's model: one proposal per
    image leaves at most one detection per image."""
    results = tmp_path / "results.json"
    common = ["--weights", str(tiny_checkpoint), "--data-root", str(sample_root), "--limit", "2", "--device", "cpu",
              "--workers", "0", "--precision", "fp32", "--save-metrics", "", "--save-results", str(results)]
    script.main([*common, "--proposals", "1"])
    per_image = Counter(r["image_id"] for r in json.loads(results.read_text()))
    assert per_image and max(per_image.values()) == 1
    script.main(common)
    assert max(Counter(r["image_id"] for r in json.loads(results.read_text())).values()) > 1


def test_raw_torchvision_state_dict_is_accepted(script, sample_root, tmp_path, capsys):
    # The original project's e42_b8_lr0.02_m0.9.pth format: torchvision's model.state_dict().
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    torch.manual_seed(0)
    raw = tmp_path / "e42_b8_lr0.02_m0.9.pth"
    torch.save(keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), raw)
    metrics = script.main(["--weights", str(raw), "--data-root", str(sample_root), "--limit", "1",
                           "--min-size", "128", "--max-size", "128", "--device", "cpu", "--workers", "0",
                           "--save-results", str(tmp_path / "r.json"), "--save-metrics", str(tmp_path / "m.json")])
    stdout = capsys.readouterr().out
    assert f"weights: {raw}" in stdout and "model: resnet50, images resized to 128" in stdout
    printed_tables(stdout)
    check_metrics_shape(metrics)


def test_torchrun_equals_single_process(script, sample_root, tiny_checkpoint, tmp_path):
    # 5 images in batches of 2 over 2 ranks: rank 0 gets batches 0 and 2, rank 1 batch 1.
    common = ["--weights", str(tiny_checkpoint), "--data-root", str(sample_root), "--limit", "5",
              "--batch-size", "2", "--device", "cpu", "--workers", "0"]
    # One thread for torch and for roi_align's numba kernel in every process: the outputs of a
    # convolution or of the kernel may differ in the last bit between thread counts.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT), *common,
         "--save-results", str(tmp_path / "ddp_results.json"), "--save-metrics", str(tmp_path / "ddp_metrics.json")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("Evaluation for *bbox*:") == 1  # rank 0 alone prints
    assert "data: 5 images" in launched.stdout

    torch.set_num_threads(1)  # as each rank ran (OMP_NUM_THREADS=1); conftest resets it per test
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            single = script.main([*common, "--save-results", str(tmp_path / "results.json"),
                                  "--save-metrics", str(tmp_path / "metrics.json")])
    finally:
        numba.set_num_threads(numba_threads)
    assert json.loads((tmp_path / "ddp_metrics.json").read_text()) == single
    assert json.loads((tmp_path / "ddp_results.json").read_text()) == json.loads((tmp_path / "results.json").read_text())
    assert single["bbox"]["AR100"] > 0  # the tiny model finds something, so the comparison means something


# --------------------------------------------------------------------------------------
# Bad input: one line, no traceback
# --------------------------------------------------------------------------------------
def test_missing_weights_file(script, sample_root, tmp_path):
    error = run_fails(script, ["--weights", str(tmp_path / "nope.pth"), "--data-root", str(sample_root),
                               "--device", "cpu"])
    assert "weights file not found" in error


def test_garbage_weights_file(script, sample_root, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    error = run_fails(script, ["--weights", str(garbage), "--data-root", str(sample_root), "--device", "cpu"])
    assert "cannot load" in error and "garbage.pth" in error


def test_checkpoint_that_could_run_code_is_refused_without_advice_to_allow_it(script, sample_root, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, evil)
    error = run_fails(script, ["--weights", str(evil), "--data-root", str(sample_root), "--device", "cpu"])
    assert error.startswith(f"error: refused {evil}: it holds Python objects that could run code when loaded")
    assert "weights_only" not in error and "False" not in error


@pytest.mark.parametrize("flags, message", [
    (["--min-size", "100000"], "argument --min-size"),
    (["--max-image-pixels", "0"], "argument --max-image-pixels"),
    (["--limit", "0"], "argument --limit"),
    (["--proposals", "0"], "argument --proposals"),
])
def test_nonsense_flags_are_refused_by_argparse(script, tmp_path, capsys, flags, message):
    assert message in flag_error(script.main, ["--data-root", str(tmp_path), *flags], capsys)
    assert list(tmp_path.iterdir()) == []


def test_missing_annotation_file(script, tmp_path):
    error = run_fails(script, ["--data-root", str(tmp_path / "nowhere"), "--weights", "unused.pth", "--device", "cpu"])
    assert "annotation file not found" in error
    error = run_fails(script, ["--results", str(tmp_path / "r.json"), "--ann-file", str(tmp_path / "none.json")])
    assert "annotation file not found" in error


def test_help_names_every_flag(script, capsys):
    text = help_text(script.parse_args, capsys)
    for flag in ("--data-root", "--ann-file", "--images", "--weights", "--batch-size", "--device", "--precision",
                 "--limit", "--results", "--save-results", "--save-metrics", "--backbone", "--min-size",
                 "--max-size", "--workers", "--proposals"):
        assert flag in text, flag
