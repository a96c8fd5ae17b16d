"""The numeric precision a model runs in: the flags, how `auto` is resolved, how it is described.

One owner for every script: test.py and detect.py run inference under `--precision
auto|fp32|bf16|fp16` (detect.py also takes yolov5's `--half`), train.py trains in float32 or, with
`--amp`, in mixed float16 on CUDA (torchvision's references' flag). The flags are defined here,
resolved here (`resolve`), and described here for the line that names the model and the device.

auto: bf16 on a CPU with AMX or AVX512-BF16 (about 3x faster than float32 for Keypoint R-CNN
inference there, docs/performance.md), the script's CUDA default on CUDA, fp32 elsewhere. Under
any autocast the numbers that place boxes and keypoints stay in float32 (models.py).
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Sequence

import torch

from utils import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {"fp32": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}


def precision_arg(value: str) -> str:
    """argparse type of --precision: auto, fp32, bf16 or fp16 (case-insensitive)."""
    if value.lower() not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"invalid choice {value!r} (choose from {', '.join(PRECISIONS)})")
    return value.lower()


class _Refused(argparse.Action):
    """A flag that is refused with a pointer to the one that replaced it (argparse's exit 2)."""

    def __init__(self, option_strings: Sequence[str], dest: str, instead: str = "", **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is not a flag of this script: {self.instead}")


def add_inference_flags(group: argparse._ArgumentGroup, cuda_default: str, half: bool = False) -> None:
    """--precision of test.py and detect.py; `half`: also yolov5's --half/--no-half (detect.py).
    test.py's --amp, once an alias of fp16 inference, is refused: train.py's --amp trains."""
    group.add_argument("--precision", type=precision_arg, default="auto", metavar="{auto,fp32,bf16,fp16}",
                       help="autocast precision of the model. auto: bf16 on a CPU with AMX or AVX512-BF16 "
                            f"(about 3x faster there, same AP to 0.02), {cuda_default} on CUDA, fp32 elsewhere; "
                            "fp16 needs CUDA")
    if half:
        group.add_argument("--half", action=argparse.BooleanOptionalAction, default=None,
                           help="--half is --precision fp16 (CUDA only), --no-half is --precision fp32")
    else:
        group.add_argument("--amp", action=_Refused, instead="use --precision fp16 for float16 inference on CUDA "
                                                             "(--amp is train.py's mixed-precision training)")


def add_training_flag(group: argparse._ArgumentGroup) -> None:
    """train.py's --amp: mixed precision, float16 autocast with a gradient scaler (CUDA only)."""
    group.add_argument("--amp", action="store_true",
                       help="mixed-precision training: float16 autocast and a gradient scaler (CUDA only; "
                            "float32 on a CPU, with a note)")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16) and torch's oneDNN
    has bfloat16 kernels for it. oneDNN also "supports" bfloat16 on plain AVX-512 by emulation,
    which is slower than float32, so the instruction sets are asked for by name."""
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if caps:
        return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch before get_capabilities
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def requested(args: argparse.Namespace) -> str:
    """What the flags ask for: --precision, or what --half/--no-half mean; a contradiction is refused."""
    half = getattr(args, "half", None)
    if half is None:
        return args.precision
    spec = "fp16" if half else "fp32"
    if args.precision not in ("auto", spec):
        raise UserError(f"--{'' if half else 'no-'}half means --precision {spec}; "
                        f"it contradicts --precision {args.precision}")
    return spec


def select(spec: str, device: torch.device, cuda_default: str = "fp32") -> str:
    """A --precision value -> "fp32", "bf16" or "fp16" for `device` (auto resolved as above).
    fp16 needs CUDA; bf16 on a CPU without native bfloat16 runs (emulated, slower than fp32) but
    is never chosen by auto."""
    spec = (spec or "auto").lower()
    if spec not in PRECISIONS:
        raise UserError(f"--precision {spec!r}: expected {', '.join(PRECISIONS)}")
    if spec == "auto":
        if device.type == "cuda":
            return cuda_default
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if spec == "fp16" and device.type != "cuda":
        raise UserError(f"--precision fp16 needs a CUDA device (device is {device}); use bf16 or fp32 on a CPU")
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    return spec


def describe(precision: str, device: torch.device, spec: str = "auto") -> str:
    """The precision for the line that names the weights and the device, with why auto chose it:
    "bfloat16 autocast (auto: the CPU has AMX-BF16/AVX512-BF16)", "float32 (auto) ..."."""
    native = device.type != "cpu" or cpu_has_fast_bf16()
    if spec != "auto":
        why = f"--precision {spec}"
        if precision == "bf16" and not native:
            why += "; emulated: this CPU has no AMX-BF16/AVX512-BF16, slower than float32"
    elif device.type == "cpu":
        why = "auto: " + ("the CPU has AMX-BF16/AVX512-BF16" if native else "the CPU has no AMX-BF16/AVX512-BF16")
    else:
        why = f"auto on {device.type}"
    return f"{NAMES[precision]} ({why})"


def resolve(args: argparse.Namespace, device: torch.device, cuda_default: str) -> tuple[str, str]:
    """(precision, its description) of an inference script's flags on `device`."""
    spec = requested(args)
    if getattr(args, "half", None) and device.type != "cuda":
        raise UserError(f"--half needs a CUDA device (device is {device}); leave it out on the CPU")
    chosen = select(spec, device, cuda_default)
    return chosen, describe(chosen, device, spec)


def training(amp: bool, device: torch.device) -> str:
    """train.py's precision: fp16 (mixed, with a gradient scaler) for --amp on CUDA, else fp32."""
    return "fp16" if amp and device.type == "cuda" else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device` (disabled for fp32)."""
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.float32),
                          enabled=precision in AUTOCAST_DTYPES)
