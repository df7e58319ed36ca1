"""The vectorised data fingerprint (data/fingerprint.py) is bit-identical to its per-line definition.

The reference below is the implementation before vectorisation (one f-string and two ``repr``
per line), kept verbatim as the specification.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

import data.fingerprint as fp
from data.fingerprint import canonical_lines, fingerprint, float_reprs, update_digest
from data.routing_log import RoutingLog

_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def reference_lines(
    query_ids: Sequence[str],
    queries: Sequence[str],
    models: Sequence[str],
    quality: Sequence[Sequence[float]],
    cost: Sequence[Sequence[float]],
) -> str:
    names = [_ENCODE(model) for model in models]
    lines: list[str] = []
    for query_id, text, qualities, costs in zip(query_ids, queries, quality, cost):
        prefix = f"[{_ENCODE(query_id)},{_ENCODE(text)},"
        lines.extend(f"{prefix}{name},{q!r},{c!r}]\n" for name, q, c in zip(names, qualities, costs) if q == q)
    return "".join(lines)


def reference_fingerprint(log: RoutingLog) -> str:
    digest = hashlib.sha256()
    model_order = sorted(range(log.n_models), key=lambda k: log.models[k])
    names = [log.models[k] for k in model_order]
    ids = log.query_ids
    rows = sorted(range(log.n_queries), key=lambda i: str(ids[i]))
    for start in range(0, len(rows), 4096):
        block = rows[start : start + 4096]
        digest.update(
            reference_lines(
                [str(ids[row]) for row in block],
                [log.queries[row] for row in block],
                names,
                log.quality[block][:, model_order].tolist(),
                log.cost[block][:, model_order].tolist(),
            ).encode("utf-8")
        )
    return digest.hexdigest()


# --------------------------------------------------------------------------- float repr


def random_doubles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform bit patterns: every exponent, both signs, subnormals; finite only."""
    values = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64).view(np.float64)
    return values[np.isfinite(values)]


def edge_values() -> np.ndarray:
    powers = np.array([float(f"1e{k}") for k in range(-330, 309)])  # 1e-330 .. 1e-324 are 0.0
    finite = powers[powers > 0]
    with np.errstate(over="ignore"):
        scaled = [finite * factor for factor in (2.0, 5.0, 1.5, 9.999999999999999, 1.2345678901234567)]
    tiny = np.finfo(np.float64).smallest_subnormal
    boundaries = [1e-5, 1e-4, 9.999999999999999e-5, 1.0000000000000002e-4, 9.999999999999999e15, 1e16]
    boundaries += [9999999999999998.0, 1.0000000000000002e16, 2.0**53, 2.0**53 + 2, 2.0**63, 123456789012345.0]
    boundaries += [0.1, 0.2, 0.30000000000000004, 1 / 3, 2 / 3, 100.0, 1e22, 1e23, 9.007199254740993e15]
    boundaries += [tiny, 2 * tiny, 3 * tiny, np.finfo(np.float64).tiny, np.finfo(np.float64).max]
    base = np.concatenate(
        [powers, np.nextafter(finite, 0.0), np.nextafter(finite, np.inf), *scaled, np.array(boundaries)]
    )
    base = base[np.isfinite(base)]
    return np.concatenate([base, -base, [0.0, -0.0]])


@functools.cache
def value_sets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261128)
    costs = np.exp(rng.uniform(np.log(1e-7), np.log(1e-1), 200_000))  # full 17-digit doubles
    near_powers = 10.0 ** rng.integers(-320, 308, 100_000) * rng.choice([1.0, 0.9999999999999999, 3.0], 100_000)
    return {
        "random bit patterns": random_doubles(rng, 300_000),
        "uniform [0, 1]": rng.random(200_000),
        "costs 1e-7 .. 1e-1": costs,
        "costs rounded to 4 digits": np.array([float(f"{c:.4g}") for c in costs[:50_000].tolist()]),
        "integers as floats": rng.integers(-(10**17), 10**17, 100_000).astype(np.float64),
        "small integers as floats": np.arange(-5000, 5000, dtype=np.float64),
        "subnormals, lowest": np.arange(1, 50_001, dtype=np.int64).view(np.float64),
        "subnormals, random": rng.integers(1, 2**52, 50_000, dtype=np.int64).view(np.float64),
        "near powers of ten": near_powers,
        "edges": edge_values(),
    }


@pytest.mark.parametrize("name", list(value_sets()))
def test_float_reprs_equal_repr(name: str) -> None:
    values = value_sets()[name]
    assert np.isfinite(values).all() and len(values) > 0
    expected = [repr(v) for v in values.tolist()]
    got = float_reprs(values).to_pylist()
    mismatches = [(e, g) for e, g in zip(expected, got) if e != g]
    assert len(got) == len(expected) and not mismatches, mismatches[:10]


def test_notation_from_significant_digits_and_exponent() -> None:
    """``_notation`` (fixed notation rebuilt from digits, and the scientific mantissa) in all its cases."""
    sets = value_sets()
    values = np.abs(np.concatenate([sets[name][:20_000] for name in sets]))
    values = values[values > 0]
    significands, exponents, expected = [], [], []
    for text in map(repr, values.tolist()):
        mantissa, _, power = text.partition("e")
        whole, _, fraction = mantissa.partition(".")
        digits = whole + fraction
        significands.append(int(digits.strip("0")))
        exponents.append(len(whole) - 1 - (len(digits) - len(digits.lstrip("0"))) + int(power or 0))
        expected.append(mantissa)
    got = fp._notation(np.array(significands), np.array(exponents)).to_pylist()
    assert got == expected


def test_float_reprs_specials_and_suffix() -> None:
    values = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1e-05, 1e16, 5e-324])
    expected = [repr(v) + "]\n" for v in values.tolist()]
    assert float_reprs(values, "]\n").to_pylist() == expected
    assert float_reprs(np.array([])).to_pylist() == []
    assert float_reprs([0.5, 1e-07]).to_pylist() == ["0.5", "1e-07"]


def test_pyarrow_agrees_here_and_the_fallback_is_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fp._vectorised_reprs_agree()  # else every fingerprint here is computed with the slow repr
    values = value_sets()["random bit patterns"][:1000]
    monkeypatch.setattr(fp, "_vectorised_reprs_agree", lambda: False)
    assert float_reprs(values, ",").to_pylist() == [repr(v) + "," for v in values.tolist()]


# --------------------------------------------------------------------------- canonical lines


TEXTS = [
    "plain text",
    "",
    'quote " and backslash \\ and slash /',
    "newline\nreturn\rtab\tbell\x07nul\x00escape\x1b unit\x1f space\x20",
    "del \x7f, next line \x85, line separator \u2028, paragraph \u2029",
    "accents éàü, CJK 漢字, emoji 🙂, astral 𝔸, combining e\u0301, bom \ufeff",
    "\\u00e9 is not escaped twice",
    "</script> & <b>",
]


def small_log(n: int, n_models: int, seed: int, *, bandit: bool = False) -> RoutingLog:
    rng = np.random.default_rng(seed)
    quality = rng.choice([0.0, 1.0, 0.5, 0.25, 1 / 3, 0.1 + 0.2], size=(n, n_models))
    cost = rng.choice([0.0, 1e-05, 3.4e-05, 0.00012242, 2.5e-07, 1.0, 17.0], size=(n, n_models))
    distinct = rng.random((n, n_models)) < 0.5  # full 17-digit doubles in half of the cells
    cost[distinct] = np.exp(rng.uniform(np.log(1e-8), np.log(10.0), int(distinct.sum())))
    if bandit:
        action = rng.integers(0, n_models, n)
        hidden = np.ones((n, n_models), dtype=bool)
        hidden[np.arange(n), action] = False
        hidden[: max(1, n // 10)] = True  # queries without any known outcome: no line
        quality[hidden] = np.nan
        cost[hidden] = np.nan
    ids = [f"q{rng.integers(0, 10**6):06d}" for _ in range(n)]
    ids[: len(TEXTS)] = ["é-1", "z-1", "Z-1", "𝔸", 'q"1', "q\\2", "q\n3", ""][: min(n, len(TEXTS))]
    queries = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(n)]
    models = ("model-b", "Model-A", "modèle-ç", 'm"q', "a/b")[:n_models]
    return RoutingLog(
        models=models,
        query_ids=np.array(ids, dtype=object),
        queries=queries,
        quality=quality,
        cost=cost,
        feedback="bandit" if bandit else "full",
    )


def sorted_arguments(log: RoutingLog) -> tuple[list[str], list[str], list[str], np.ndarray, np.ndarray]:
    order = sorted(range(log.n_queries), key=lambda i: str(log.query_ids[i]))
    model_order = sorted(range(log.n_models), key=lambda k: log.models[k])
    return (
        [str(log.query_ids[i]) for i in order],
        [log.queries[i] for i in order],
        [log.models[k] for k in model_order],
        log.quality[order][:, model_order],
        log.cost[order][:, model_order],
    )


@pytest.mark.parametrize("bandit", [False, True])
def test_canonical_lines_equal_the_definition(bandit: bool) -> None:
    ids, texts, models, quality, cost = sorted_arguments(small_log(500, 5, seed=1, bandit=bandit))
    expected = reference_lines(ids, texts, models, quality.tolist(), cost.tolist())
    assert canonical_lines(ids, texts, models, quality.tolist(), cost.tolist()) == expected  # nested lists
    assert canonical_lines(ids, texts, models, quality, cost) == expected  # arrays
    assert canonical_lines(pa.array(ids), pa.chunked_array([texts[:7], texts[7:]]), models, quality, cost) == expected
    digest = hashlib.sha256()
    update_digest(digest, ids, texts, models, quality, cost)
    assert digest.hexdigest() == hashlib.sha256(expected.encode("utf-8")).hexdigest()


def test_canonical_lines_edge_cells() -> None:
    nan, inf = float("nan"), float("inf")
    quality = [[nan, nan], [1.0, -0.0], [0.0, nan], [inf, 1e-05]]
    cost = [[nan, 1.0], [nan, 0.0], [-0.0, 2.0], [1e16, -inf]]  # a cost can be NaN where quality is known
    args = (["a", "b", "c", "d"], ["x", "y\n", "", "🙂"], ["m1", "m2"], quality, cost)
    assert canonical_lines(*args) == reference_lines(*args)
    assert canonical_lines([], [], ["m"], np.zeros((0, 1)), np.zeros((0, 1))) == ""
    assert canonical_lines(["a"], ["x"], ["m"], [[nan]], [[nan]]) == ""
    with pytest.raises(ValueError):
        canonical_lines(["a", "b"], ["x"], ["m"], [[1.0]], [[1.0]])
    with pytest.raises(ValueError):
        canonical_lines(["a"], ["x"], ["m", "n"], [[1.0]], [[1.0]])


# --------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize("bandit", [False, True])
def test_fingerprint_equals_the_definition(bandit: bool) -> None:
    log = small_log(3000, 4, seed=2, bandit=bandit)
    assert fingerprint(log) == reference_fingerprint(log)


def test_fingerprint_does_not_depend_on_chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    log = small_log(400, 5, seed=3, bandit=True)
    expected = reference_fingerprint(log)
    monkeypatch.setattr(fp, "_CHUNK", 7)
    monkeypatch.setattr(fp, "_LINE_BYTES", 300)
    monkeypatch.setattr(fp, "_DEDUPLICATION_PROBE", 3)
    assert fingerprint(log) == expected
    monkeypatch.setattr(fp, "_CHUNK", 1000)
    monkeypatch.setattr(fp, "_LINE_BYTES", 1)
    monkeypatch.setattr(fp, "_TEXT_SIZE", 60)  # some texts are longer: steps of one query
    assert fingerprint(log) == expected
    ids, texts, models, quality, cost = sorted_arguments(log)
    lines = reference_lines(ids, texts, models, quality.tolist(), cost.tolist()).encode("utf-8")
    arrow_ids, arrow_texts = pa.array(ids), pa.chunked_array([texts[:50], texts[50:]])
    for query_ids, queries in ((ids, texts), (arrow_ids, arrow_texts)):
        digest = hashlib.sha256()
        update_digest(digest, query_ids, queries, models, quality, cost)
        assert digest.hexdigest() == hashlib.sha256(lines).hexdigest()


def test_fingerprint_with_repeated_and_distinct_values() -> None:
    """Columns formatted once per distinct value (repeats) and value by value (no repeats)."""
    rng = np.random.default_rng(4)
    n = 40_000
    log = RoutingLog(
        models=("b", "a", "c"),
        query_ids=np.array([f"id-{i:05d}" for i in rng.permutation(n)], dtype=object),
        queries=[f"text {i % 97}" for i in range(n)],
        quality=rng.integers(0, 2, (n, 3)).astype(np.float64),
        cost=np.exp(rng.uniform(np.log(1e-7), np.log(1e-1), (n, 3))),
    )
    assert fingerprint(log) == reference_fingerprint(log)


def test_fingerprint_orders_ids_by_code_point_and_keeps_duplicates_in_row_order() -> None:
    ids = ["b", "é", "Z", "a", "𝔸", "a", "\x7f", "ab", "a\x00"]
    n = len(ids)
    log = RoutingLog(
        models=("m",),
        query_ids=np.array(ids, dtype=object),
        queries=[f"t{i}" for i in range(n)],
        quality=np.arange(n, dtype=np.float64).reshape(n, 1),
        cost=np.zeros((n, 1)),
    )
    assert fingerprint(log) == reference_fingerprint(log)


def test_fingerprint_leaves_the_query_strings_as_they_were() -> None:
    """No UTF-8 copy cached inside the log's non-ASCII strings (memory that would last with the log)."""
    log = small_log(50, 2, seed=5)
    sizes = [sys.getsizeof(text) for text in log.queries]
    fingerprint(log)
    assert [sys.getsizeof(text) for text in log.queries] == sizes
    pa.array(log.queries)  # what it avoids
    assert [sys.getsizeof(text) for text in log.queries] != sizes
