"""Draw every person's skeleton on a webcam, a stream, images or videos.

Two modes:
  * live (`--camera`, the default): frames are captured in their own thread and the model
    always works on the newest one, so the picture never lags behind; the FPS is drawn on
    the frame; `q` or Esc quits. Saves only when asked (`--output` or `--save-json`).
  * files (`--file`): every image and every video frame is processed; annotated copies go
    to `--output` (default runs/detect) under the same name, videos as `<stem>.mp4` with the
    input's frame count, size and fps; `--save-json` adds `<stem>.json` with the keypoints.
Whether a file is an image or a video is found from its content, not its extension.

Usage:
    python detect.py                                   # webcam 0, live
    python detect.py --camera 1 --min-size 480         # another camera, faster on a CPU
    python detect.py --camera rtsp://192.168.1.5/live  # a network stream, live
    python detect.py --camera clip.mp4                 # a video played in real time, as a camera would
    python detect.py --file photo.jpg                  # saves runs/detect/photo.jpg, shows it if it can
    python detect.py --file clip.mp4 --save-json       # runs/detect/clip.mp4 + clip.json
    python detect.py --file photos/ --no-show          # every image and video in a folder
    python detect.py --file "photos/**/*.jpg"          # a glob pattern (quoted)
    python detect.py --weights coco --boxes --score-thresh 0.5

JSON (`--save-json`), per image: {"source", "width", "height", "persons": [person, ...]}; per
video or stream: {"source", "width", "height", "fps", "frames": [{"frame", "persons"}, ...]}
(live frames also have "time" in seconds), and "keypoint_names", the model's keypoint set; a
person is {"bbox": [x, y, w, h], "score", "keypoints": K x [x, y, v], "keypoint_scores": K numbers}
with v = 1 where the keypoint's score passes --kp-thresh (the keypoints drawn), else 0. K and the
skeleton drawn are the model's keypoint set, as recorded in its checkpoint (COCO's 17 for
torchvision's weights).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

import draw
import keypoints
import models
import onnx_model
import runs
import utils
from media import (STREAM_TIMEOUT_S, LatestFrame, Window, decide_show, is_url, list_files, open_stream, open_video,
                   quiet_opencv, read_bgr, unreadable_message, video_fps)

DEFAULT_OUTPUT = "runs/detect"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw every person's skeleton (COCO's 17 keypoints, or the model's own set) on a webcam, "
                    "a stream, images or videos.",
        formatter_class=utils.HelpFormatter,
        epilog="Exit status: 0 on success, 1 with a one-line error for bad input (missing or unreadable "
               "file, empty folder, video without frames, camera that cannot be opened, bad weights).")
    source = parser.add_argument_group("source (one of)").add_mutually_exclusive_group()
    source.add_argument("--file", default=None,
                        help="an image, a video, a folder of them, a glob pattern (quote it) or a video URL; "
                             "every frame is processed and saved")
    source.add_argument("--camera", default=None, metavar="SOURCE",
                        help="live source: a camera index, a stream URL (rtsp://, http://...) or a video file "
                             "played in real time; the newest frame is processed, older ones are dropped "
                             "(default: camera 0 when --file is not given)")

    model = parser.add_argument_group("model")
    models.add_model_flags(model, "; smaller is faster (e.g. 480 for a webcam on a CPU)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    models.add_precision_flag(model, cuda_default="fp16")
    onnx_model.add_runtime_flag(model)
    model.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                       help="--half is --precision fp16 (CUDA only), --no-half is --precision fp32")
    utils.add_max_image_pixels_flag(model)

    draw = parser.add_argument_group("drawing")
    draw.add_argument("--score-thresh", type=utils.probability, default=0.8,
                      help="persons with a lower score (0-1) are dropped before the keypoint head runs")
    draw.add_argument("--max-persons", type=utils.positive_int, default=100,
                      help="keep at most this many persons per frame, the surest ones (fewer is faster in crowds)")
    model.add_argument("--proposals", type=utils.positive_int, default=1000,
                       help="RPN proposals the box head scores per frame; fewer is faster (300: ~10%% less model "
                            "time on a CPU) but may miss persons in crowds")
    draw.add_argument("--kp-thresh", type=utils.threshold, default=2.0,
                      help="keypoints with a lower score are not drawn, nor their limbs. Keypoint scores are "
                           "heatmap logits, not probabilities: with torchvision's COCO weights visible joints "
                           "score about 2 and more, hidden ones near 0 or below; --kp-thresh=-inf draws them all")
    draw.add_argument("--boxes", action=argparse.BooleanOptionalAction, default=False,
                      help="draw each person's box and score")
    draw.add_argument("--line-width", type=utils.nonnegative_int, default=0,
                      help="limb width in pixels (0: about 1/160 of the image's shorter side, thinner for small persons)")

    out = parser.add_argument_group("output")
    out.add_argument("--output", default=None, metavar="FOLDER",
                     help=f"folder for annotated images/videos and JSON (default: {DEFAULT_OUTPUT} for --file; "
                          "live mode saves only when --output or --save-json is given)")
    out.add_argument("--save-json", action="store_true", help="also save the keypoints as <stem>.json")
    out.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                     help="open a window; for images any key shows the next one (default: only when a display "
                          "exists; without one --show warns and goes on)")
    out.add_argument("--max-frames", type=utils.nonnegative_int, default=0,
                     help="stop each video or stream after this many processed frames (0: no limit)")
    args = parser.parse_args(argv)
    if args.file is None and args.camera is None:
        args.camera = "0"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with utils.cli_errors():
        run(args)


def run(args: argparse.Namespace) -> None:
    quiet_opencv()
    device = utils.select_device(args.device)
    if args.half and device.type != "cuda":
        raise utils.UserError(f"--half needs a CUDA device (device is {device}); leave it out on the CPU")
    spec = args.precision if args.half is None else ("fp16" if args.half else "fp32")
    if args.half is not None and args.precision not in ("auto", spec):
        raise utils.UserError(f"--{'' if args.half else 'no-'}half means --precision {spec}; "
                              f"it contradicts --precision {args.precision}")
    onnx = onnx_model.selected(args.weights, args.runtime)
    precision = onnx_model.onnx_precision(spec) if onnx else utils.select_precision(spec, device, cuda_default="fp16")
    # Check the source before the (slow) model load, so that a typo fails at once.
    capture = open_stream(args.camera) if args.camera is not None else None
    files, several = list_files(args.file) if args.file is not None else ([], False)
    try:
        model = load_detector(args, device, precision, spec)
    except BaseException:
        if capture is not None:
            capture.release()
        raise
    show = decide_show(args.show)
    if capture is not None:
        run_live(model, device, precision, capture, args, show)
    else:
        run_files(model, device, precision, files, several, args, show)


def load_detector(args: argparse.Namespace, device: torch.device, precision: str = "fp32",
                  spec: str = "auto") -> torch.nn.Module:
    """The model of --weights, once, in eval mode on `device`, dropping persons below --score-thresh.
    Its keypoint set (names, skeleton) goes into `args.keypoint_set`, for the drawing and the JSON."""
    weights, how = runs.resolve_weights(args.weights)
    print(f"weights: {models.describe_weights(weights)}{how}")
    # Persons below the display threshold are dropped before the keypoint head, the costly part.
    if onnx_model.selected(weights, args.runtime):
        model, config = onnx_model.load_model(weights, device, args.runtime, args.backbone, args.min_size, args.max_size,
                                              args.score_thresh, args.max_persons, args.proposals)
        runs_as = model.describe()
    else:
        model, config = models.load_model(weights, args.backbone, args.min_size, args.max_size,
                                          rpn_post_nms_top_n_test=args.proposals, box_score_thresh=args.score_thresh,
                                          box_detections_per_img=args.max_persons)
        # BatchNorm folded, channels_last on a CPU, keypoint_decode's RoIHeads (float32 coordinates).
        models.prepare_for_inference(model, device)
        runs_as = utils.describe_precision(precision, device, spec)
    args.keypoint_set = keypoints.KeypointSet.from_config(config)
    print(f"model: {config['backbone']}, images resized to {config['min_size'][0]} (max {config['max_size']}); "
          f"device {device}, {runs_as}; {args.keypoint_set.describe()}")
    return model


# --------------------------------------------------------------------------------------
# Model and drawing
# --------------------------------------------------------------------------------------
@torch.inference_mode()
def detect_frame(model: torch.nn.Module, frame_bgr: np.ndarray, device: torch.device,
                 precision: str = "fp32") -> dict[str, np.ndarray]:
    """Run the model on one BGR uint8 frame (H x W x 3, as OpenCV reads it).

    Returns numpy arrays: boxes (N, 4) x1 y1 x2 y2 in pixels, scores (N,), keypoints
    (N, K, 3) x, y, 1, keypoint_scores (N, K) heatmap logits. Persons come sorted by score;
    the model's `roi_heads.score_thresh` decides which are kept. `precision`: fp32, or bf16 or
    fp16 autocast (utils.select_precision).
    """
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    # uint8 crosses to the device (4x fewer bytes than float), then becomes float there.
    image = torch.from_numpy(rgb).to(device, non_blocking=True).permute(2, 0, 1).float().div_(255)
    with utils.autocast(device, precision):
        output = model([image])[0]
    return {
        "boxes": output["boxes"].float().cpu().numpy(),
        "scores": output["scores"].float().cpu().numpy(),
        "keypoints": output["keypoints"].float().cpu().numpy(),
        "keypoint_scores": output["keypoints_scores"].float().cpu().numpy(),
    }


def process_frame(model: torch.nn.Module, frame: np.ndarray, device: torch.device, precision: str,
                  args: argparse.Namespace) -> tuple[dict[str, np.ndarray], float]:
    """The one per-frame path of images, videos and live: detect, then draw in place.
    Returns (detections, seconds the model took)."""
    start = time.perf_counter()
    detections = detect_frame(model, frame, device, precision)
    model_s = time.perf_counter() - start
    # The model already dropped persons below --score-thresh (load_detector), so all are drawn.
    draw.draw_poses(frame, detections["boxes"], detections["scores"], detections["keypoints"],
                    detections["keypoint_scores"], kp_thresh=args.kp_thresh, draw_boxes=args.boxes,
                    line_width=args.line_width or None, keypoint_set=args.keypoint_set)
    return detections, model_s


def persons_json(detections: dict[str, np.ndarray], kp_thresh: float) -> list[dict[str, Any]]:
    """COCO-style persons: bbox as x, y, w, h; keypoints as K x [x, y, v], v = 1 when drawn."""
    persons = []
    for box, score, points, point_scores in zip(detections["boxes"], detections["scores"],
                                                detections["keypoints"], detections["keypoint_scores"]):
        x1, y1, x2, y2 = (float(v) for v in box)
        persons.append({
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 4),
            "keypoints": [[round(float(x), 2), round(float(y), 2), int(s >= kp_thresh)]
                          for (x, y), s in zip(points[:, :2], point_scores)],
            "keypoint_scores": [round(float(s), 3) for s in point_scores],
        })
    return persons


def draw_speed(frame: np.ndarray, fps: float, model_ms: float) -> None:
    """The live frame rate (end to end) and the model's own time, top left."""
    h, w = frame.shape[:2]
    text = f"{fps:.1f} FPS | model {model_ms:.0f} ms"
    scale = max(0.45, min(h, w) / 900)
    thickness = max(1, round(scale * 2))
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(3, round(6 * scale))
    cv2.rectangle(frame, (0, 0), (tw + 2 * pad, th + baseline + 2 * pad), (0, 0, 0), -1)
    cv2.putText(frame, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


# --------------------------------------------------------------------------------------
# Files: images, videos, folders, globs
# --------------------------------------------------------------------------------------
def run_files(model: torch.nn.Module, device: torch.device, precision: str, files: list[str], several: bool,
              args: argparse.Namespace, show: bool) -> None:
    """Each file as an image or a video, whichever it is; in a folder or a glob the others are skipped."""
    output = Path(args.output or DEFAULT_OUTPUT)  # made when the first file is written
    window = Window() if show else None
    done = {"image": 0, "video": 0}
    skipped: list[str] = []
    taken: set[Path] = set()  # what this run wrote: x.jpg and x.png must not share x.json
    try:
        for path in files:
            image = read_bgr(path, args.max_image_pixels)
            video = open_video(path) if image is None else None
            if image is None and video is None:
                if not several:
                    raise utils.UserError(unreadable_message(path))
                skipped.append(Path(path).name)
                continue
            if image is not None:
                keep_going = process_image(model, device, precision, path, image, output, args, window, taken)
                done["image"] += 1
            else:
                keep_going = process_video(model, device, precision, path, *video, output, args, window, taken)
                done["video"] += 1
            if not keep_going:
                print("stopped by the user")
                break
    finally:
        if window:
            window.close()
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are neither images nor videos with frames: "
              + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not any(done.values()):
        raise utils.UserError(f"no readable images or videos in {args.file}")
    saved = " and ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in done.items() if n)
    print(f"saved {saved}{' with JSON' if args.save_json else ''} to {output}")


def output_path(source: str, output: Path, suffix: str | None = None, taken: set[Path] | None = None,
                with_json: bool = False) -> Path:
    """`<output>/<name>`; an image keeps its name when OpenCV can write that format, else .jpg.
    A name this run already wrote (in `taken`, with its `.json` when `with_json`) is not reused: the
    second of x.jpg and x.png becomes x_png.png (and x_png.json), then x_png_2.png, ..."""
    name = Path(source.split("?")[0]).name or "stream"
    target = output / name
    if suffix is not None:
        target = target.with_suffix(suffix)
    elif not cv2.haveImageWriter(str(target)):
        target = target.with_suffix(".jpg")
    if taken is not None:
        stem, kind = target.stem, Path(name).suffix.lstrip(".")
        candidates = [target] + [target.with_name(f"{stem}_{kind}{'_' + str(n) if n > 1 else ''}{target.suffix}")
                                 for n in range(1, len(taken) + 2)]
        target = next(c for c in candidates if not ({c, c.with_suffix(".json")} if with_json else {c}) & taken)
        taken.update({target, target.with_suffix(".json")} if with_json else {target})
    if Path(source).exists() and target.resolve() == Path(source).resolve():
        raise utils.UserError(f"the output {target} would overwrite its input; choose another --output")
    return target


def process_image(model: torch.nn.Module, device: torch.device, precision: str, path: str, image: np.ndarray,
                  output: Path, args: argparse.Namespace, window: Window | None, taken: set[Path]) -> bool:
    target = output_path(path, output, taken=taken, with_json=args.save_json)
    detections, model_s = process_frame(model, image, device, precision, args)
    write_image(target, image)
    h, w = image.shape[:2]
    if args.save_json:
        utils.write_json(target.with_suffix(".json"), {"source": path, "width": w, "height": h,
                                                       "keypoint_names": list(args.keypoint_set.names),
                                                       "persons": persons_json(detections, args.kp_thresh)}, indent=None)
    n = len(detections["scores"])
    print(f"{path}: {n} person{'s' if n != 1 else ''}, {model_s * 1000:.0f} ms -> {target}")
    return window.show(image, wait_for_key=True) if window else True


def process_video(model: torch.nn.Module, device: torch.device, precision: str, path: str,
                  capture: cv2.VideoCapture, first: np.ndarray, output: Path, args: argparse.Namespace,
                  window: Window | None, taken: set[Path]) -> bool:
    """Every frame, annotated, into `<output>/<stem>.mp4` at the input's size and fps."""

    target = output_path(path, output, ".mp4", taken, args.save_json)
    fps = video_fps(capture)
    h, w = first.shape[:2]
    output.mkdir(parents=True, exist_ok=True)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    total = min(total, args.max_frames) if args.max_frames and total > 0 else (total if total > 0 else None)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        capture.release()
        raise utils.UserError(f"cannot write video {target}")
    frames: list[dict[str, Any]] = []
    keep_going, model_s, index = True, 0.0, 0
    frame: np.ndarray | None = first
    try:
        with tqdm(total=total, desc=Path(path).name, unit="frame", dynamic_ncols=True) as bar:
            while frame is not None:
                if frame.shape[:2] != (h, w):  # a stream may change size; the file cannot
                    frame = cv2.resize(frame, (w, h))
                detections, seconds = process_frame(model, frame, device, precision, args)
                model_s += seconds
                writer.write(frame)
                if args.save_json:
                    frames.append({"frame": index, "persons": persons_json(detections, args.kp_thresh)})
                index += 1
                bar.update()
                bar.set_postfix(persons=len(detections["scores"]), refresh=False)
                if window and not window.show(frame):
                    keep_going = False
                    break
                if args.max_frames and index >= args.max_frames:
                    break
                ok, frame = capture.read()
                frame = frame if ok else None
    finally:
        writer.release()
        capture.release()
    if args.save_json:
        utils.write_json(target.with_suffix(".json"), {"source": path, "width": w, "height": h, "fps": fps,
                                                       "keypoint_names": list(args.keypoint_set.names),
                                                       "frames": frames}, indent=None)
    print(f"{path}: {index} frames, {fps:g} fps, model {1000 * model_s / max(index, 1):.0f} ms/frame -> {target}")
    return keep_going


# --------------------------------------------------------------------------------------
# Live: camera, stream, or a video played in real time
# --------------------------------------------------------------------------------------
def run_live(model: torch.nn.Module, device: torch.device, precision: str, capture: cv2.VideoCapture,
             args: argparse.Namespace, show: bool) -> None:
    source = args.camera
    is_file = not source.isdigit() and not is_url(source)
    fps_in = video_fps(capture)
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise utils.UserError(f"{'camera ' if source.isdigit() else ''}{source} gave no frames")
    # The first call is slow (memory, kernel selection); pay for it before the clock runs.
    detect_frame(model, first, device, precision)
    reader = LatestFrame(capture, first, pace=fps_in if is_file else 0.0).start()
    save = args.output is not None or args.save_json
    output = Path(args.output or DEFAULT_OUTPUT)
    stem = f"camera{source}" if source.isdigit() else (Path(source.split("?")[0]).stem or "stream")
    target = output / f"{stem}.mp4"
    window = Window() if show else None
    writer = None
    frames: list[dict[str, Any]] = []
    last, processed, fps, model_ms = -1, 0, 0.0, 0.0
    print(f"live from {source}: " + ("q or Esc in the window" if window else "Ctrl-C") + " stops")
    start = previous = time.perf_counter()
    try:
        while True:
            item = reader.read(after=last)
            if item is None:
                if not reader.ended:
                    print(f"warning: no new frame for {STREAM_TIMEOUT_S:g} s; stopping", file=sys.stderr)
                break
            index, frame = item
            detections, seconds = process_frame(model, frame, device, precision, args)
            now = time.perf_counter()
            # Smoothed over about ten frames, so the numbers can be read.
            blend = 0.1 if processed else 1.0
            model_ms += blend * (seconds * 1000 - model_ms)
            fps += blend * (1.0 / max(now - previous, 1e-6) - fps)
            previous = now
            draw_speed(frame, fps, model_ms)
            if save:
                if writer is None:
                    writer = open_live_writer(target, first, fps_in)
                # The frame stands for every camera frame since the previous one, so the
                # video keeps real time at the camera's rate.
                same_size = frame if frame.shape == first.shape else cv2.resize(frame, first.shape[1::-1])
                for _ in range(index - last):
                    writer.write(same_size)
                if args.save_json:
                    frames.append({"frame": index, "time": round(now - start, 3),
                                   "persons": persons_json(detections, args.kp_thresh)})
            last = index
            processed += 1
            if window and not window.show(frame):
                break
            if args.max_frames and processed >= args.max_frames:
                break
    except KeyboardInterrupt:  # the way to stop without a window: finish the files normally
        print("stopped (Ctrl-C)")
    finally:
        reader.close()
        if writer is not None:
            writer.release()
        if window:
            window.close()
    dropped = max(0, last + 1 - processed)
    print(f"{source}: {processed} frames processed, {dropped} dropped while the model was busy; "
          f"model {model_ms:.0f} ms, {fps:.1f} FPS end to end")
    if writer is not None:
        print(f"saved {target}")
    if args.save_json:
        h, w = first.shape[:2]
        json_path = utils.write_json(output / f"{stem}.json", {"source": source, "width": w, "height": h,
                                                                "fps": fps_in,
                                                                "keypoint_names": list(args.keypoint_set.names),
                                                                "frames": frames}, indent=None)
        print(f"saved {json_path}")


def open_live_writer(target: Path, frame: np.ndarray, fps: float) -> cv2.VideoWriter:
    target.parent.mkdir(parents=True, exist_ok=True)
    h, w = frame.shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise utils.UserError(f"cannot write video {target}")
    return writer


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------
def write_image(path: Path, image: np.ndarray) -> None:
    # imencode + bytes also copes with non-ASCII paths, which cv2.imwrite does not on Windows.
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise utils.UserError(f"cannot encode {path.name} as {path.suffix}")
    utils.write_bytes(path, data.tobytes())


if __name__ == "__main__":
    main()
