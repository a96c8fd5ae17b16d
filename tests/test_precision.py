"""precision.py: which precision auto picks, the flags of test.py and detect.py, and bfloat16 keeping
a learned model's outputs (COCO AP within 0.02 of float32, keypoints within a few pixels)."""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import detect
import precision
import test as test_script
import utils
from conftest import one_line_error
from utils import coco_paths


@pytest.mark.parametrize("fast_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_on_a_cpu_with_native_bfloat16(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert precision.select("auto", cpu) == expected
    assert precision.select("fp32", cpu) == "fp32" and precision.select("BF16", cpu) == "bf16"
    assert precision.select("auto", torch.device("cuda"), cuda_default="fp16") == "fp16"
    assert precision.select("auto", torch.device("cuda")) == "fp32"
    text = precision.describe(expected, cpu)
    assert text.startswith("bfloat16 autocast (auto: the CPU has" if fast_bf16 else "float32 (auto: the CPU has no")
    if not fast_bf16:
        assert "emulated" in precision.describe("bf16", cpu, "bf16")


def test_fp16_needs_cuda_and_bad_names_are_refused():
    with pytest.raises(utils.UserError, match="fp16 needs a CUDA device"):
        precision.select("fp16", torch.device("cpu"))
    assert precision.precision_arg("Auto") == "auto"
    with pytest.raises(Exception, match="invalid choice 'fp8'"):
        precision.precision_arg("fp8")


def test_cpu_capability_comes_from_torch():
    caps = torch.cpu.get_capabilities()
    native = bool(caps.get("amx_bf16") or caps.get("avx512_bf16")) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert precision.cpu_has_fast_bf16() == native


@pytest.mark.parametrize("script, argv, message", [
    (detect, ["--file", "x.jpg", "--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    (detect, ["--file", "x.jpg", "--no-half", "--precision", "bf16"], "--no-half means --precision fp32"),
    (test_script, ["--data-root", "nowhere", "--precision", "fp16", "--device", "cpu"],
     "--precision fp16 needs a CUDA device"),
    (detect, ["--file", "x.jpg", "--half", "--device", "cpu"], "--half needs a CUDA device"),
])
def test_precision_flag_errors_are_one_line(script, argv, message, capsys):
    assert message in one_line_error(script.main, argv)


def test_amp_means_one_thing(capsys):
    """train.py's --amp trains in mixed precision; test.py refuses it and points to --precision fp16."""
    with pytest.raises(SystemExit) as exit_info:
        test_script.parse_args(["--amp"])
    assert exit_info.value.code == 2
    assert "--amp is not a flag of this script: use --precision fp16" in capsys.readouterr().err
    assert precision.training(True, torch.device("cpu")) == "fp32"
    assert precision.training(True, torch.device("cuda")) == "fp16"
    assert precision.training(False, torch.device("cuda")) == "fp32"


def test_half_is_fp16_and_no_half_fp32():
    assert precision.requested(detect.parse_args(["--half"])) == "fp16"
    assert precision.requested(detect.parse_args(["--no-half"])) == "fp32"
    assert precision.requested(detect.parse_args(["--precision", "bf16"])) == "bf16"


def test_precision_flag_is_validated_by_argparse(capsys):
    for script, argv in ((detect, ["--file", "x.jpg"]), (test_script, [])):
        with pytest.raises(SystemExit) as e:
            script.parse_args([*argv, "--precision", "half"])
        assert e.value.code == 2
        assert "invalid choice 'half'" in capsys.readouterr().err
        assert script.parse_args(argv).precision == "auto"


def matched_keypoint_errors(fp32: list[dict], bf16: list[dict], min_score: float = 0.5) -> list[float]:
    """Pixel distances between the keypoints of each person found by both (same image, box IoU > 0.8)."""
    def iou(a: list[float], b: list[float]) -> float:
        ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
        w, h = max(0.0, min(ax2, bx2) - max(a[0], b[0])), max(0.0, min(ay2, by2) - max(a[1], b[1]))
        return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)
    errors = []
    for person in (p for p in fp32 if p["score"] >= min_score):
        same_image = [q for q in bf16 if q["image_id"] == person["image_id"]]
        twin = max(same_image, key=lambda q: iou(person["bbox"], q["bbox"]), default=None)
        assert twin is not None and iou(person["bbox"], twin["bbox"]) > 0.8, "a confident person lost in bfloat16"
        k32, k16 = person["keypoints"], twin["keypoints"]
        errors += [math.dist(k32[i:i + 2], k16[i:i + 2]) for i in range(0, len(k32), 3)]
    return sorted(errors)


def best_oks_per_person(ann_file, results: list[dict]) -> list[float]:
    """COCOeval's OKS of the best detection for each annotated person, image by image."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), "keypoints")
        evaluator.evaluate()
    return [float(v) for key in sorted(evaluator.ious) if len(evaluator.ious[key])
            for v in np.max(evaluator.ious[key], axis=0)]


@pytest.mark.slow
def test_bfloat16_keeps_a_learned_models_ap_and_keypoints(overfit_run, tmp_path, capsys):
    """test.py on the overfit model's 2 coco-mini images, --precision fp32 and bf16.

    Two images hold 2 persons with keypoints, so keypoint AP moves in steps of 0.05: one
    person's OKS crossing one of COCOeval's 10 thresholds (bf16 moves a keypoint by a fraction
    of the model's pixel, here 640 / 192 image pixels). So the keypoints are compared as OKS per
    person (within 0.03) and pixels, and keypoint AP within one such step; box AP within 0.02.
    docs/performance.md has the numbers."""
    if not precision.cpu_has_fast_bf16():
        pytest.skip("this CPU has no AMX-BF16/AVX512-BF16: --precision auto never picks bfloat16 here "
                    "(it would be emulated, slower than float32)")
    root, run = overfit_run
    metrics, results, oks = {}, {}, {}
    for chosen in ("fp32", "bf16"):
        out = tmp_path / f"{chosen}.json"
        metrics[chosen] = test_script.main(["--data-root", str(root), "--weights", str(run / "last.pth"),
                                               "--device", "cpu", "--precision", chosen, "--workers", "0",
                                               "--save-results", str(out), "--save-metrics", ""])
        results[chosen] = json.loads(out.read_text())
        oks[chosen] = best_oks_per_person(coco_paths(root, "val")[1], results[chosen])
    assert "bfloat16 autocast (--precision bf16)" in capsys.readouterr().out
    errors = matched_keypoint_errors(results["fp32"], results["bf16"])
    with capsys.disabled():
        print("\nbf16 vs fp32 on the overfit model: " + "; ".join(
            f"{kind} AP {metrics['bf16'][kind]['AP']:.3f} vs {metrics['fp32'][kind]['AP']:.3f}"
            for kind in ("bbox", "keypoints")) + f"; OKS {oks['bf16']} vs {oks['fp32']}; keypoints of "
            f"{len(errors) // 17} person(s) moved by median {errors[len(errors) // 2]:.2f} px, max {errors[-1]:.2f} px")
    assert metrics["fp32"]["keypoints"]["AP"] > 0.4  # it has learned (test_train.py checks this too)
    assert abs(metrics["bf16"]["bbox"]["AP"] - metrics["fp32"]["bbox"]["AP"]) <= 0.02
    assert abs(metrics["bf16"]["keypoints"]["AP"] - metrics["fp32"]["keypoints"]["AP"]) <= 0.05 + 1e-6
    assert len(oks["fp32"]) == len(oks["bf16"]) >= 2
    assert max(abs(a - b) for a, b in zip(oks["fp32"], oks["bf16"])) <= 0.03
    assert len(errors) >= 17 and errors[len(errors) // 2] <= 3.0 and errors[int(0.9 * len(errors))] <= 8.0
