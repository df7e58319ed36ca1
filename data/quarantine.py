"""Quarantine: every rejected outcome row is kept, counted by reason and written to ``rejected.jsonl``.

The invariant the readers keep is ``rows_read == rows_accepted + rows_rejected`` (docs/contracts.md §1).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.outputs import replacing
from data.schema import RejectReason, StrictModeError


@dataclass(frozen=True)
class Rejection:
    """One rejected outcome row: where it was, why, and what it said."""

    file: str
    position: int  # 1-based line (JSONL) or data row (CSV, Parquet; header excluded)
    locator: str  # "line" or "row"
    reason: RejectReason
    detail: str
    content: Any  # the raw line (str) when it could not be parsed, else the parsed row (dict)

    def to_json(self) -> dict[str, Any]:
        """The ``rejected.jsonl`` record: file, line or row, reason, detail and content."""
        return {
            "file": self.file,
            self.locator: self.position,
            "reason": self.reason.value,
            "detail": self.detail,
            "content": self.content,
        }


@dataclass
class Quarantine:
    """Collects rejections; under ``strict`` the first one raises :class:`StrictModeError`."""

    strict: bool = False
    rejections: list[Rejection] = field(default_factory=list)

    def reject(
        self,
        file: str,
        position: int,
        locator: str,
        reason: RejectReason,
        detail: str,
        content: Any,
    ) -> None:
        """Record one rejected outcome row."""
        rejection = Rejection(file, position, locator, reason, detail, content)
        if self.strict:
            raise StrictModeError(
                f"{file}: {locator} {position}: {reason.value}: {detail} (--strict stops at the first bad row)"
            )
        self.rejections.append(rejection)

    @property
    def count(self) -> int:
        """How many outcome rows were rejected."""
        return len(self.rejections)

    def by_reason(self) -> dict[str, int]:
        """Rejected counts keyed by reason, most frequent first."""
        return dict(Counter(r.reason.value for r in self.rejections).most_common())

    def unpriced_models(self) -> list[str]:
        """The models of rows rejected as ``no price for model``, sorted: what --prices must add."""
        return sorted(
            {
                str(r.content.get("model"))
                for r in self.rejections
                if r.reason is RejectReason.NO_PRICE and isinstance(r.content, dict)
            }
        )

    def write(self, path: Path, written: Callable[[], object] | None = None) -> None:
        """Write every rejection as one JSON line (an empty file when nothing was rejected), atomically.

        The file is strict JSON: a NaN or infinite number in a rejected row is written as the
        string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``. It goes through
        :func:`data.outputs.replacing`, so a process killed meanwhile leaves the previous file or
        the new one, whole. ``written``, if given, is called when the new file is complete and not
        yet renamed into place: the caller's fault point (``data`` imports no layer above it, so
        it cannot name one of :mod:`policies.faults` itself).
        """
        with replacing(path) as temporary:
            with open(temporary, "w", encoding="utf-8") as out:
                for rejection in self.rejections:
                    record = rejection.to_json()
                    try:
                        line = json.dumps(record, ensure_ascii=False, default=str, allow_nan=False)
                    except ValueError:
                        line = json.dumps(_finite(record), ensure_ascii=False, default=str, allow_nan=False)
                    out.write(line + "\n")
            if written is not None:
                written()


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON spelling as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
