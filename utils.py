"""What every script shares, and nothing that belongs to one job.

Top to bottom:
  * COCO person-keypoint constants (names, skeleton) and the COCO folder layout;
  * errors that the scripts turn into one-line messages (`UserError`, `cli_errors`);
  * argparse types that validate flags, written once for every script, and the help formatter;
  * files written atomically (a crash leaves the old file or the new one, never half of one);
  * device and torchrun/distributed helpers, seeding.

Nothing here keeps global mutable state; every function takes what it needs. This module
imports no other module of the project: every other module may import it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import tempfile
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

# --------------------------------------------------------------------------------------
# COCO person keypoints
# --------------------------------------------------------------------------------------
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)


# The 19 limbs of COCO's "skeleton" field, 0-based (the annotation files store them 1-based).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

PERSON_ID = 1  # COCO's category id of "person"
COCO_PERSON_CATEGORY: dict[str, Any] = {
    "id": PERSON_ID,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO_KEYPOINT_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON],
}

# The COCO 2017 layout every script reads (and `python dataset.py --sample` writes).
SPLITS = ("train", "val")


def coco_paths(data_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """`(image_dir, ann_file)` of a COCO 2017 split ("train" or "val") under `data_root`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(data_root)
    return root / f"{split}2017", root / "annotations" / f"person_keypoints_{split}2017.json"


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
class UserError(Exception):
    """Bad input from the user (a file, a flag, the machine): shown as one line, no traceback."""


class DatasetError(UserError, ValueError):
    """Bad input data (an image, an annotation file, a folder); the message names the file."""


def one_line(error: BaseException) -> str:
    """The message of `error`; for one re-raised by a DataLoader worker (whose message carries
    the worker's traceback), the original message alone."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def first_line(error: BaseException) -> str:
    """`TypeName: the first line of the message` (just the type when there is no message)."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into `SystemExit("error: ...")`: one line on stderr, exit code 1."""
    try:
        yield
    except UserError as e:
        raise SystemExit(f"error: {one_line(e)}") from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        name = f": {e.filename}" if getattr(e, "filename", None) else ""
        raise SystemExit(f"error: {e.strerror or e}{name}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None


# --------------------------------------------------------------------------------------
# Command-line flags: argparse types, so every script validates a flag the same way
# --------------------------------------------------------------------------------------
# The largest image side any script accepts: 4096 px keeps a batch of 8 within a GPU's and a
# laptop's memory; larger asks for tens of GB before the first step fails.
MAX_IMAGE_SIDE = 4096


def _number_type(cast: Callable[[str], Any], accept: Callable[[Any], bool], expected: str,
                 name: str) -> Callable[[str], Any]:
    """An argparse `type=` that parses with `cast` and refuses values `accept` rejects.
    argparse turns its error into `error: argument --flag: 'text': expected ...`, exit 2."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    parse.__name__ = name
    return parse


positive_int = _number_type(int, lambda v: v > 0, "an integer of 1 or more", "positive_int")
nonnegative_int = _number_type(int, lambda v: v >= 0, "an integer of 0 or more", "nonnegative_int")
positive_float = _number_type(float, lambda v: math.isfinite(v) and v > 0, "a finite number above 0",
                              "positive_float")
nonnegative_float = _number_type(float, lambda v: math.isfinite(v) and v >= 0, "a finite number of 0 or more",
                                 "nonnegative_float")
int_or_off = _number_type(int, lambda v: v >= -1, "an integer of 0 or more, or -1 for off", "int_or_off")
momentum = _number_type(float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1", "momentum")
probability = _number_type(float, lambda v: 0 <= v <= 1, "a number from 0 to 1", "probability")
# Thresholds may be -inf or inf (draw or drop everything), never NaN, which compares false to all.
threshold = _number_type(float, lambda v: not math.isnan(v), "a number (inf and -inf allowed, not nan)",
                         "threshold")
image_side = _number_type(int, lambda v: 32 <= v <= MAX_IMAGE_SIDE,
                          f"an image side from 32 to {MAX_IMAGE_SIDE} pixels", "image_side")


def url(text: str) -> str:
    """An http(s) or ftp URL with a host, such as http://images.cocodataset.org."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https", "ftp") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a URL such as http://host/path")
    return text


def is_number(value: Any) -> bool:
    """A finite int or float from JSON (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flip_pair_arg(text: str) -> tuple[str, str]:
    """`left_paw:right_paw`: two keypoint names that a horizontal flip swaps."""
    names = tuple(n.strip() for n in text.split(":"))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two different keypoint names as LEFT:RIGHT")
    return names


def oks_sigmas_arg(text: str) -> list[float] | dict[str, float]:
    """OKS sigmas: numbers (`0.026,0.025,...`) or a JSON file holding a list of them or a
    {keypoint name: sigma} object."""
    source = text
    if not re.fullmatch(r"[\d.eE+\-,\s]+", text):
        try:
            with open(text, encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{text!r}: not numbers, and not a readable JSON file ({e})") from None
        source = f"{text} (JSON)"
    else:
        try:
            value = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            value = None
    numbers = list(value.values()) if isinstance(value, dict) else value
    if not isinstance(numbers, list) or not numbers or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in numbers):
        raise argparse.ArgumentTypeError(f"{source!r}: expected OKS sigmas, numbers above 0 such as 0.026,0.025,... "
                                         "or a JSON file of a list of them or a {keypoint name: sigma} object")
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else [float(v) for v in numbers]


def keypoint_head_arg(text: str) -> list[int]:
    """`512x8` (width x depth) or `256,128,128` (the width of each conv)."""
    try:
        if "x" in text.lower():
            width, depth = text.lower().split("x")
            widths = [int(width)] * int(depth)
        else:
            widths = [int(w) for w in text.split(",")]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1 or max(widths) > 4096 or len(widths) > 32:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxDEPTH such as 512x8, or widths such as 256,128")
    return widths


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the usage text as written and shows each flag's default, except where the help
    already explains it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or not action.option_strings:
            return text
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


# --------------------------------------------------------------------------------------
# Images: a decoded-size cap against decompression bombs
# --------------------------------------------------------------------------------------
# PIL's own default cap (Image.MAX_IMAGE_PIXELS, about 9459 x 9459): a 48 KB PNG can claim
# 20000 x 20000 pixels, which decodes to 1.2 GB and becomes 4.8 GB as a float tensor.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
max_image_pixels = _number_type(int, lambda v: v > 0, "a pixel count of 1 or more", "max_image_pixels")


def add_max_image_pixels_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--max-image-pixels, the same in train.py, test.py and detect.py."""
    parser.add_argument("--max-image-pixels", type=max_image_pixels, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse images of more pixels than this before decoding them (a few KB can "
                             f"claim gigabytes); raise it for genuine huge images (default: {DEFAULT_MAX_IMAGE_PIXELS})")


@contextlib.contextmanager
def pillow_pixel_limit(limit: int) -> Iterator[None]:
    """Pillow's own decompression-bomb cap set to `limit` for one open or decode, then put back:
    a raised --max-image-pixels reaches Pillow too, and no setting outlives the call."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def check_image_pixels(source: str | os.PathLike | IO[bytes], name: str | os.PathLike,
                       limit: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise DatasetError when the image header of `source` (a path or a binary file) claims more
    than `limit` pixels; reads the header only. Files Pillow cannot identify pass: a decoder decides."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with pillow_pixel_limit(limit), Image.open(source) as im:
                size = im.size
        except Image.DecompressionBombError:  # Pillow refuses over twice the limit
            size = None
        except Exception:  # not an image Pillow knows, or a damaged one: the decoders say which
            return
    if size is not None and size[0] * size[1] <= limit:
        return
    claimed = f" is {size[0]}x{size[1]} pixels," if size else ""
    raise DatasetError(f"image {name}{claimed} over the limit of {limit} pixels (a decompression bomb?); "
                       "raise --max-image-pixels if it is genuine")


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
TEMP_INFIX = ".tmp"  # `last.pth.tmpXXXXXXXX`: a temp file of ours, safe to delete when stale
# mkstemp's random part: 8 characters of [a-z0-9_].
TEMP_NAME_PATTERN = re.compile(re.escape(TEMP_INFIX) + r"[a-z0-9_]{8}$")


def remove_stale_temp_files(folder: str | os.PathLike, names: re.Pattern) -> list[Path]:
    """Delete the `NAME.tmpXXXXXXXX` files that `atomic_write` leaves in `folder` when its process
    is killed mid-write, for the NAMEs that `names` matches in full; returns what was removed.
    Only our own names, only in `folder`, never in its subfolders."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        suffix = TEMP_NAME_PATTERN.search(path.name)
        if suffix and names.fullmatch(path.name[:suffix.start()]) and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def check_writable_folder(folder: str | os.PathLike, flag: str) -> Path:
    """Make `folder` (and its parents) and prove a file can be written there, before hours of
    work depend on it; a one-line UserError otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from None
    return folder


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(file)` on a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TEMP_INFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file's content; DatasetError naming `what` ("annotation file") when it is missing,
    unreadable or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {what} {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{what} {path} is not valid JSON: {e}") from None


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------
# Devices and torchrun
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA when present (the local rank's GPU under torchrun), else CPU."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if spec == "cuda":
            return torch.device(f"cuda:{local_rank}")
        index = int(spec.split(":")[1])
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(spec)
    raise UserError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def init_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Start the process group when launched by torchrun (RANK/WORLD_SIZE set), else single process.

    NCCL for CUDA, gloo for CPU, so `torchrun --nproc_per_node=2` also runs on a laptop.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(), select_device(device_spec)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    device = select_device(device_spec, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (just `[obj]` outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def to_device(images: Sequence[torch.Tensor], targets: Sequence[dict[str, Any]],
              device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """A batch of images and detection targets on `device` (non-tensor values such as image_id stay)."""
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, targets


def reduce_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """The mean of `values` over the torchrun processes (`values` itself for one)."""
    if world_size > 1:
        dist.all_reduce(values)
        values = values / world_size
    return values


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (cluster pre-emption, torchrun shutting down) is treated like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM while the weights, optimizer and scheduler update, so an interrupt
    never lands between them and a saved checkpoint is always one consistent step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise KeyboardInterrupt
