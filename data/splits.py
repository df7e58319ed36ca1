"""Train / validation / test splits by query_id, stable when data is appended (docs/contracts.md §1).

A query's split depends only on ``blake2b(f"{seed}:{query_id}")`` mapped to [0, 1): appending
queries never moves an existing one. ``--split time`` instead orders queries by timestamp and
cuts at the same fractions (train on the past, test on the future).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.routing_log import RoutingLog
from data.schema import DataError

SplitKind = Literal["hash", "time"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class SplitFractions:
    """Shares of queries per split: >= 0, train and test > 0, summing to 1.

    A test share of 0 is refused rather than taken to mean "no held-out evaluation": every
    report's metrics are held out. A policy trained on every query is ``train.py --refit-all``'s,
    after the held-out evaluation, and the report says so (docs/contracts.md §1.9).
    """

    train: float = 0.6
    validation: float = 0.1
    test: float = 0.3

    def __post_init__(self) -> None:
        shares = (self.train, self.validation, self.test)
        if self.test == 0:
            raise DataError(
                f"split fractions {shares}: the test share (data.fractions.test) must be > 0, since the "
                "report's metrics are measured on held-out test queries; to export a policy trained on all "
                "the data, keep a test split and pass train.py --refit-all (it refits on every query after "
                "the evaluation)"
            )
        if min(shares) < 0 or self.train <= 0 or self.test <= 0 or abs(sum(shares) - 1.0) > 1e-9:
            raise DataError(f"split fractions must be >= 0 (train, test > 0) and sum to 1, got {shares}")


@dataclass(frozen=True)
class Splits:
    """Row indices of each split into the log they were made from."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def counts(self) -> dict[str, int]:
        """Queries per split."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def hash_unit(query_ids: np.ndarray, seed: int) -> np.ndarray:
    """Each id's position in [0, 1): the first 8 bytes of blake2b("seed:id") over 2**64."""
    values = np.empty(len(query_ids), dtype=np.float64)
    for i, query_id in enumerate(query_ids.tolist()):
        digest = hashlib.blake2b(f"{seed}:{query_id}".encode(), digest_size=8).digest()
        values[i] = int.from_bytes(digest, "big") / 2.0**64
    return values


def split(log: RoutingLog, fractions: SplitFractions, seed: int, kind: SplitKind = "hash") -> Splits:
    """Split ``log``'s queries; ``kind="time"`` needs timestamps on every query."""
    if kind == "hash":
        position = hash_unit(log.query_ids, seed)
    elif kind == "time":
        if log.timestamps is None:
            raise DataError("--split time needs a 'timestamp' on every query of the log")
        order = np.argsort(log.timestamps, kind="stable")
        position = np.empty(log.n_queries)
        position[order] = (np.arange(log.n_queries) + 0.5) / max(log.n_queries, 1)
    else:
        raise DataError(f"unknown split kind {kind!r}; expected 'hash' or 'time'")
    train_end = fractions.train
    validation_end = fractions.train + fractions.validation
    return Splits(
        train=np.flatnonzero(position < train_end),
        validation=np.flatnonzero((position >= train_end) & (position < validation_end)),
        test=np.flatnonzero(position >= validation_end),
    )
