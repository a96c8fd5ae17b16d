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
    python detect.py --camera 0 --track                # ids that stay with each person, joints smoothed
    python detect.py --file clip.mp4 --track --smooth --save-json   # track_id per person in clip.json
    python detect.py --file frames/ --track --frame-rate 25         # a folder of frames as one sequence

JSON (`--save-json`), per image: {"source", "width", "height", "persons": [person, ...]}; per
video or stream: {"source", "width", "height", "fps", "frames": [{"frame", "persons"}, ...]}
(live frames also have "time" in seconds), and "keypoint_names", the model's keypoint set; a
person is {"bbox": [x, y, w, h], "score", "keypoints": K x [x, y, v], "keypoint_scores": K numbers}
with v = 1 where the keypoint's score passes --kp-thresh (the keypoints drawn), else 0. K and the
skeleton drawn are the model's keypoint set, as recorded in its checkpoint (COCO's 17 for
torchvision's weights). An image's JSON also says "exif_orientation": images are read as
test.py and train.py read them, EXIF orientation not applied (images.py says why). With --track
a person also has "track_id" (tracking.py), the same number for the same person in every frame of
a video, a stream or a folder's images; with smoothing on, "bbox" and "keypoints" are the smoothed ones.

Every kind of input is one media.Source and goes through one loop (`run_sources`): detect and
draw (`Detector`), then the source's `Sink` writes the annotated image or video and its JSON.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

import draw
import models
import onnx_model
import precision
import roi_align
import runs
import tracking
import utils
from images import EXIF_ORIENTATION
from keypoints import KeypointSet
from media import FileSources, Source, Window, decide_show, list_files, live_source, open_stream, quiet_opencv

DEFAULT_OUTPUT = "runs/detect"
CUDA_PRECISION = "fp16"  # what --precision auto is on CUDA: detect.py is about speed


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
                             "every frame is processed and saved. Images are read as test.py reads them: "
                             "EXIF orientation is not applied (COCO's labels refer to the stored pixels)")
    source.add_argument("--camera", default=None, metavar="SOURCE",
                        help="live source: a camera index, a stream URL (rtsp://, http://...) or a video file "
                             "played in real time; the newest frame is processed, older ones are dropped "
                             "(default: camera 0 when --file is not given)")

    model = parser.add_argument_group("model")
    models.add_model_flags(model, "; smaller is faster (e.g. 480 for a webcam on a CPU)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    precision.add_inference_flags(model, CUDA_PRECISION, half=True)
    onnx_model.add_runtime_flag(model)
    utils.add_max_image_pixels_flag(model)

    drawing = parser.add_argument_group("drawing")
    drawing.add_argument("--score-thresh", type=utils.probability, default=0.8,
                      help="persons with a lower score (0-1) are dropped before the keypoint head runs")
    drawing.add_argument("--max-persons", type=utils.positive_int, default=100,
                      help="keep at most this many persons per frame, the surest ones (fewer is faster in crowds)")
    drawing.add_argument("--kp-thresh", type=utils.threshold, default=2.0,
                      help="keypoints with a lower score are not drawn, nor their limbs. Keypoint scores are "
                           "heatmap logits, not probabilities: with torchvision's COCO weights visible joints "
                           "score about 2 and more, hidden ones near 0 or below; --kp-thresh=-inf draws them all")
    drawing.add_argument("--boxes", action=argparse.BooleanOptionalAction, default=False,
                      help="draw each person's box and score")
    drawing.add_argument("--line-width", type=utils.nonnegative_int, default=0,
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
    tracking.add_tracking_flags(parser)
    args = parser.parse_args(argv)
    if args.file is None and args.camera is None:
        args.camera = "0"
    tracking.check_tracking_flags(parser, args, live=args.camera is not None)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with utils.cli_errors():
        run(args)


def run(args: argparse.Namespace) -> None:
    quiet_opencv()
    device = utils.select_device(args.device)
    chosen, precision_note = inference_precision(args, device)
    # Check the source before the (slow) model load, so that a typo fails at once.
    capture = open_stream(args.camera) if args.camera is not None else None
    files, several = list_files(args.file) if args.file is not None else ([], False)
    try:
        detector = load_detector(args, device, chosen, precision_note)
    except BaseException:
        if capture is not None:
            capture.release()
        raise
    window = Window() if decide_show(args.show) else None
    try:
        if capture is not None:
            live = live_source(args.camera, capture)
            detector.detect(live.first)  # the first call is slow (memory, kernels): before the clock runs
            run_sources(detector, [live], args, window)
        else:
            sources = FileSources(files, several, args.max_image_pixels)
            done = run_sources(detector, sources, args, window)
            report_files(done, sources.skipped, args)
    finally:
        if window:
            window.close()


def inference_precision(args: argparse.Namespace, device: torch.device) -> tuple[str, str]:
    """(precision, its description): an .onnx file computes in float32, as exported."""
    if onnx_model.selected(args.weights, args.runtime):
        return onnx_model.onnx_precision(precision.requested(args)), "float32 (ONNX file)"
    return precision.resolve(args, device, CUDA_PRECISION)


@dataclass(frozen=True)
class Detector:
    """The model of --weights, ready on its device, and how its persons are drawn."""
    model: torch.nn.Module
    device: torch.device
    precision: str
    keypoint_set: KeypointSet
    kp_thresh: float
    draw_boxes: bool = False
    line_width: int | None = None

    def detect(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        return detect_frame(self.model, frame, self.device, self.precision)

    def __call__(self, frame: np.ndarray, tracker: tracking.Tracker | None = None,
                 time_s: float = 0.0) -> tuple[dict[str, np.ndarray], float]:
        """The one per-frame path of images, videos and live: detect, track (with the source's
        `tracker`, `time_s` the frame's time), then draw in place. Returns (detections, seconds
        the model took)."""
        start = time.perf_counter()
        detections = self.detect(frame)
        model_s = time.perf_counter() - start
        if tracker is not None:
            detections = tracker.update(detections, time_s, frame.shape[1])
        # The model already dropped persons below --score-thresh (load_detector), so all are drawn.
        draw.draw_poses(frame, detections["boxes"], detections["scores"], detections["keypoints"],
                        detections["keypoint_scores"], kp_thresh=self.kp_thresh,
                        draw_boxes=self.draw_boxes and tracker is None, line_width=self.line_width,
                        keypoint_set=self.keypoint_set)
        if tracker is not None:
            draw.draw_track_ids(frame, detections["boxes"], detections["track_ids"],
                                detections["scores"] if self.draw_boxes else None, self.line_width)
        return detections, model_s


def load_detector(args: argparse.Namespace, device: torch.device, chosen: str = "fp32",
                  precision_note: str = "float32") -> Detector:
    """The model of --weights, once, in eval mode on `device`, dropping persons below --score-thresh."""
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
        models.prepare_for_inference(model, device, chosen)
        runs_as = precision_note + roi_align.fallback_note()
    keypoint_set = KeypointSet.from_config(config)
    print(f"model: {config['backbone']}, images resized to {config['min_size'][0]} (max {config['max_size']}); "
          f"device {device}, {runs_as}; {keypoint_set.describe()}")
    return Detector(model, device, chosen, keypoint_set, args.kp_thresh, args.boxes, args.line_width or None)


@torch.inference_mode()
def detect_frame(model: torch.nn.Module, frame_bgr: np.ndarray, device: torch.device,
                 chosen: str = "fp32") -> dict[str, np.ndarray]:
    """Run the model on one BGR uint8 frame (H x W x 3, as OpenCV reads it).

    Returns numpy arrays: boxes (N, 4) x1 y1 x2 y2 in pixels, scores (N,), keypoints
    (N, K, 3) x, y, 1, keypoint_scores (N, K) heatmap logits. Persons come sorted by score;
    the model's `roi_heads.score_thresh` decides which are kept. `chosen`: fp32, or bf16 or
    fp16 autocast (precision.select).
    """
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    # uint8 crosses to the device (4x fewer bytes than float), then becomes float there.
    image = torch.from_numpy(rgb).to(device, non_blocking=True).permute(2, 0, 1).float().div_(255)
    with precision.autocast(device, chosen):
        output = model([image])[0]
    return {
        "boxes": output["boxes"].float().cpu().numpy(),
        "scores": output["scores"].float().cpu().numpy(),
        "keypoints": output["keypoints"].float().cpu().numpy(),
        "keypoint_scores": output["keypoints_scores"].float().cpu().numpy(),
    }


def persons_json(detections: dict[str, np.ndarray], kp_thresh: float) -> list[dict[str, Any]]:
    """COCO-style persons: bbox as x, y, w, h; keypoints as K x [x, y, v], v = 1 when drawn; and
    track_id when tracking."""
    persons = []
    for i, (box, score, points, point_scores) in enumerate(zip(detections["boxes"], detections["scores"],
                                                               detections["keypoints"], detections["keypoint_scores"])):
        x1, y1, x2, y2 = (float(v) for v in box)
        persons.append({
            **({"track_id": int(detections["track_ids"][i])} if "track_ids" in detections else {}),
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
# The loop: every source, every frame
# --------------------------------------------------------------------------------------
@dataclass
class Speed:
    """A live source's frame rate (end to end) and model time, smoothed over about ten frames."""
    fps: float = 0.0
    model_ms: float = 0.0
    frames: int = 0
    total_model_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    previous: float = field(default_factory=time.perf_counter)

    def update(self, model_s: float) -> float:
        """Count one frame; returns seconds since the source started."""
        now = time.perf_counter()
        blend = 0.1 if self.frames else 1.0
        self.model_ms += blend * (model_s * 1000 - self.model_ms)
        self.fps += blend * (1.0 / max(now - self.previous, 1e-6) - self.fps)
        self.previous, self.frames = now, self.frames + 1
        self.total_model_s += model_s
        return now - self.started

    @property
    def mean_model_ms(self) -> float:
        return 1000 * self.total_model_s / max(self.frames, 1)


def run_sources(detector: Detector, sources: Iterable[Source], args: argparse.Namespace,
                window: Window | None) -> dict[str, int]:
    """Every frame of every source: detect and draw, write, show. Returns the sources done by
    kind. q, Esc or closing the window stops everything; --max-frames ends each video or stream."""
    done = {"image": 0, "video": 0, "live": 0}
    taken: set[Path] = set()  # what this run wrote: x.jpg and x.png must not share x.json
    image_tracker = tracking.tracker_for(args, detector.keypoint_set, live=False)  # a folder's images: one sequence
    for source in sources:
        sink = Sink(source, args, detector.keypoint_set, taken)
        tracker = image_tracker if source.kind == "image" else \
            tracking.tracker_for(args, detector.keypoint_set, live=source.kind == "live")
        speed, keep_going = Speed(), True
        bar = tqdm(total=min(filter(None, (source.total, args.max_frames)), default=None), desc=Path(source.name).name,
                   unit="frame", dynamic_ncols=True) if source.kind == "video" else None
        if source.kind == "live":
            print(f"live from {source.name}: " + ("q or Esc in the window" if window else "Ctrl-C") + " stops")
        try:
            for index, frame in source.frames:
                time_s = done["image"] / tracking.frame_rate(args) if source.kind == "image" else index / source.fps
                detections, model_s = detector(frame, tracker, time_s)
                seconds = speed.update(model_s)
                if source.kind == "live":
                    draw_speed(frame, speed.fps, speed.model_ms)
                sink.add(index, frame, detections, seconds)
                if bar is not None:
                    bar.update()
                    bar.set_postfix(persons=len(detections["scores"]), refresh=False)
                if window and not window.show(frame, wait_for_key=source.kind == "image"):
                    keep_going = False
                    break
                if args.max_frames and speed.frames >= args.max_frames:
                    break
        except KeyboardInterrupt:
            if source.kind != "live":
                raise
            print("stopped (Ctrl-C)")  # the way to stop a live source without a window: files finish normally
        finally:
            source.close()
            if bar is not None:
                bar.close()
        sink.close(speed)
        done[source.kind] += 1
        if not keep_going:
            print("stopped by the user")
            break
    return done


def report_files(done: dict[str, int], skipped: list[str], args: argparse.Namespace) -> None:
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are neither images nor videos with frames: "
              + ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))
    if not any(done.values()):
        raise utils.UserError(f"no readable images or videos in {args.file}")
    saved = " and ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in done.items() if n)
    print(f"saved {saved}{' with JSON' if args.save_json else ''} to {Path(args.output or DEFAULT_OUTPUT)}")


# --------------------------------------------------------------------------------------
# Writing: one Sink per source
# --------------------------------------------------------------------------------------
class Sink:
    """Where one source's results go: the annotated image (written at once) or video (frame by
    frame, at the source's size and fps), and its JSON (`--save-json`). A live source saves only
    when --output or --save-json asks; a live video repeats each processed frame for the camera
    frames dropped since the previous one, so that it keeps real time."""

    def __init__(self, source: Source, args: argparse.Namespace, keypoint_set: KeypointSet, taken: set[Path]) -> None:
        self.source, self.kp_thresh, self.save_json = source, args.kp_thresh, args.save_json
        self.saving = source.kind != "live" or args.output is not None or args.save_json
        output = Path(args.output or DEFAULT_OUTPUT)
        if source.kind == "live":
            stem = f"camera{source.name}" if source.name.isdigit() else (Path(source.name.split("?")[0]).stem or "stream")
            self.target = output / f"{stem}.mp4"
        else:
            self.target = output_path(source.name, output, ".mp4" if source.kind == "video" else None, taken,
                                      args.save_json)
        h, w = source.first.shape[:2]
        self.record: dict[str, Any] = {"source": source.name, "width": w, "height": h}
        if source.fps is not None:
            self.record["fps"] = source.fps
        self.record["keypoint_names"] = list(keypoint_set.names)
        self.frames: list[dict[str, Any]] = []
        self.writer: cv2.VideoWriter | None = None
        self.last_index, self.model_s = -1, 0.0

    def add(self, index: int, frame: np.ndarray, detections: dict[str, np.ndarray], seconds: float) -> None:
        persons = persons_json(detections, self.kp_thresh)
        self.persons = len(persons)
        if self.source.kind == "image":
            write_image(self.target, frame)
            self.record.update(exif_orientation=EXIF_ORIENTATION, persons=persons)
        elif self.saving:
            if self.writer is None:
                self.writer = open_video_writer(self.target, self.source.first, self.source.fps)
            if frame.shape != self.source.first.shape:  # a stream may change size; the file cannot
                frame = cv2.resize(frame, self.source.first.shape[1::-1])
            for _ in range(index - self.last_index if self.source.kind == "live" else 1):
                self.writer.write(frame)
            timing = {"time": round(seconds, 3)} if self.source.kind == "live" else {}
            self.frames.append({"frame": index, **timing, "persons": persons})
        self.last_index = index

    def close(self, speed: Speed) -> None:
        """Finish the files and say what was done."""
        if self.writer is not None:
            self.writer.release()
        if self.source.kind != "image" and self.saving:
            self.record["frames"] = self.frames
        json_path = utils.write_json(self.target.with_suffix(".json"), self.record, indent=None) \
            if self.save_json else None
        name = self.source.name
        if self.source.kind == "image":
            print(f"{name}: {self.persons} person{'s' if self.persons != 1 else ''}, {speed.model_ms:.0f} ms "
                  f"-> {self.target}")
        elif self.source.kind == "video":
            print(f"{name}: {speed.frames} frames, {self.source.fps:g} fps, model {speed.mean_model_ms:.0f} ms/frame "
                  f"-> {self.target}")
        else:
            dropped = max(0, self.last_index + 1 - speed.frames)
            print(f"{name}: {speed.frames} frames processed, {dropped} dropped while the model was busy; "
                  f"model {speed.model_ms:.0f} ms, {speed.fps:.1f} FPS end to end")
            for path in filter(None, (self.target if self.writer is not None else None, json_path)):
                print(f"saved {path}")


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


def open_video_writer(target: Path, first: np.ndarray, fps: float) -> cv2.VideoWriter:
    """An mp4 writer at `first`'s size; a one-line error when OpenCV cannot write there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise utils.UserError(f"cannot write video {target}")
    return writer


def write_image(path: Path, image: np.ndarray) -> None:
    # imencode + bytes also copes with non-ASCII paths, which cv2.imwrite does not on Windows.
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise utils.UserError(f"cannot encode {path.name} as {path.suffix}")
    utils.write_bytes(path, data.tobytes())


if __name__ == "__main__":
    main()
