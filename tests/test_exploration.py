"""The service's exploration rule (:class:`serving.decisions.Exploration`, docs/contracts.md §4.1, §5.2).

The unit tests draw 20,000 seeded choices per case and compare each model's empirical frequency
with the probability the rule states: they must agree within :func:`_tolerance`, four binomial
standard errors (at most 0.014 for 20,000 draws), and a model of probability 0 is never drawn.
Each draw's returned propensity must be, exactly, the rule's probability of the drawn model.
One test runs the real ``serve.py`` with softmax and a floor, and recomputes every logged
propensity from the scores that ``/route`` answered; another does the same with a model that the
policy does not know (``--explore-new-models``), which must get its share P of the requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
import torch
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import Response
from test_serve import _assert_one_line_error, _run_serve, _start_server, _stop

from data.loading import load_log
from serving.decisions import Exploration, best, ranking
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.proxy import ChatRequest
from serving.router import Router
from serving.schemas import RouteRequest
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
    settings = serve._settings(
        serve.parse_args(["--policy", "p.pt", "--explore-floor", "0.1", "--explore-new-models", "x, y"])
    )
    assert settings.explore_new_models == ("x", "y") and settings.explore_rule == "greedy"


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
        (["--explore-new-models", "brand-new-9b"], "--explore-new-models needs --explore-floor P > 0"),
        (["--explore-floor", "0", "--explore-new-models", "brand-new-9b"], "--explore-floor P > 0"),
        (["--explore-floor", "0.1", "--explore-new-models", "a,"], "--explore-new-models has an empty name"),
        (["--explore-floor", "0.1", "--explore-new-models", "a,b,a"], "'a' more than once"),
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


def _route_300(http: httpx.Client, allowed_sets: list[list[str] | None]) -> list[dict[str, Any]]:
    """300 ``/route`` requests, the i-th allowing ``allowed_sets[i % len]`` (None: every model); each
    answer with its ``allowed`` set."""
    answers = []
    for i in range(300):
        allowed = allowed_sets[i % len(allowed_sets)]
        body: dict[str, Any] = {"query": f"question {i} about {TOPICS[i % len(TOPICS)]}"}
        if allowed is not None:
            body["allowed_models"] = allowed
        response = http.post("/route", json=body)
        assert response.status_code == 200, response.text
        answers.append({**response.json(), "allowed": allowed})
    return answers


def test_served_propensities_are_the_rules_probabilities(demo_policy: Path, tmp_path: Path) -> None:
    """300 real ``/route`` requests with softmax and a floor on one model: every logged propensity
    is the rule's probability recomputed from the answered scores, the floored model gets its
    share, and the log reads back as a bandit-feedback log."""
    log = tmp_path / "decisions.jsonl"
    flags = ["--explore", "softmax", "--explore-temperature", str(TEMPERATURE), "--explore-seed", "0"]
    flags += ["--explore-floor", str(FLOOR), "--explore-floor-models", FLOORED, "--decision-log", str(log)]
    running = _start_server(demo_policy, tmp_path, *flags, "--no-access-log")
    allowed_sets: list[list[str] | None] = [
        None,
        None,
        ["tiny-1b", "small-7b", "medium-34b"],
        ["large-70b", "small-7b"],
    ]
    try:
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            answers = _route_300(http, allowed_sets)
            for i, answer in enumerate(answers):
                feedback = {"query_id": answer["query_id"], "quality": float(i % 2), "cost": 0.001}
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


# ----------------------------------------------------------------------------- new models (--explore-new-models)

NEW = "brand-new-9b"
NEW_FLOOR = 0.1
DEMO_MODELS = ["tiny-1b", "small-7b", "medium-34b", "large-70b", "frontier-xl"]


@pytest.mark.parametrize(
    ("exploration", "allowed"),
    [
        (Exploration("greedy", floor=0.1, floored=frozenset(), new_models=(NEW,)), [0, 1, 2, 3, 4, 5]),
        (Exploration("epsilon", epsilon=0.2, floor=0.05, floored=frozenset(), new_models=("x", "y")), [0, 2, 4, 5, 6]),
        (
            Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset(), new_models=(NEW,)),
            [0, 1, 2, 3, 4, 5],
        ),
        (
            Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset({4}), new_models=("x", "y")),
            [1, 4, 5, 6],
        ),
        (Exploration("softmax", temperature=0.05, floor=0.1, new_models=("x", "y")), [0, 1, 2, 3, 4, 5, 6]),
        (Exploration("epsilon", epsilon=0.3, floor=0.1, floored=frozenset(), new_models=("x", "y")), [0, 3, 6]),
    ],
    ids=[
        "greedy-one-new",
        "epsilon-two-new",
        "softmax-one-new",
        "softmax-policy-floor-and-two-new",
        "softmax-floor-on-every-model-and-two-new",
        "epsilon-one-of-two-new-allowed",
    ],
)
def test_each_allowed_new_model_gets_exactly_p_and_the_policy_the_rest(
    exploration: Exploration, allowed: list[int]
) -> None:
    probabilities = _assert_draws_follow_probabilities(exploration, SCORES, allowed)
    assert len(probabilities) == len(SCORES) + len(exploration.new_models)
    new = [index for index in allowed if index >= len(SCORES)]
    assert new and all(probabilities[index] == exploration.floor for index in new)
    assert math.fsum(probabilities[: len(SCORES)]) == pytest.approx(1 - len(new) * exploration.floor, abs=1e-12)
    assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-12)
    assert all(probabilities[index] == 0.0 for index in set(range(len(probabilities))) - set(allowed))


def test_without_a_policy_floor_new_models_scale_the_rule_by_what_they_leave() -> None:
    """The policy's rule is unchanged in shape: ``(1 − n·P)·p_rule``, n the new models allowed."""
    rule = Exploration("softmax", temperature=0.05).probabilities(SCORES, [0, 1, 2, 3, 4])
    with_new = Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset(), new_models=("x", "y"))
    assert with_new.probabilities(SCORES, [0, 1, 2, 3, 4, 5, 6]) == pytest.approx([0.8 * p for p in rule] + [0.1, 0.1])
    assert with_new.probabilities(SCORES, [0, 1, 2, 3, 4, 6]) == pytest.approx([0.9 * p for p in rule] + [0.0, 0.1])


def test_a_request_that_allows_only_new_models_is_uniform_over_them() -> None:
    exploration = Exploration("softmax", temperature=0.05, floor=0.1, floored=frozenset(), new_models=("x", "y"))
    assert _assert_draws_follow_probabilities(exploration, SCORES, [5, 6]) == [0.0] * 5 + [0.5, 0.5]
    assert exploration.probabilities(SCORES, [6]) == [0.0] * 6 + [1.0]
    assert exploration.choose(SCORES, [6], random.Random(0)) == (6, 1.0)


def test_probabilities_with_new_models_sum_to_one_on_random_scores() -> None:
    """Any rule, policy floor, number of new models and allowed set: the probabilities sum to 1, and
    each allowed new model gets P (capped at 1/count when the floored ones do not fit)."""
    rng = random.Random(2)
    for _ in range(1000):
        k, n = rng.randint(1, 20), rng.randint(1, 4)
        floor = rng.choice([0.01, 0.1, 0.3])
        exploration = Exploration(
            rng.choice(["greedy", "epsilon", "softmax"]),
            epsilon=0.2,
            temperature=0.5,
            floor=floor,
            floored=frozenset(rng.sample(range(k), rng.randint(0, k))),
            new_models=tuple(f"new-{j}" for j in range(n)),
        )
        scores = [rng.gauss(0.0, 1.0) for _ in range(k)]
        allowed = sorted(rng.sample(range(k + n), rng.randint(1, k + n)))
        probabilities = exploration.probabilities(scores, allowed)
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-12)
        assert all(p >= 0.0 for p in probabilities)
        new = [index for index in allowed if index >= k]
        if new:
            floored = [index for index in allowed if index >= k or index in (exploration.floored or ())]
            share = min(floor, 1 / len(floored)) if len(new) < len(allowed) else 1 / len(new)
            assert all(probabilities[index] == pytest.approx(share, abs=1e-15) for index in new)


def test_a_new_model_that_the_policy_knows_is_a_floored_model() -> None:
    """Once a promoted policy has learned a new model, the rule is the one ``--explore-floor-models``
    gives that model: nothing changes for the operator."""
    settings = Settings(explore="softmax", explore_temperature=0.05, explore_floor=0.1, explore_new_models=("c", "x"))
    floored = Settings(explore="softmax", explore_temperature=0.05, explore_floor=0.1, explore_floor_models=("c",))
    before = Exploration.of(settings, ["a", "b"])
    assert before.floored == frozenset() and before.new_models == ("c", "x")
    after = Exploration.of(settings, ["a", "b", "c"])
    assert after.floored == Exploration.of(floored, ["a", "b", "c"]).floored == frozenset({2})
    assert after.new_models == ("x",)
    probabilities = _assert_draws_follow_probabilities(after, [0.69, 0.59, 0.54], [0, 1, 2, 3])
    assert probabilities[3] == 0.1 and probabilities[2] > 0.1  # floored: P plus its share of the rule
    learned = Settings(explore="softmax", explore_temperature=0.05, explore_floor=0.1, explore_new_models=("c",))
    assert Exploration.of(learned, ["c", "a", "b"]) == Exploration.of(floored, ["c", "a", "b"])


def test_new_models_count_against_the_floors_room() -> None:
    """(K_f + n)·P must stay below 1: checked with the policy (at start, :class:`Router`); a policy
    that learned a new model counts it among its floored models, so the sum does not change."""
    settings = Settings(explore_floor=0.25, explore_floor_models=("a", "b"), explore_new_models=("x", "y"))
    with pytest.raises(ValueError, match=r"for each of 4 floored models \(2 in the policy, 2 of --explore-new-models"):
        Exploration.of(settings, ["a", "b", "c"]).check_floor(3)
    with pytest.raises(ValueError, match=r"for each of 4 floored models \(3 in the policy, 1 of --explore-new-models"):
        Exploration.of(settings, ["a", "b", "x"]).check_floor(3)
    Exploration.of(dataclasses.replace(settings, explore_floor=0.24), ["a", "b", "c"]).check_floor(3)


def test_new_models_need_a_backend_only_with_backends() -> None:
    settings = Settings(fallback_model="a", explore_floor=0.1, explore_floor_models=("b",), explore_new_models=(NEW,))
    assert settings.required_models([]) == ["a", "b"]  # no proxy: the client calls the model itself
    assert settings.required_models(["a", "c", NEW]) == ["a", "c", "a", "b"]  # the policy needs no backend of NEW
    with pytest.raises(ValueError, match=f"--explore-new-models: no backend for '{NEW}'"):
        settings.required_models(["a", "c"])


def _stub_policy(models: list[str], version: str, row: list[float]) -> Any:
    """A policy for :class:`Router` that gives every query the scores ``row``."""
    return SimpleNamespace(
        models=tuple(models),
        version=version,
        info={"version": version, "fingerprint": "f"},
        default_cost_weight=1.0,
        score_kind="utility",
        scores=lambda queries, weight: torch.tensor([row] * len(queries)),
        metadata={"rules": []},
        cost_mode="usd",
        estimated_objectives=(),  # USD only
    )


def test_the_router_routes_logs_and_counts_new_models_and_rebuilds_the_rule_on_reload(tmp_path: Path) -> None:
    from serving.decisions import DecisionLog
    from serving.schemas import BatchRequest

    first = _stub_policy(["a", "b", "c"], "v1", [0.1, 0.9, 0.3])
    settings = Settings(explore_floor=0.25, explore_new_models=(NEW,), explore_seed=0)
    metrics, log = Metrics(), DecisionLog(tmp_path / "decisions.jsonl")
    router = Router(SimpleNamespace(current=first), settings, metrics, log)  # type: ignore[arg-type]
    assert router.models(first) == ("a", "b", "c", NEW)
    assert router.allowed(first, None) == [0, 1, 2, 3] and router.allowed(first, [NEW, "a"]) == [0, 3]
    with pytest.raises(ApiError, match=f"'gpt-9'.*new models.*{NEW}") as refused:
        router.allowed(first, ["gpt-9", "a"])
    assert refused.value.status_code == 422

    async def route_all() -> list[dict[str, Any]]:
        return [await router.route(RouteRequest(query=f"q{i}")) for i in range(400)]

    answers = asyncio.run(route_all())
    chosen = Counter(answer["model"] for answer in answers)
    assert set(chosen) == {"b", NEW}  # greedy: the best policy model, or the new one
    assert abs(chosen[NEW] - 400 * 0.25) <= 4 * math.sqrt(400 * 0.25 * 0.75), chosen
    assert all(list(answer["scores"]) == ["a", "b", "c"] for answer in answers)  # the policy's scores only
    batch = asyncio.run(router.route_batch(BatchRequest(queries=["x", "y"], allowed_models=[NEW])))
    assert batch["models"] == [NEW, NEW]
    assert metrics.registry.get_sample_value("routerl_decisions_total", {"model": NEW}) == chosen[NEW] + 2
    log.close()
    records = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert {(r["model"], r["propensity"]) for r in records} == {("b", 0.75), (NEW, 0.25), (NEW, 1.0)}

    learned = _stub_policy([NEW, "a", "b", "c"], "v2", [0.0, 0.1, 0.9, 0.3])  # a promoted policy knows NEW
    assert router.models(learned) == (NEW, "a", "b", "c")
    assert router.exploration(learned) == Exploration(floor=0.25, floored=frozenset({0}))


class _RecordingProxy:
    """Stands for :class:`serving.proxy.ChatProxy`: records the order of backends it would try."""

    def __init__(self, backends: set[str]) -> None:
        self.backends = backends
        self.orders: list[list[str]] = []

    async def forward(self, order: list[str], body: ChatRequest, headers: dict[str, str], on_served: Any) -> Response:
        self.orders.append(order)
        on_served(order[0], None)
        return Response(b"{}")


def test_the_proxy_tries_a_chosen_new_model_first_and_an_unchosen_one_last() -> None:
    policy = _stub_policy(["a", "b", "c"], "v1", [0.5, 0.9, 0.1])
    settings = Settings(explore_floor=0.3, explore_new_models=(NEW,), explore_seed=1)
    router = Router(SimpleNamespace(current=policy), settings, Metrics(), None)  # type: ignore[arg-type]
    proxy = _RecordingProxy({"a", "b", NEW})  # "c" has no backend
    chat = ChatRequest.model_validate({"model": "router", "messages": [{"role": "user", "content": "hi"}]})

    async def chat_all() -> None:
        for _ in range(300):
            await router.route_chat(chat, proxy)  # type: ignore[arg-type]

    asyncio.run(chat_all())
    orders = Counter(tuple(order) for order in proxy.orders)
    assert set(orders) == {(NEW, "b", "a"), ("b", "a", NEW)}
    assert abs(orders[(NEW, "b", "a")] - 300 * 0.3) <= 4 * math.sqrt(300 * 0.3 * 0.7), orders
    assert ranking([0.5, 0.9], [0, 1, 2, 3]) == [1, 0, 2, 3]


def test_serve_refuses_bad_new_model_settings_with_one_line(demo_policy: Path, tmp_path: Path) -> None:
    """The real ``serve.py``: new models that leave the rule nothing, and a new model without a backend."""
    policy = ("--policy", str(demo_policy), "--port", "0")
    _assert_one_line_error(
        _run_serve(*policy, "--explore-floor", "0.34", "--explore-new-models", "n1,n2,n3"),
        "--explore-floor 0.34 for each of 3 floored models",
        "--explore-new-models",
    )
    _assert_one_line_error(
        _run_serve(
            *policy, "--explore-floor", "0.25", "--explore-floor-models", "tiny-1b", "--explore-new-models", "n1,n2,n3"
        ),
        "4 floored models (1 in the policy, 3 of --explore-new-models",
    )
    backends = tmp_path / "backends.yaml"
    spec = {name: {"base_url": "http://127.0.0.1:9/v1", "model": name} for name in [*DEMO_MODELS, "other-new"]}
    backends.write_text(json.dumps({"backends": spec}), encoding="utf-8")  # JSON is YAML
    flags = ("--backends", str(backends), "--explore-floor", "0.1")
    _assert_one_line_error(
        _run_serve(*policy, *flags, "--explore-new-models", f"other-new,{NEW}"),
        f"--explore-new-models: no backend for '{NEW}'",
        "--backends",
    )


def test_a_served_new_model_gets_its_share_with_exact_propensities(demo_policy: Path, tmp_path: Path) -> None:
    """300 real ``/route`` requests (and a batch) with ``--explore-new-models``: the new model gets
    P of the requests that allow it, every logged propensity is the rule's probability recomputed
    from the answered scores, the metrics count it, and feedback to its decisions is accepted."""
    log = tmp_path / "decisions.jsonl"
    flags = ["--explore-new-models", NEW, "--explore-floor", str(NEW_FLOOR), "--explore-seed", "1"]
    running = _start_server(demo_policy, tmp_path, *flags, "--decision-log", str(log), "--no-access-log")
    allowed_sets: list[list[str] | None] = [None, None, [NEW, "small-7b", "large-70b"], ["tiny-1b", "medium-34b"]]
    try:
        with httpx.Client(base_url=running.base_url, timeout=60) as http:
            answers = _route_300(http, allowed_sets)
            batch = http.post("/route/batch", json={"queries": [f"batch {i}" for i in range(100)]}).json()
            unknown = http.post("/route", json={"query": "q", "allowed_models": ["gpt-9", NEW]})
            assert unknown.status_code == 422 and "gpt-9" in unknown.json()["error"]["message"]
            for i, query_id in enumerate([answer["query_id"] for answer in answers] + batch["query_ids"]):
                feedback = {"query_id": query_id, "quality": float(i % 2), "cost": 0.001}
                assert http.post("/feedback", json=feedback).status_code == 200
            metrics = {
                sample.labels["model"]: sample.value
                for family in text_string_to_metric_families(http.get("/metrics").text)
                for sample in family.samples
                if sample.name == "routerl_decisions_total"
            }
    finally:
        _stop(running.process)

    records = {r["query_id"]: r for r in map(json.loads, log.read_text().splitlines()) if "model" in r}
    models = list(answers[0]["scores"])
    assert NEW not in models and sorted(models) == sorted(DEMO_MODELS)
    exploration = Exploration(floor=NEW_FLOOR, floored=frozenset(), new_models=(NEW,))
    chosen_new, new_requests = 0, 0
    for answer in answers:
        record = records[answer["query_id"]]
        assert record["model"] == answer["model"]
        names = [*models, NEW]
        indices = sorted(names.index(m) for m in answer["allowed"] or names)
        probabilities = exploration.probabilities([answer["scores"][m] for m in models], indices)
        assert record["propensity"] == pytest.approx(probabilities[names.index(record["model"])], rel=1e-12)
        if NEW in (answer["allowed"] or names):
            assert probabilities[-1] == NEW_FLOOR
            chosen_new += record["model"] == NEW
            new_requests += 1
        else:
            assert record["model"] != NEW and record["propensity"] == 1.0
    assert new_requests == 225
    assert abs(chosen_new - NEW_FLOOR * new_requests) <= 4 * math.sqrt(new_requests * NEW_FLOOR * (1 - NEW_FLOOR))
    batch_new = batch["models"].count(NEW)
    assert abs(batch_new - NEW_FLOOR * 100) <= 4 * math.sqrt(100 * NEW_FLOOR * (1 - NEW_FLOOR)), batch_new
    assert all(
        records[q]["propensity"] == (NEW_FLOOR if m == NEW else 1 - NEW_FLOOR)
        for q, m in zip(batch["query_ids"], batch["models"], strict=True)
    )
    assert metrics[NEW] == chosen_new + batch_new

    loaded = load_log(log).log
    assert loaded.feedback == "bandit" and loaded.stats.rows_accepted == 400
    assert loaded.propensity is not None and loaded.action is not None
    by_id = dict(zip(loaded.query_ids, loaded.propensity, strict=True))
    assert all(by_id[query_id] == record["propensity"] for query_id, record in records.items())
    served_new = sum(loaded.models[action] == NEW for action in loaded.action)
    assert served_new == chosen_new + batch_new  # the follower sees the new arm, with its feedback
