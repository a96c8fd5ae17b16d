"""Tests for `python dataset.py --download coco`, against a local HTTP server on 127.0.0.1 that
serves small zips with the COCO 2017 paths and layout. Nothing here touches the internet.

The server records every request (path and Range header), can cut the connection part-way
through a response, and can ignore Range like a server without resume support.
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import dataset
import download
from dataset import CocoKeypoints
from download import CocoArchive, download_coco
from utils import DatasetError, coco_paths

ANN_PATH = "annotations/annotations_trainval2017.zip"
VAL_PATH = "zips/val2017.zip"
TRAIN_PATH = "zips/train2017.zip"


# --------------------------------------------------------------------------------------
# Small zips with the COCO 2017 layout
# --------------------------------------------------------------------------------------
def _jpeg(seed: int, size=(40, 30)) -> bytes:
    image = Image.effect_noise(size, 40 + seed).convert("RGB")  # noise: the zip stays a few KB
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _coco_json(image_ids: list[int], size=(40, 30)) -> bytes:
    keypoints = []
    for k in range(17):
        keypoints += [5 + k, 5 + k, 2]
    return json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": size[0], "height": size[1]} for i in image_ids],
        "annotations": [{"id": 100 + i, "image_id": i, "category_id": 1, "bbox": [2.0, 2.0, 30.0, 25.0],
                         "area": 600.0, "iscrowd": 0, "keypoints": keypoints, "num_keypoints": 17}
                        for i in image_ids],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }).encode()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


TRAIN_IDS, VAL_IDS = [1, 2, 3], [4, 5]
ZIPS = {
    ANN_PATH: _zip({
        "annotations/person_keypoints_train2017.json": _coco_json(TRAIN_IDS),
        "annotations/person_keypoints_val2017.json": _coco_json(VAL_IDS),
        "annotations/instances_val2017.json": _coco_json(VAL_IDS),
    }),
    VAL_PATH: _zip({f"val2017/{i:012d}.jpg": _jpeg(i) for i in VAL_IDS}),
    TRAIN_PATH: _zip({f"train2017/{i:012d}.jpg": _jpeg(i) for i in TRAIN_IDS}),
}


def _table(**changes: dict) -> tuple[CocoArchive, ...]:
    """COCO_ARCHIVES for the small zips: same splits, paths and folders, their sizes and md5s."""
    rows = []
    for real in download.COCO_ARCHIVES:
        data = ZIPS[real.path]
        row = dict(split=real.split, path=real.path, folder=real.folder, size=len(data),
                   md5=hashlib.md5(data).hexdigest(), unpacked=4 * len(data))
        row.update(changes.get(real.split, {}))
        rows.append(CocoArchive(**row))
    return tuple(rows)


# --------------------------------------------------------------------------------------
# The local server
# --------------------------------------------------------------------------------------
class ZipServer:
    """Serves ZIPS at /<path> on 127.0.0.1 with Range support, and records the requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.statuses: list[int] = []
        self.cuts: dict[str, int] = {}  # path -> how many more responses to cut
        self.cut_fraction = 0.5         # of the body sent before a cut
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                byte_range = self.headers.get("Range")
                server.requests.append((path, byte_range))
                data = ZIPS.get(path)
                if data is None:
                    server.statuses.append(404)
                    self.send_error(404)
                    return
                start = 0
                if byte_range and server.honour_range:
                    start = int(byte_range.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        server.statuses.append(416)
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    server.statuses.append(206)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    server.statuses.append(200)
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cuts.get(path, 0) > 0:
                    server.cuts[path] -= 1
                    self.wfile.write(body[:int(len(body) * server.cut_fraction)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment would send the requests for 127.0.0.1 elsewhere.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(download.URL_BASE_ENV, raising=False)


@pytest.fixture
def server():
    zip_server = ZipServer()
    yield zip_server
    zip_server.close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused, like being offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Usage:
    """A stand-in for shutil.disk_usage's answer."""

    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = 2 * free, free, free


def _fetch(root: Path, server_or_url, **kwargs) -> Path:
    base = server_or_url if isinstance(server_or_url, str) else server_or_url.base
    kwargs.setdefault("archives", _table())
    kwargs.setdefault("retry_delay", 0.0)
    kwargs.setdefault("progress", False)
    return download_coco(root, url_base=base, **kwargs)


def _assert_coco_layout(root: Path, splits=("annotations", "val", "train")) -> None:
    """The layout of the README, loadable by CocoKeypoints, byte for byte what the zips hold."""
    for archive in _table():
        if archive.split not in splits:
            assert not (root / archive.folder).exists()
            continue
        with zipfile.ZipFile(io.BytesIO(ZIPS[archive.path])) as z:
            for name in z.namelist():
                assert (root / name).read_bytes() == z.read(name), name
        assert (root / f".{archive.file_name}.done").is_file()
    for split, ids in (("val", VAL_IDS), ("train", TRAIN_IDS)):
        if split in splits and "annotations" in splits:
            image_dir, ann_file = coco_paths(root, split)
            ds = CocoKeypoints(image_dir, ann_file)
            assert sorted(ds.ids) == ids
            image, target = ds[0]
            assert image.shape == (3, 30, 40) and target["keypoints"].shape == (1, 17, 3)
    # Nothing half-done left behind.
    leftovers = [p.name for p in root.iterdir() if p.name.endswith((".part", ".unpacking", ".tmp"))]
    assert leftovers == []


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
def test_cli_download_builds_the_coco_layout_and_a_rerun_makes_no_requests(server, closed_port_url, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setattr(download, "COCO_ARCHIVES", _table())
    root = tmp_path / "coco"
    dataset.main(["--download", "coco", "--root", str(root), "--url-base", server.base])

    _assert_coco_layout(root)
    assert sorted(server.paths()) == sorted(ZIPS) and all(r is None for _, r in server.requests)
    assert not list(root.glob("*.zip"))  # deleted once unpacked (no --keep-zips)
    assert "annotations/ (3 files), val2017/ (2 files), train2017/ (3 files)" in capsys.readouterr().out

    # Again, against the same server: nothing is requested. Then with the server gone.
    dataset.main(["--download", "coco", "--root", str(root), "--url-base", server.base])
    server.close()
    dataset.main(["--download", "coco", "--root", str(root), "--url-base", closed_port_url])
    assert len(server.requests) == 3
    out = capsys.readouterr().out
    assert out.count("already done") == 6
    _assert_coco_layout(root)


def test_cut_half_way_resumes_with_a_range_request(server, tmp_path):
    server.cuts[VAL_PATH] = 1
    root = _fetch(tmp_path / "coco", server, splits=["val"], keep_zips=True)

    val = ZIPS[VAL_PATH]
    cut_at = int(len(val) * 0.5)
    assert server.requests == [(VAL_PATH, None), (VAL_PATH, f"bytes={cut_at}-")]
    assert server.statuses == [200, 206]
    kept = (root / "val2017.zip").read_bytes()
    assert kept == val and hashlib.md5(kept).hexdigest() == _table()[1].md5
    _assert_coco_layout(root, splits=("val",))


def test_cuts_that_make_progress_do_not_use_up_the_retries(server, tmp_path):
    server.cuts[VAL_PATH] = 3  # each response cut half-way through what is left
    root = _fetch(tmp_path / "coco", server, splits=["val"], retries=1, keep_zips=True)
    starts = [0 if r is None else int(r.removeprefix("bytes=").rstrip("-")) for _, r in server.requests]
    assert len(starts) == 4 and starts == sorted(set(starts)) and starts[0] == 0
    assert (root / "val2017.zip").read_bytes() == ZIPS[VAL_PATH]


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    server.cuts[VAL_PATH] = 1
    root = tmp_path / "coco"
    with pytest.raises(DatasetError, match="run the same command again to resume"):
        _fetch(root, server, splits=["annotations", "val"], retries=0)
    cut_at = int(len(ZIPS[VAL_PATH]) * 0.5)
    assert (root / "val2017.zip.part").stat().st_size == cut_at
    assert (root / "annotations").is_dir() and not (root / "val2017").exists()
    assert not (root / ".val2017.zip.done").exists()

    server.requests.clear()
    _fetch(root, server, splits=["annotations", "val"])
    assert server.requests == [(VAL_PATH, f"bytes={cut_at}-")]  # annotations were done: not fetched again
    _assert_coco_layout(root, splits=("annotations", "val"))


def test_server_without_range_support_starts_over(server, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "val2017.zip.part").write_bytes(b"x" * 100)  # not even the right bytes: must be replaced
    server.honour_range = False
    _fetch(root, server, splits=["val"], keep_zips=True)
    assert server.requests == [(VAL_PATH, "bytes=100-")] and server.statuses == [200]
    assert (root / "val2017.zip").read_bytes() == ZIPS[VAL_PATH]
    _assert_coco_layout(root, splits=("val",))


def test_complete_part_of_unknown_size_is_finished_by_416(server, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    val = ZIPS[VAL_PATH]
    (root / "val2017.zip.part").write_bytes(val)
    _fetch(root, server, splits=["val"], archives=_table(val={"size": None, "md5": None}))
    assert server.requests == [(VAL_PATH, f"bytes={len(val)}-")] and server.statuses == [416]
    _assert_coco_layout(root, splits=("val",))


def test_md5_mismatch_is_an_error_and_the_file_is_not_kept(server, tmp_path):
    root = tmp_path / "coco"
    with pytest.raises(DatasetError, match=r"val2017\.zip: md5 [0-9a-f]{32} is not the published 0{32}"):
        _fetch(root, server, splits=["val"], archives=_table(val={"md5": "0" * 32}))
    assert sorted(p.name for p in root.iterdir()) == []  # no .part, no .zip, no folder, no marker


def test_wrong_size_from_server_is_an_error(server, tmp_path):
    size = len(ZIPS[VAL_PATH]) + 1
    with pytest.raises(DatasetError, match=f"is {size - 1} bytes, expected {size}: not the published file"):
        _fetch(tmp_path / "coco", server, splits=["val"], archives=_table(val={"size": size}))


def test_gives_up_after_retries_that_bring_nothing(server, tmp_path):
    server.cuts[VAL_PATH] = 100
    server.cut_fraction = 0.0  # headers, then the connection closes
    with pytest.raises(DatasetError, match=r"failed 3 times in a row \(connection closed at 0 of \d+ bytes\)"):
        _fetch(tmp_path / "coco", server, splits=["val"], retries=2)
    assert server.paths() == [VAL_PATH] * 3


def test_offline_is_one_line_error(closed_port_url, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "COCO_ARCHIVES", _table())
    with pytest.raises(SystemExit) as exc:
        dataset.main(["--download", "coco", "--root", str(tmp_path / "coco"), "--url-base", closed_port_url])
    message = str(exc.value.code)
    host = closed_port_url.removeprefix("http://")
    assert message.startswith(f"error: cannot reach {host} (") and "--sample" in message
    assert "\n" not in message


def test_offline_with_the_official_url_names_the_server(tmp_path, monkeypatch):
    # No network at all: the resolver fails, the message names images.cocodataset.org.
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: Usage(free=10**12))
    with pytest.raises(SystemExit, match=r"^error: cannot reach images\.cocodataset\.org \(.*name resolution"):
        dataset.main(["--download", "coco", "--root", str(tmp_path / "coco"), "--splits", "annotations"])


def test_cut_unpacking_leaves_no_folder_and_the_rerun_needs_no_network(server, closed_port_url, tmp_path,
                                                                       monkeypatch):
    root = tmp_path / "coco"
    real_extract = zipfile.ZipFile.extract
    calls = []

    def extract_then_fail(self, member, path=None, pwd=None):
        calls.append(member)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C half-way through the folder
        return real_extract(self, member, path, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "extract", extract_then_fail)
    with pytest.raises(KeyboardInterrupt):
        _fetch(root, server, splits=["val"])
    assert sorted(p.name for p in root.iterdir()) == ["val2017.zip"]  # verified zip kept, nothing else

    monkeypatch.setattr(zipfile.ZipFile, "extract", real_extract)
    _fetch(root, closed_port_url, splits=["val"])  # the zip is there: no network needed
    _assert_coco_layout(root, splits=("val",))
    assert not (root / "val2017.zip").exists()


def test_deleted_folder_is_fetched_again(server, tmp_path):
    root = _fetch(tmp_path / "coco", server, splits=["val"])
    for image in (root / "val2017").iterdir():
        image.unlink()
    (root / "val2017").rmdir()
    _fetch(root, server, splits=["val"])
    assert server.paths() == [VAL_PATH, VAL_PATH]
    _assert_coco_layout(root, splits=("val",))


def test_not_enough_disk_space_fails_before_any_request(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: Usage(free=1000))
    with pytest.raises(DatasetError, match="not enough disk space in .* need about .* free"):
        _fetch(tmp_path / "coco", server)
    assert server.requests == []


def test_zip_without_the_expected_folder_is_an_error(server, tmp_path, monkeypatch):
    monkeypatch.setitem(ZIPS, VAL_PATH, _zip({"images/000000000004.jpg": _jpeg(4)}))
    with pytest.raises(DatasetError, match="has no val2017/ folder at its top"):
        _fetch(tmp_path / "coco", server, splits=["val"])
    assert not (tmp_path / "coco" / "images").exists() and not (tmp_path / "coco" / "val2017").exists()


def test_cli_flags():
    args = dataset.parse_args(["--download", "coco"])
    assert (args.root, args.splits, args.keep_zips, args.url_base) == (Path("coco"), ["annotations", "val", "train"],
                                                                       False, None)
    with pytest.raises(SystemExit):
        dataset.parse_args(["--download", "coco", "--sample", "x"])  # one action at a time
    with pytest.raises(SystemExit):
        dataset.parse_args(["--download", "coco", "--splits", "test"])
