"""train.py: flags, checkpoints and their names, resuming after SIGKILL and Ctrl-C, non-finite
losses, torchrun on CPU, torchvision compatibility of the final weights, and an overfit run.

Runs use tiny from-scratch models on the generated sample dataset (`sample_root`): resnet18,
~128 px images, a 64x2 keypoint head and few RoIs per image, so that a step takes about a second.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import coco_eval
import keypoints
import models
import train
import utils
from conftest import OVERFIT_IMAGES, REPO, flag_error, help_text, one_line_error
from sample_data import make_sample_dataset
from utils import coco_paths

TINY = ["--device", "cpu", "--backbone", "resnet18", "--weights", "none", "--min-size", "128", "--max-size", "192",
        "--keypoint-head", "64x2", "--box-batch-size-per-image", "64", "--workers", "0"]


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    """2 epochs of 4 images, batch 2, lr x0.1 after epoch 1, AP after the last epoch only."""
    return [*TINY, "--data-root", str(root), "--output-dir", str(out), "--epochs", "2", "-b", "2", "--lr", "0.01",
            "--limit", "4", "--val-limit", "2", "--eval-every", "2", "--milestones", "1", "--warmup-iters", "3", *extra]


def subprocess_env(threads: int = 2) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def reference_run(sample_root, tmp_path_factory) -> Path:
    """One uninterrupted 2-epoch run; other tests compare with it or continue from copies of it."""
    out = tmp_path_factory.mktemp("reference")
    train.main(run_args(sample_root, out))
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    shutil.copy2(src / "last.pth", dst / "last.pth")
    return dst


# --------------------------------------------------------------------------------------
# Flags and the schedule (no training)
# --------------------------------------------------------------------------------------
def test_defaults_are_the_documented_recipe():
    args = train.parse_args([])
    assert (args.lr, args.momentum, args.weight_decay, args.batch_size, args.epochs) == (0.02, 0.9, 1e-4, 8, 46)
    assert (args.milestones, args.gamma, args.warmup_iters) == ([36, 43], 0.1, 1000)
    assert all(m < args.epochs for m in args.milestones)  # every decay happens
    train.check_args(args, world_size=1)
    assert (args.data_root, args.output_dir, args.device, args.backbone) == ("coco", None, "auto", "resnet50")
    assert args.min_size == list(models.DEFAULT_MIN_SIZE) and args.keypoint_head == [512] * 8
    assert args.resume is None and train.parse_args(["--resume"]).resume == ""
    assert train.parse_args(["--resume", "x/last.pth"]).resume == "x/last.pth"
    assert models.checkpoint_name(args.epochs, args.batch_size, args.lr, args.momentum) == "e46_b8_lr0.02_m0.9.pth"
    short = train.parse_args(["-b", "4", "-j", "0", "--min-size", "256", "320", "--keypoint-head", "128x4"])
    assert (short.batch_size, short.workers, short.min_size, short.keypoint_head) == (4, 0, [256, 320], [128] * 4)
    assert short.given == ["batch_size", "keypoint_head", "min_size", "workers"]


@pytest.mark.parametrize("epochs, milestones", [(46, [36, 43]), (10, [8, 9]), (20, [16, 19]), (2, []), (1, [])])
def test_default_milestones_follow_the_epochs(epochs, milestones):
    args = train.parse_args(["--epochs", str(epochs)])
    assert args.milestones == milestones
    train.check_args(args, world_size=1)  # never a decay after the last epoch
    assert train.parse_args(["--epochs", "10", "--milestones", "3"]).milestones == [3]
    with pytest.raises(utils.UserError, match="a decay after epoch 12 never happens"):
        train.check_args(train.parse_args(["--epochs", "10", "--milestones", "12"]), world_size=1)


def test_lr_schedule_warmup_then_milestones():
    factor = train.lr_factor(iters_per_epoch=10, milestones=[2, 3], gamma=0.1, warmup_iters=5, warmup_factor=0.001)
    assert factor(0) == pytest.approx(0.001)
    assert factor(4) == pytest.approx(0.001 + 0.999 * 4 / 5)
    assert factor(5) == factor(19) == 1.0           # warm-up over, epochs 0 and 1 at full lr
    assert factor(20) == pytest.approx(0.1)          # epoch 2
    assert factor(30) == pytest.approx(0.01)         # epoch 3
    assert train.lr_factor(10, [], 0.1, 0, 0.001)(0) == 1.0


def test_default_schedule_decays_twice_inside_the_run():
    args = train.parse_args([])
    factor = train.lr_factor(100, args.milestones, args.gamma, args.warmup_iters, args.warmup_factor)
    last_iteration = args.epochs * 100 - 1
    assert factor(36 * 100 - 1) == 1.0 and factor(36 * 100) == pytest.approx(0.1)
    assert factor(last_iteration) == pytest.approx(0.01)  # the last epochs run at lr x0.01


def test_help_states_the_lr_rule_for_the_batch(capsys):
    text = " ".join(help_text(train.parse_args, capsys).split())
    assert "scale it with -b: 0.0025 x b (default 0.02 for -b 8" in text
    assert "0.04 at -b 16, 0.16 at -b 64" in text
    assert train.LR_PER_IMAGE * train.parse_args([]).batch_size == train.parse_args([]).lr


def test_lr_schedule_warmup_then_cosine():
    factor = train.lr_factor(10, [2], 0.1, warmup_iters=4, warmup_factor=0.5, cosine_iters=24)
    assert factor(0) == pytest.approx(0.5)
    assert factor(4) == 1.0                            # warm-up over: the cosine starts at 1
    assert factor(14) == pytest.approx(0.5)            # half way from iteration 4 to 24; milestones ignored
    assert factor(24) == factor(30) == pytest.approx(0.0)
    assert factor(10) > factor(11) > factor(12)


def test_optimizer_flag():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(train.make_optimizer(params, train.parse_args([])), torch.optim.SGD)
    adamw = train.make_optimizer(params, train.parse_args(["--optimizer", "adamw", "--lr", "0.001"]))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.001
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("flags, message", [
    (["--data-root", "{tmp}/missing"], "not found; get COCO with `python dataset.py --download coco`, or make a "
                                       "sample set with `python dataset.py --sample sample`"),
    (["--resume"], "--resume: no checkpoint at"),
    (["--backbone", "resnet18", "--weights", "coco"], "--weights coco exists only for --backbone resnet50"),
    (["--epochs", "42", "--milestones", "36", "43"], "--milestones 36 43: a decay after epoch 43 never happens in a run of --epochs 42"),
    (["--epochs", "3", "--milestones", "1", "3"], "a decay after epoch 3 never happens in a run of --epochs 3"),
])
def test_bad_input_is_one_line(sample_root, tmp_path, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    argv = [*TINY, "--data-root", str(sample_root), "--output-dir", str(tmp_path), *flags]
    assert message in one_line_error(train.main, argv)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "argument --epochs: '0': expected an integer of 1 or more"),
    (["--lr", "nan"], "argument --lr: 'nan': expected a finite number above 0"),
    (["--momentum", "-0.1"], "argument --momentum"),
    (["--weight-decay", "-1"], "argument --weight-decay"),
    (["--clip-grad", "-1"], "argument --clip-grad"),
    (["--fpn-channels", "0"], "argument --fpn-channels"),
    (["--flip-prob", "2"], "argument --flip-prob"),
    (["--gamma", "0"], "argument --gamma"),
    (["--milestones", "-3"], "argument --milestones"),
    (["--min-size", "100000"], "argument --min-size"),
    (["--max-image-pixels", "0"], "argument --max-image-pixels"),
])
def test_nonsense_flags_are_refused_by_argparse(tmp_path, capsys, flags, message):
    error = flag_error(train.main, ["--data-root", str(tmp_path), "--output-dir", str(tmp_path), *flags], capsys)
    assert message in error
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------
def test_one_epoch_writes_torchvision_state_dict_named_by_the_scheme(sample_root, tmp_path, capsys):
    """The original's model (resnet50, 8x512 head) for one step: e1_b2_lr0.01_m0.9.pth is a plain
    state_dict that a fresh torchvision keypointrcnn_resnet50_fpn loads strictly, plus the plot."""
    from torchvision.models.detection import keypointrcnn_resnet50_fpn

    final = train.main(["--device", "cpu", "--backbone", "resnet50", "--weights", "none", "--min-size", "96",
                        "--max-size", "128", "--box-batch-size-per-image", "16", "--aspect-ratio-group-factor", "-1",
                        "--data-root", str(sample_root), "--output-dir", str(tmp_path), "--epochs", "1", "-b", "2",
                        "--lr", "0.01", "--limit", "2", "--val-limit", "1", "--eval-every", "0", "-j", "0",
                        "--milestones"])
    assert final == tmp_path / "e1_b2_lr0.01_m0.9.pth"
    assert (tmp_path / "e1_b2_lr0.01_m0.9.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state_dict = torch.load(final, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state_dict.values())
    model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model.load_state_dict(state_dict)  # strict: same keys and shapes
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())
    out = capsys.readouterr().out
    assert "epoch 1/1: train loss" in out and "val loss" in out and str(final) in out


def test_full_checkpoints_log_and_evaluation(reference_run, capsys):
    last = models.load_checkpoint(reference_run / "last.pth")
    assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "args", "model_config", "history"} <= set(last)
    assert last["epoch"] == 2 and last["epoch_step"] == 0
    assert last["model_config"] == models.model_config("resnet18", keypoints.COCO17, [128], 192, False, [64, 64])
    assert last["args"]["lr"] == 0.01 and last["args"]["data_root"]
    history = last["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert all(math.isfinite(h[name]) for name in train.LOSS_NAMES) and math.isfinite(h["val_loss"])
        assert h["train_loss"] == pytest.approx(sum(h[name] for name in train.LOSS_NAMES))
    assert "keypoint_AP" not in history[0] and history[1]["keypoint_AP"] >= 0  # --eval-every 2
    assert history[0]["lr"] == pytest.approx(0.01) and history[1]["lr"] == pytest.approx(0.001)  # --milestones 1
    # best.pth: same format, from the only evaluated epoch; test.py/detect.py rebuild it from the file alone.
    assert models.load_checkpoint(reference_run / "best.pth")["epoch"] == 2
    model, config = models.load_model(str(reference_run / "best.pth"))
    assert config["backbone"] == "resnet18" and config["keypoint_head"] == [64, 64]
    log = json.loads((reference_run / "e2_b2_lr0.01_m0.9.json").read_text())
    assert [h["epoch"] for h in log["epochs"]] == [1, 2] and log["model_config"] == last["model_config"]
    assert (reference_run / "e2_b2_lr0.01_m0.9.png").stat().st_size > 1000
    assert (reference_run / "e2_b2_lr0.01_m0.9.pth").is_file()
    # The final weights are a plain state_dict; their training size comes from the log beside them.
    assert models.load_model(str(reference_run / "e2_b2_lr0.01_m0.9.pth"))[1]["min_size"] == [128]


@pytest.mark.slow
def test_sigkill_in_second_epoch_then_resume_matches_uninterrupted(reference_run, sample_root, tmp_path):
    out = tmp_path / "killed"
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *run_args(sample_root, out)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr, env=subprocess_env())
        try:
            deadline = time.time() + 300
            while not ((out / "last.pth").exists() and "epoch 2/2" in stderr_path.read_text()):
                assert proc.poll() is None, f"train.py ended early:\n{stderr_path.read_text()[-2000:]}"
                assert time.time() < deadline, "epoch 2 never started"
                time.sleep(0.05)
            time.sleep(0.5)  # well into epoch 2, which takes seconds
            assert proc.poll() is None, "epoch 2 finished before the kill"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert not (out / "e2_b2_lr0.01_m0.9.pth").exists()
    assert models.load_checkpoint(out / "last.pth")["epoch"] == 1

    train.main(["--resume", "--output-dir", str(out)])  # every other setting comes from the checkpoint

    resumed, reference = models.load_checkpoint(out / "last.pth"), models.load_checkpoint(reference_run / "last.pth")
    assert resumed["epoch"] == reference["epoch"] == 2
    assert resumed["lr_scheduler"] == reference["lr_scheduler"]
    assert resumed["lr_scheduler"]["last_epoch"] == 2 * reference["iters_per_epoch"]
    assert [g["lr"] for g in resumed["optimizer"]["param_groups"]] == \
        [g["lr"] for g in reference["optimizer"]["param_groups"]]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    # Each epoch's data order and randomness depend only on (seed, epoch): the redone epoch is the same.
    final = torch.load(out / "e2_b2_lr0.01_m0.9.pth", weights_only=True)
    expected = torch.load(reference_run / "e2_b2_lr0.01_m0.9.pth", weights_only=True)
    assert final.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(final[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)


def test_ctrl_c_saves_mid_epoch_and_resume_completes_the_schedule(reference_run, tmp_path, monkeypatch, capsys):
    import torchvision.models.detection.roi_heads as roi_heads

    out = copy_run(reference_run, tmp_path / "interrupted")
    real_loss, calls = roi_heads.keypointrcnn_loss, []

    def loss_then_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 2:  # in the forward pass of the 2nd step of epoch 3
            # What Python's SIGINT handler raises. Raised here rather than through
            # signal.raise_signal, whose handler may run where an exception is only printed
            # (a hook called from C++), which made this test flaky.
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(roi_heads, "keypointrcnn_loss", loss_then_ctrl_c)
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--output-dir", str(out), "--epochs", "3"])
    assert e.value.code == 130
    assert "interrupted at epoch 3, iteration 1/" in capsys.readouterr().out
    saved = models.load_checkpoint(out / "last.pth")
    iters = saved["iters_per_epoch"]
    assert (saved["epoch"], saved["epoch_step"]) == (2, 1) and iters >= 2
    assert saved["lr_scheduler"]["last_epoch"] == 2 * iters + 1

    monkeypatch.undo()
    train.main(["--resume", "--output-dir", str(out)])  # --epochs 3 is remembered
    done = models.load_checkpoint(out / "last.pth")
    assert (done["epoch"], done["epoch_step"]) == (3, 0)
    assert done["lr_scheduler"]["last_epoch"] == 3 * iters  # the skipped step is not trained twice
    assert [h["epoch"] for h in done["history"]] == [1, 2, 3]
    assert (out / "e3_b2_lr0.01_m0.9.pth").is_file()


def test_nonfinite_loss_stops_with_the_iteration_and_keeps_last_checkpoint(reference_run, tmp_path, monkeypatch):
    import torchvision.models.detection.roi_heads as roi_heads

    out = copy_run(reference_run, tmp_path / "nan")
    before = (out / "last.pth").read_bytes()
    real_loss = roi_heads.keypointrcnn_loss
    monkeypatch.setattr(roi_heads, "keypointrcnn_loss", lambda *args: real_loss(*args) * float("nan"))
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--output-dir", str(out), "--epochs", "3"])
    message = str(e.value.code)
    assert message.startswith("error: non-finite loss at epoch 3, iteration 1/") and "loss_keypoint=nan" in message
    assert (out / "last.pth").read_bytes() == before
    assert not (out / "e3_b2_lr0.01_m0.9.pth").exists()


def test_persons_without_labelled_keypoints_train_the_boxes_only():
    """A batch whose persons have no labelled joint (box targets only): torchvision's keypoint
    loss is exactly 0, not NaN, and no gradient reaches the keypoint predictor; the boxes train."""
    utils.seed_everything(0)
    model = models.build_model("resnet18", "none", min_size=128, max_size=192, keypoint_head=[32, 32],
                               box_batch_size_per_image=32)
    model.train()
    images = [torch.rand(3, 120, 160), torch.rand(3, 140, 100)]
    targets = [{"boxes": torch.tensor(boxes), "labels": torch.ones(len(boxes), dtype=torch.int64),
                "keypoints": torch.zeros(len(boxes), 17, 3)}
               for boxes in ([[10.0, 20.0, 90.0, 110.0]], [[5.0, 5.0, 40.0, 80.0], [50.0, 30.0, 95.0, 135.0]])]
    losses = model(images, targets)
    assert losses["loss_keypoint"].item() == 0.0
    assert all(bool(torch.isfinite(v)) for v in losses.values()), losses
    sum(losses.values()).backward()
    keypoint_grad = model.roi_heads.keypoint_predictor.kps_score_lowres.weight.grad
    assert keypoint_grad is not None and not keypoint_grad.any()
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_epoch_ap_equals_test_py_on_the_same_checkpoint(sample_root, tmp_path, capsys):
    """best.pth is chosen on the numbers test.py gives for that checkpoint in float32 (its default
    on CPUs without bf16; --precision fp32 here, since this CPU may have it): the same image size
    (the largest --min-size, typed out of order here, where torchvision's eval would take the last)
    and one image at a time (training batch 2 here)."""
    out = tmp_path / "run"
    train.main([*TINY, "--data-root", str(sample_root), "--output-dir", str(out), "--epochs", "1", "-b", "2",
                "--lr", "0.01", "--limit", "2", "--aspect-ratio-group-factor", "-1", "--val-limit", "2", "--milestones",
                "--min-size", "160", "128"])
    epoch_metrics = models.load_checkpoint(out / "last.pth")["history"][-1]["metrics"]

    spec = importlib.util.spec_from_file_location("keypoint_rcnn_test_script", REPO / "test.py")
    test_script = importlib.util.module_from_spec(spec)  # `import test` would be Python's own package
    spec.loader.exec_module(test_script)
    capsys.readouterr()
    tested = test_script.main(["--weights", str(out / "last.pth"), "--data-root", str(sample_root), "--limit", "2",
                               "--device", "cpu", "--workers", "0", "--save-results", "", "--save-metrics", "",
                               "--precision", "fp32"])
    assert "images resized to 160" in capsys.readouterr().out
    assert epoch_metrics == tested
    assert tested["bbox"]["AR100"] > 0  # the model finds people: the numbers can differ

    # The old epoch evaluation (the last size listed, the training batch) gives other numbers.
    model, _ = models.load_model(str(out / "last.pth"), min_size=128)
    eval_set = torch.utils.data.Subset(train.CocoKeypoints(*train.coco_paths(sample_root, "val")), range(2))
    with contextlib.redirect_stdout(io.StringIO()):
        old, _ = coco_eval.evaluate_dataset(model, eval_set, torch.device("cpu"), batch_size=2, workers=0)
    assert old != tested


def test_analyze_adds_the_keypoint_errors_test_py_gives(sample_root, tmp_path, capsys):
    """--analyze: each evaluated epoch's metrics carry test.py --analyze's breakdown for that checkpoint."""
    out = tmp_path / "run"
    train.main([*TINY, "--data-root", str(sample_root), "--output-dir", str(out), "--epochs", "1", "-b", "2",
                "--lr", "0.01", "--limit", "2", "--val-limit", "2", "--milestones", "--analyze"])
    epoch = models.load_checkpoint(out / "last.pth")["history"][-1]
    assert "Keypoint errors (Ronchi & Perona" in capsys.readouterr().out
    log = json.loads(next(out.glob("e1_*.json")).read_text())["epochs"][-1]
    assert set(log["metrics"]["keypoint_errors"]) == {"good", "jitter", "inversion", "swap", "miss"}
    spec = importlib.util.spec_from_file_location("keypoint_rcnn_test_script", REPO / "test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    tested = test_script.main(["--weights", str(out / "last.pth"), "--data-root", str(sample_root), "--limit", "2",
                               "--device", "cpu", "--workers", "0", "--save-results", "", "--precision", "fp32",
                               "--save-metrics", str(tmp_path / "m.json"), "--analyze"])
    assert epoch["metrics"] == log["metrics"] == tested
    assert (tmp_path / "m_analysis.png").is_file()


def test_resume_refuses_to_change_the_optimizer(reference_run, tmp_path):
    out = copy_run(reference_run, tmp_path / "changed")
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--output-dir", str(out), "--lr", "0.1"])
    assert "--lr 0.1 differs from 0.01" in str(e.value.code)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(sample_root, tmp_path):
    out = tmp_path / "ddp"
    args = [*TINY, "--data-root", str(sample_root), "--output-dir", str(out), "--epochs", "1", "-b", "2",
            "--lr", "0.01", "--limit", "4", "--val-limit", "2", "--warmup-iters", "2", "--milestones"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "train.py"), *args], cwd=REPO, capture_output=True, text=True,
                          env=subprocess_env(threads=1), timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.pth")) == ["best.pth", "e1_b2_lr0.01_m0.9.pth", "last.pth"]
    assert proc.stdout.count("done: final weights") == 1  # only rank 0 talks
    last = models.load_checkpoint(out / "last.pth")
    assert last["world_size"] == 2 and last["epoch"] == 1
    assert not any(k.startswith("module.") for k in last["model"])
    assert "keypoint_AP" in last["history"][0]


# --------------------------------------------------------------------------------------
# Overfitting two real COCO images
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_overfit_two_real_images_keypoint_ap_far_above_untrained(overfit_run, capsys):
    from dataset import CocoKeypoints, coco_paths

    root, run = overfit_run  # conftest: train.py on the same 2 images, 4 epochs x 20 steps
    history = models.load_checkpoint(run / "last.pth")["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["loss_keypoint"] < 0.5 * history[0]["loss_keypoint"]
    trained = history[-1]["metrics"]

    utils.seed_everything(0)  # the same initial weights train.py starts from
    untrained_model = models.build_model("mobilenet_v3_large", "none", min_size=[192], max_size=288,
                                        keypoint_head=[128] * 4, trainable_layers=6)
    eval_set = CocoKeypoints(*coco_paths(root, "val"), train=False)
    untrained, _ = coco_eval.evaluate_dataset(untrained_model, eval_set, torch.device("cpu"), batch_size=2, workers=0,
                                          verbose=False)
    with capsys.disabled():
        print(f"\noverfit on {len(OVERFIT_IMAGES)} coco-mini images: keypoint AP {trained['keypoints']['AP']:.3f} "
              f"(untrained {untrained['keypoints']['AP']:.3f}), box AP {trained['bbox']['AP']:.3f} "
              f"(untrained {untrained['bbox']['AP']:.3f}); loss {history[0]['train_loss']:.2f} -> "
              f"{history[-1]['train_loss']:.2f}")
    assert trained["keypoints"]["AP"] > max(untrained["keypoints"]["AP"], 0.0) + 0.4


# --------------------------------------------------------------------------------------
# Never lose work: run folders, bad data mid-run, stale temp files
# --------------------------------------------------------------------------------------
def test_instances_file_says_it_has_no_person_keypoints(tmp_path):
    root = make_sample_dataset(tmp_path / "data", images=2, val_images=1)
    ann_file = coco_paths(root, "train")[1]
    data = json.loads(ann_file.read_text())
    for ann in data["annotations"]:  # what instances_train2017.json holds: boxes, no keypoints
        del ann["keypoints"], ann["num_keypoints"]
    ann_file.write_text(json.dumps(data))
    message = one_line_error(train.main, [*TINY, "--data-root", str(root), "--output-dir", str(tmp_path / "run")])
    assert message == f"error: {ann_file} has no person keypoints to train on (a COCO instances file? Keypoint " \
                      "R-CNN needs person_keypoints_*.json)"


def small_run(root: Path, *extra: str) -> list[str]:
    """One epoch of 2 steps of 1 image."""
    return [*TINY, "--data-root", str(root), "--epochs", "1", "-b", "1", "--lr", "0.01", "--limit", "2",
            "--warmup-iters", "1", "--eval-every", "0", "--aspect-ratio-group-factor", "-1", "--milestones", *extra]


def test_bad_training_image_saves_the_run_and_resume_finds_it(tmp_path, monkeypatch, capsys):
    """A damaged image mid-epoch: what was trained is saved in the new run folder, the message
    names the file and the resume command; after the fix `--resume` alone finds that run, first
    removing the temp file a SIGKILL during a save left."""
    root = make_sample_dataset(tmp_path / "data", images=2, val_images=1)
    monkeypatch.chdir(tmp_path)
    bad = sorted((root / "train2017").glob("*.jpg"))[1]
    good = bad.read_bytes()
    bad.write_bytes(good[:200])  # the header survives, the image data does not
    message = one_line_error(train.main, small_run(root, "--val-limit", "0"))
    last = Path("runs/train/exp/last.pth")
    assert re.search(rf"{bad.name}.*; saved {last} at epoch 1, iteration [01]/2: fix or replace the file, then "
                     rf"continue with: python train.py --resume {last}$", message), message
    assert models.load_checkpoint(last)["epoch"] == 0
    bad.write_bytes(good)
    stale = last.with_name("last.pth.tmpk1ll3d00")
    stale.write_bytes(b"half a checkpoint")
    final = train.main(["--resume"])
    assert final == Path("runs/train/exp/e1_b1_lr0.01_m0.9.pth") and final.is_file()
    out = capsys.readouterr().out
    assert f"removed 1 unfinished temp file(s) of an earlier crash in runs/train/exp: {stale.name}" in out
    assert not stale.exists()


def test_bad_validation_image_keeps_the_trained_epoch(tmp_path):
    root = make_sample_dataset(tmp_path / "data", images=2, val_images=1)
    bad = next((root / "val2017").glob("*.jpg"))
    bad.write_bytes(b"not an image")
    out = tmp_path / "run"
    message = one_line_error(train.main, small_run(root, "--output-dir", str(out), "--val-limit", "1",
                                                   "--limit", "1"))
    assert bad.name in message and f"saved {out / 'last.pth'} at the end of epoch 1" in message
    assert models.load_checkpoint(out / "last.pth")["epoch"] == 1
