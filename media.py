"""Where detect.py's frames come from and where they are shown: image and video files, folders,
glob patterns, cameras and streams, and the window.

Every kind of input is a `Source`: a name, a kind ("image", "video" or "live") and its frames as
(index, BGR frame) pairs; `file_sources` and `live_source` make them, and detect.py runs one loop
over them. Images are read by images.read_image (as test.py and train.py read them), videos,
cameras and streams by OpenCV.
"""
from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Iterator

import cv2
import numpy as np

import utils
from images import read_image

WINDOW_TITLE = "detect.py (q or Esc: quit)"


QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc


STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


# A live source that sends nothing for this long is treated as gone.
STREAM_TIMEOUT_S = 10.0


# For messages only: the kind of a file is decided from its content.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}


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


def read_bgr(path: str, max_pixels: int = utils.DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """The file as a BGR uint8 image (for OpenCV's drawing), read by images.read_image as test.py
    and train.py read it (EXIF orientation not applied), or None when it is not one image (a video,
    an animation, not an image). An image of more than `max_pixels` pixels is refused (DatasetError)
    before decoding; a truncated JPEG is decoded as far as it goes, with a warning."""
    if is_url(path):
        return None  # a URL is a stream or a video for OpenCV
    utils.check_image_pixels(path, path, max_pixels)
    try:
        rgb = read_image(path, max_pixels, allow_truncated=True)
    except utils.DatasetError:
        return None
    return np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[:, :, ::-1])


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
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():  # never release under a read in progress
            self._capture.release()


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


def unreadable_message(path: str) -> str:
    if is_url(path):
        return f"cannot read {path}: unreachable, or not an image or video OpenCV can decode"
    suffix = Path(path).suffix.lower()
    capture = cv2.VideoCapture(path)
    opened = capture.isOpened()
    capture.release()
    if suffix in IMAGE_SUFFIXES:
        return f"cannot read image {path} (damaged, or not an image)"
    if opened or suffix in VIDEO_SUFFIXES:
        return f"video {path} yields no frames (empty or damaged)"
    return f"cannot read {path}: neither an image nor a video OpenCV can decode"


# --------------------------------------------------------------------------------------
# Sources: one kind of object for images, videos and live input
# --------------------------------------------------------------------------------------
@dataclass
class Source:
    """One input of detect.py: `frames` yields (index, BGR uint8 frame); `first` is frame 0, for
    the sizes; `fps` of a video or live source (None for an image); `total` frames when known."""
    name: str
    kind: str  # "image", "video" or "live"
    frames: Iterator[tuple[int, np.ndarray]]
    first: np.ndarray
    fps: float | None = None
    total: int | None = None
    close: Callable[[], None] = field(default=lambda: None)


class FileSources:
    """The images and videos among `files`, as Sources, in order; a file that is neither is an
    error when it is the only one, and skipped (listed in `skipped`) in a folder or a glob."""

    def __init__(self, files: list[str], several: bool, max_pixels: int) -> None:
        self.files, self.several, self.max_pixels = files, several, max_pixels
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[Source]:
        for path in self.files:
            image = read_bgr(path, self.max_pixels)
            if image is not None:
                yield Source(path, "image", iter([(0, image)]), image)
                continue
            video = open_video(path)
            if video is None:
                if not self.several:
                    raise utils.UserError(unreadable_message(path))
                self.skipped.append(Path(path).name)
                continue
            capture, first = video
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            yield Source(path, "video", _video_frames(capture, first), first, video_fps(capture),
                         total if total > 0 else None, capture.release)


def _video_frames(capture: cv2.VideoCapture, first: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    index, frame = 0, first
    while frame is not None:
        yield index, frame
        ok, frame = capture.read()
        index += 1
        frame = frame if ok else None


def live_source(source: str, capture: cv2.VideoCapture) -> Source:
    """A camera, a stream or a video played in real time: the newest frame each time the model is
    ready (LatestFrame); the indices say how many camera frames came in between."""
    fps = video_fps(capture)
    ok, first = capture.read()
    if not ok or first is None:
        capture.release()
        raise utils.UserError(f"{'camera ' if source.isdigit() else ''}{source} gave no frames")
    is_file = not source.isdigit() and not is_url(source)
    reader = LatestFrame(capture, first, pace=fps if is_file else 0.0)
    return Source(source, "live", _latest_frames(reader), first, fps, close=reader.close)


def _latest_frames(reader: LatestFrame) -> Iterator[tuple[int, np.ndarray]]:
    """Started at the first frame asked for, so that the model's warm-up runs before the clock."""
    reader.start()
    last = -1
    while True:
        item = reader.read(after=last)
        if item is None:
            if not reader.ended:
                print(f"warning: no new frame for {STREAM_TIMEOUT_S:g} s; stopping", file=sys.stderr)
            return
        last = item[0]
        yield item

