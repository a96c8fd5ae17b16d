"""benchmarks/profile_model.py: one tiny run gives a time for every stage of every config, and leaves
torchvision's heatmap decoding as it found it."""
from __future__ import annotations

import torchvision.models.detection.roi_heads as tv_roi_heads

from benchmarks import profile_model
from conftest import flag_error


def test_every_stage_of_every_config_is_timed(coco_mini, capsys):
    decoding = tv_roi_heads.keypointrcnn_inference
    configs = ["fp32-nchw", "fp32-cl-fast"]
    result = profile_model.main(["--image", str(coco_mini / "val2017" / "000000000139.jpg"), "--min-size", "96",
                                 "--persons", "2", "--repeats", "1", "--warmup", "0", "--configs", *configs])
    assert list(result) == configs
    for config in configs:
        assert result[config]["total"] > 0 and result[config]["persons"] >= 1
        assert result[config]["backbone"] > 0 and result[config]["keypoint head"] > 0
        assert sum(result[config][stage] for stage in profile_model.STAGES) <= result[config]["total"] * 1.05
    assert tv_roi_heads.keypointrcnn_inference is decoding
    assert "total / fp32-nchw" in capsys.readouterr().out


def test_bad_config_is_refused(capsys):
    assert "--configs" in flag_error(profile_model.main, ["--configs", "fp16-nchw"], capsys)
