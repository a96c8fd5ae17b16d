"""Where detect.py's frames come from and where they are shown: image and video files, folders,
glob patterns, cameras and streams (OpenCV, Pillow for what OpenCV cannot read), and the window.
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
from typing import Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

import utils

WINDOW_TITLE = "detect.py (q or Esc: quit)"


QUIT_KEYS = (ord("q"), ord("Q"), 27)  # 27 = Esc


STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


# A live source that sends nothing for this long is treated as gone.
STREAM_TIMEOUT_S = 10.0


# For messages only: the kind of a file is decided from its content.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# Where a JPEG's end-of-image marker is looked for: some cameras append a little data after it.
JPEG_TAIL_BYTES = 4096


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
    """The file as a BGR uint8 image, or None when it is not an image (OpenCV, then Pillow).
    An image of more than `max_pixels` pixels is refused (DatasetError) before decoding; a
    truncated JPEG is decoded as far as it goes, with a warning."""
    if not is_url(path):
        utils.check_image_pixels(path, path, max_pixels)
    with native_stderr_silenced():
        image = cv2.imread(path, cv2.IMREAD_COLOR)  # EXIF orientation applied, alpha dropped, 8 bit
    if image is not None and jpeg_truncated(path):
        print(f"warning: {path} is a truncated JPEG (cut off before its end); drawing on the part that is there",
              file=sys.stderr)
    if image is not None or is_url(path):
        return image
    try:
        with utils.pillow_pixel_limit(max_pixels), Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                return None  # animated: read it as a video
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:  # Pillow raises many types for files it cannot read
        return None


def jpeg_truncated(path: str) -> bool:
    """A JPEG file without its end-of-image marker (FF D9) near its end: a cut download or copy.
    libjpeg decodes such a file, filling the missing rows, and only prints to stderr."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return False
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - JPEG_TAIL_BYTES))
            tail = f.read()
    except OSError:
        return False
    return b"\xff\xd9" not in tail


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


