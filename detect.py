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
(live frames also have "time" in seconds); a person is {"bbox": [x, y, w, h], "score",
"keypoints": 17 x [x, y, v], "keypoint_scores": 17 numbers} with v = 1 where the keypoint's
score passes --kp-thresh (the keypoints drawn), else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

import utils

DEFAULT_OUTPUT = "runs/detect"
WINDOW_TITLE = "detect.py (q or Esc: quit)"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# A live source that sends nothing for this long is treated as gone.
STREAM_TIMEOUT_S = 10.0
# For messages only: the kind of a file is decided from its content.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where the help already explains one or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Draw every person's skeleton (17 COCO keypoints) on a webcam, a stream, images or videos.",
        formatter_class=HelpFormatter,
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
    model.add_argument("--weights", default=None,
                       help="our checkpoint, a raw torchvision state_dict (.pth), or 'coco' for torchvision's "
                            "COCO weights (default: the newest e*_b*_lr*_m*.pth in the current folder, else 'coco')")
    model.add_argument("--backbone", choices=utils.BACKBONES, default=None,
                       help="override the backbone (default: as recorded in the checkpoint, or guessed from it)")
    model.add_argument("--min-size", type=int, default=None,
                       help="shorter image side the model sees; smaller is faster (e.g. 480 for a webcam on a "
                            "CPU) (default: the checkpoint's largest training size, else 800)")
    model.add_argument("--max-size", type=int, default=None,
                       help=f"longer image side cap (default: the checkpoint's, else {utils.DEFAULT_MAX_SIZE})")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    model.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                       help="float16 autocast, CUDA only (default: on with CUDA)")

    draw = parser.add_argument_group("drawing")
    draw.add_argument("--score-thresh", type=float, default=0.8,
                      help="persons with a lower score (0-1) are dropped before the keypoint head runs")
    draw.add_argument("--max-persons", type=int, default=100,
                      help="keep at most this many persons per frame, the surest ones (fewer is faster in crowds)")
    model.add_argument("--proposals", type=int, default=1000,
                       help="RPN proposals the box head scores per frame; fewer is faster (300: ~10%% less model "
                            "time on a CPU) but may miss persons in crowds")
    draw.add_argument("--kp-thresh", type=float, default=2.0,
                      help="keypoints with a lower score are not drawn, nor their limbs. Keypoint scores are "
                           "heatmap logits, not probabilities: with torchvision's COCO weights visible joints "
                           "score about 2 and more, hidden ones near 0 or below; --kp-thresh=-inf draws them all")
    draw.add_argument("--boxes", action=argparse.BooleanOptionalAction, default=False,
                      help="draw each person's box and score")
    draw.add_argument("--line-width", type=int, default=0,
                      help="limb width in pixels (0: about 1/160 of the image's shorter side, thinner for small persons)")

    out = parser.add_argument_group("output")
    out.add_argument("--output", default=None, metavar="FOLDER",
                     help=f"folder for annotated images/videos and JSON (default: {DEFAULT_OUTPUT} for --file; "
                          "live mode saves only when --output or --save-json is given)")
    out.add_argument("--save-json", action="store_true", help="also save the keypoints as <stem>.json")
    out.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                     help="open a window; for images any key shows the next one (default: only when a display "
                          "exists; without one --show warns and goes on)")
    out.add_argument("--max-frames", type=int, default=0,
                     help="stop each video or stream after this many processed frames (0: no limit)")
    args = parser.parse_args(argv)
    for name in ("min_size", "max_size", "max_persons", "proposals"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("max_frames", "line_width"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
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
    half = device.type == "cuda" if args.half is None else args.half
    # Check the source before the (slow) model load, so that a typo fails at once.
    capture = open_stream(args.camera) if args.camera is not None else None
    files, several = list_files(args.file) if args.file is not None else ([], False)
    try:
        model = load_detector(args, device, half)
    except BaseException:
        if capture is not None:
            capture.release()
        raise
    show = decide_show(args.show)
    if capture is not None:
        run_live(model, device, half, capture, args, show)
    else:
        run_files(model, device, half, files, several, args, show)


def load_detector(args: argparse.Namespace, device: torch.device, half: bool) -> torch.nn.Module:
    """The model of --weights, once, in eval mode on `device`, dropping persons below --score-thresh."""
    weights = utils.resolve_weights(args.weights)
    how = "" if args.weights else "  (default: newest e*_b*_lr*_m*.pth here, else torchvision's COCO weights)"
    print(f"weights: {utils.describe_weights(weights)}{how}")
    model, config = utils.load_model(weights, args.backbone, args.min_size, args.max_size,
                                     rpn_post_nms_top_n_test=args.proposals)
    # Persons below the display threshold are dropped before the keypoint head, the costly part.
    model.roi_heads.score_thresh = args.score_thresh
    model.roi_heads.detections_per_img = args.max_persons
    utils.fold_batchnorm(model)  # exact for inference; benchmark.py: ~1.1x on a CPU
    model.to(device)
    if device.type == "cpu":
        # benchmark.py: the model alone runs ~1.15x faster with NHWC weights on a 2-thread CPU (oneDNN).
        model.to(memory_format=torch.channels_last)
    print(f"model: {config['backbone']}, images resized to {config['min_size'][0]} (max {config['max_size']}); "
          f"device {device}{', float16' if half else ''}")
    return model


# --------------------------------------------------------------------------------------
# Model and drawing
# --------------------------------------------------------------------------------------
@torch.inference_mode()
def detect_frame(model: torch.nn.Module, frame_bgr: np.ndarray, device: torch.device,
                 half: bool = False) -> dict[str, np.ndarray]:
    """Run the model on one BGR uint8 frame (H x W x 3, as OpenCV reads it).

    Returns numpy arrays: boxes (N, 4) x1 y1 x2 y2 in pixels, scores (N,), keypoints
    (N, K, 3) x, y, 1, keypoint_scores (N, K) heatmap logits. Persons come sorted by score;
    the model's `roi_heads.score_thresh` decides which are kept.
    """
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    # uint8 crosses to the device (4x fewer bytes than float), then becomes float there.
    image = torch.from_numpy(rgb).to(device, non_blocking=True).permute(2, 0, 1).float().div_(255)
    with torch.autocast(device.type, dtype=torch.float16, enabled=half):
        output = model([image])[0]
    return {
        "boxes": output["boxes"].float().cpu().numpy(),
        "scores": output["scores"].float().cpu().numpy(),
        "keypoints": output["keypoints"].float().cpu().numpy(),
        "keypoint_scores": output["keypoints_scores"].float().cpu().numpy(),
    }


def annotate(frame: np.ndarray, detections: dict[str, np.ndarray], args: argparse.Namespace) -> np.ndarray:
    return utils.draw_poses(frame, detections["boxes"], detections["scores"], detections["keypoints"],
                            detections["keypoint_scores"], score_thresh=args.score_thresh,
                            kp_thresh=args.kp_thresh, draw_boxes=args.boxes, line_width=args.line_width or None)


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
# Sources
# --------------------------------------------------------------------------------------
def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's console chatter (about undecodable files, absent cameras) out of
    our one-line errors; OPENCV_LOG_LEVEL=INFO or OPENCV_FFMPEG_LOGLEVEL=32 bring it back."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def is_url(source: str) -> bool:
    return source.lower().startswith(STREAM_PREFIXES)


def list_files(spec: str) -> tuple[list[str], bool]:
    """(the files that --file names, whether it names several): a file or a URL, a folder's
    files (sorted, hidden ones left out), or a glob pattern's matches."""
    if is_url(spec):
        return [spec], False
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise utils.UserError(f"folder {path} has no files")
        return files, True
    if path.is_file():
        return [str(path)], False
    if any(c in spec for c in "*?["):
        import glob

        files = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise utils.UserError(f"no files match {spec}")
        return files, True
    raise utils.UserError(f"file not found: {spec}")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what C libraries print straight to file descriptor 2 (libjpeg's "Premature end of
    JPEG file"), which OpenCV's log level does not reach; our own error says it in one line."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_image(path: str) -> np.ndarray | None:
    """The file as a BGR uint8 image, or None when it is not an image (OpenCV, then Pillow)."""
    with native_stderr_silenced():
        image = cv2.imread(path, cv2.IMREAD_COLOR)  # EXIF orientation applied, alpha dropped, 8 bit
    if image is not None or is_url(path):
        return image
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                return None  # animated: read it as a video
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:  # Pillow raises many types for files it cannot read
        return None


def open_video(path: str) -> tuple[cv2.VideoCapture, np.ndarray] | None:
    """(capture, first frame) when OpenCV can decode at least one frame, else None."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        return None
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        return None
    return capture, frame


def open_stream(source: str) -> cv2.VideoCapture:
    """A live source: a camera index, a URL, or a video file (then played in real time)."""
    target: int | str = int(source) if source.isdigit() else source
    if isinstance(target, str) and not is_url(target) and not Path(target).expanduser().exists():
        raise utils.UserError(f"--camera {source}: no such camera index, URL or file")
    capture = cv2.VideoCapture(target if isinstance(target, int) else str(Path(target).expanduser()))
    if not capture.isOpened():
        what = f"camera {target}" if isinstance(target, int) else source
        raise utils.UserError(f"cannot open {what}" + (" (is it connected, and not used by another program?)"
                                                       if isinstance(target, int) else ""))
    return capture


def video_fps(capture: cv2.VideoCapture, default: float = 30.0) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and 0 < fps < 1000 else default


class LatestFrame:
    """Reads a capture in its own thread and keeps only the newest frame.

    A model slower than the camera then always works on the present moment: frames that
    arrive while it is busy replace each other instead of queueing up. A video file is read
    at its own fps (`pace`), as a camera would deliver it.
    """

    def __init__(self, capture: cv2.VideoCapture, first: np.ndarray, pace: float = 0.0) -> None:
        self._capture = capture
        self._pace = pace
        self._cond = threading.Condition()
        self._frame = first  # frame 0, read before the thread starts
        self._index = 0  # index of self._frame: frames read so far - 1
        self.ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> LatestFrame:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_time = time.perf_counter()
        try:
            while not self._stop.is_set():
                ok, frame = self._capture.read()
                if not ok or frame is None:
                    break
                with self._cond:
                    self._frame, self._index = frame, self._index + 1
                    self._cond.notify_all()
                if self._pace:
                    next_time += 1.0 / self._pace
                    self._stop.wait(max(0.0, next_time - time.perf_counter()))
        finally:
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def read(self, after: int, timeout: float = STREAM_TIMEOUT_S) -> tuple[int, np.ndarray] | None:
        """(index, frame) of the newest frame later than `after`; None once the source has ended
        (or sent nothing for `timeout` seconds) with nothing newer."""
        with self._cond:
            self._cond.wait_for(lambda: self._index > after or self.ended, timeout)
            if self._index > after:
                return self._index, self._frame
            return None

    @property
    def frames_read(self) -> int:
        return self._index + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # never release under a read in progress
            self._capture.release()


# --------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------
def display_available() -> bool:
    """Whether cv2.imshow can open a window here.

    Tried in a child process, because OpenCV's Qt backend aborts the whole process (no
    exception to catch) when it finds no display, e.g. QT_QPA_PLATFORM=offscreen without
    the offscreen plugin, and a headless OpenCV build has no windows at all.
    """
    if sys.platform in ("win32", "darwin"):
        return True
    if not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        return False
    # No core file when Qt aborts; numpy and cv2 only, so the probe takes well under a second.
    probe = ("import resource; resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); import cv2, numpy; "
             "cv2.namedWindow('probe'); cv2.imshow('probe', numpy.zeros((8, 8, 3), numpy.uint8)); "
             "cv2.waitKey(1); cv2.destroyAllWindows()")
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30,
                                cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def decide_show(requested: bool | None) -> bool:
    if requested is False:
        return False
    available = display_available()
    if requested and not available:
        print("warning: --show: no display here (or OpenCV cannot open windows); going on without a window",
              file=sys.stderr)
    return available


class Window:
    """One OpenCV window; `show` returns False when the user asks to quit (q, Esc, closing it)."""

    def __init__(self, title: str = WINDOW_TITLE) -> None:
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)

    def show(self, image: np.ndarray, wait_for_key: bool = False) -> bool:
        cv2.imshow(self.title, image)
        while True:
            key = cv2.waitKey(100 if wait_for_key else 1)
            if key != -1 and (key & 0xFF) in QUIT_KEYS:
                return False
            if not self._visible():
                return False
            if key != -1 or not wait_for_key:
                return True

    def _visible(self) -> bool:
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return False

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


# --------------------------------------------------------------------------------------
# Files: images, videos, folders, globs
# --------------------------------------------------------------------------------------
def run_files(model: torch.nn.Module, device: torch.device, half: bool, files: list[str], several: bool,
              args: argparse.Namespace, show: bool) -> None:
    """Each file as an image or a video, whichever it is; in a folder or a glob the others are skipped."""
    output = Path(args.output or DEFAULT_OUTPUT)  # made when the first file is written
    window = Window() if show else None
    done = {"image": 0, "video": 0}
    skipped: list[str] = []
    try:
        for path in files:
            image = read_image(path)
            video = open_video(path) if image is None else None
            if image is None and video is None:
                if not several:
                    raise utils.UserError(unreadable_message(path))
                skipped.append(Path(path).name)
                continue
            if image is not None:
                keep_going = process_image(model, device, half, path, image, output, args, window)
                done["image"] += 1
            else:
                keep_going = process_video(model, device, half, path, *video, output, args, window)
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


def unreadable_message(path: str) -> str:
    suffix = Path(path).suffix.lower()
    capture = cv2.VideoCapture(path)
    opened = capture.isOpened()
    capture.release()
    if suffix in IMAGE_SUFFIXES:
        return f"cannot read image {path} (damaged, or not an image)"
    if opened or suffix in VIDEO_SUFFIXES:
        return f"video {path} yields no frames (empty or damaged)"
    return f"cannot read {path}: neither an image nor a video OpenCV can decode"


def output_path(source: str, output: Path, suffix: str | None = None) -> Path:
    """`<output>/<name>`; an image keeps its name when OpenCV can write that format, else .jpg."""
    name = Path(source.split("?")[0]).name or "stream"
    target = output / name
    if suffix is not None:
        target = target.with_suffix(suffix)
    elif not cv2.haveImageWriter(str(target)):
        target = target.with_suffix(".jpg")
    if Path(source).exists() and target.resolve() == Path(source).resolve():
        raise utils.UserError(f"the output {target} would overwrite its input; choose another --output")
    return target


def process_image(model: torch.nn.Module, device: torch.device, half: bool, path: str, image: np.ndarray,
                  output: Path, args: argparse.Namespace, window: Window | None) -> bool:
    target = output_path(path, output)
    start = time.perf_counter()
    detections = detect_frame(model, image, device, half)
    model_ms = (time.perf_counter() - start) * 1000
    annotate(image, detections, args)
    write_image(target, image)
    h, w = image.shape[:2]
    if args.save_json:
        write_json(target.with_suffix(".json"), {"source": path, "width": w, "height": h,
                                                 "persons": persons_json(detections, args.kp_thresh)})
    n = len(detections["scores"])
    print(f"{path}: {n} person{'s' if n != 1 else ''}, {model_ms:.0f} ms -> {target}")
    return window.show(image, wait_for_key=True) if window else True


def process_video(model: torch.nn.Module, device: torch.device, half: bool, path: str,
                  capture: cv2.VideoCapture, first: np.ndarray, output: Path, args: argparse.Namespace,
                  window: Window | None) -> bool:
    """Every frame, annotated, into `<output>/<stem>.mp4` at the input's size and fps."""
    from tqdm import tqdm

    target = output_path(path, output, ".mp4")
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
                start = time.perf_counter()
                detections = detect_frame(model, frame, device, half)
                model_s += time.perf_counter() - start
                writer.write(annotate(frame, detections, args))
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
        write_json(target.with_suffix(".json"), {"source": path, "width": w, "height": h, "fps": fps,
                                                 "frames": frames})
    print(f"{path}: {index} frames, {fps:g} fps, model {1000 * model_s / max(index, 1):.0f} ms/frame -> {target}")
    return keep_going


# --------------------------------------------------------------------------------------
# Live: camera, stream, or a video played in real time
# --------------------------------------------------------------------------------------
def run_live(model: torch.nn.Module, device: torch.device, half: bool, capture: cv2.VideoCapture,
             args: argparse.Namespace, show: bool) -> None:
    source = args.camera
    is_file = not source.isdigit() and not is_url(source)
    fps_in = video_fps(capture)
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise utils.UserError(f"{'camera ' if source.isdigit() else ''}{source} gave no frames")
    # The first call is slow (memory, kernel selection); pay for it before the clock runs.
    detect_frame(model, first, device, half)
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
            tick = time.perf_counter()
            detections = detect_frame(model, frame, device, half)
            now = time.perf_counter()
            # Smoothed over about ten frames, so the numbers can be read.
            blend = 0.1 if processed else 1.0
            model_ms += blend * ((now - tick) * 1000 - model_ms)
            annotate(frame, detections, args)
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
        json_path = write_json(output / f"{stem}.json", {"source": source, "width": w, "height": h,
                                                          "fps": fps_in, "frames": frames})
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
    # imencode + write_bytes also copes with non-ASCII paths, which cv2.imwrite does not on Windows.
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise utils.UserError(f"cannot encode {path.name} as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def write_json(path: Path, obj: Any) -> Path:
    """Through a temporary file, so a crash never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    main()
