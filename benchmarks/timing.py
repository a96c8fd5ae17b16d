"""What benchmark.py measures with: timed runs after warm-up ones, peak memory, and rows of
"ours against a baseline" printed as a table of ratios measured side by side in one run.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable

import torch

from precision import autocast, cpu_has_fast_bf16

# Targets: row name -> the largest ratio of ours to the baseline that counts as reached.
TARGETS = {"detect: frame, end to end": 0.5, "detect: pipeline overhead": 0.10, "train: iteration": 1.0}

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: the allocator's peak since the last reset. CPU: the process's peak RSS since then
    (VmHWM), or its all-time peak where /proc is missing."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, AttributeError):
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    peak_mib: float = 0.0
    extra: dict[str, list[float]] = field(default_factory=dict)  # per-run numbers a function reports

    @property
    def median(self) -> float:
        return median(self.times)

    def extra_median(self, key: str) -> float:
        return median(self.extra[key])


def measure(functions: dict[str, Callable[[int], dict[str, float] | None]], repeats: int, warmup: int,
            device: torch.device, per_run: float = 1.0) -> dict[str, Samples]:
    """Time each function `warmup + repeats` times, interleaved (a, b, b, a, a, b, ...) so that a
    machine getting busier or quieter slows every side alike. A function gets the run index
    (warm-up runs included) and may return numbers of its own (e.g. its model time). Times are
    divided by `per_run` (e.g. the frames processed per run)."""
    samples = {name: Samples() for name in functions}
    names = list(functions)
    for run in range(warmup + repeats):
        for name in (names if run % 2 == 0 else names[::-1]):
            sync(device)
            reset_peak_memory(device)
            start = time.perf_counter()
            extra = functions[name](run)
            sync(device)
            elapsed = time.perf_counter() - start
            if run < warmup:
                continue
            s = samples[name]
            s.times.append(elapsed / per_run)
            s.peak_mib = max(s.peak_mib, peak_memory_mib(device))
            for key, value in (extra or {}).items():
                s.extra.setdefault(key, []).append(value / per_run)
    return samples


@dataclass
class Row:
    group: str
    name: str
    ours: float
    baseline: float
    baseline_label: str
    unit: str = "s"
    peak_mib_ours: float | None = None
    peak_mib_baseline: float | None = None
    note: str = ""
    runs_ours: list[float] = field(default_factory=list)
    runs_baseline: list[float] = field(default_factory=list)
    goal: float | None = None  # this row's target where it depends on the machine, else TARGETS's

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline > 0 else math.inf

    @property
    def target(self) -> float | None:
        return self.goal if self.goal is not None else TARGETS.get(self.name)

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("group", "name", "ours", "baseline", "baseline_label", "unit",
                                            "peak_mib_ours", "peak_mib_baseline", "note", "runs_ours", "runs_baseline")}
        d.update(ratio=self.ratio, target=self.target, ok=None if self.target is None else self.ratio <= self.target)
        return d


def compared(group: str, name: str, ours: Samples, baseline: Samples, baseline_label: str, note: str = "") -> Row:
    """A row from two measured sides: their medians, peak memory and every timed run."""
    return Row(group, name, ours.median, baseline.median, baseline_label, "s", ours.peak_mib, baseline.peak_mib, note,
               ours.times, baseline.times)


HEADER = f"{'row':<38} {'ours':>10} {'baseline':>10} {'ratio':>7} {'target':<9} {'peak MiB ours/base':>18}  baseline / note"


def fmt_time(seconds: float, unit: str) -> str:
    if unit != "s":
        return f"{seconds:.3g} {unit}"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_row(row: Row) -> str:
    target = "" if row.target is None else f"<={row.target:g} " + ("ok" if row.ratio <= row.target else "FAIL")
    mem = "/".join("-" if m is None else f"{m:.0f}" for m in (row.peak_mib_ours, row.peak_mib_baseline))
    text = f"{row.name:<38} {fmt_time(row.ours, row.unit):>10} {fmt_time(row.baseline, row.unit):>10} " \
           f"{row.ratio:>6.3f}x {target:<9} {mem:>18}  {row.baseline_label}"
    return text + (f"; {row.note}" if row.note else "")


class Table:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(fmt_row(row), flush=True)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            found = re.search(r"model name\s*:\s*(.+)", f.read())
            name = found.group(1).strip() if found else name
    return f"CPU {name}, {os.cpu_count()} core(s), {torch.get_num_threads()} torch thread(s); {cpu_features()}"


def cpu_features() -> str:
    """The CPU features that decide the inference precision, as torch sees them."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    names = ("avx2", "avx512_f", "avx512_bf16", "amx_bf16", "amx_fp16", "avx512_fp16")
    found = [n for n in names if caps.get(n)] or ["unknown"]
    return (f"features {' '.join(found)} (torch: {torch.backends.cpu.get_cpu_capability()}); "
            f"native bfloat16: {'yes' if cpu_has_fast_bf16() else 'no'}")


def model_only(model: torch.nn.Module, image: torch.Tensor, device: torch.device,
               precision: str) -> Callable[[int], None]:
    """A run of `model` alone on one image under `precision`'s autocast (for `measure`)."""
    def go(_: int) -> None:
        with torch.inference_mode(), autocast(device, precision):
            model([image])
    return go


