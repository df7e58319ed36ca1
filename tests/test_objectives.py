"""The report speaks every objective (issue 22): quality against USD, latency, energy and carbon, side by side.

A four-query log with a known trade-off, each number of the ``objectives`` section checked by hand:
models A (cheap, small) and B (dear, large); on queries 0 and 1 both answer (quality 1), on 2 and 3
only B. The router sends everything to B at cost weight 0, routes perfectly (A on 0–1, B on 2–3) at
0.2, and sends everything to A at 10.

    per call       USD   latency ms      Wh
    A              1     100, 100, 100, 100     0.1, 0.1, 0.3, 0.3
    B              3     400, 400, 600, 600     1.0, 1.0, 2.0, 2.0
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, synthetic_log
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data.energy import EnergyTable, with_energy_estimates
from data.loading import load_log
from data.routing_log import RoutingLog
from evaluation.__main__ import main as evaluation_main
from evaluation.evaluate import EvaluationConfig, EvaluationPlan, evaluate
from evaluation.objectives import objectives_report, tensorboard_scalars
from evaluation.report import markdown
from training.run import RunResult

EASY, HARD = [0, 1], [2, 3]
INTENSITY = 400.0  # gCO2e per kWh


def trade_off_log(energy: bool = True) -> RoutingLog:
    quality = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    return synthetic_log(
        quality,
        np.tile([1.0, 3.0], (4, 1)),
        latency_ms=np.array([[100.0, 400.0], [100.0, 400.0], [100.0, 600.0], [100.0, 600.0]]),
        energy_wh=np.array([[0.1, 1.0], [0.1, 1.0], [0.3, 2.0], [0.3, 2.0]]) if energy else None,
    )


def router(weight: float) -> np.ndarray:
    """All B below 0.1, perfect routing below 1, all A above."""
    if weight < 0.1:
        return np.ones(4, dtype=np.int64)
    return np.array([0, 0, 1, 1]) if weight < 1 else np.zeros(4, dtype=np.int64)


def report_of(log: RoutingLog, table: EnergyTable) -> dict[str, Any]:
    config = EvaluationConfig(bootstrap=0, grid_intensity=INTENSITY)
    baselines = {"always A": lambda weight: np.zeros(4, dtype=np.int64)}
    plan = EvaluationPlan(config, seed=0, cost_weight=0.2, weights=np.array([0.0, 0.2, 10.0]), baselines=baselines)
    evaluation = evaluate(log, router, plan)
    return {"frontier": evaluation.sections["frontier"], "objectives": objectives_report(log, evaluation, plan, table)}


@pytest.fixture(scope="module")
def table() -> EnergyTable:
    return EnergyTable.load_or_default(None)


def test_each_router_is_measured_on_every_objective(table: EnergyTable) -> None:
    section = report_of(trade_off_log(), table)["objectives"]
    assert {name: entry["source"] for name, entry in section["objectives"].items()} == {
        "usd": "logged",
        "latency": "logged",
        "energy": "logged",
        "carbon": "logged energy × grid intensity",
    }
    policy = section["routers"]["policy"]  # perfect routing: latencies 100, 100, 600, 600
    assert policy == pytest.approx(
        {"quality": 1.0, "usd": 2.0, "latency_ms": 350.0, "latency_ms_p50": 350.0, "latency_ms_p95": 600.0,
         "energy_wh": 1.05, "gco2e": 1.05 / 1000 * INTENSITY}
    )  # fmt: skip
    assert section["routers"]["oracle"] == pytest.approx(policy)  # at 0.2 the reward oracle routes perfectly too
    assert section["routers"]["always A"]["quality"] == 0.5 and section["routers"]["always A"]["energy_wh"] == 0.2
    assert section["single_models"]["m1"] == pytest.approx(
        {"quality": 1.0, "usd": 3.0, "latency_ms": 500.0, "latency_ms_p50": 500.0, "latency_ms_p95": 600.0,
         "energy_wh": 1.5, "gco2e": 1.5 / 1000 * INTENSITY}
    )  # fmt: skip


def test_each_objective_has_its_frontier_aiq_and_oracle_as_computed_by_hand(table: EnergyTable) -> None:
    report = report_of(trade_off_log(), table)
    frontiers = report["objectives"]["frontiers"]
    assert list(frontiers) == ["usd", "latency", "energy", "carbon"]
    # Policy points: all B, perfect routing, all A; the hull keeps (all A) and (perfect).
    Vertices = list[tuple[float, float]]
    expected: dict[str, tuple[Vertices, Vertices, float, float, float]] = {  # hull, zero router's, AIQs, oracle cost
        "usd": ([(1.0, 0.5), (2.0, 1.0)], [(1.0, 0.5), (3.0, 1.0)], (0.75 * 1 + 1 * 1) / 2, 0.75, 2.0),
        "latency": ([(100, 0.5), (350, 1.0)], [(100, 0.5), (500, 1.0)], (0.75 * 250 + 1 * 150) / 400, 0.75, 350.0),
        "energy": ([(0.2, 0.5), (1.05, 1.0)], [(0.2, 0.5), (1.5, 1.0)], (0.75 * 0.85 + 1 * 0.45) / 1.3, 0.75, 1.05),
    }
    for name, (hull, zero, aiq, zero_aiq, oracle_cost) in expected.items():
        frontier = frontiers[name]
        vertices = [[(v["cost"], v["quality"]) for v in frontier[key]] for key in ("hull", "zero_router_hull")]
        np.testing.assert_allclose(vertices[0], hull, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(vertices[1], zero, rtol=1e-12, err_msg=name)
        assert (frontier["aiq"], frontier["zero_router_aiq"]) == pytest.approx((aiq, zero_aiq)), name
        assert frontier["oracle"] == pytest.approx({"cost": oracle_cost, "quality": 1.0}), name
    carbon = frontiers["carbon"]  # energy scaled: the same AIQ, costs × intensity / 1000
    assert carbon["aiq"] == pytest.approx(frontiers["energy"]["aiq"])
    assert carbon["hull"][-1]["cost"] == pytest.approx(1.05 * INTENSITY / 1000)
    assert frontiers["usd"]["aiq"] == pytest.approx(report["frontier"]["aiq"])  # the USD frontier, by the same code


def test_the_95_percent_table_gives_the_least_money_time_and_energy_by_hand(table: EnergyTable) -> None:
    reach = report_of(trade_off_log(), table)["objectives"]["reach"]
    assert (reach["reference_model"], reach["reference_quality"]) == ("m1", 1.0)
    assert reach["reference"] == pytest.approx({"usd": 3.0, "latency": 500.0, "energy": 1.5, "carbon": 0.6})
    target = reach["targets"]["95%"]
    assert target["target_quality"] == pytest.approx(0.95)
    # 0.95 lies 90% of the way from quality 0.5 to 1.0 on each hull's first segment.
    assert target["policy"] == pytest.approx(
        {"usd": 1 + 0.9 * 1, "latency": 100 + 0.9 * 250, "energy": 0.2 + 0.9 * 0.85, "carbon": 0.4 * (0.2 + 0.9 * 0.85)}
    )
    assert target["zero_router"] == pytest.approx(
        {"usd": 1 + 0.9 * 2, "latency": 100 + 0.9 * 400, "energy": 0.2 + 0.9 * 1.3, "carbon": 0.4 * (0.2 + 0.9 * 1.3)}
    )
    assert reach["targets"]["100%"]["policy"] == pytest.approx(
        {"usd": 2.0, "latency": 350.0, "energy": 1.05, "carbon": 0.42}
    )


def test_an_objective_the_log_lacks_is_left_out_with_its_reason(table: EnergyTable) -> None:
    log = trade_off_log(energy=False)
    section = report_of(log, table)["objectives"]
    assert section["objectives"]["energy"]["source"] == "unavailable: the log has no energy_wh"
    assert section["objectives"]["carbon"]["source"].startswith("unavailable: no energy")
    assert list(section["frontiers"]) == ["usd", "latency"] and list(section["reach"]["reference"]) == [
        "usd",
        "latency",
    ]
    assert "energy_wh" not in section["routers"]["policy"]
    assert section["energy_per_model"] == {"m0": "unavailable: not in the energy table and not logged"} | {
        "m1": "unavailable: not in the energy table and not logged"
    }
    partial = trade_off_log()
    assert partial.energy_wh is not None
    partial.energy_wh[3, 0] = np.nan
    assert report_of(partial, table)["objectives"]["objectives"]["energy"]["source"] == (
        "unavailable: energy_wh is unknown for some outcomes of m0"
    )


def test_the_section_is_deterministic_and_skipped_on_bandit_feedback(table: EnergyTable) -> None:
    log = trade_off_log()
    assert json.dumps(report_of(log, table)) == json.dumps(report_of(log, table))
    config = EvaluationConfig(bootstrap=0)
    plan = EvaluationPlan(config, seed=0, cost_weight=0.2, weights=np.array([0.2]))
    bandit = synthetic_log(log.quality, log.cost, feedback="bandit", action=np.zeros(4, dtype=np.int64),
                           propensity=np.full(4, 0.5))  # fmt: skip
    evaluation = evaluate(log, router, plan)  # any evaluation: the bandit log is refused before it is read
    assert objectives_report(bandit, evaluation, plan, table) == {
        "skipped": "bandit feedback: the latency and energy of models that were not chosen are unknown"
    }
    assert tensorboard_scalars({"skipped": "..."}) == {}


def test_routeprofile_energy_frontier_is_the_hand_estimate_of_its_rows(routeprofile: Path, table: EnergyTable) -> None:
    """The report's energy frontier on RouteProfile's first five queries: single models and oracle by hand."""
    log = with_energy_estimates(load_log(routeprofile).log.subset(np.arange(5)), table)
    assert log.energy_wh is not None and log.energy_estimated is not None and log.energy_estimated.all()
    ids = set(log.query_ids.tolist())
    rows = [json.loads(line) for line in routeprofile.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row["query_id"] in ids]
    sizes = {name: size.active for name, size in table.models.items()}
    watts = 1275 * 0.7 * 1.2  # the default table's hardware, written out again (tests/test_energy.py)
    by_hand = {
        (row["query_id"], row["model"]): 2e9 * sizes[row["model"]]
        * (row["prompt_tokens"] / (9.89e14 * 0.4 / watts) + row["completion_tokens"] / (9.89e14 * 0.1 / watts)) / 3600
        for row in rows
    }  # fmt: skip
    queries = log.query_ids.tolist()
    plan = EvaluationPlan(EvaluationConfig(bootstrap=0), seed=0, cost_weight=0.0, weights=np.array([0.0]))
    best = np.argmax(log.quality, axis=1)
    evaluation = evaluate(log, lambda weight: best, plan)
    frontier = objectives_report(log, evaluation, plan, table)["frontiers"]["energy"]
    for model in log.models:
        mean = np.mean([by_hand[(query, model)] for query in queries])
        assert frontier["single_models"][model]["cost"] == pytest.approx(mean, rel=1e-12), model
    oracle = []  # per query the best quality, the least energy among ties
    for query in queries:
        answers = [row for row in rows if row["query_id"] == query]
        top = max(row["quality"] for row in answers)
        oracle.append(min(by_hand[(query, row["model"])] for row in answers if row["quality"] == top))
    assert frontier["oracle"]["cost"] == pytest.approx(np.mean(oracle), rel=1e-12)


def test_the_demo_run_reports_every_objective_in_json_markdown_and_tensorboard(demo_run: RunResult) -> None:
    section = demo_run.report["objectives"]
    assert section["objectives"]["energy"]["source"] == "estimated"  # the demo log has tokens, the table its models
    assert section["objectives"]["latency"]["source"] == "unavailable: the log has no latency_ms"
    assert set(section["frontiers"]) == {"usd", "energy", "carbon"}
    assert section["frontiers"]["usd"]["aiq"] == pytest.approx(demo_run.report["frontier"]["aiq"])
    assert section["routers"]["policy"]["usd"] == pytest.approx(demo_run.report["test"]["mean_cost"])
    assert set(section["routers"]) == {"policy", "random", "cheapest", "best single", "oracle"}
    written = json.loads((demo_run.directory / "report.json").read_text(encoding="utf-8"))
    assert written["objectives"] == section
    text = (demo_run.directory / "report.md").read_text(encoding="utf-8")
    assert "## Every objective (per query)" in text and "| Wh (estimated) | gCO2e (estimated) |" in text
    events = EventAccumulator(str(demo_run.directory / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"objectives/policy/energy_wh", "objectives/aiq/energy", "objectives/reach_95/energy"} <= scalars
    assert events.Scalars("objectives/policy/energy_wh")[-1].value == pytest.approx(
        section["routers"]["policy"]["energy_wh"]
    )


def test_markdown_shows_the_objectives_tables(table: EnergyTable) -> None:
    report = report_of(trade_off_log(), table)
    lines = _objective_markdown(report)
    assert "| router | quality | USD | latency ms p50 | latency ms p95 | Wh | gCO2e |" in lines
    assert "| **router** | 1.0000 | 2.000000 | 350.0 | 600.0 | 1.05 | 0.42 |" in lines
    assert "| Wh | 0.965 | 1.37 | 1.5 |" in lines  # for 95% of m1's quality: policy, zero router, m1


def _objective_markdown(partial: dict[str, Any]) -> list[str]:
    """The markdown of a report holding only what its objectives section needs around it."""
    text = markdown(_minimal_report(partial))
    return text.split("## Every objective (per query)")[1].splitlines()


def _minimal_report(partial: dict[str, Any]) -> dict[str, Any]:
    metrics = {"mean_quality": 1.0, "mean_cost": 2.0, "mean_reward": 0.6, "regret": 0.0, "share_per_model": {"m0": 0.5}}
    frontier = partial["frontier"] | {"operating_point": {"cost": 2.0, "quality": 1.0}, "margin_over_zero_router": 0.0}
    data = {"path": "log.jsonl", "feedback": "full", "fingerprint": "0" * 16, "rows_read": 8, "rows_accepted": 8,
            "rows_rejected": 0, "rejected_by_reason": {}}  # fmt: skip
    return {"data": data, "policy": {"agent": "router", "cost_weight": 0.2}, "test": metrics, "frontier": frontier,
            "objectives": partial["objectives"]}  # fmt: skip


def test_python_m_evaluation_reports_objectives_at_the_grid_intensity_it_is_given(
    demo_policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (ROOT / "data" / "demo" / "demo.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    demo = tmp_path / "demo-head.jsonl"
    demo.write_text("".join(lines[:300]), encoding="utf-8")  # 60 queries × 5 models: seconds, not the whole demo
    arguments = [str(demo_policy), "--data", str(demo), "--bootstrap", "0"]
    assert evaluation_main([*arguments, "--out", str(tmp_path / "eval"), "--grid-intensity", "100"]) == 0
    section = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))["objectives"]
    assert section["grid_intensity_gco2e_per_kwh"] == 100.0
    policy = section["routers"]["policy"]
    assert policy["gco2e"] == pytest.approx(policy["energy_wh"] / 1000 * 100)
    capsys.readouterr()
    assert evaluation_main([*arguments, "--out", str(tmp_path / "bad"), "--grid-intensity", "-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "evaluation: error: --grid-intensity must be finite and >= 0 (gCO2e per kWh), got -1.0"
    ]
