"""The promotion gate and the versioned policy history of ``python -m training.follow``.

**The gate** (:func:`compare`) estimates, on logged rounds the candidate was not trained on, the
value of the candidate minus the value of the incumbent, each by doubly robust off-policy
evaluation (Dudík, Langford & Li, 2011; :class:`envs.estimators.DoublyRobust`) with the same
reward model m̂ and the same rounds, so the difference is paired:

    D_i = DR_i(candidate) − DR_i(incumbent)
        = m̂(x_i, c_i) − m̂(x_i, n_i) + (1[A_i = c_i] − 1[A_i = n_i]) · (y_i − m̂(x_i, A_i)) / p_i

with c_i, n_i the two policies' choices, A_i the logged model, p_i its exact logged propensity
and y_i = quality − w_i · cost the reward at the round's own cost weight. D̄ is unbiased for the
difference of values whatever m̂ (the propensities are exact); rounds where both choose alike add
exactly 0. The one-sided lower confidence bound is D̄ − z_(confidence) · s_D / √n (normal
approximation, s_D the sample standard deviation); the candidate is promoted only when that
bound is above ``margin`` and
the candidate's different choices were logged at least ``min_support`` times (:func:`compare`).

**The history** (:class:`PolicyHistory`): every promoted policy is ``versions/vNNNN.pt`` (and its
portable twin ``vNNNN.safetensors``, docs/contracts.md §2.11) with ``versions/vNNNN.json`` (its
artifact version and data fingerprint, the rounds it learned from and the evaluation that admitted
it), all written atomically; ``policy.pt`` beside them is the one in service, replaced atomically
by :meth:`PolicyHistory.install`. Rolling back is installing an earlier version (:func:`rollback`).
:func:`reload_service` tells a running ``serve.py`` to load it (``POST /admin/reload``, §4.7).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from data.outputs import replacing, write_text_atomically
from data.schema import DataError
from envs.estimators import DoublyRobust
from policies.artifact import load_policy
from policies.export import write_twin
from policies.faults import fault_point
from policies.portable import twin_path

#: The admin token's environment variable (the service reads the same one, docs/contracts.md §4.2).
ADMIN_TOKEN_ENV = "ROUTERL_ADMIN_TOKEN"


@dataclass(frozen=True)
class GateResult:
    """One decision of the gate: the paired DR estimate of candidate − incumbent and what it led to."""

    estimate: float  # D̄, reward per query
    lower: float  # one-sided lower bound at ``confidence``
    upper: float  # the symmetric upper bound
    rounds: int  # held-out rounds evaluated
    differing: int  # of them, rounds where the two policies choose differently
    margin: float
    confidence: float
    support: int  # differing rounds logged on the candidate's choice: the only direct evidence on it
    min_support: int
    promoted: bool

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return asdict(self)


def compare(
    candidate: np.ndarray,
    incumbent: np.ndarray,
    predictions: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
    margin: float,
    confidence: float,
    min_support: int = 0,
    max_weight: float | None = None,
) -> GateResult:
    """The gate on n held-out rounds: (n,) choices of both policies, (n, K) m̂, the logged rounds.

    Promoted only when, besides the bound, at least ``min_support`` held-out rounds were logged on
    the candidate's choice where it differs from the incumbent's. Without them D̄ is almost all
    m̂(c) − m̂(n), which favours the candidate (it is the argmax of the same m̂), and the rare rounds
    that would correct it are missing from the sample, so s_D is small too: measured, 26.5% of
    simulations promoted a truly worse policy right after a drift alarm without this rule
    (BENCHMARKS.md, "Learning in production").
    """
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    n = len(actions)
    if n < 2:
        raise ValueError(f"the gate needs at least 2 held-out rounds, got {n}")
    estimator = DoublyRobust(max_weight=max_weight)
    difference = estimator.estimate_round_rewards(
        actions, rewards, propensities, candidate, predictions
    ) - estimator.estimate_round_rewards(actions, rewards, propensities, incumbent, predictions)
    estimate = float(difference.mean())
    half_width = NormalDist().inv_cdf(confidence) * float(difference.std(ddof=1)) / float(np.sqrt(n))
    lower, upper = estimate - half_width, estimate + half_width
    differing = candidate != incumbent
    support = int((differing & (actions == candidate)).sum())
    promoted = bool(lower > margin and support >= min_support)
    return GateResult(
        estimate, lower, upper, n, int(differing.sum()), margin, confidence, support, min_support, promoted
    )


class PolicyHistory:
    """``out/policy.pt`` (the policy in service) and ``out/versions/`` (every version it has been)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out / "versions"
        self.serving = out / "policy.pt"

    def policy_path(self, version: int) -> Path:
        """The policy file of ``version``."""
        return self.folder / f"v{version:04d}.pt"

    def record_path(self, version: int) -> Path:
        """The JSON record of ``version``."""
        return self.folder / f"v{version:04d}.json"

    def add(self, version: int, policy: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Keep the policy file written at ``policy`` as ``version`` (moved), with its record; returns the record.

        The record gets the artifact's ``policy_version`` and ``data_fingerprint`` (what the
        service reports and logs). Both files are replaced atomically; writing a version again
        (a follower restarted after a kill) replaces it with the same decisions.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        loaded = load_policy(policy)
        record = {
            "version": version,
            "policy_version": loaded.version,
            "data_fingerprint": loaded.fingerprint,
            **record,
        }
        twin = twin_path(policy)
        if twin.is_file():  # written beside it by policies.export.save_policy
            os.replace(twin, twin_path(self.policy_path(version)))
        else:  # a policy.pt written before portable twins (docs/contracts.md §2.11)
            write_twin(loaded.module, loaded.metadata, policy, twin_path(self.policy_path(version)))
        os.replace(policy, self.policy_path(version))
        write_text_atomically(self.record_path(version), json.dumps(record, indent=2, sort_keys=True) + "\n")
        return record

    def install(self, version: int) -> Path:
        """Make ``version`` the policy in service: ``policy.pt`` and its twin ``policy.safetensors`` replaced
        atomically by copies of the version's (the twin first, as :func:`policies.export.save_policy` does)."""
        source = self.policy_path(version)
        if not source.is_file():
            known = ", ".join(str(v) for v in self.versions()) or "none"
            raise DataError(f"{self.folder}: no version {version} (versions: {known})")
        if not twin_path(source).is_file():  # a version kept before portable twins
            loaded = load_policy(source)
            write_twin(loaded.module, loaded.metadata, source)
        twin = twin_path(source).read_bytes()
        with replacing(twin_path(self.serving)) as temporary:
            temporary.write_bytes(twin)
        data = source.read_bytes()
        with replacing(self.serving) as temporary:
            temporary.write_bytes(data)
            fault_point("policy-written")
        fault_point("policy-renamed")
        return self.serving

    def versions(self) -> list[int]:
        """The versions kept, in order."""
        return sorted(int(path.stem[1:]) for path in self.folder.glob("v[0-9][0-9][0-9][0-9].pt"))

    def records(self) -> list[dict[str, Any]]:
        """Every version's record, in order."""
        return [
            json.loads(self.record_path(version).read_text())
            for version in self.versions()
            if self.record_path(version).is_file()
        ]


def reload_service(service: str | None, policy: Path, timeout: float = 30.0) -> str:
    """``POST {service}/admin/reload`` with ``policy`` and the admin token; what happened, in words.

    A service that cannot be reached or refuses is not an error of the follower: the policy stays
    installed in ``policy.pt`` (a ``kill -HUP`` of the service, or its next start, loads it), and
    the answer says so.
    """
    if service is None:
        return "not reloaded (no --service)"
    import httpx  # imported here: the follower without a service does not need it

    headers = {}
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(
            f"{service.rstrip('/')}/admin/reload",
            json={"policy": str(policy.resolve())},
            headers=headers,
            timeout=timeout,
        )
    except httpx.HTTPError as error:
        return f"not reloaded ({service} unreachable: {error})"
    if response.status_code != 200:
        return f"not reloaded ({service} answered {response.status_code}: {response.text[:200]})"
    return "reloaded"


def rollback(out: Path, version: int, service: str | None) -> str:
    """Install an earlier ``version`` as the policy in service and reload the service; what happened, in words.

    The rollback is appended to ``out/rollbacks.jsonl``. A running follower keeps learning, and
    its gate compares its next candidates with this policy.
    """
    history = PolicyHistory(out)
    path = history.install(version)
    status = reload_service(service, path)
    with open(out / "rollbacks.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps({"version": version, "service": status}) + "\n")
    return f"version {version} installed as {path}; {status}"
