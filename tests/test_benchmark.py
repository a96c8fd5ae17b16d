"""benchmarks/benchmark.py: one tiny run of every row group (a smoke test: the numbers themselves belong in
docs/performance.md, measured by `python -m benchmarks`, not asserted here)."""
from __future__ import annotations

import json
import math
import re

import pytest

from benchmarks import benchmark, timing
import precision

# One thread: on a busy 2-core machine two threads wait on each other at every small op.
TINY = ["--device", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0",
        "--backbone", "resnet18", "--keypoint-head", "32x2", "--min-size", "128", "--max-size", "192",
        "--sizes", "128", "96", "--frames", "1", "--data-items", "2", "--proposals", "100", "--fewer-proposals", "30",
        "--train-backbone", "resnet18", "--train-size", "96", "--train-keypoint-head", "32x2",
        "--train-batch", "1", "--train-rois", "32", "--eval-detections", "3",
        "--live-size", "96", "--live-persons", "2", "--onnx-sizes", "128"]
LIVE_ROWS = [f"detect: model only, live 96 px {p}" for p in (["bf16", "fp32"] if precision.cpu_has_fast_bf16() else ["fp32"])]
ROWS = ["detect: frame, end to end", "detect: model only", "detect: pipeline overhead", "detect: tracking and smoothing",
        *LIVE_ROWS, "resolution: min_size 128", "resolution: min_size 96", "option: channels_last",
        "option: BatchNorm folded into convs", "option: fewer RPN proposals",
        "precision: bf16 NCHW", "precision: fp32 channels_last", "precision: bf16 channels_last",
        "option: RoIAlign kernel", "onnx: ONNX Runtime, 128 px",
        *(["onnx: ONNX Runtime vs bf16, 128 px"] if precision.cpu_has_fast_bf16() else []),
        "data: dataset item", "train: iteration", "eval: COCOeval"]


def test_every_row_has_a_ratio(sample_root, tmp_path, capsys):
    path = tmp_path / "bench.json"
    returned = benchmark.main([*TINY, "--data-root", str(sample_root), "--json", str(path)])
    report = json.loads(path.read_text())
    assert report["rows"] == json.loads(json.dumps(returned["rows"]))
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ROWS
    for name, row in rows.items():
        assert row["ours"] > 0 and row["baseline"] > 0, name
        assert math.isclose(row["ratio"], row["ours"] / row["baseline"]), name
        assert row["baseline_label"], name
    # The detect row's target is the for this CPU: 0.3x with native bfloat16, else 0.5x.
    targets = {**timing.TARGETS, "detect: frame, end to end": 0.3 if precision.cpu_has_fast_bf16() else 0.5}
    for name, target in targets.items():
        assert rows[name]["target"] == target and rows[name]["ok"] == (rows[name]["ratio"] <= target)
    # The live rows: detect.py's model against torchvision's float32, the target per precision.
    for name in LIVE_ROWS:
        assert rows[name]["target"] == {"bf16": 0.2, "fp32": 0.6}[name.split()[-1]]
        assert re.fullmatch(r"[\d.]+ vs [\d.]+ FPS; keypoint head on 2 vs 2 person\(s\)/frame", rows[name]["note"])
    for name in ("detect: frame, end to end", "train: iteration", "data: dataset item"):
        assert rows[name]["peak_mib_ours"] > 0 and rows[name]["peak_mib_baseline"] > 0
    assert "same metrics" in rows["eval: COCOeval"]["note"]
    # The original path runs the keypoint head on at least as many boxes as ours (0.05 vs 0.9).
    counts = re.fullmatch(r"keypoint head on (\d+) box\(es\)/frame \(original\) vs (\d+) \(ours\); ours in (fp32|bf16)",
                          rows["detect: frame, end to end"]["note"])
    assert counts, rows["detect: frame, end to end"]["note"]
    assert int(counts.group(1)) >= int(counts.group(2))
    printed = capsys.readouterr().out
    assert all(name in printed for name in ROWS) and "targets:" in printed


def test_bad_data_root_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--device", "cpu", "--data-root", str(tmp_path / "missing"), "--json", str(tmp_path / "b.json")])
    assert str(exit_info.value).startswith("error: --data-root")
    assert not (tmp_path / "b.json").exists()
