"""COCO 2017 download: the official zips into the layout the scripts read.

`python dataset.py --download coco` calls `download_coco`. It resumes a cut download with
HTTP Range requests, checks each zip's size and md5, unpacks into a temp folder and moves
the result in with one rename, and leaves a marker so that running it again skips what is done.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm import tqdm

from utils import DatasetError

# --------------------------------------------------------------------------------------
# Download: the official COCO 2017 zips -> the layout above
# --------------------------------------------------------------------------------------
COCO_URL_BASE = "http://images.cocodataset.org"
URL_BASE_ENV = "COCO_URL_BASE"  # or --url-base: a mirror with the same paths (zips/..., annotations/...)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CocoArchive:
    """One COCO 2017 zip: where it is under the URL base, what it unpacks to, how to check it."""

    split: str          # its name for --splits
    path: str           # under the URL base
    folder: str         # the top-level folder inside the zip, which lands in root
    size: int | None    # bytes; None trusts the server's Content-Length
    md5: str | None     # the published checksum; None checks the size only
    unpacked: int       # about how many bytes it takes once unpacked (for the disk-space check)

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


# Smallest first: the annotations are useful on their own and fail fast if something is wrong.
COCO_ARCHIVES: tuple[CocoArchive, ...] = (
    CocoArchive("annotations", "annotations/annotations_trainval2017.zip", "annotations",
                252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c", 900_000_000),
    CocoArchive("val", "zips/val2017.zip", "val2017", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80", 815_585_330),
    CocoArchive("train", "zips/train2017.zip", "train2017",
                19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2", 19_336_861_798),
)
DOWNLOAD_SPLITS = tuple(a.split for a in COCO_ARCHIVES)


def download_coco(root: str | os.PathLike = "coco", splits: Iterable[str] = DOWNLOAD_SPLITS, *,
                  url_base: str | None = None, keep_zips: bool = False, retries: int = 3,
                  retry_delay: float = 2.0, timeout: float = 60.0, progress: bool = True,
                  archives: Sequence[CocoArchive] | None = None) -> Path:
    """Download the COCO 2017 zips of `splits` and unpack them into `root` (layout above); returns root.

    Each zip goes to `root/NAME.zip.part`, resumes with an HTTP Range request after a cut (up to
    `retries` failed attempts in a row, so a long download survives many cuts that each make
    progress), is checked against its size and published md5, then renamed to `NAME.zip`. It is
    unpacked into a hidden folder in root and moved into place, and `root/.NAME.zip.done` marks
    the step finished: running again skips finished zips without touching the network, and an
    interrupted run continues where it stopped. A zip already in root (kept, or fetched by hand)
    is used after a size check; zips are deleted once unpacked unless `keep_zips`.
    `url_base` (default: $COCO_URL_BASE, else the official server) selects a mirror; `archives`
    (default COCO_ARCHIVES) is the table of zips.
    """
    archives = COCO_ARCHIVES if archives is None else archives
    wanted = list(dict.fromkeys(splits))
    known = [a.split for a in archives]
    if not wanted or any(s not in known for s in wanted):
        raise DatasetError(f"splits to download must be among {known}, got {wanted}")
    base = (url_base or os.environ.get(URL_BASE_ENV) or COCO_URL_BASE).rstrip("/")
    root = Path(root)
    todo = [a for a in archives if a.split in wanted]
    try:
        root.mkdir(parents=True, exist_ok=True)
        pending = []
        for archive in todo:
            if _download_done(root, archive):
                print(f"{archive.file_name}: already done ({root / archive.folder})")
            else:
                pending.append(archive)
        _check_disk_space(root, pending, keep_zips)
        for archive in pending:
            zip_path = root / archive.file_name
            if zip_path.is_file():
                if archive.size is not None and zip_path.stat().st_size != archive.size:
                    raise DatasetError(f"{zip_path} is {zip_path.stat().st_size} bytes, expected {archive.size}: "
                                       "not the published file; move it away and run again")
                print(f"{archive.file_name}: using the zip already in {root}")
            else:
                _download(f"{base}/{archive.path}", zip_path, archive.size, archive.md5, retries=retries,
                          retry_delay=retry_delay, timeout=timeout, progress=progress)
            _unpack(zip_path, root, archive.folder, progress)
            _write_marker(root, archive, base)
            if not keep_zips:
                zip_path.unlink()  # after the marker: a cut here must not cost a new download
        summary = ", ".join(f"{a.folder}/ ({_count_files(root / a.folder)} files)" for a in todo)
    except OSError as e:  # the disk, not the network: network errors are handled in _download
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        raise DatasetError(f"cannot write the COCO download in {root}:{name} {e.strerror or e}") from None
    print(f"COCO 2017 in {root}: {summary}")
    return root


def _marker(root: Path, archive: CocoArchive) -> Path:
    return root / f".{archive.file_name}.done"


def _download_done(root: Path, archive: CocoArchive) -> bool:
    # The folder check catches a user who deleted it: the marker alone would skip forever.
    return _marker(root, archive).is_file() and (root / archive.folder).is_dir()


def _write_marker(root: Path, archive: CocoArchive, base: str) -> None:
    marker = _marker(root, archive)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"url": f"{base}/{archive.path}", "size": archive.size, "md5": archive.md5,
                               "folder": archive.folder, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n",
                   encoding="utf-8")
    os.replace(tmp, marker)


def _count_files(folder: Path) -> int:
    return sum(1 for entry in os.scandir(folder) if entry.is_file())


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n} bytes"


def _check_disk_space(root: Path, pending: Sequence[CocoArchive], keep_zips: bool) -> None:
    """Fail before downloading anything if the zips and their contents cannot fit."""
    used = peak = 0  # bytes on top of what is on disk now, archives processed one after the other
    for archive in pending:
        size = archive.size or 0
        zip_path, part = root / archive.file_name, root / (archive.file_name + ".part")
        have = zip_path.stat().st_size if zip_path.is_file() else part.stat().st_size if part.is_file() else 0
        used += max(size - have, 0)
        peak = max(peak, used + archive.unpacked)  # zip and contents both exist while unpacking
        used += archive.unpacked - (0 if keep_zips else size)
    free = shutil.disk_usage(root).free
    if peak > free:
        names = ", ".join(a.file_name for a in pending)
        raise DatasetError(f"not enough disk space in {root}: {names} need about {_gb(peak)}, "
                           f"{_gb(free)} free (download fewer --splits, or choose another --root)")


class _ConnectionCut(Exception):
    """The connection broke while the body was being received."""

    def __init__(self, reason: str, received: int) -> None:
        super().__init__(reason)
        self.received = received


class _Md5:
    """md5 of a .part file's first `length` bytes, kept up to date as bytes are appended."""

    def __init__(self) -> None:
        self.hasher, self.length = hashlib.md5(), 0

    def update(self, data: bytes) -> None:
        self.hasher.update(data)
        self.length += len(data)

    def sync(self, part: Path, length: int, progress: bool) -> None:
        """Hash the file again when it is not the data seen so far (a resumed .part, a restart)."""
        if self.length == length:
            return
        self.hasher, self.length = hashlib.md5(), 0
        if length == 0:
            return
        with open(part, "rb") as f, tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=f"md5 of {part.name}", disable=not progress, leave=False) as bar:
            while self.length < length:
                data = f.read(min(_CHUNK * 8, length - self.length))
                if not data:
                    break
                self.update(data)
                bar.update(len(data))


def _download(url: str, dest: Path, size: int | None, md5: str | None, *, retries: int, retry_delay: float,
              timeout: float, progress: bool) -> None:
    """Fetch `url` into `dest` via `dest.part`, resuming after cuts; rename only once size and md5 match."""
    part = dest.with_name(dest.name + ".part")
    host = urllib.parse.urlsplit(url).netloc
    opener = urllib.request.build_opener()  # honours http_proxy / no_proxy like any urllib client
    digest = _Md5() if md5 else None
    total, answered, failures = size, False, 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
              disable=not progress, delay=0.5) as bar:  # delay: no empty bar before an offline error
        while True:
            have = part.stat().st_size if part.is_file() else 0
            if total is not None and have > total:  # longer than the file: not a part of it
                part.unlink()
                have = 0
            if total is not None and have == total:
                break
            if have and not answered:
                tqdm.write(f"{dest.name}: resuming at {_gb(have)} of {_gb(total) if total else '?'}")
            request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            received, reason = 0, ""
            try:
                with opener.open(request, timeout=timeout) as response:
                    answered = True
                    start, total = _response_range(response, have, total, url)
                    bar.total = total
                    bar.n = start
                    bar.refresh()
                    if digest is not None:
                        digest.sync(part, start, progress)
                    received = _receive(response, part, start, bar, digest)
                    done = part.stat().st_size
                    if total is None:
                        total = done  # no length from the server: the end of the body is the end
                    elif done < total:
                        reason = f"connection closed at {done} of {total} bytes"
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # nothing after `have`
                    if _range_total(e.headers.get("Content-Range")) == have:
                        total = have  # the .part is already the whole file
                    else:
                        tqdm.write(f"{dest.name}: the server has no byte {have}; starting over")
                        part.unlink()
                    continue
                raise DatasetError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                reason = _reason(e.reason)
                if not answered:
                    raise DatasetError(f"cannot reach {host} ({reason}): check your connection, "
                                       "or use --sample DIR for the offline sample dataset") from None
            except _ConnectionCut as e:
                reason, received = str(e), e.received
            except (http.client.HTTPException, ConnectionError, TimeoutError) as e:  # while reading headers
                reason = _reason(e)
                if not answered:
                    raise DatasetError(f"cannot download {url}: {reason}") from None
            if not reason:
                continue
            failures = 1 if received else failures + 1  # only attempts that bring nothing count against retries
            if failures > retries:
                have = part.stat().st_size if part.is_file() else 0
                raise DatasetError(f"download of {url} failed {failures} times in a row ({reason}); "
                                   f"{_gb(have)} kept in {part}: run the same command again to resume")
            tqdm.write(f"{dest.name}: {reason}; resuming")
            time.sleep(min(60.0, retry_delay * 2 ** (failures - 1)))
    if digest is not None:
        if digest.length != total:
            print(f"{dest.name}: verifying md5 ({_gb(total)})")
            digest.sync(part, total, progress)
        if digest.hasher.hexdigest() != md5:
            part.unlink()
            raise DatasetError(f"{dest.name}: md5 {digest.hasher.hexdigest()} is not the published {md5}; "
                               "the download was deleted, run again to fetch it afresh")
    os.replace(part, dest)


def _response_range(response: Any, have: int, expected: int | None, url: str) -> tuple[int, int | None]:
    """Where the body of `response` starts in the file, and the file's size (None if not told)."""
    if response.status == 206:
        start = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
        if not start.isdigit() or int(start) != have:
            raise DatasetError(f"cannot resume {url}: asked for bytes {have}-, the server sent "
                               f"{response.headers.get('Content-Range')!r}")
        served = _range_total(response.headers.get("Content-Range"))
    elif response.status == 200:  # a server without Range support sends everything: start over
        if have:
            tqdm.write(f"{url}: the server does not resume downloads; starting over")
        have = 0
        length = response.headers.get("Content-Length", "")
        served = int(length) if length.isdigit() else None
    else:
        raise DatasetError(f"cannot download {url}: unexpected HTTP {response.status}")
    if expected is not None and served is not None and served != expected:
        raise DatasetError(f"{url} is {served} bytes, expected {expected}: not the published file")
    return have, expected if expected is not None else served


def _range_total(content_range: str | None) -> int | None:
    total = (content_range or "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _receive(response: Any, part: Path, start: int, bar: tqdm, digest: _Md5 | None) -> int:
    """Write the body at offset `start` of `part` (truncating the rest); returns the bytes received."""
    received = 0
    with open(part, "r+b" if start else "wb") as f:
        f.seek(start)
        f.truncate()
        while True:
            try:
                data = response.read(_CHUNK)
            except (http.client.HTTPException, OSError) as e:  # reset, timeout, truncated chunk
                raise _ConnectionCut(_reason(e), received) from None
            if not data:
                return received
            f.write(data)
            received += len(data)
            bar.update(len(data))
            if digest is not None:
                digest.update(data)


def _reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    return " ".join(str(error).split()) or type(error).__name__


def _unpack(zip_path: Path, root: Path, folder: str, progress: bool) -> None:
    """Unpack into a hidden folder in root, then move into place, so that a cut never leaves a
    folder that looks complete; a top-level folder that already exists is merged file by file."""
    staging = root / f".{zip_path.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)  # left by an unpacking that was cut
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                members = archive.infolist()
                need, free = sum(m.file_size for m in members), shutil.disk_usage(root).free
                if need > free:
                    raise DatasetError(f"not enough disk space in {root} to unpack {zip_path.name}: "
                                       f"needs {_gb(need)}, {_gb(free)} free")
                for member in tqdm(members, desc=f"unpacking {zip_path.name}", unit="file", disable=not progress):
                    archive.extract(member, staging)  # extract() drops absolute and ".." parts of names
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise DatasetError(f"{zip_path} is not a valid zip ({_reason(e)}): delete it and run again") from None
        if not (staging / folder).is_dir():
            raise DatasetError(f"{zip_path} has no {folder}/ folder at its top: not the expected COCO zip")
        for item in sorted(staging.iterdir()):
            _move_into(item, root / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _move_into(child, dst / child.name)
    else:
        os.replace(src, dst)  # a whole new folder appears in one rename


