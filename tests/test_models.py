"""models.py: building the model, checkpoints (naming, loading any kind safely), BatchNorm folding."""
from __future__ import annotations

import copy
import os

import pytest
import torch

import models
import precision
import utils
from conftest import TINY_MODEL
from keypoints import COCO13, COCO17

TINY_HEAD = [64, 64]


def tiny_model(**kwargs):
    settings = dict(TINY_MODEL, keypoint_head=TINY_HEAD, box_detections_per_img=10)
    settings.update(kwargs)
    return models.build_model(weights="none", **settings)


@pytest.mark.parametrize("args, name", [
    ((42, 8, 0.02, 0.9), "e42_b8_lr0.02_m0.9.pth"),
    ((1, 2, 0.01, 0.9), "e1_b2_lr0.01_m0.9.pth"),
    ((3, 4, 1e-05, 0.95), "e3_b4_lr1e-05_m0.95.pth"),
])
def test_checkpoint_name(args, name):
    assert models.checkpoint_name(*args) == name
    assert models.WEIGHTS_NAME_PATTERN.match(name)


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


def test_narrow_fpn_is_rebuilt_from_a_plain_state_dict(tmp_path):
    model = tiny_model(fpn_channels=32).eval()
    state = model.state_dict()
    assert state["backbone.fpn.layer_blocks.0.0.weight"].shape[0] == 32
    assert state["roi_heads.keypoint_head.0.weight"].shape[1] == 32  # the heads take the FPN's width
    torch.save(state, tmp_path / "raw.pth")
    rebuilt, used = models.load_model(str(tmp_path / "raw.pth"), min_size=160, max_size=256)
    assert used["fpn_channels"] == 32 and used["keypoint_head"] == TINY_HEAD
    assert all(torch.equal(rebuilt.state_dict()[k], state[k]) for k in state)
    assert models.guess_fpn_channels(tiny_model().state_dict()) == models.DEFAULT_FPN_CHANNELS
    with pytest.raises(utils.UserError, match="--fpn-channels"):
        models.build_model("mobilenet_v3_large", "none", fpn_channels=64)


def test_loader_refuses_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=True)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "text.pth").write_text("hello, this is text\n")
    for name in ("evil.pth", "garbage.pth", "missing.pth", "text.pth"):
        with pytest.raises(utils.UserError, match=name) as error:
            models.load_checkpoint(tmp_path / name)
        message = str(error.value)
        assert "\n" not in message and "weights_only" not in message and "False" not in message, message
    with pytest.raises(utils.UserError, match="could run code") as error:
        models.load_checkpoint(tmp_path / "evil.pth")
    # A text file once gave only torch's bare KeyError: '101'.
    assert "not a PyTorch checkpoint (KeyError" in str(pytest.raises(utils.UserError, models.load_checkpoint,
                                                                       tmp_path / "text.pth").value)


def test_mismatched_weights_name_the_problem(tmp_path):
    other = tiny_model(keypoint_head=[32, 32])
    with pytest.raises(utils.UserError, match="wrong shape"):
        models.apply_state_dict(tiny_model(), other.state_dict(), "x.pth")
    state = tiny_model().state_dict()
    state.pop("rpn.head.conv.0.0.weight")
    with pytest.raises(utils.UserError, match="1 missing"):
        models.apply_state_dict(tiny_model(), state, "x.pth")


def test_final_weights_take_their_settings_from_the_log_beside_them(tmp_path):
    """Final weights are a plain state_dict; the training size, head and any other model_config
    key come from train.py's `{stem}.json` beside them, as for last.pth."""
    model = tiny_model(min_size=[96, 128], max_size=192)
    final = tmp_path / "e1_b2_lr0.01_m0.9.pth"
    torch.save(model.state_dict(), final)
    assert models.load_model(str(final))[1]["min_size"] == [800]  # no log: torchvision's test size
    config = models.model_config("resnet18", min_size=[96, 128], max_size=192, frozen_bn=False,
                                 keypoint_head=TINY_HEAD)
    utils.write_json(final.with_suffix(".json"), {"args": {}, "model_config": {**config, "future_key": 1},
                                                  "epochs": []})
    assert models.load_weights(final)[1]["future_key"] == 1  # the whole model_config, read generically
    used = models.load_model(str(final))[1]
    assert (used["min_size"], used["max_size"], used["keypoint_head"]) == ([128], 192, TINY_HEAD)
    final.with_suffix(".json").write_text("{broken")  # a log that is not ours never stops a load
    assert models.load_model(str(final))[1]["min_size"] == [800]


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
    # test.py and detect.py refuse --weights none: their advice must not offer it.
    with pytest.raises(models.WeightsError) as error:
        models.load_model("coco")
    assert "--weights PATH" in str(error.value) and "none" not in str(error.value)


def test_coco_weights_only_for_resnet50():
    with pytest.raises(utils.UserError, match="resnet50"):
        models.build_model("resnet18", "coco")
    with pytest.raises(utils.UserError, match="backbone"):
        models.build_model("vgg16", "none")


def test_fold_batchnorm_keeps_the_outputs():
    """detect.py folds BatchNorm into the convolutions for speed: the features must not change."""
    torch.manual_seed(0)
    model = models.build_model("resnet18", "none", min_size=96, max_size=128, keypoint_head=[8]).eval()
    for m in model.modules():  # statistics that make the folding do something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    folded = copy.deepcopy(model)
    assert models.fold_batchnorm(folded) == 20  # resnet18: stem + 16 in blocks + 3 downsamples
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        expected, got = model.backbone(x), folded.backbone(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-3, atol=1e-4)
    assert models.fold_batchnorm(folded) == 0


@pytest.mark.skipif(not precision.cpu_has_fast_bf16(), reason="no native bfloat16 on this CPU")
def test_bfloat16_weights_give_the_outputs_of_the_autocast_casting_them():
    """prepare_for_inference(..., "bf16") stores conv and linear weights in bfloat16, as a bfloat16
    autocast casts them on every call: the outputs under that autocast are the same numbers."""
    model = tiny_model(box_score_thresh=0.0)
    cast_each_call = models.prepare_for_inference(copy.deepcopy(model), torch.device("cpu"), "fp32")
    stored = models.prepare_for_inference(model, torch.device("cpu"), "bf16")
    layers = [m for m in stored.modules() if isinstance(m, models.AUTOCAST_LOWERED)]
    assert layers and all(m.weight.dtype == torch.bfloat16 for m in layers)
    images = [torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(1))]
    with torch.inference_mode(), precision.autocast(torch.device("cpu"), "bf16"):
        expected, found = cast_each_call(images)[0], stored(images)[0]
    assert len(found["boxes"]) == 10
    for key in expected:
        assert found[key].dtype == expected[key].dtype and torch.equal(found[key], expected[key]), key


def test_fine_tuning_from_17_keypoints_keeps_all_but_the_predictor(tmp_path):
    """A raw 17-keypoint state_dict to 13 keypoints: everything but the keypoint predictor is kept."""
    torch.manual_seed(0)
    before = models.build_model(TINY_MODEL["backbone"], "none", keypoint_head=TINY_HEAD, frozen_bn=False).state_dict()
    raw = tmp_path / "raw17.pth"
    torch.save(before, raw)
    weights = models.read_weights(str(raw))
    note = models.keypoint_transfer(weights, COCO13)
    assert note == (f"fine-tuning {raw} (COCO's 17 person keypoints) to 13 keypoints (nose, left_shoulder, ..., "
                    "right_ankle): keeping the backbone, RPN and box head, starting a new keypoint predictor")
    assert models.keypoint_transfer(weights, COCO17) is None
    assert models.keypoint_transfer(models.read_weights("none"), COCO13) is None
    tuned = models.build_model(TINY_MODEL["backbone"], str(raw), 13, keypoint_head=TINY_HEAD, frozen_bn=False,
                               new_keypoint_predictor=True).state_dict()
    for key, value in tuned.items():
        if key.startswith(models.KEYPOINT_PREDICTOR):
            assert value.shape[0 if "bias" in key else 1] == 13, key
        else:
            assert torch.equal(value, before[key]), key


def test_float32_outputs_under_autocast_and_training_unchanged():
    """keep_float32_outputs: under a bfloat16 autocast boxes and keypoints come out in float32,
    with the state_dict unchanged and training still torchvision's."""
    torch.manual_seed(0)
    model = models.build_model("resnet18", "none", min_size=128, max_size=192, keypoint_head=[8])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    models.keep_float32_outputs(models.keep_float32_outputs(model))  # twice: hooks once
    assert len(model.roi_heads.box_predictor._forward_hooks) == 1
    assert model.state_dict().keys() == before.keys()
    image = torch.rand(3, 150, 200)
    target = {"boxes": torch.tensor([[20.0, 20.0, 120.0, 140.0]]), "labels": torch.tensor([1]),
              "keypoints": torch.cat([torch.rand(1, 17, 2) * 100 + 20, torch.ones(1, 17, 1)], dim=2)}
    model.train()
    losses = model([image], [target])
    assert {"loss_keypoint", "loss_classifier"} <= losses.keys() and all(v.isfinite() for v in losses.values())
    model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = model([image])[0]
    assert len(output["boxes"]) > 0
    for key in ("boxes", "scores", "keypoints", "keypoints_scores"):
        assert output[key].dtype == torch.float32, key
