"""Output folders (docs/contracts.md §3.4): routerl deletes only what it wrote, and replaces its files whole.

``train.py --overwrite`` (and ``python -m training.search --overwrite``) empties only a folder that
routerl marked, holding nothing but routerl's entries, and never a folder that is or holds an
input; ``python -m evaluation`` and ``python -m training.compare`` replace no file they did not
write; an output path that is a file is one line and exit status 2 for every command. The
policy, the reports and the figure are written to a temporary file and renamed, so a process
killed before the rename leaves the old file whole (and the temporary one is routerl's to remove).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, run_python

from data.outputs import MARKER, claim_output, create_output, is_temporary, replacing
from data.schema import DataError
from evaluation.__main__ import EVALUATION_FOLDER
from evaluation.__main__ import main as evaluation_main
from evaluation.report import markdown
from policies.artifact import load_policy
from training.cli import main as train_main
from training.compare import main as compare_main
from training.config import load_config
from training.run import RunResult, prepare_directory, train
from training.search import SEARCH_DIRECTORY
from training.search import main as search_main

DEMO = ROOT / "data" / "demo" / "demo.jsonl"
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"


def _snapshot(folder: Path) -> dict[str, str | bytes]:
    """Every entry under ``folder``: a file's bytes, a link's target, a folder as ``"dir"``."""
    entries: dict[str, str | bytes] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            entries[name] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            entries[name] = "dir"
        else:
            entries[name] = path.read_bytes()
    return entries


def _assert_one_line_error(code: int, stderr: str, program: str) -> None:
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"{program}: error:") and "Traceback" not in stderr


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``train.py --quiet ARGS`` in this process: its exit status and stderr."""
    code = train_main(["--quiet", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("out_is", ["the data's folder", "a folder above it"])
def test_overwrite_never_deletes_the_training_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out_is: str
) -> None:
    """The issue's case: ``--data D/mylog.jsonl --out D --overwrite`` deleted the log and its neighbour."""
    logs = tmp_path / "logs"
    logs.mkdir()
    data = logs / "mylog.jsonl"
    shutil.copyfile(DEMO, data)
    (logs / "notes.txt").write_text("mine\n")
    out = logs if out_is == "the data's folder" else tmp_path
    before = _snapshot(tmp_path)
    code, stderr = _train(capsys, "--data", str(data), "--out", str(out), "--overwrite")
    _assert_one_line_error(code, stderr, "train.py")
    assert f"the data {data}" in stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("what", ["configuration", "data", "linked data", "price table"])
def test_overwrite_refuses_a_run_directory_that_holds_an_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    """Even in a run directory routerl wrote, an input under one of its names (config.yaml, rejected.jsonl) stays."""
    out = tmp_path / "run"
    prepare_directory(out, overwrite=False)
    shutil.copyfile(DEFAULT_CONFIG, out / "config.yaml")
    shutil.copyfile(DEMO, out / "rejected.jsonl")
    (out / "mylog.jsonl").symlink_to(DEMO)
    shutil.copyfile(ROOT / "configs" / "prices.yaml", out / "prices.yaml")
    given = {
        "configuration": ["--config", str(out / "config.yaml"), "--data", str(DEMO)],
        "data": ["--data", str(out / "rejected.jsonl")],
        "linked data": ["--data", str(out / "mylog.jsonl")],
        "price table": ["--data", str(DEMO), "--prices", str(out / "prices.yaml")],
    }[what]
    before = _snapshot(tmp_path)
    code, stderr = _train(capsys, *given, "--out", str(out), "--overwrite")
    _assert_one_line_error(code, stderr, "train.py")
    assert f"the {what.removeprefix('linked ')} " in stderr
    assert _snapshot(tmp_path) == before


def test_overwrite_empties_a_run_directory_routerl_wrote(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_directory(out, overwrite=False)
    (out / "config.yaml").write_text("name: x\n")
    (out / "report.json").write_text("{}\n")
    (out / ".policy.routerl-tmp-x1y2.pt").write_bytes(b"a write killed before its rename")
    (out / "tb").mkdir()
    (out / "tb" / "events.out.tfevents.1").write_bytes(b"events")
    evaluation = out / "eval-demo"  # python -m evaluation's default folder, inside the run directory
    create_output(evaluation, EVALUATION_FOLDER)
    (evaluation / "report.md").write_text("# report\n")
    prepare_directory(out, overwrite=True)
    assert [path.name for path in out.iterdir()] == [MARKER]
    prepare_directory(out, overwrite=False)  # a folder holding only its marker counts as empty


def test_search_overwrite_empties_its_trials_run_directories(tmp_path: Path) -> None:
    out = tmp_path / "search"
    claim_output(out, SEARCH_DIRECTORY, overwrite=False, inputs={})
    (out / "search.json").write_text("{}\n")
    prepare_directory(out / "trial-000", overwrite=False)
    (out / "trial-000" / "report.md").write_text("# report\n")
    claim_output(out, SEARCH_DIRECTORY, overwrite=True, inputs={})
    assert [path.name for path in out.iterdir()] == [MARKER]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("a user's file", "notes.txt: routerl did not write this"),
        ("a user's file in a nested evaluation folder", "mine.txt: routerl did not write this"),
        ("no marker", f"not a routerl run directory (no {MARKER} marker)"),
        ("a search directory", "is a routerl search directory"),
        ("a user's file under a routerl name", "not a routerl run directory"),
    ],
)
def test_overwrite_deletes_nothing_unless_routerl_wrote_everything(tmp_path: Path, case: str, message: str) -> None:
    out = tmp_path / "run"
    if case == "a search directory":
        create_output(out, SEARCH_DIRECTORY)
        (out / "search.md").write_text("# search\n")
    elif case in ("no marker", "a user's file under a routerl name"):
        out.mkdir()
        (out / ("config.yaml" if case == "no marker" else "report.md")).write_text("mine\n")
    else:
        prepare_directory(out, overwrite=False)
        (out / "config.yaml").write_text("name: x\n")
        if case == "a user's file":
            (out / "notes.txt").write_text("mine\n")
        else:
            create_output(out / "eval-demo", EVALUATION_FOLDER)
            (out / "eval-demo" / "mine.txt").write_text("mine\n")
    before = _snapshot(tmp_path)
    with pytest.raises(DataError, match=re.escape(message)):
        prepare_directory(out, overwrite=True)
    assert _snapshot(tmp_path) == before


def test_search_overwrite_refuses_a_folder_holding_its_search_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    search_file = _search_file(tmp_path / "searches")
    before = _snapshot(tmp_path)
    code = search_main([str(search_file), "--out", str(search_file.parent), "--overwrite"])
    _assert_one_line_error(code, capsys.readouterr().err, "training.search")
    assert _snapshot(tmp_path) == before


def _search_file(folder: Path) -> Path:
    """A one-trial search of the default run."""
    folder.mkdir(parents=True, exist_ok=True)
    search_file = folder / "search.yaml"
    search_file.write_text(f"base: {DEFAULT_CONFIG}\ngrid: {{seed: [0]}}\nset: {{evaluation.bootstrap: 0}}\n")
    return search_file


PROGRAMS: dict[str, Callable[[Path, Path, Path], tuple[str, int]]] = {
    "train.py": lambda out, policy, tmp: ("train.py", train_main(["--quiet", "--out", str(out)])),
    "evaluation": lambda out, policy, tmp: (
        "evaluation",
        evaluation_main([str(policy), "--data", str(DEMO), "--out", str(out), "--bootstrap", "0"]),
    ),
    "training.compare": lambda out, policy, tmp: (
        "compare",
        compare_main(["--config", str(DEFAULT_CONFIG), "--out", str(out), "--folds", "2", "--agents", "linucb"]),
    ),
    "training.search": lambda out, policy, tmp: (
        "training.search",
        search_main([str(_search_file(tmp / "searches")), "--out", str(out)]),
    ),
}


@pytest.mark.parametrize("program", list(PROGRAMS))
@pytest.mark.parametrize("out_is", ["a file", "under a file"])
def test_an_output_path_that_is_a_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_policy: Path, program: str, out_is: str
) -> None:
    """It was a ``NotADirectoryError`` (or ``FileExistsError``) traceback, exit status 1."""
    file = tmp_path / "afile"
    file.write_text("mine\n")
    name, code = PROGRAMS[program](file if out_is == "a file" else file / "sub", demo_policy, tmp_path)
    _assert_one_line_error(code, capsys.readouterr().err, name)
    assert file.read_text() == "mine\n"


@pytest.mark.parametrize(("program", "written"), [("evaluation", "report.md"), ("training.compare", "compare.md")])
def test_evaluation_and_compare_replace_no_file_they_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_policy: Path, program: str, written: str
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / written).write_text("my notes\n")
    name, code = PROGRAMS[program](out, demo_policy, tmp_path)
    _assert_one_line_error(code, capsys.readouterr().err, name)
    assert (out / written).read_text() == "my notes\n"


def test_evaluation_refuses_the_training_run_directory(
    capsys: pytest.CaptureFixture[str], demo_run: RunResult
) -> None:
    before = _snapshot(demo_run.directory)
    name, code = PROGRAMS["evaluation"](demo_run.directory, demo_run.directory / "policy.pt", demo_run.directory)
    _assert_one_line_error(code, capsys.readouterr().err, name)
    assert _snapshot(demo_run.directory) == before


def test_policy_reports_and_figure_are_replaced_by_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of the run's export goes through a temporary file renamed into place."""
    renamed: list[str] = []
    rename = os.replace

    def spy(source: str | Path, target: str | Path) -> None:
        renamed.append(Path(target).name)
        rename(source, target)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "run"
    prepare_directory(out, overwrite=False)
    train(load_config(DEFAULT_CONFIG, ["evaluation.bootstrap=0"]), out, quiet=True)
    assert {MARKER, "policy.pt", "report.html", "report.json", "report.md", "frontier.png"} <= set(renamed)


KILLED_WRITE = """
import json, os, signal, sys
from pathlib import Path
from evaluation.report import write_markdown
from policies.artifact import load_policy
from policies.export import PolicyMetadata, save_policy
kind, target, source = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
policy = load_policy(source) if kind == "policy" else None
report = json.loads(Path(source).read_text()) if kind == "report" else None
os.replace = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)  # killed just before the rename
if policy is not None:
    save_policy(policy.module, PolicyMetadata(**policy.metadata), target)
else:
    write_markdown(report, target)
"""


@pytest.mark.parametrize("kind", ["policy", "report"])
def test_a_write_killed_before_its_rename_leaves_the_old_file_whole(
    tmp_path: Path, demo_run: RunResult, kind: str
) -> None:
    out = tmp_path / "run"
    prepare_directory(out, overwrite=False)
    target = out / ("policy.pt" if kind == "policy" else "report.md")
    target.write_bytes(b"the previous version\n")
    source = demo_run.directory / ("policy.pt" if kind == "policy" else "report.json")
    done = run_python("-c", KILLED_WRITE, kind, str(target), str(source), timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert target.read_bytes() == b"the previous version\n"
    leftovers = [path for path in out.iterdir() if path.name not in (MARKER, target.name)]
    assert all(is_temporary(path.name) for path in leftovers)
    (temporary,) = [path for path in leftovers if path.suffix == target.suffix]
    if kind == "policy":  # the new file was whole; the kill came at the first rename, its portable twin's
        assert load_policy(temporary).metadata["data_fingerprint"] == demo_run.report["data"]["fingerprint"]
        assert sorted(path.suffix for path in leftovers) == [".pt", ".safetensors"]
    else:
        assert temporary.read_text() == markdown(demo_run.report)
    prepare_directory(out, overwrite=True)  # the temporary file is routerl's, removed with the rest
    assert [path.name for path in out.iterdir()] == [MARKER]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the writer failed")
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]
    assert target.read_text() == "old\n"
