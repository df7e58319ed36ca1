"""``python -m data fetch routerbench`` end to end, against a local mirror on 127.0.0.1.

The real upstream (raw.githubusercontent.com) cannot be reached from the test machines, so a small
HTTP server in a thread serves ``../shared/data/routerbench``'s copies (byte-identical to the pinned
upstream files) under ``--base-url``; it honours ``Range: bytes=N-`` like the upstream does, and can
cut a response short or ignore ``Range`` to exercise the resume paths. Every fetch runs as a user
runs it: ``python -m data fetch ...`` in a child process.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from conftest import ROOT, run_python, run_train

from data.fetch import DATASETS, default_destination
from training.config import load_config

ROUTERBENCH = DATASETS["routerbench"]
FIRST = ROUTERBENCH.files[0]


@dataclass
class Mirror:
    """What the local server serves and what it was asked: ``files`` by name, each request's name and ``Range``."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: int | None = None  # the next response sends only this many body bytes, then drops the connection
    honour_range: bool = True


class _MirrorHandler(BaseHTTPRequestHandler):
    """GET ``/NAME`` from the mirror's files: 200, or 206 with ``Content-Range`` for ``Range: bytes=N-``."""

    mirror: Mirror

    def do_GET(self) -> None:
        name, wanted = self.path.lstrip("/"), self.headers.get("Range")
        self.mirror.requests.append((name, wanted))
        body = self.mirror.files.get(name)
        if body is None:
            self.send_error(404)
            return
        ranged = re.fullmatch(r"bytes=(\d+)-", wanted or "") if self.mirror.honour_range else None
        start = int(ranged.group(1)) if ranged else 0
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:] if self.mirror.cut_after is None else body[start : start + self.mirror.cut_after]
        self.mirror.cut_after = None
        self.wfile.write(sent)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) serving ``Mirror.files``, shut down after the test."""
    served = Mirror()
    handler = type("Handler", (_MirrorHandler,), {"mirror": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def shared_copies(routerbench: Path) -> dict[str, bytes]:
    """The three pinned RouterBench files, read from ``../shared/data/routerbench``."""
    return {file.name: (routerbench / file.name).read_bytes() for file in ROUTERBENCH.files}


def fetch(dest: Path, base_url: str, *flags: str) -> CompletedProcess[str]:
    """``python -m data fetch routerbench --dest DEST --base-url URL FLAGS`` in a child process."""
    return run_python("-m", "data", "fetch", "routerbench", "--dest", str(dest), "--base-url", base_url, *flags)


def one_error_line(done: CompletedProcess[str]) -> str:
    """The single stderr line of a failed fetch (exit 2), without its ``python -m data fetch: error:`` prefix."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("python -m data fetch: error: "), done.stderr
    return done.stderr.removeprefix("python -m data fetch: error: ").strip()


def test_the_routerbench_config_defaults_to_the_fetched_folder() -> None:
    config = load_config(ROOT / "configs" / "routerbench.yaml", [])
    assert Path(config.data.path) == default_destination("routerbench") == ROOT / "data" / "external" / "routerbench"


def test_fetched_files_are_the_pinned_ones_and_train_with_the_config_default(
    mirror: Mirror, shared_copies: dict[str, bytes], tmp_path: Path
) -> None:
    """A copy of the project layout (configs/routerbench.yaml, data/external/routerbench) trains without --data."""
    mirror.files = shared_copies
    project = tmp_path / "project"
    dest = project / "data" / "external" / "routerbench"
    done = fetch(dest, mirror.url)
    assert done.returncode == 0, done.stderr
    assert f"routerbench: 3 files in {dest} (3 downloaded), sha256 verified" in done.stdout
    for file in ROUTERBENCH.files:
        assert (dest / file.name).read_bytes() == shared_copies[file.name]
        assert file.name in done.stderr and "100%" in done.stderr  # the progress bars
    assert sorted(path.name for path in dest.iterdir()) == sorted(file.name for file in ROUTERBENCH.files)

    asked = len(mirror.requests)
    again = fetch(dest, mirror.url, "--quiet")
    assert again.returncode == 0 and "(0 downloaded)" in again.stdout and len(mirror.requests) == asked

    (project / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "routerbench.yaml", project / "configs" / "routerbench.yaml")
    out = tmp_path / "run"
    trained = run_train(
        "--config", str(project / "configs" / "routerbench.yaml"), "--out", str(out), "--set", "evaluation.bootstrap=0"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    data = json.loads((out / "report.json").read_text())["data"]
    assert Path(data["path"]) == dest
    assert len(data["models"]) == 11 and data["rows_read"] == (1039 + 299 + 887) * 11


def test_an_interrupted_download_resumes_from_where_it_stopped(
    mirror: Mirror, shared_copies: dict[str, bytes], tmp_path: Path
) -> None:
    mirror.files, mirror.cut_after = shared_copies, 1_000_000
    dest = tmp_path / "routerbench"
    line = one_error_line(fetch(dest, mirror.url, "--quiet"))
    assert f"stopped at 1000000 of {FIRST.size} bytes" in line and "again to resume" in line
    assert (dest / f"{FIRST.name}.part").stat().st_size == 1_000_000 and not (dest / FIRST.name).exists()

    done = fetch(dest, mirror.url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert mirror.requests[:2] == [(FIRST.name, None), (FIRST.name, "bytes=1000000-")]
    assert (dest / FIRST.name).read_bytes() == shared_copies[FIRST.name]
    assert not list(dest.glob("*.part"))


def test_a_server_that_ignores_range_restarts_the_partial_file(
    mirror: Mirror, shared_copies: dict[str, bytes], tmp_path: Path
) -> None:
    """A 200 answer to a ranged request is the whole file: the .part starts over instead of being appended to."""
    mirror.files, mirror.honour_range = shared_copies, False
    dest = tmp_path / "routerbench"
    dest.mkdir()
    (dest / f"{FIRST.name}.part").write_bytes(b"x" * 1000)  # a stale partial that does not match the file
    done = fetch(dest, mirror.url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert mirror.requests[0] == (FIRST.name, "bytes=1000-")
    assert (dest / FIRST.name).read_bytes() == shared_copies[FIRST.name]


def test_a_checksum_mismatch_is_one_line_and_keeps_nothing(mirror: Mirror, tmp_path: Path) -> None:
    """The right size but other bytes: exit 2, the file named with both checksums, the download discarded."""
    mirror.files = {file.name: bytes(file.size) for file in ROUTERBENCH.files}
    dest = tmp_path / "routerbench"
    line = one_error_line(fetch(dest, mirror.url, "--quiet"))
    assert f"{mirror.url}/{FIRST.name}: served {FIRST.size} bytes with sha256" in line
    assert f"not the pinned {FIRST.size} bytes with sha256 {FIRST.sha256}" in line and "discarded" in line
    assert list(dest.iterdir()) == []


def test_a_file_in_place_with_another_checksum_is_left_untouched(mirror: Mirror, tmp_path: Path) -> None:
    dest = tmp_path / "routerbench"
    dest.mkdir()
    (dest / FIRST.name).write_bytes(b"my own file\n")
    line = one_error_line(fetch(dest, mirror.url, "--quiet"))
    assert line.startswith(f"{dest / FIRST.name}: exists with sha256 ") and "move it away" in line
    assert (dest / FIRST.name).read_bytes() == b"my own file\n" and mirror.requests == []


def test_an_http_error_is_one_line(mirror: Mirror, tmp_path: Path) -> None:
    line = one_error_line(fetch(tmp_path / "routerbench", mirror.url, "--quiet"))
    assert line == f"{mirror.url}/{FIRST.name}: HTTP 404 Not Found"


def test_offline_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """Connection refused (nothing listens on the port) stands for any unreachable upstream."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = tmp_path / "routerbench"
    line = one_error_line(fetch(dest, f"http://127.0.0.1:{port}", "--quiet"))
    assert line.startswith(f"cannot reach http://127.0.0.1:{port}/{FIRST.name}: ") and "offline?" in line
    assert not dest.exists()
