"""The folders and files routerl writes: atomic replacement, and a marker so that it deletes only its own.

Two promises (docs/contracts.md §3.4):

* **A file is replaced whole or not at all.** :func:`replacing` writes the new content to a
  temporary file beside the old one, syncs it to disk and renames it over the old one
  (``os.replace``, atomic on POSIX), then syncs the folder. A process killed at any moment leaves
  the old file or the new one, never a torn file; a reader (the service reloading ``policy.pt``)
  never sees half a file either.
* **routerl deletes only what it wrote.** Every output folder it creates gets a marker file,
  :data:`MARKER`, first, naming the folder's kind and the entries routerl writes there.
  :func:`claim_output` (``train.py --overwrite``, ``python -m training.search --overwrite``)
  empties an existing folder only if it has a marker of its kind and holds nothing else than
  those entries, temporary files of killed writes and marked folders that are themselves all
  routerl's (an evaluation folder inside a run directory, a search's trials); otherwise it
  deletes nothing and names the file in the way. It also refuses an output folder that is or
  holds one of the run's inputs. :func:`check_output` (``python -m evaluation``, ``python -m
  training.compare``, which replace their files but delete nothing) refuses to replace a file in
  a folder routerl did not mark.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from data.schema import DataError

MARKER = ".routerl-output"
MARKER_FORMAT = 1
_TEMPORARY = ".routerl-tmp-"  # in the name of a file being written by :func:`replacing`

Inputs = Mapping[str | Path, str]  # the files a command reads, {path: what it is}, e.g. {"logs/a.jsonl": "data"}


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder routerl writes: its name (in the marker and in messages) and the entries it writes."""

    name: str  # "run directory", "search directory", ...
    entries: frozenset[str]  # file and folder names directly inside it (a folder is routerl's as a whole)
    overwrite_hint: str = "pass --overwrite"  # what to do about an existing non-empty one


@dataclass(frozen=True)
class Marker:
    """What a folder's marker says: the kind that wrote it and the entries it may hold."""

    kind: str
    entries: frozenset[str]


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without error.

    The temporary file is ``.<stem>.routerl-tmp-XXXXXXXX<suffix>`` (the suffix kept, so that a
    writer that picks its format by extension still does). After the block it is synced, given
    the mode of a newly created file (``0o666 & ~umask``; ``mkstemp`` makes it private) and
    renamed; then the folder is synced, so that the rename survives a crash of the machine. If
    the block raises, the old file stays and the temporary one is removed; if the process is
    killed, the old file stays and the temporary one is left, a routerl entry that
    :func:`claim_output` removes with the rest.
    """
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}{_TEMPORARY}", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
        _sync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replacing`."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename or creation in it is on disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`replacing` (left by a killed write)."""
    return name.startswith(".") and _TEMPORARY in name


def remove_killed_writes(folder: Path) -> None:
    """Delete the temporary files of :func:`replacing` that killed writes left directly in ``folder`` (if it exists).

    They are routerl's and never read: the file each was to replace is still the previous version.
    """
    if folder.is_dir():
        for entry in folder.iterdir():
            if is_temporary(entry.name):
                entry.unlink()


def read_marker(folder: Path) -> Marker | None:
    """The marker of ``folder``, or None if it has none (or one this version cannot read)."""
    try:
        document = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        if document["format"] != MARKER_FORMAT:
            return None
        return Marker(str(document["kind"]), frozenset(str(name) for name in document["entries"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(folder: Path, kind: OutputKind) -> None:
    """Mark ``folder`` as ``kind``'s (atomically: a marker is never torn)."""
    document = {"format": MARKER_FORMAT, "kind": kind.name, "entries": sorted(kind.entries)}
    write_text_atomically(folder / MARKER, json.dumps(document, indent=2) + "\n")


def refuse_inputs_inside(out: Path, inputs: Inputs) -> None:
    """A :class:`DataError` if ``out`` is, or holds, one of ``inputs`` ({path: what}), symbolic links seen through.

    Both the path as written (made absolute) and the path with every link resolved are compared,
    on both sides: a link inside ``out`` to a file elsewhere is inside ``out`` too.
    """
    folders = {Path(os.path.abspath(out)), out.resolve()}
    for path, what in inputs.items():
        places = {Path(os.path.abspath(path)), Path(path).resolve()}
        if any(folder == place or folder in place.parents for folder in folders for place in places):
            raise DataError(f"{out}: the output folder is or holds the {what} {path}; choose one that holds no input")


def claim_output(out: Path, kind: OutputKind, overwrite: bool, inputs: Inputs) -> None:
    """Make ``out`` an empty folder of ``kind``, marked; with ``overwrite``, empty a folder routerl wrote.

    An existing non-empty ``out`` needs ``overwrite``, a marker of ``kind`` and nothing but
    routerl's entries (:func:`routerl_entries`); all of it is checked before anything is deleted,
    and the marker stays until the end (it is rewritten last), so that a killed ``--overwrite``
    can be repeated. A folder holding only a marker counts as empty. ``out`` may not be or hold
    any of ``inputs`` (:func:`refuse_inputs_inside`). Every refusal is a :class:`DataError`.
    """
    refuse_inputs_inside(out, inputs)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(entry.name != MARKER for entry in out.iterdir()):
        if not overwrite:
            raise DataError(f"{out}: {kind.name} exists and is not empty ({kind.overwrite_hint})")
        marker = read_marker(out)
        if marker is None:
            raise DataError(
                f"{out}: not a routerl {kind.name} (no {MARKER} marker), so --overwrite deletes nothing in it; "
                "empty it yourself or choose another output folder"
            )
        if marker.kind != kind.name:
            raise DataError(f"{out}: is a routerl {marker.kind}; choose another output folder for the {kind.name}")
        for entry in routerl_entries(out, marker):
            _remove(entry)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{out}: cannot create the {kind.name}: {error.strerror or error}") from None
    write_marker(out, kind)


def routerl_entries(folder: Path, marker: Marker) -> list[Path]:
    """Every entry of the marked ``folder`` but its marker; a :class:`DataError` names the first routerl did not write.

    routerl's are: the entries the marker lists, temporary files of :func:`replacing`, and
    folders with a marker of their own whose entries are all routerl's (checked all the way down).
    """
    entries = []
    for entry in sorted(folder.iterdir()):
        if entry.name == MARKER:
            continue
        nested = None if entry.is_symlink() or not entry.is_dir() else read_marker(entry)
        if nested is not None:
            routerl_entries(entry, nested)
        elif entry.name not in marker.entries and not is_temporary(entry.name):
            raise DataError(
                f"{entry}: routerl did not write this, and deletes only what it wrote; "
                "move it away or choose another output folder"
            )
        entries.append(entry)
    return entries


def _remove(entry: Path) -> None:
    """Delete a file, link (not what it points to) or folder tree."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def check_output(out: Path, kind: OutputKind) -> None:
    """A :class:`DataError` unless writing ``kind``'s entries into ``out`` replaces only routerl's own files.

    ``out`` may be missing, empty, marked as ``kind``, or an unmarked folder holding none of
    ``kind``'s entries; not a file, and not a folder of another kind (a training run directory
    for an evaluation, say).
    """
    if not out.exists() and not out.is_symlink():
        _check_creatable(out, kind)
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    marker = read_marker(out)
    if marker is not None:
        if marker.kind != kind.name:
            raise DataError(f"{out}: is a routerl {marker.kind}; choose another output folder for the {kind.name}")
        return
    for name in sorted(kind.entries):
        if (out / name).exists() or (out / name).is_symlink():
            raise DataError(
                f"{out / name}: exists, and routerl replaces only files it wrote ({out} has no {MARKER} "
                "marker); choose another output folder"
            )


def _check_creatable(out: Path, kind: OutputKind) -> None:
    """A :class:`DataError` if the nearest existing folder above the missing ``out`` is not a folder."""
    existing = next(parent for parent in Path(os.path.abspath(out)).parents if parent.exists())
    if not existing.is_dir():
        raise DataError(f"{out}: cannot create the {kind.name}: {existing} is not a directory")


def create_output(out: Path, kind: OutputKind) -> None:
    """Create ``out`` after :func:`check_output`; mark it as ``kind``'s if it is new or empty (else it is the user's).

    A non-empty unmarked folder stays unmarked: routerl writes its files there but claims nothing else.
    """
    check_output(out, kind)
    fresh = not out.is_dir() or not any(out.iterdir())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{out}: cannot create the {kind.name}: {error.strerror or error}") from None
    if fresh:
        write_marker(out, kind)
