"""Where train.py's runs go and how runs and their weights are found again.

A new run writes into a new folder, runs/train/exp, exp2, ... (as Ultralytics users know them);
a folder that holds an earlier run is written only to continue it (--resume) or when asked
(--exist-ok). `--resume` alone continues the newest run (`resume_path`); test.py and detect.py
without --weights take the newest final weights here or in any run folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import models
import utils

RUNS = "runs/train"
RUN_PREFIX = "exp"
LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"
# The files of a run: a folder holding one is not written over by a new run.
RUN_FILE_PATTERN = re.compile(rf"^(last\.pth|best\.pth|{models.WEIGHTS_STEM}\.(pth|json|png))$")


def run_paths(output_dir: str | os.PathLike, weights_name: str) -> dict[str, Path]:
    """The files of a run: last.pth, best.pth, the final weights and, beside them, the log and plot."""
    output_dir = Path(output_dir)
    stem = Path(weights_name).stem
    return {"last": output_dir / LAST_CHECKPOINT, "best": output_dir / BEST_CHECKPOINT,
            "final": output_dir / f"{stem}.pth", "log": output_dir / f"{stem}.json", "plot": output_dir / f"{stem}.png"}


def resume_path(resume: str, output_dir: str | None) -> Path:
    """The checkpoint `--resume [PATH]` continues: PATH (a run folder means its last.pth), else
    last.pth in --output-dir when given, else the newest of RUNS/*/last.pth and ./last.pth."""
    if resume:
        path = Path(resume)
        path = path / LAST_CHECKPOINT if path.is_dir() else path
    elif output_dir is not None:
        path = Path(output_dir) / LAST_CHECKPOINT
    else:
        found = [p for p in (*Path(RUNS).glob(f"*/{LAST_CHECKPOINT}"), Path(LAST_CHECKPOINT)) if p.is_file()]
        if not found:
            raise utils.UserError(f"--resume: no {LAST_CHECKPOINT} in {RUNS}/*/ or here; name one: --resume PATH")
        path = max(found, key=lambda p: p.stat().st_mtime)
    if not path.is_file():
        raise utils.UserError(f"--resume: no checkpoint at {path}")
    return path


def new_run_dir(runs: Path = Path(RUNS)) -> Path:
    """The first free RUNS/exp, exp2, exp3, ..., made now so that two runs never share one."""
    for n in range(1, 100_000):
        folder = runs / (RUN_PREFIX if n == 1 else f"{RUN_PREFIX}{n}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as e:
            raise utils.UserError(f"cannot make a run folder in {runs} ({e.strerror or e}); pass --output-dir") from None
        return folder
    raise utils.UserError(f"{runs} holds too many run folders; pass --output-dir")


def prepare_output_dir(output_dir: str | None, resuming: bool, exist_ok: bool) -> Path:
    """The run's folder, checked writable before any training: a new numbered folder by default;
    an --output-dir holding an earlier run only when `resuming` it or with `exist_ok`. Temp files
    a killed save left there are removed, and said so."""
    if output_dir is None:
        folder = new_run_dir()
    else:
        folder = utils.check_writable_folder(output_dir, "--output-dir")
        earlier = sorted(p.name for p in folder.iterdir() if RUN_FILE_PATTERN.match(p.name))
        if earlier and not resuming and not exist_ok:
            last = folder / LAST_CHECKPOINT
            advice = f"continue it with: python train.py --resume {last}; " if last.is_file() else ""
            raise utils.UserError(f"--output-dir {folder} holds an earlier run ({', '.join(earlier[:3])}); "
                                  f"{advice}leave out --output-dir for a new {RUNS}/expN folder, or add "
                                  "--exist-ok to overwrite it")
    removed = utils.remove_stale_temp_files(folder, RUN_FILE_PATTERN)
    if removed:
        print(f"removed {len(removed)} unfinished temp file(s) of an earlier crash in {folder}: "
              + ", ".join(p.name for p in removed))
    return folder


def find_latest_weights(folders: Sequence[str | os.PathLike] = (".",)) -> Path | None:
    """Newest `e*_b*_lr*_m*.pth` in `folders` (test.py and detect.py use it by default)."""
    found = [p for folder in map(Path, folders) if folder.is_dir() for p in folder.iterdir()
             if models.WEIGHTS_NAME_PATTERN.match(p.name) and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def weight_folders(root: str | os.PathLike = ".") -> list[Path]:
    """Where final weights are looked for: `root` (final weights copied or downloaded next to the scripts)
    and every run folder of train.py under it (runs/train/*/)."""
    root = Path(root)
    runs = root / RUNS
    return [root, *sorted(p for p in runs.iterdir() if p.is_dir())] if runs.is_dir() else [root]


def resolve_weights(weights: str | None, root: str | os.PathLike = ".") -> tuple[str, str]:
    """The --weights rule of test.py and detect.py: as given, else the newest
    e*_b*_lr*_m*.pth in `root` or its runs/train/*/, else torchvision's COCO weights.
    Returns (weights, how they were chosen, for the user)."""
    if weights:
        return weights, ""
    latest = find_latest_weights(weight_folders(root))
    if latest is None:
        return "coco", f"  (no e*_b*_lr*_m*.pth here or in {RUNS}/*/)"
    return str(latest), f"  (the newest e*_b*_lr*_m*.pth here and in {RUNS}/*/)"
