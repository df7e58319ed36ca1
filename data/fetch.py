"""``python -m data fetch DATASET``: download a public routing dataset into a local folder, verified.

Why: ``configs/routerbench.yaml`` needs the RouterBench logs, which the repository does not ship.
This command downloads them from their public upstream, pinned to one commit and checked file by
file against sha256 checksums written here, so every user trains on the same bytes.

How (per file): a file already in place with the pinned checksum is kept as it is; one with another
checksum is an error and is left untouched (routerl never deletes a file it did not write). Otherwise
the bytes stream into ``NAME.part`` with a progress bar; an interrupted download keeps its ``.part``,
and the next run asks only for the missing bytes (an HTTP ``Range: bytes=N-`` request; a server that
answers with the whole file instead restarts the ``.part``). A complete ``.part`` is verified and
renamed into place; one whose checksum differs is discarded (it is this command's own file) and the
command fails. Every failure (offline, HTTP error, checksum mismatch, unwritable folder) is one line
on stderr and exit status 2.

Datasets:

- ``routerbench``: the zero-shot RouterBench subset (Hu et al. 2024, "RouterBench: A Benchmark for
  Multi-LLM Routing System", arXiv:2403.12031) as redistributed by RouterDC (Chen et al. 2024,
  github.com/shuhao02/RouterDC, ``datasets/routerbench_zs``): the training splits of three tasks,
  11 models, in RouterBench's wide CSV format (docs/contracts.md §1.4). Research use, with citation.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from data.schema import DataError

EXTERNAL = Path(__file__).resolve().parent / "external"
"""Where downloads go by default: ``data/external/DATASET`` in the project (git-ignored); the configs
point there (``configs/routerbench.yaml``: ``data.path: ../data/external/routerbench``)."""

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 30.0
PROGRAM = "python -m data fetch"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name under the dataset's base URL, size in bytes and sha256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A downloadable dataset: the base URL its files sit under (pinned to one commit), its files, its source."""

    name: str
    base_url: str
    files: tuple[RemoteFile, ...]
    source: str


ROUTERDC_COMMIT = "1963d6874b69c94309ea37a34d7d4cd6f527e7c5"  # RouterDC's "update the code of routerbench", 2025-01-17

DATASETS: dict[str, Dataset] = {
    "routerbench": Dataset(
        name="routerbench",
        base_url=f"https://raw.githubusercontent.com/shuhao02/RouterDC/{ROUTERDC_COMMIT}/datasets/routerbench_zs",
        files=(
            RemoteFile(
                "arc_challenge_train.csv", 2_579_191, "59e044850520be06f74dd9766b9ab4621d783f7fa5269d7dda118b9abb115d78"
            ),
            RemoteFile("mbpp_train.csv", 3_128_944, "2a985adc3a3016b5ae4d62229722cdff9ece58aa1338206a6b12e4957304452b"),
            RemoteFile(
                "winograde_train.csv", 1_623_934, "f6d54caab59bebb9facf3407c515a07a20faf4e75c639b7e91988ceaf312906a"
            ),
        ),
        source=(
            "RouterBench (Hu et al. 2024, arXiv:2403.12031), zero-shot subset as redistributed by RouterDC "
            f"(github.com/shuhao02/RouterDC at {ROUTERDC_COMMIT[:12]}): research use, cite both"
        ),
    ),
}


def default_destination(dataset: str) -> Path:
    """The folder ``python -m data fetch DATASET`` fills when ``--dest`` is not given."""
    return EXTERNAL / dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``python -m data fetch`` arguments to ``parser``."""
    parser.add_argument("dataset", choices=sorted(DATASETS), help="the dataset to download")
    parser.add_argument("--dest", type=Path, help="folder to download into (default data/external/DATASET)")
    parser.add_argument(
        "--base-url",
        help="download from this URL instead of the pinned upstream (a mirror serving the same file names); "
        "the checksums still apply",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """Download ``args.dataset``; a failure is one line on stderr and status 2."""
    dataset = DATASETS[args.dataset]
    destination = args.dest if args.dest is not None else default_destination(dataset.name)
    base_url = (args.base_url or dataset.base_url).rstrip("/")
    try:
        fetched = [fetch_file(file, f"{base_url}/{file.name}", destination, quiet=args.quiet) for file in dataset.files]
    except DataError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    downloaded = sum(fetched)
    print(f"{dataset.name}: {len(dataset.files)} files in {destination} ({downloaded} downloaded), sha256 verified")
    print(f"source: {dataset.source}")
    return 0


def fetch_file(file: RemoteFile, url: str, destination: Path, quiet: bool = False) -> bool:
    """Put ``file`` into ``destination`` from ``url``, verified; True if it was downloaded, False if already there.

    Raises :class:`DataError` (one line) when the file in place has another checksum, the server cannot
    be reached or answers with an error, the download stops short, the bytes do not match, or the
    folder cannot be written.
    """
    target = destination / file.name
    partial = destination / f"{file.name}.part"
    try:
        if target.exists():
            found = sha256_of(target)
            if found != file.sha256:
                raise DataError(
                    f"{target}: exists with sha256 {found}, not the pinned {file.sha256}; "
                    "move it away to download it again"
                )
            return False
        if not partial.exists() or partial.stat().st_size < file.size:
            _download(url, partial, file, quiet)
        size, found = partial.stat().st_size, sha256_of(partial)
        if (size, found) != (file.size, file.sha256):
            partial.unlink()  # this command's own file: a wrong one must not be resumed
            raise DataError(
                f"{url}: served {size} bytes with sha256 {found}, not the pinned {file.size} bytes with "
                f"sha256 {file.sha256}; the download was discarded"
            )
        os.replace(partial, target)
    except OSError as error:
        raise DataError(f"{error.filename or destination}: {error.strerror or error}") from None
    return True


def _download(url: str, partial: Path, file: RemoteFile, quiet: bool) -> None:
    """Append ``url``'s missing bytes to ``partial`` (a ``Range`` request from its current size), with a progress bar.

    A ``200`` answer to a ranged request (the server ignored ``Range``) or a ``206`` starting elsewhere
    restarts ``partial`` from the first byte. Nothing is written before the server answers. Network
    failures, and a body shorter than its ``Content-Length`` (a dropped connection), become a one-line
    :class:`DataError`; the bytes received so far stay in ``partial`` for the next run.
    """
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "routerl-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = _open(request)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with response, partial.open("ab") as sink:
        if offset and _range_start(response) != offset:
            offset = sink.truncate(0)
        declared = response.headers.get("Content-Length", "")
        try:
            with tqdm(
                total=file.size, initial=offset, unit="B", unit_scale=True, desc=file.name, disable=quiet
            ) as progress:
                received = _copy(response, sink, progress)
            if declared.isdigit() and received < int(declared):
                raise ConnectionError("the connection closed early")
        except (http.client.HTTPException, OSError) as error:
            raise DataError(
                f"{url}: download stopped at {sink.tell()} of {file.size} bytes ({error}); "
                "run the same command again to resume"
            ) from None


def _open(request: urllib.request.Request) -> http.client.HTTPResponse:
    """The server's answer to ``request``; an HTTP error or an unreachable server is a one-line :class:`DataError`."""
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        raise DataError(f"{request.full_url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        raise DataError(
            f"cannot reach {request.full_url}: {reason} (offline? run the same command again when connected)"
        ) from None
    return response


def _copy(response: http.client.HTTPResponse, sink: BinaryIO, progress: tqdm) -> int:
    """Stream ``response``'s body into ``sink`` chunk by chunk, advancing ``progress``; the bytes copied."""
    copied = 0
    while chunk := response.read(CHUNK_BYTES):
        sink.write(chunk)
        progress.update(len(chunk))
        copied += len(chunk)
    return copied


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte a ``206 Partial Content`` answer carries (from ``Content-Range``); None for any other answer."""
    if response.status != 206:
        return None
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def sha256_of(path: Path) -> str:
    """The sha256 of ``path``'s bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()
