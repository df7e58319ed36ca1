"""Energy per call (issue 22): ``energy_wh`` validated like every column, and the table's estimate (data.energy)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_data_validation import PRICES, bad, good_rows, read_rejected, write_jsonl

from data.energy import DEFAULT_ENERGY, EnergyTable, energy_status, with_energy_estimates
from data.loading import load_log
from data.routing_log import RoutingLog
from data.schema import DataError
from training.cli import main as train_main

#: The default table's hardware, written out again: FLOP per joule = peak × utilization / (W × share × PUE).
WATTS_DRAWN = 1275 * 0.7 * 1.2
PREFILL_FLOP_PER_JOULE = 9.89e14 * 0.4 / WATTS_DRAWN
DECODE_FLOP_PER_JOULE = 9.89e14 * 0.1 / WATTS_DRAWN


def by_hand(active_billions: float, prompt: int, completion: int) -> float:
    """The documented estimate: 2 FLOP per active parameter per token, over FLOP per joule, in Wh."""
    flop = 2 * active_billions * 1e9
    return flop * (prompt / PREFILL_FLOP_PER_JOULE + completion / DECODE_FLOP_PER_JOULE) / 3600


def with_energy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with a distinct energy per outcome."""
    return [row | {"energy_wh": 0.01 * (number + 1)} for number, row in enumerate(rows)]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (json.dumps(bad(energy_wh=-0.5)), "energy_wh=-0.5 must be finite and >= 0"),
        (json.dumps(bad(energy_wh="a lot")), "energy_wh='a lot' is not a number"),
        ('{"query_id": "x", "query": "t", "model": "a", "quality": 1, "cost": 0, "energy_wh": NaN}', "energy_wh=nan"),
        (
            '{"query_id": "x", "query": "t", "model": "a", "quality": 1, "cost": 0, "energy_wh": Infinity}',
            "energy_wh=inf",
        ),
    ],
)
@pytest.mark.parametrize("columnar", [False, True])
def test_a_bad_energy_is_rejected_as_bad_energy_and_counted(
    line: str, detail: str, columnar: bool, tmp_path: Path
) -> None:
    lines = [json.dumps(row) for row in with_energy(good_rows())]
    lines.insert(3, line)
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_log(path, prices=PRICES, columnar=columnar)
    assert loaded.log.stats.rejected_by_reason == {"bad energy": 1}
    [record] = read_rejected(loaded, tmp_path)
    assert (record["line"], record["reason"]) == (4, "bad energy")
    assert record["detail"].startswith(detail)
    assert loaded.log.n_queries == 3  # the good rows are all kept


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_logged_energy_is_kept_per_outcome_alike_by_both_readers(suffix: str, tmp_path: Path) -> None:
    rows = with_energy(good_rows())
    path = tmp_path / f"log{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    per_row, columnar = (load_log(path, columnar=flag).log for flag in (False, True))
    expected = np.array([[0.01, 0.02], [0.03, 0.04], [0.05, 0.06]])
    for log in (per_row, columnar):
        assert log.energy_wh is not None and log.energy_estimated is None
        np.testing.assert_allclose(log.energy_wh, expected, rtol=0, atol=1e-15)
    assert (
        per_row.fingerprint
        == columnar.fingerprint
        == load_log(write_jsonl(tmp_path / "b.jsonl", good_rows())).log.fingerprint
    )
    subset = per_row.subset(np.array([2, 0]))
    np.testing.assert_array_equal(subset.energy_wh, expected[[2, 0]])


def small_table(tmp_path: Path, text: str | None = None) -> Path:
    """An energy table of two dense models (7B, 70B) and the default table's hardware."""
    default = DEFAULT_ENERGY.read_text(encoding="utf-8").split("\nmodels:")[0]
    path = tmp_path / "energy.yaml"
    path.write_text(text or default + "\nmodels:\n  a: {parameters: 7}\n  b: {parameters: 70}\n", encoding="utf-8")
    return path


def tokens_log(
    energy: np.ndarray | None, prompt: np.ndarray, completion: np.ndarray, models: tuple[str, ...]
) -> RoutingLog:
    n, k = prompt.shape
    return RoutingLog(
        models=models,
        query_ids=np.array([str(i) for i in range(n)], dtype=object),
        queries=[str(i) for i in range(n)],
        quality=np.full((n, k), 0.5),
        cost=np.full((n, k), 0.001),
        energy_wh=energy,
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def test_the_estimate_fills_only_missing_cells_the_table_can_price_and_marks_them(tmp_path: Path) -> None:
    """Logged cells stay; a model outside the table, or a row without tokens, stays unknown (not an error)."""
    table = EnergyTable.load(small_table(tmp_path))
    prompt = np.array([[100.0, 100.0, 10.0], [50.0, np.nan, 10.0]])
    completion = np.array([[200.0, 300.0, 10.0], [20.0, 40.0, 10.0]])
    logged = np.array([[np.nan, 0.5, np.nan], [np.nan, np.nan, np.nan]])
    filled = with_energy_estimates(tokens_log(logged, prompt, completion, ("a", "b", "c")), table)
    assert filled.energy_wh is not None and filled.energy_estimated is not None
    assert filled.energy_wh[0, 0] == pytest.approx(by_hand(7, 100, 200), rel=1e-12)
    assert filled.energy_wh[1, 0] == pytest.approx(by_hand(7, 50, 20), rel=1e-12)
    assert filled.energy_wh[0, 1] == 0.5  # logged: kept
    assert np.isnan(filled.energy_wh[1, 1])  # no prompt_tokens
    assert np.isnan(filled.energy_wh[:, 2]).all()  # not in the table
    np.testing.assert_array_equal(filled.energy_estimated, [[True, False, False], [True, False, False]])
    assert energy_status(filled, table) == {
        "a": "estimated",
        "b": "unavailable: not logged, and rows without prompt_tokens and completion_tokens cannot be estimated",
        "c": "unavailable: not in the energy table and not logged",
    }
    complete = with_energy_estimates(
        tokens_log(logged, np.nan_to_num(prompt, nan=5.0), completion, ("a", "b", "c")), table
    )
    assert energy_status(complete, table)["b"] == "logged and estimated"
    assert complete.energy_wh is not None and complete.energy_wh[1, 1] == pytest.approx(by_hand(70, 5, 40), rel=1e-12)


def test_a_log_without_energy_or_a_model_the_table_knows_is_returned_unchanged(tmp_path: Path) -> None:
    table = EnergyTable.load(small_table(tmp_path))
    log = tokens_log(None, np.ones((2, 1)), np.ones((2, 1)), ("unknown",))
    assert with_energy_estimates(log, table) is log
    assert energy_status(log, table) == {"unknown": "unavailable: not in the energy table and not logged"}


def test_the_mixture_of_experts_uses_its_active_parameters(tmp_path: Path) -> None:
    path = small_table(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + "  moe: {parameters: 46.7, active_parameters: 12.9}\n")
    estimate = EnergyTable.load(path).energy_wh("moe", np.array([541.0]), np.array([3.0]))
    assert estimate is not None and estimate[0] == pytest.approx(by_hand(12.9, 541, 3), rel=1e-12)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("  a: {parameters: 7, active_parameters: 9}\n", "active_parameters 9.0 exceed parameters 7.0"),
        ("  a: {parameters: -7}\n", "models.a.parameters: Input should be greater than 0"),
        ("  a: {parameters: 7, size: big}\n", "models.a.size"),
    ],
)
def test_a_malformed_energy_table_is_one_error_naming_the_file_and_the_field(
    models: str, message: str, tmp_path: Path
) -> None:
    default = DEFAULT_ENERGY.read_text(encoding="utf-8").split("\nmodels:")[0]
    path = small_table(tmp_path, default + "\nmodels:\n" + models)
    with pytest.raises(DataError, match=r"energy\.yaml: invalid energy table") as error:
        EnergyTable.load(path)
    assert message in str(error.value)
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match="needs the mappings 'hardware' and 'models'"):
        EnergyTable.load(path)


def test_routeprofile_energy_is_estimated_as_computed_by_hand(routeprofile: Path) -> None:
    """The default table on RouteProfile's own rows: every model estimated, three rows recomputed from the file."""
    table = EnergyTable.load_or_default(None)
    log = with_energy_estimates(load_log(routeprofile).log, table)
    assert set(energy_status(log, table).values()) == {"estimated"}
    assert log.energy_wh is not None
    active = {"qwen2.5-7b-instruct": 7.61, "mixtral-8x7b-instruct-v0.1": 12.9, "llama-3.3-70b-instruct": 70.6}
    rows = [json.loads(line) for line in routeprofile.read_text(encoding="utf-8").splitlines()[:40]]
    checked = 0
    for row in rows:
        if row["model"] in active:
            expected = by_hand(active[row["model"]], row["prompt_tokens"], row["completion_tokens"])
            query, model = log.query_ids.tolist().index(row["query_id"]), log.models.index(row["model"])
            assert log.energy_wh[query, model] == pytest.approx(expected, rel=1e-12), row["model"]
            checked += 1
    assert checked >= 3


def test_a_bad_energy_table_stops_train_py_in_one_line_before_it_learns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = small_table(tmp_path, "hardware: {}\nmodels: {}\n")
    assert train_main(["--quiet", "--out", str(tmp_path / "run"), "--set", f"data.energy={table}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"train.py: error: {table}: invalid energy table: hardware.peak_flop_per_second: Field required; "
        "hardware.power_watts: Field required; hardware.power_share: Field required; hardware.pue: Field required; "
        "hardware.prefill_utilization: Field required; hardware.decode_utilization: Field required"
    ]
    assert not (tmp_path / "run" / "report.json").exists()
