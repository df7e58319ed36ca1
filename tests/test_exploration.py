"""The service's exploration rule (:class:`serving.decisions.Exploration`, docs/contracts.md §4.1, §5.2).

The unit tests draw 20,000 seeded choices per case and compare each model's empirical frequency
with the probability the rule states: they must agree within :func:`_tolerance`, four binomial
standard errors (at most 0.014 for 20,000 draws), and a model of probability 0 is never drawn.
Each draw's returned propensity must be, exactly, the rule's probability of the drawn model.
One test runs the real ``serve.py`` with softmax and a floor, and recomputes every logged
propensity from the scores that ``/route`` answered.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from test_serve import _assert_one_line_error, _run_serve, _start_server, _stop

from data.loading import load_log
from serving.decisions import Exploration, best
from serving.metrics import Metrics
from serving.router import Router
from serving.settings import Settings

DRAWS = 20_000
SCORES = [0.54, 0.59, 0.69, 0.63, 0.50]  # five models, as the demo policy's utilities at w = 300


def _tolerance(probability: float, draws: int = DRAWS) -> float:
    """Four binomial standard errors of a frequency estimated from ``draws`` draws."""
    return 4.0 * math.sqrt(probability * (1.0 - probability) / draws)


def _assert_draws_follow_probabilities(
    exploration: Exploration, scores: list[float], allowed: list[int], seed: int = 0
) -> list[float]:
    """Draw :data:`DRAWS` choices; the frequencies match :meth:`Exploration.probabilities`. Returns those."""
    probabilities = exploration.probabilities(scores, allowed)
    rng = random.Random(seed)
    counts: Counter[int] = Counter()
    for _ in range(DRAWS):
        index, propensity = exploration.choose(scores, allowed, rng)
        assert propensity == probabilities[index]
        counts[index] += 1
    for index, probability in enumerate(probabilities):
        frequency = counts[index] / DRAWS
        if probability == 0.0:
            assert counts[index] == 0, (index, counts)
        else:
            assert abs(frequency - probability) <= _tolerance(probability), (index, frequency, probability)
    return probabilities


# ----------------------------------------------------------------------------- the rule's probabilities


@pytest.mark.parametrize(
    ("exploration", "allowed"),
    [
        (Exploration("epsilon", epsilon=0.3), [0, 1, 2, 3, 4]),
        (Exploration("epsilon", epsilon=1.0), [1, 3]),
        (Exploration("softmax", temperature=0.05), [0, 1, 2, 3, 4]),
        (Exploration("softmax", temperature=0.05, floor=0.05), [0, 1, 2, 3, 4]),
        (Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset({4})), [0, 1, 2, 3, 4]),
        (Exploration("greedy", floor=0.1, floored=frozenset({0, 4})), [0, 1, 2, 3, 4]),
        (Exploration("epsilon", epsilon=0.2, floor=0.1, floored=frozenset({4})), [1, 2, 4]),
        (Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset({4})), [0, 3]),  # floor not allowed
        (Exploration("softmax", temperature=0.02, floor=0.05), [2, 4]),
    ],
    ids=[
        "epsilon",
        "epsilon-1-two-allowed",
        "softmax",
        "softmax-floor-all",
        "softmax-floor-one-model",
        "greedy-floor-two-models",
        "epsilon-floor-allowed-subset",
        "softmax-floored-model-not-allowed",
        "softmax-floor-two-allowed",
    ],
)
def test_draw_frequencies_equal_the_stated_propensities(exploration: Exploration, allowed: list[int]) -> None:
    probabilities = _assert_draws_follow_probabilities(exploration, SCORES, allowed)
    assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-12)
    assert all(probabilities[index] == 0.0 for index in set(range(len(SCORES))) - set(allowed))


def test_epsilon_greedy_probabilities_are_todays_formula() -> None:
    """1 − ε + ε/K for the greedy model, ε/K for the others; a tie goes to the lower index."""
    epsilon, scores = 0.3, [0.2, 0.7, 0.7, 0.1]
    probabilities = Exploration("epsilon", epsilon=epsilon).probabilities(scores, [0, 1, 2, 3])
    assert probabilities == [epsilon / 4, 1 - epsilon + epsilon / 4, epsilon / 4, epsilon / 4]
    assert Exploration("epsilon", epsilon=epsilon).probabilities(scores, [0, 2]) == [
        epsilon / 2,
        0.0,
        1 - epsilon + epsilon / 2,
        0.0,
    ]


def test_softmax_is_exp_of_score_over_temperature() -> None:
    scores, temperature = [1.0, 0.5, 0.0], 0.25
    weights = [math.exp(s / temperature) for s in scores]
    expected = [w / sum(weights) for w in weights]
    assert Exploration("softmax", temperature=temperature).probabilities(scores, [0, 1, 2]) == pytest.approx(expected)


def test_softmax_is_stable_for_large_scores_and_tiny_temperatures() -> None:
    """Subtracting the maximum: no overflow, no NaN, whatever the scale."""
    near = 1 / (1 + math.exp(-1.0))
    for scores, temperature, expected in (
        ([1e6, 1e6 - 1.0, -1e6], 1.0, [near, 1 - near, 0.0]),
        ([3.0, 2.0, 1.0], 1e-300, [1.0, 0.0, 0.0]),
        ([1e300, -1e300], 1e-3, [1.0, 0.0]),
    ):
        probabilities = Exploration("softmax", temperature=temperature).probabilities(scores, list(range(len(scores))))
        assert probabilities == pytest.approx(expected, abs=1e-12)


def test_softmax_with_a_small_temperature_is_greedy() -> None:
    allowed = [0, 1, 3, 4]
    probabilities = Exploration("softmax", temperature=1e-4).probabilities(SCORES, allowed)
    greedy = best(SCORES, allowed)
    assert probabilities[greedy] == pytest.approx(1.0, abs=1e-12)
    assert Exploration("softmax", temperature=1e-4).choose(SCORES, allowed, random.Random(0)) == (
        greedy,
        probabilities[greedy],
    )


def test_softmax_with_a_large_temperature_is_near_uniform() -> None:
    allowed = [0, 2, 4]
    probabilities = Exploration("softmax", temperature=1e3).probabilities(SCORES, allowed)
    assert [probabilities[index] for index in allowed] == pytest.approx([1 / 3] * 3, abs=1e-4)


@pytest.mark.parametrize(
    "exploration",
    [
        Exploration(),
        Exploration("epsilon", epsilon=0.1),
        Exploration("epsilon", epsilon=0.5, floor=0.2, floored=frozenset({1, 5})),
        Exploration("softmax", temperature=0.01),
        Exploration("softmax", temperature=3.0, floor=0.03),
        Exploration("greedy", floor=0.3),  # capped at 1/K_f for four or more models
    ],
)
def test_probabilities_sum_to_one_on_random_scores(exploration: Exploration) -> None:
    rng = random.Random(1)
    for _ in range(500):
        k = rng.randint(1, 30)
        scores = [rng.gauss(0.0, 1.0) for _ in range(k)]
        allowed = sorted(rng.sample(range(k), rng.randint(1, k)))
        probabilities = exploration.probabilities(scores, allowed)
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-12)
        assert all(p >= 0.0 for p in probabilities)
        if exploration.floor:
            floored = [i for i in allowed if exploration.floored is None or i in exploration.floored]
            share = min(exploration.floor, 1 / len(floored)) if floored else 0.0
            assert all(probabilities[i] >= share - 1e-15 for i in floored)


def test_a_floor_with_no_room_left_is_capped_at_one_over_the_floored_count() -> None:
    """K_f·P >= 1 (only possible after a reload adds models): uniform over the floored models."""
    exploration = Exploration("softmax", temperature=0.05, floor=0.3)
    probabilities = _assert_draws_follow_probabilities(exploration, SCORES, [0, 1, 2, 3, 4])
    assert probabilities == pytest.approx([0.2] * 5)
    with pytest.raises(ValueError, match=r"--explore-floor 0\.3 for each of 5 floored models"):
        exploration.check_floor(5)
    exploration.check_floor(3)  # 0.9 < 1 leaves the rule a share


def test_greedy_draws_nothing_and_ties_go_to_the_lower_index() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert Exploration().choose([0.5, 0.9, 0.9], [0, 1, 2], rng) == (1, 1.0)
    assert rng.getstate() == state
    assert Exploration().probabilities([0.5, 0.9, 0.9], [0, 1, 2]) == [0.0, 1.0, 0.0]


def test_seeded_draws_are_reproducible() -> None:
    exploration = Exploration("softmax", temperature=0.05, floor=0.05)

    def draws(seed: int) -> list[int]:
        rng = random.Random(seed)
        return [exploration.choose(SCORES, [0, 1, 2, 3, 4], rng)[0] for _ in range(200)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_the_settings_rule_finds_the_floored_models_by_name() -> None:
    settings = Settings(explore="softmax", explore_temperature=0.1, explore_floor=0.05, explore_floor_models=("c",))
    exploration = Exploration.of(settings, ["a", "b", "c"])
    assert exploration == Exploration("softmax", 0.0, 0.1, 0.05, frozenset({2}))
    assert Exploration.of(settings, ["c", "a", "b"]).floored == frozenset({0})  # a reloaded policy's order


def test_a_reloaded_policy_gets_its_own_rule_and_a_capped_floor(caplog: pytest.LogCaptureFixture) -> None:
    """The router rebuilds the rule for a new policy: floored names find their new indices, and an
    all-models floor that no longer fits is capped (with a warning) instead of failing requests."""
    first = SimpleNamespace(models=("a", "b", "c"), version="v1")
    settings = Settings(explore="softmax", explore_temperature=0.1, explore_floor=0.3)
    router = Router(SimpleNamespace(current=first), settings, Metrics(), None)  # type: ignore[arg-type]
    assert router.exploration(first) is router.exploration(first)  # type: ignore[arg-type]
    bigger = SimpleNamespace(models=("d", "c", "b", "a"), version="v2")
    with caplog.at_level(logging.WARNING, logger="routerl.serving"):
        capped = router.exploration(bigger)  # type: ignore[arg-type]
    assert "floor is capped" in caplog.text
    assert capped.probabilities([0.0, 1.0, 2.0, 3.0], [0, 1, 2, 3]) == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError, match="--explore-floor"):
        Router(SimpleNamespace(current=bigger), settings, Metrics(), None)  # type: ignore[arg-type]
    floored = Settings(explore_floor=0.1, explore_floor_models=("c",))
    router = Router(SimpleNamespace(current=first), floored, Metrics(), None)  # type: ignore[arg-type]
    assert router.exploration(bigger).floored == frozenset({1})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- flags


def test_old_command_lines_keep_their_meaning() -> None:
    import serve

    def rule(*flags: str) -> str:
        return serve._settings(serve.parse_args(["--policy", "p.pt", *flags])).explore_rule

    assert rule() == "greedy"
    assert rule("--explore-epsilon", "0.1") == "epsilon"
    assert rule("--explore", "epsilon", "--explore-epsilon", "0.1") == "epsilon"
    assert rule("--explore", "softmax", "--explore-temperature", "0.1", "--explore-floor", "0.01") == "softmax"
    settings = serve._settings(
        serve.parse_args(["--policy", "p.pt", "--explore-floor", "0.1", "--explore-floor-models", "a, b"])
    )
    assert settings.explore_floor_models == ("a", "b")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--explore", "softmax", "--explore-temperature", "0"], "--explore-temperature"),
        (["--explore", "softmax", "--explore-temperature", "-1"], "--explore-temperature"),
        (["--explore", "softmax", "--explore-temperature", "nan"], "--explore-temperature"),
        (["--explore", "softmax", "--explore-temperature", "inf"], "--explore-temperature"),
        (["--explore", "softmax"], "--explore-temperature"),
        (["--explore-temperature", "0.1"], "--explore softmax only"),
        (["--explore", "softmax", "--explore-temperature", "0.1", "--explore-epsilon", "0.1"], "--explore-epsilon"),
        (["--explore", "greedy", "--explore-epsilon", "0.1"], "--explore-epsilon"),
        (["--explore", "epsilon"], "--explore-epsilon > 0"),
        (["--explore-floor", "1"], "--explore-floor"),
        (["--explore-floor", "-0.1"], "--explore-floor"),
        (["--explore-floor", "nan"], "--explore-floor"),
        (["--explore-floor-models", "a"], "--explore-floor > 0"),
        (["--explore-floor", "0.1", "--explore-floor-models", "a,,b"], "--explore-floor-models"),
    ],
)
def test_bad_exploration_flags_exit_2_naming_the_flag(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import serve

    with pytest.raises(SystemExit) as exited:
        serve._settings(serve.parse_args(["--policy", "p.pt", *flags]))
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and named in error[0], error


def test_serve_refuses_bad_exploration_with_one_line(demo_policy: Path) -> None:
    """The real ``serve.py``: a bad temperature or floor, a floor with no room, an unknown floored model."""
    policy = ("--policy", str(demo_policy), "--port", "0")
    softmax = ("--explore", "softmax")
    _assert_one_line_error(_run_serve(*policy, *softmax, "--explore-temperature", "nan"), "--explore-temperature")
    _assert_one_line_error(_run_serve(*policy, *softmax, "--explore-temperature", "0"), "--explore-temperature")
    _assert_one_line_error(_run_serve(*policy, "--explore-floor", "1.5"), "--explore-floor")
    # the demo policy has five models: 5 × 0.2 = 1 leaves the rule nothing
    _assert_one_line_error(_run_serve(*policy, "--explore-floor", "0.2"), "--explore-floor 0.2", "5 floored models")
    _assert_one_line_error(
        _run_serve(*policy, "--explore-floor", "0.5", "--explore-floor-models", "tiny-1b,small-7b"),
        "2 floored models",
        "--explore-floor-models",
    )
    _assert_one_line_error(
        _run_serve(*policy, "--explore-floor", "0.1", "--explore-floor-models", "tiny-1b,gpt-9"), "gpt-9"
    )


# ----------------------------------------------------------------------------- the real service

TEMPERATURE, FLOOR, FLOORED = 0.05, 0.05, "tiny-1b"
TOPICS = ["primes", "sorting lists in Python", "the capital of France", "a haiku about rain", "tax law", "SQL joins"]


def test_served_propensities_are_the_rules_probabilities(demo_policy: Path, tmp_path: Path) -> None:
    """300 real ``/route`` requests with softmax and a floor on one model: every logged propensity
    is the rule's probability recomputed from the answered scores, the floored model gets its
    share, and the log reads back as a bandit-feedback log."""
    log = tmp_path / "decisions.jsonl"
    flags = ["--explore", "softmax", "--explore-temperature", str(TEMPERATURE), "--explore-seed", "0"]
    flags += ["--explore-floor", str(FLOOR), "--explore-floor-models", FLOORED, "--decision-log", str(log)]
    running = _start_server(demo_policy, tmp_path, *flags, "--no-access-log")
    answers: list[dict[str, Any]] = []
    allowed_sets: list[list[str] | None] = [
        None,
        None,
        ["tiny-1b", "small-7b", "medium-34b"],
        ["large-70b", "small-7b"],
    ]
    try:
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            for i in range(300):
                allowed = allowed_sets[i % len(allowed_sets)]
                body: dict[str, Any] = {"query": f"question {i} about {TOPICS[i % len(TOPICS)]}"}
                if allowed is not None:
                    body["allowed_models"] = allowed
                response = http.post("/route", json=body)
                assert response.status_code == 200, response.text
                answers.append({**response.json(), "allowed": allowed})
                feedback = {"query_id": response.json()["query_id"], "quality": float(i % 2), "cost": 0.001}
                assert http.post("/feedback", json=feedback).status_code == 200
    finally:
        _stop(running.process)

    records = {r["query_id"]: r for r in map(json.loads, log.read_text().splitlines()) if "model" in r}
    models: list[str] = list(answers[0]["scores"])
    floored = models.index(FLOORED)
    exploration = Exploration("softmax", temperature=TEMPERATURE, floor=FLOOR, floored=frozenset({floored}))
    expected_floored, chosen_floored, floored_requests = 0.0, 0, 0
    for answer in answers:
        record = records[answer["query_id"]]
        assert record["model"] == answer["model"]
        indices = sorted(models.index(m) for m in answer["allowed"] or models)
        probabilities = exploration.probabilities([answer["scores"][m] for m in models], indices)
        assert record["propensity"] == pytest.approx(probabilities[models.index(record["model"])], rel=1e-12)
        if floored in indices:
            assert probabilities[floored] >= FLOOR
            expected_floored += probabilities[floored]
            chosen_floored += record["model"] == FLOORED
            floored_requests += 1
        else:
            assert record["model"] != FLOORED
    spread = 4 * math.sqrt(expected_floored)  # > 4 standard deviations of a sum of Bernoulli draws
    assert expected_floored >= FLOOR * floored_requests
    assert abs(chosen_floored - expected_floored) <= spread, (chosen_floored, expected_floored)
    assert len({record["model"] for record in records.values()}) == len(models)  # softmax reaches every model

    loaded = load_log(log).log
    assert loaded.feedback == "bandit" and loaded.stats.rows_accepted == 300
    assert loaded.propensity is not None and all(0.0 < p <= 1.0 for p in loaded.propensity)
    by_id = dict(zip(loaded.query_ids, loaded.propensity, strict=True))
    assert all(by_id[query_id] == record["propensity"] for query_id, record in records.items())
