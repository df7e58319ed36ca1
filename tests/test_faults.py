"""Fault injection at every durable write: killed at a named point, then rerun or restarted, nothing is lost.

``ROUTERL_FAULT=<point>[:<n>]`` makes a process SIGKILL itself at a named point of a write
(policies/faults.py; the points are listed there and in docs/contracts.md §3.7 and §5.4). The
checkpoints' points are tested in tests/test_resume.py; here:

* **The run directory.** ``train.py`` is killed at each point of each of its files (config.yaml,
  rejected.jsonl, frontier.png, policy.pt, report.html, report.json, report.md), one kill after another in one
  run directory, each time rerun as an operator would (``--resume`` when it has a config.yaml,
  else ``--overwrite``). After each kill the file being written is the previous version (or
  absent) with a complete new one beside it, or the new one in place; ``report.md`` exists only
  once everything else is in place. The last rerun's directory equals an uninterrupted run's,
  with no temporary file left.
* **The decision log.** The real ``serve.py`` is killed at each point of a decision and of a
  feedback, and restarted on the same log; the client resends the feedback the service died on.
  Read back, the log holds every acknowledged decision exactly once, joined with its feedback
  once; a decision written but never answered is pending (its id never reached a client), one
  never written is absent, a resent feedback that had been written is rejected as ``duplicate
  outcome``, and a record torn by a crash is rejected alone.

Each run of ``train.py`` is a fork of one process that has the heavy libraries (torch, numpy,
pandas, matplotlib, ...) loaded and no module of routerl, so that each fork imports routerl and
reads its own ``ROUTERL_FAULT``: the same ``train.py``, without paying for those imports seventeen
times.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import ROOT
from test_serve import _start_server, _stop

from data.loading import load_log
from data.outputs import is_temporary
from policies.artifact import load_policy
from policies.faults import DECISION_LOG_POINTS, FAULT_VARIABLE, RUN_DIRECTORY_POINTS, RUN_FILES

# ----------------------------------------------------------------------------- train.py

FILE_NAMES = dict(zip(RUN_FILES, ("config.yaml", "rejected.jsonl", "frontier.png", "policy.pt", "report.html",
                                  "report.json", "report.md"), strict=True))
BAD_ROWS = ['{"query_id": "bad-1", "query": "q", "model": "m", "quality": 2.5, "cost": 0.001}', "{not json"]

FORKER = r"""
import json, os, runpy, sys, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot, numpy, pandas, pyarrow, scipy.special, stable_baselines3, torch.utils.tensorboard, yaml
for line in sys.stdin:
    request = json.loads(line)
    child = os.fork()
    if child == 0:
        if request["fault"]:
            os.environ[request["variable"]] = request["fault"]
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(output, 1)
        os.dup2(output, 2)
        sys.argv = ["train.py", *request["argv"]]
        code = 1
        try:
            runpy.run_path("train.py", run_name="__main__")
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
"""


class Trainer:
    """Runs ``train.py --quiet ARGS`` to its end or its kill, forked from one process (module docstring)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORKER], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, *args: str, fault: str | None = None) -> tuple[int, str]:
        """The exit status (negative: the signal that killed it) and output of ``train.py --quiet ARGS``."""
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"argv": ["--quiet", *args], "fault": fault, "variable": FAULT_VARIABLE, "output": str(self.output)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        status = self.process.stdout.readline()
        assert status, f"the forking process died: {self.process.wait()}"
        return int(status), self.output.read_text(errors="replace")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    running = Trainer(tmp_path_factory.mktemp("trainer") / "output.txt")
    yield running
    running.close()


@pytest.fixture(scope="module")
def data_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The demo log's first 1,500 rows (300 queries) and two bad ones (rejected.jsonl has lines); no bootstrap."""
    log = tmp_path_factory.mktemp("data") / "log.jsonl"
    rows = (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines()[:1500]
    log.write_text("\n".join(rows + BAD_ROWS) + "\n", encoding="utf-8")
    return ["--data", str(log), "--set", "evaluation.bootstrap=0"]


@pytest.fixture(scope="module")
def uninterrupted(trainer: Trainer, data_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, output = trainer.run("--out", str(out), *data_args)
    assert code == 0, output
    assert len((out / "rejected.jsonl").read_text().splitlines()) == len(BAD_ROWS)
    return out


def _inodes(out: Path) -> dict[str, int]:
    """The run directory's files (no temporaries): name → inode (a rename puts a new inode in place)."""
    if not out.is_dir():
        return {}
    files = [entry for entry in out.iterdir() if entry.is_file() and not is_temporary(entry.name)]
    return {entry.name: entry.stat().st_ino for entry in files}


def _assert_same_file(path: Path, expected: Path) -> None:
    """``path`` is the uninterrupted run's ``expected``: the same bytes; for a policy, the same scores and metadata."""
    if expected.suffix != ".pt":
        assert path.read_bytes() == expected.read_bytes(), path
        return
    policy, reference = load_policy(path), load_policy(expected)
    queries = reference.metadata["models"] + ["What is 2+2?", "Write a haiku about the sea."]
    for weight in (0.0, reference.default_cost_weight, 10 * reference.default_cost_weight):
        assert torch.equal(policy.scores(queries, weight), reference.scores(queries, weight)), path
    assert {**policy.metadata, "created_at": None} == {**reference.metadata, "created_at": None}, path


def _rerun(out: Path, data_args: list[str]) -> list[str]:
    """What an operator runs after a kill: ``--resume`` when the run has its config.yaml, else start over."""
    return ["--resume", str(out)] if (out / "config.yaml").is_file() else ["--out", str(out), "--overwrite", *data_args]


def _kill_at(point: str, args: list[str], trainer: Trainer, out: Path, uninterrupted: Path) -> None:
    """Run ``train.py ARGS`` killed at ``point``; the file it was writing is old-or-new and whole."""
    before = _inodes(out)
    code, output = trainer.run(*args, fault=point)
    assert code == -signal.SIGKILL, f"{point}: {output}"
    name = FILE_NAMES[point.rsplit("-", 1)[0]]
    after = _inodes(out)
    temporaries = [entry for entry in out.iterdir() if is_temporary(entry.name)]
    if point.endswith("-written"):
        assert after.get(name) == before.get(name), f"{point}: {name} replaced before the new one was complete"
        assert len(temporaries) == 1, f"{point}: {temporaries}"  # this write's; the earlier kills' are removed
        (temporary,) = temporaries
        assert temporary.name.startswith(f".{Path(name).stem}.") and temporary.suffix == Path(name).suffix
        _assert_same_file(temporary, uninterrupted / name)  # the new file, complete
    else:
        assert after[name] != before.get(name) and not temporaries, f"{point}: {name} not renamed into place"
        _assert_same_file(out / name, uninterrupted / name)
    assert (out / "report.md").exists() == (point == "report-md-renamed"), f"{point}: report.md and an unfinished run"


def test_train_killed_at_every_run_directory_point_then_rerun_gives_the_uninterrupted_run(
    trainer: Trainer, data_args: list[str], uninterrupted: Path, tmp_path: Path
) -> None:
    """Killed before its config.yaml exists it starts over; then, once the directory is whole, at every point."""
    out = tmp_path / "run"
    _kill_at("config-written", ["--out", str(out), *data_args], trainer, out, uninterrupted)
    for point in ("report-md-renamed", *RUN_DIRECTORY_POINTS[:-1]):
        _kill_at(point, _rerun(out, data_args), trainer, out, uninterrupted)
    code, output = trainer.run(*_rerun(out, data_args))
    assert code == 0, output
    assert sorted(entry.name for entry in out.iterdir()) == sorted(entry.name for entry in uninterrupted.iterdir())
    for name in FILE_NAMES.values():
        _assert_same_file(out / name, uninterrupted / name)
    assert not [path for path in out.rglob("*") if is_temporary(path.name)]


# ----------------------------------------------------------------------------- serve.py


@dataclass
class Client:
    """What a client of the service was told: acknowledged decisions and feedback, and what went unanswered."""

    decided: dict[str, str] = field(default_factory=dict)  # query text -> query_id, for every 200 of /route
    fed: dict[str, float] = field(default_factory=dict)  # query_id -> quality, for every 200 of /feedback
    unanswered: list[str] = field(default_factory=list)  # query texts of the /route requests the service died on
    owed: dict[str, float] = field(default_factory=dict)  # feedback the service died on: resent after a restart
    sent: int = 0  # queries routed so far (each query's text is unique)

    def route(self, http: httpx.Client) -> str | None:
        """Route a new query; its query_id, or None when the service died on it."""
        self.sent += 1
        text = f"query number {self.sent}: what is {self.sent} squared?"
        try:
            response = http.post("/route", json={"query": text})
        except httpx.TransportError:
            self.unanswered.append(text)
            return None
        assert response.status_code == 200, response.text
        self.decided[text] = response.json()["query_id"]
        return self.decided[text]

    def feedback(self, http: httpx.Client, query_id: str, quality: float) -> bool:
        """Send a feedback; whether it was acknowledged (else it is owed, to be resent)."""
        try:
            response = http.post("/feedback", json={"query_id": query_id, "quality": quality, "cost": 0.001})
        except httpx.TransportError:
            self.owed[query_id] = quality
            return False
        assert response.status_code == 200, response.text
        self.fed[query_id] = quality
        self.owed.pop(query_id, None)
        return True

    def serve(self, http: httpx.Client, rounds: int) -> bool:
        """Resend what is owed, then route queries, every third left without feedback; whether the service lived."""
        for owed_id, quality in list(self.owed.items()):
            if not self.feedback(http, owed_id, quality):
                return False
        for round_ in range(rounds):
            query_id = self.route(http)
            if query_id is None:
                return False
            if round_ % 3 != 2 and not self.feedback(http, query_id, round(0.1 * (self.sent % 10), 1)):
                return False
        return True


def test_service_killed_at_every_decision_log_point_then_restarted_loses_nothing_and_counts_nothing_twice(
    demo_policy: Path, tmp_path: Path
) -> None:
    log, client = tmp_path / "decisions.jsonl", Client()
    points: tuple[str | None, ...] = (*DECISION_LOG_POINTS, None)
    for life, point in enumerate(points):
        folder = tmp_path / f"life-{life}"
        folder.mkdir()
        env = {FAULT_VARIABLE: f"{point}:2"} if point else {}
        running = _start_server(demo_policy, folder, "--decision-log", str(log), env=env)
        try:
            with httpx.Client(base_url=running.base_url, timeout=30) as http:
                lived = client.serve(http, rounds=6)
            assert lived == (point is None), f"{point}: {(folder / 'serve.stderr.log').read_text()}"
            if point is not None:
                assert running.process.wait(timeout=30) == -signal.SIGKILL, point
        finally:
            _stop(running.process)
        if point == "feedback-written":  # a crash in the middle of a record tears it; the restart ends the line
            with log.open("a", encoding="utf-8") as file:
                file.write('{"query_id": "torn", "quality": 0.')
    _assert_nothing_lost_nothing_twice(log, client)


def _assert_nothing_lost_nothing_twice(log: Path, client: Client) -> None:
    """Every acknowledged decision once, joined with its feedback once; the unanswered absent or pending."""
    decision_start, decision_written = client.unanswered  # the /route requests of the first two lives
    assert not client.owed
    loaded = load_log(log)
    rows = loaded.log
    assert Counter(rows.query_ids.tolist()) == Counter(list(client.fed))  # each acknowledged feedback: one row
    for query_id, quality in zip(rows.query_ids.tolist(), np.nanmax(rows.quality, axis=1), strict=True):
        assert quality == client.fed[query_id]
    unfed = set(client.decided.values()) - set(client.fed)
    assert rows.stats.pending == len(unfed) + 1  # and the decision written but never answered
    assert rows.stats.rejected_by_reason == {"duplicate outcome": 1, "malformed line": 1}
    decided: Counter[str] = Counter()
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "policy_version" in record:
            decided[record["query"]] += 1
    assert all(decided[text] == 1 for text in client.decided), decided
    assert decided[decision_start] == 0 and decided[decision_written] == 1
    assert sum(decided.values()) == len(client.decided) + 1
