"""Synthetic routing logs with known ground truth.

Why: tests, the demo data and benchmarks need logs where the right answer is known. Here every
(query, model) pair has an exact expected quality, so a router's choices can be scored against
the truth and against the per-query oracle, and a bandit log has exact logging propensities, so
off-policy estimators can be checked.

The world (all of it deterministic under ``SynthConfig.seed``):

* **Text.** Each topic has its own vocabulary of made-up, pronounceable words; a shared
  vocabulary is common to all topics (overlap). A query has one main topic: a share
  ``topic_word_share`` of its words comes from that topic's vocabulary (Zipf-like word
  frequencies), ``other_topic_share`` from other topics, the rest from the shared vocabulary.
  Some queries carry 1 or 2 *difficulty marker* words, which make them harder. The first word
  is capitalised, the query ends with ``?`` or ``.``. A few shared words hold non-ASCII
  characters, quotes or a backslash (``special_words``) so that writers and readers get
  exercised; they carry no signal.
* **Models and prices.** Up to 26 realistically named models (``tiny-1b`` ... ``frontier-xl``),
  each at a price position ``pos`` in [0, 1]: USD per 1M input tokens ``0.10 * 50**pos``
  (0.10 .. 5.00), per 1M output tokens ``0.30 * 50**pos`` (0.30 .. 15.00), i.e. a 50x span.
  ``cost = (prompt_tokens * input_price + completion_tokens * output_price) / 1e6`` USD, with
  ``prompt_tokens ~ 1.3 x words`` and completion tokens that vary by query and by model
  verbosity. A query costs roughly 1e-6 .. 1e-2 USD, typically 1e-5 .. 1e-3.
* **Skills.** On the logit scale, ``skill[k, t] = base(pos_k) + topic deviation + specialty
  bonus``: dearer models are better on average, but every topic has a specialist whose bonus
  is largest for cheap models, so cheap models are the best on some topics. Each difficulty
  marker lowers the logit, more for weak models. An unexplained per-query offset (same for all
  models) and a per-(query, model) offset (``query_noise``, not predictable from the text)
  are added, then ``p = sigmoid(logit)``.
* **Label noise.** With probability ``label_noise`` the grader's verdict is a fair coin. So
  ``expected_quality = (1 - label_noise) * p + label_noise / 2``, clipped to [0.02, 0.98] and
  rounded to 4 decimals; it is the exact ``E[quality | query, model]``. The realised
  ``quality`` is ``Bernoulli(expected_quality)``: 0/1 outcomes whose noise around the truth
  is the fixed, irreducible label noise.
* **Drift.** With ``drift``, some models' logits move linearly with the query's position in
  time (timestamps increase with the query index), up or down by ``drift_strength`` in total.
* **Bandit.** With ``bandit``, a logging policy picks one model per query: ``uniform``
  (propensity 1/K), ``eps-greedy`` on the expected utility ``expected_quality - cost_weight *
  cost`` (``1 - eps + eps/K`` for the greedy arm, ``eps/K`` otherwise; ties go to the lower
  index) or ``softmax`` of that utility divided by ``temperature``. ``propensity`` is the exact
  probability of the logged action.

Written rows follow the canonical long format (CONTRACTS.md section 1): one per (query, model)
for full information, one per query for a bandit log. Columns, in order: ``query_id, query,
model, quality, cost, prompt_tokens, completion_tokens, [propensity,] expected_quality,
timestamp``. ``expected_quality`` is ground-truth metadata for evaluation, never a feature;
``timestamp`` is ISO 8601 UTC (``2024-01-01T00:00:00Z``).

Only numpy and the standard library are imported here; pyarrow is imported lazily to write
``.parquet``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

__all__ = ["COLUMNS", "SynthConfig", "SynthLog", "add_arguments", "generate", "main", "write"]

#: Written columns, in order; ``propensity`` only in bandit logs.
COLUMNS: tuple[str, ...] = (
    "query_id",
    "query",
    "model",
    "quality",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "propensity",
    "expected_quality",
    "timestamp",
)

LOGGING_POLICIES: tuple[str, ...] = ("uniform", "eps-greedy", "softmax")

#: (name, price position in [0, 1]) for every model the generator knows, in the order in which
#: they are picked: ``models=K`` takes the first K, then sorts them by price. The first five
#: span the whole price range, so any K >= 2 includes the cheapest and the dearest.
_MODEL_CATALOG: tuple[tuple[str, float], ...] = (
    ("tiny-1b", 0.00),
    ("frontier-xl", 1.00),
    ("medium-34b", 0.50),
    ("small-7b", 0.25),
    ("large-70b", 0.75),
    ("mini-3b", 0.12),
    ("pro-128k", 0.88),
    ("base-13b", 0.37),
    ("mixture-8x22b", 0.62),
    ("nano-0.5b", 0.04),
    ("ultra-405b", 0.94),
    ("lite-2b", 0.08),
    ("chat-8b", 0.30),
    ("coder-15b", 0.42),
    ("instruct-22b", 0.46),
    ("moe-47b", 0.55),
    ("large-72b-chat", 0.79),
    ("xl-110b", 0.83),
    ("frontier-mini", 0.70),
    ("reasoner-32b", 0.66),
    ("edge-1.5b", 0.02),
    ("phone-3b", 0.16),
    ("small-9b", 0.21),
    ("medium-27b", 0.33),
    ("vision-90b", 0.58),
    ("frontier-max", 0.97),
)

#: Shared words that exercise text handling: non-ASCII, quotes, backslash, apostrophe.
_SPECIAL_WORDS: tuple[str, ...] = (
    "café",
    "naïve",
    '"quoted"',
    "it's",
    "C++",
    "back\\slash",
    "日本",
)

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "st",
    "tr",
    "sh",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l", "m")

_START = np.datetime64("2024-01-01T00:00:00", "s")


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic world; the same config and seed give the same log."""

    queries: int = 1500
    """Number of queries N."""
    models: int = 5
    """Number of models K (2..26), named and priced from a fixed catalog."""
    topics: int = 6
    """Number of topics, each with its own vocabulary and model skills."""
    words_per_query: int = 10
    """Mean query length in words (before difficulty markers); lengths vary 0.5x..1.5x."""
    vocabulary_per_topic: int = 60
    """Words in each topic's own vocabulary."""
    shared_vocabulary: int = 120
    """Words common to all topics (overlapping vocabulary, no signal)."""
    topic_word_share: float = 0.75
    """Share of a query's words drawn from its main topic's vocabulary."""
    other_topic_share: float = 0.05
    """Share of a query's words drawn from other topics' vocabularies (confusion)."""
    hard_share: float = 0.35
    """Share of queries carrying difficulty markers (1 or 2 marker words)."""
    difficulty_markers: int = 8
    """Number of distinct difficulty marker words."""
    special_words: bool = True
    """Put a few non-ASCII / quote / backslash words in the shared vocabulary."""
    query_noise: float = 0.2
    """Std of the per-(query, model) logit offset that the text cannot explain."""
    query_offset: float = 0.2
    """Std of the per-query logit offset (the same for all models) that the text cannot explain."""
    label_noise: float = 0.05
    """Probability that the grader's verdict is a fair coin (folded into expected_quality).
    The realised quality is Bernoulli(expected_quality) in any case: fixed label noise."""
    drift: bool = False
    """Model skills drift linearly over time (timestamps increase with the query index)."""
    drift_strength: float = 1.5
    """Total logit change of a drifting model from the first to the last query."""
    bandit: bool = False
    """Bandit-feedback log: one row per query with the logged model and its propensity."""
    logging_policy: str = "uniform"
    """Logging policy of a bandit log: "uniform", "eps-greedy" or "softmax"."""
    epsilon: float = 0.2
    """Exploration rate of the eps-greedy logging policy."""
    temperature: float = 0.1
    """Temperature of the softmax logging policy (utility units)."""
    cost_weight: float = 200.0
    """Quality given up per USD saved per query: utility = expected_quality - cost_weight * cost.
    The trade-off that the eps-greedy and softmax logging policies optimise."""
    mean_gap_seconds: float = 30.0
    """Mean time between consecutive queries; timestamps start at 2024-01-01T00:00:00Z."""
    seed: int = 0
    """Seed of numpy's default_rng; everything random derives from it."""

    def __post_init__(self) -> None:
        """Reject impossible settings early, with a message naming the field."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig: {message}")

        need(self.queries >= 1, f"queries must be >= 1, got {self.queries}")
        need(
            2 <= self.models <= len(_MODEL_CATALOG),
            f"models must be in 2..{len(_MODEL_CATALOG)}, got {self.models}",
        )
        need(self.topics >= 1, f"topics must be >= 1, got {self.topics}")
        need(self.words_per_query >= 2, f"words_per_query must be >= 2, got {self.words_per_query}")
        need(self.vocabulary_per_topic >= 1, "vocabulary_per_topic must be >= 1")
        need(self.shared_vocabulary >= 1, "shared_vocabulary must be >= 1")
        need(self.difficulty_markers >= 1, "difficulty_markers must be >= 1")
        need(0.0 <= self.topic_word_share <= 1.0, "topic_word_share must be in [0, 1]")
        need(
            0.0 <= self.other_topic_share <= 1.0 - self.topic_word_share,
            "other_topic_share must be in [0, 1 - topic_word_share]",
        )
        need(0.0 <= self.hard_share <= 1.0, "hard_share must be in [0, 1]")
        need(self.query_noise >= 0.0, "query_noise must be >= 0")
        need(self.query_offset >= 0.0, "query_offset must be >= 0")
        need(0.0 <= self.label_noise <= 1.0, "label_noise must be in [0, 1]")
        need(self.drift_strength >= 0.0, "drift_strength must be >= 0")
        need(
            self.logging_policy in LOGGING_POLICIES,
            f"logging_policy must be one of {', '.join(LOGGING_POLICIES)}, got {self.logging_policy!r}",
        )
        need(0.0 <= self.epsilon <= 1.0, "epsilon must be in [0, 1]")
        need(self.temperature > 0.0, "temperature must be > 0")
        need(
            bool(np.isfinite(self.cost_weight)) and self.cost_weight >= 0.0,
            "cost_weight must be finite and >= 0",
        )
        need(self.mean_gap_seconds >= 1.0, "mean_gap_seconds must be >= 1")


@dataclass(frozen=True, eq=False)
class SynthLog:
    """Columns of the generated log in canonical long format, plus the ground truth.

    Per-(query, model) matrices are full even for a bandit log: only ``action`` says which
    outcome was logged, the rest is ground truth for evaluation.
    """

    model_names: list[str]
    query_ids: list[str]
    """Per query, e.g. "q000001" (zero-padded, so ids sort in time order)."""
    queries: list[str]
    """Per query text."""
    topic: np.ndarray
    """(N,) int main topic per query."""
    expected_quality: np.ndarray
    """(N, K) float64 in [0.02, 0.98]: the known ground truth E[quality | query, model]."""
    quality: np.ndarray
    """(N, K) float64 realised 0/1 outcomes, Bernoulli(expected_quality)."""
    cost: np.ndarray
    """(N, K) float64 USD per query."""
    prompt_tokens: np.ndarray
    """(N,) int64."""
    completion_tokens: np.ndarray
    """(N, K) int64."""
    timestamps: np.ndarray
    """(N,) datetime64[s], strictly increasing."""
    action: np.ndarray | None
    """(N,) int64 logged model index when bandit, else None."""
    propensity: np.ndarray | None
    """(N,) float64 exact probability the logging policy gave ``action``, else None."""
    input_price: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(K,) USD per 1M prompt tokens."""
    output_price: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(K,) USD per 1M completion tokens."""
    difficulty: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(N,) int number of difficulty markers in each query (0, 1 or 2)."""
    logging_probabilities: np.ndarray | None = None
    """(N, K) the logging policy's full action distribution when bandit, else None."""
    config: SynthConfig | None = None
    """The config that generated this log."""

    @property
    def n_queries(self) -> int:
        """Number of queries N."""
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        """Number of models K."""
        return len(self.model_names)

    @property
    def is_bandit(self) -> bool:
        """True when this is a bandit-feedback log (one logged row per query)."""
        return self.action is not None

    def expected_utility(self, cost_weight: float) -> np.ndarray:
        """(N, K) expected_quality - cost_weight * cost: the ground-truth reward of each arm."""
        return self.expected_quality - cost_weight * self.cost

    def price_table(self) -> dict[str, tuple[float, float]]:
        """{model: (USD per 1M input tokens, USD per 1M output tokens)}."""
        return {
            m: (float(i), float(o))
            for m, i, o in zip(self.model_names, self.input_price, self.output_price, strict=True)
        }


# --------------------------------------------------------------------------- generation


def _make_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pronounceable made-up words (2-3 syllables), deterministic in rng."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        batch = 4 * (count - len(words)) + 16
        n_syl = np.where(rng.random(batch) < 0.75, 2, 3)
        onset = rng.integers(0, len(_ONSETS), size=(batch, 3))
        vowel = rng.integers(0, len(_VOWELS), size=(batch, 3))
        coda = rng.integers(0, len(_CODAS), size=batch)
        for i in range(batch):  # vocabulary-sized loop (hundreds), not per row
            syl = [_ONSETS[onset[i, j]] + _VOWELS[vowel[i, j]] for j in range(n_syl[i])]
            word = "".join(syl) + _CODAS[coda[i]]
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


def _zipf_weights(n: int, exponent: float = 0.8) -> np.ndarray:
    """Word-frequency weights ~ 1 / (rank + 2)**exponent, normalised."""
    w = 1.0 / (np.arange(n) + 2.0) ** exponent
    return w / w.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def _models(k: int) -> tuple[list[str], np.ndarray]:
    """Names and price positions of the K models, sorted from cheapest to dearest."""
    chosen = sorted(_MODEL_CATALOG[:k], key=lambda nm: nm[1])
    return [n for n, _ in chosen], np.array([p for _, p in chosen], dtype=np.float64)


def _round_sig(x: np.ndarray, digits: int = 2) -> np.ndarray:
    """Round positive values to ``digits`` significant digits (tidy price tables)."""
    mag = np.floor(np.log10(x))
    return np.round(x / 10.0**mag, digits - 1) * 10.0**mag


def _texts(
    cfg: SynthConfig,
    rng: np.random.Generator,
    topic: np.ndarray,
    difficulty: np.ndarray,
    vocab: list[str],
) -> tuple[list[str], np.ndarray]:
    """Query texts and word counts; vectorized over all words of all queries.

    The vocabulary is laid out as [topic 0 .. topic T-1 words][shared words][markers].
    """
    n, t, vt = cfg.queries, cfg.topics, cfg.vocabulary_per_topic
    n_topic_words = t * vt
    shared0, marker0 = n_topic_words, n_topic_words + cfg.shared_vocabulary

    lo = max(2, round(0.5 * cfg.words_per_query))
    hi = max(lo, round(1.5 * cfg.words_per_query))
    n_content = rng.integers(lo, hi + 1, size=n)
    n_words = n_content + difficulty
    total = int(n_words.sum())
    starts = np.concatenate(([0], np.cumsum(n_words)[:-1]))
    seg = np.repeat(np.arange(n), n_words)
    pos_in_query = np.arange(total) - np.repeat(starts, n_words)
    is_marker = pos_in_query >= np.repeat(n_content, n_words)

    # Content words: main topic / other topic / shared.
    u = rng.random(total)
    own_word = rng.choice(vt, size=total, p=_zipf_weights(vt))
    other_topic = (topic[seg] + rng.integers(1, t, size=total)) % t if t > 1 else topic[seg]
    vs = cfg.shared_vocabulary
    shared_word = rng.choice(vs, size=total, p=_zipf_weights(vs))
    marker_word = rng.integers(0, cfg.difficulty_markers, size=total)
    share, other = cfg.topic_word_share, cfg.other_topic_share
    word = np.where(
        u < share,
        topic[seg] * vt + own_word,
        np.where(u < share + other, other_topic * vt + own_word, shared0 + shared_word),
    )
    word = np.where(is_marker, marker0 + marker_word, word)

    # Shuffle words within each query (markers land anywhere): sort by (query, random key).
    order = np.argsort(seg + rng.random(total), kind="stable")
    word = word[order]

    # Token variants: 0 "w ", 1 "W " (first word), 2 "w?\n" / 3 "w.\n" (last word).
    question = rng.random(n) < 0.6
    variant = np.zeros(total, dtype=np.int64)
    variant[starts] = 1
    variant[starts + n_words - 1] = np.where(question, 2, 3)
    table = np.empty(4 * len(vocab), dtype=object)
    table[0::4] = [w + " " for w in vocab]
    table[1::4] = [w[:1].upper() + w[1:] + " " for w in vocab]
    table[2::4] = [w + "?\n" for w in vocab]
    table[3::4] = [w + ".\n" for w in vocab]
    text = "".join(table[4 * word + variant])
    queries = text.split("\n")[:-1]
    return queries, n_words


def generate(config: SynthConfig) -> SynthLog:
    """Generate a synthetic log and its ground truth from ``config`` (deterministic in seed).

    Independent random streams (``default_rng(seed).spawn``) feed the world (vocabulary,
    skills, prices), the queries, the outcomes and the logging policy, so switching ``bandit``
    or ``drift`` on does not change the queries, and the vocabulary and skills do not depend
    on the number of queries.
    """
    cfg = config
    n, k, t = cfg.queries, cfg.models, cfg.topics
    streams = np.random.default_rng(cfg.seed).spawn(5)
    world_rng, query_rng, outcome_rng, policy_rng, drift_rng = streams

    # ---- world: vocabulary, models, prices, skills
    n_special = len(_SPECIAL_WORDS) if cfg.special_words else 0
    n_made = t * cfg.vocabulary_per_topic + cfg.shared_vocabulary + cfg.difficulty_markers
    made = _make_words(world_rng, n_made - min(n_special, cfg.shared_vocabulary))
    n_topic_words = t * cfg.vocabulary_per_topic
    shared_made = cfg.shared_vocabulary - min(n_special, cfg.shared_vocabulary)
    shared = made[n_topic_words : n_topic_words + shared_made]
    if n_special:
        # Specials take the rarest shared slots so that they stay occasional.
        shared = shared + list(_SPECIAL_WORDS[: cfg.shared_vocabulary - shared_made])
    vocab = made[:n_topic_words] + shared + made[n_topic_words + shared_made :]

    names, pos = _models(k)
    input_price = _round_sig(0.10 * 50.0**pos)
    output_price = _round_sig(0.30 * 50.0**pos)
    verbosity = world_rng.uniform(0.6, 1.6, size=k)

    base = -0.2 + 2.0 * pos  # dearer = better on average
    deviation = world_rng.normal(0.0, 0.6, size=(k, t))  # topic-specific skill
    specialist = world_rng.permutation(np.arange(t) % k) if t >= k else world_rng.permutation(k)[:t]
    bonus = np.zeros((k, t))
    bonus[specialist, np.arange(t)] = 0.5 + 1.8 * (1.0 - pos[specialist])  # cheap gain most
    skill = base[:, None] + deviation + bonus  # (K, T) logits
    hardness = 1.3 - 0.9 * pos  # logit loss per marker
    drift_slope = np.zeros(k)
    if cfg.drift:
        movers = drift_rng.permutation(k)[: max(1, k // 2)]
        drift_slope[movers] = cfg.drift_strength * drift_rng.choice([-1.0, 1.0], size=len(movers))

    # ---- queries
    topic = query_rng.integers(0, t, size=n)
    n_markers = np.where(query_rng.random(n) < cfg.hard_share, query_rng.integers(1, 3, size=n), 0).astype(np.int64)
    texts, n_words = _texts(cfg, query_rng, topic, n_markers, vocab)
    prompt_tokens = np.maximum(1, np.rint(1.3 * n_words * query_rng.uniform(0.9, 1.1, size=n)))
    prompt_tokens = prompt_tokens.astype(np.int64)
    base_completion = np.exp(query_rng.normal(np.log(60.0), 0.5, size=n)) * (1.0 + 0.5 * n_markers)
    completion = base_completion[:, None] * verbosity[None, :] * np.exp(query_rng.normal(0.0, 0.25, size=(n, k)))
    completion_tokens = np.maximum(1, np.rint(completion)).astype(np.int64)
    cost = (prompt_tokens[:, None] * input_price[None, :] + completion_tokens * output_price[None, :]) / 1e6
    cost = np.round(cost, 12)

    gaps = np.rint(query_rng.exponential(cfg.mean_gap_seconds, size=n))
    gaps = np.maximum(1, gaps).astype(np.int64)
    timestamps = _START + np.cumsum(gaps).astype("timedelta64[s]")
    when = np.arange(n) / max(1, n - 1)  # time position in [0, 1]

    # ---- ground truth and outcomes
    logit = (
        skill.T[topic]  # (N, K)
        - n_markers[:, None] * hardness[None, :]
        + drift_slope[None, :] * (when[:, None] - 0.5)
        + outcome_rng.normal(0.0, cfg.query_offset, size=(n, 1))  # query-level, all models
        + outcome_rng.normal(0.0, cfg.query_noise, size=(n, k))
    )
    p = (1.0 - cfg.label_noise) * _sigmoid(logit) + 0.5 * cfg.label_noise
    expected_quality = np.round(np.clip(p, 0.02, 0.98), 4)
    quality = (outcome_rng.random((n, k)) < expected_quality).astype(np.float64)

    # ---- logging policy
    action: np.ndarray | None = None
    propensity: np.ndarray | None = None
    probs: np.ndarray | None = None
    if cfg.bandit:
        utility = expected_quality - cfg.cost_weight * cost
        if cfg.logging_policy == "uniform":
            probs = np.full((n, k), 1.0 / k)
        elif cfg.logging_policy == "eps-greedy":
            probs = np.full((n, k), cfg.epsilon / k)
            probs[np.arange(n), np.argmax(utility, axis=1)] = 1.0 - cfg.epsilon + cfg.epsilon / k
        else:
            z = (utility - utility.max(axis=1, keepdims=True)) / cfg.temperature
            e = np.exp(z)
            probs = e / e.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        u = policy_rng.random(n) * cdf[:, -1]
        action = np.minimum((cdf < u[:, None]).sum(axis=1), k - 1).astype(np.int64)
        propensity = probs[np.arange(n), action]

    width = max(6, len(str(n)))
    query_ids = list(map(f"q{{:0{width}d}}".format, range(1, n + 1)))
    return SynthLog(
        model_names=names,
        query_ids=query_ids,
        queries=texts,
        topic=topic.astype(np.int64),
        expected_quality=expected_quality,
        quality=quality,
        cost=cost,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        timestamps=timestamps,
        action=action,
        propensity=propensity,
        input_price=input_price,
        output_price=output_price,
        difficulty=n_markers,
        logging_probabilities=probs,
        config=cfg,
    )


# --------------------------------------------------------------------------- writing


def _row_blocks(log: SynthLog, block: int = 20000) -> Iterator[tuple[list[str], dict[str, list]]]:
    """Yield (column names, {column: values}) for blocks of queries, in row order.

    Rows are (query, model) in query-major order for a full-information log, or one per query
    (the logged model) for a bandit log. Values are plain Python objects.
    """
    n, k = log.n_queries, log.n_models
    names = np.array(log.model_names, dtype=object)
    stamps = np.char.add(np.datetime_as_string(log.timestamps, unit="s"), "Z")
    cols = [c for c in COLUMNS if c != "propensity" or log.is_bandit]
    for a in range(0, n, block):
        b = min(n, a + block)
        if log.action is not None:
            rows = np.arange(a, b)
            model = log.action[a:b]
            reps = 1
        else:
            rows = np.repeat(np.arange(a, b), k)
            model = np.tile(np.arange(k), b - a)
            reps = k
        out: dict[str, list] = {
            "query_id": [q for q in log.query_ids[a:b] for _ in range(reps)],
            "query": [q for q in log.queries[a:b] for _ in range(reps)],
            "model": names[model].tolist(),
            "quality": log.quality[rows, model].tolist(),
            "cost": log.cost[rows, model].tolist(),
            "prompt_tokens": log.prompt_tokens[rows].tolist(),
            "completion_tokens": log.completion_tokens[rows, model].tolist(),
            "expected_quality": log.expected_quality[rows, model].tolist(),
            "timestamp": stamps[rows].tolist(),
        }
        if log.propensity is not None:
            out["propensity"] = log.propensity[a:b].tolist()
        yield cols, out


def _reprs(values: np.ndarray) -> list[str]:
    """``repr`` of each float, formatting each distinct value once (costs repeat a lot)."""
    unique, inverse = np.unique(values, return_inverse=True)
    return np.array(list(map(repr, unique.tolist())), dtype=object)[inverse.ravel()].tolist()


def _write_jsonl(log: SynthLog, path: Path) -> int:
    """Write JSON lines, fast: each line is glued from precomputed string pieces.

    Why so: 11M rows must take well under a minute. Each query text is JSON-escaped once with
    json.dumps (ASCII-escaped, so every line is pure ASCII); per-model constants and expected
    qualities (4 decimals) come from lookup tables; only costs, propensities and token counts
    are formatted (each distinct value once). Numbers are written with ``repr``: exact
    round trip.
    """
    n, k = log.n_queries, log.n_models
    stamps = np.char.add(np.datetime_as_string(log.timestamps, unit="s"), "Z").tolist()
    prop = ',"propensity":{!r}'
    # "model":"<name>","quality":<q>,"cost":   indexed by 2 * model + quality
    model_quality = np.array(
        [f'"model":{json.dumps(m)},"quality":{q!r},"cost":' for m in log.model_names for q in (0.0, 1.0)],
        dtype=object,
    )
    eq_table = np.array([f',"expected_quality":{i / 1e4!r}' for i in range(10001)], dtype=object)
    int_table = np.array(list(map(str, range(int(log.completion_tokens.max()) + 1))), dtype=object)
    block = 20000
    rows = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for a in range(0, n, block):
            b = min(n, a + block)
            reps = 1 if log.action is not None else k
            qidx = np.repeat(np.arange(a, b), reps)
            midx = log.action[a:b] if log.action is not None else np.tile(np.arange(k), b - a)
            head = np.array(
                [
                    f'{{"query_id":"{i}","query":{json.dumps(q)},'
                    for i, q in zip(log.query_ids[a:b], log.queries[a:b], strict=True)
                ],
                dtype=object,
            )[qidx - a].tolist()
            tokens = np.array(
                [f',"prompt_tokens":{p},"completion_tokens":' for p in log.prompt_tokens[a:b].tolist()],
                dtype=object,
            )
            tokens = tokens[qidx - a].tolist()
            tail = np.array([f',"timestamp":"{s}"}}\n' for s in stamps[a:b]], dtype=object)
            tail = tail[qidx - a].tolist()
            mq = model_quality[2 * midx + (log.quality[qidx, midx] > 0.5)].tolist()
            cost = _reprs(log.cost[qidx, midx])
            ctok = int_table[log.completion_tokens[qidx, midx]].tolist()
            if log.propensity is not None:
                ctok = [c + prop.format(r) for c, r in zip(ctok, log.propensity[a:b].tolist(), strict=True)]
            eq = eq_table[np.rint(log.expected_quality[qidx, midx] * 1e4).astype(np.int64)].tolist()
            f.write(
                "".join(
                    [
                        f"{h}{m}{c}{t}{ct}{e}{tl}"
                        for h, m, c, t, ct, e, tl in zip(head, mq, cost, tokens, ctok, eq, tail, strict=True)
                    ]
                )
            )
            rows += len(head)
    return rows


def _write_csv(log: SynthLog, path: Path) -> int:
    """Write CSV with a header row (csv module quoting, UTF-8)."""
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        header_done = False
        for cols, block in _row_blocks(log):
            if not header_done:
                writer.writerow(cols)
                header_done = True
            writer.writerows(zip(*(block[c] for c in cols), strict=True))
            rows += len(block["query_id"])
    return rows


def _write_parquet(log: SynthLog, path: Path) -> int:
    """Write Parquet (pyarrow imported lazily); timestamp kept as an ISO 8601 string."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError("writing .parquet needs pyarrow (pip install pyarrow)") from exc
    writer = None
    rows = 0
    try:
        for cols, block in _row_blocks(log, block=200000):
            table = pa.table({c: block[c] for c in cols})
            if writer is None:
                writer = pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def write(log: SynthLog, path: str | Path) -> int:
    """Write ``log`` in canonical long format to ``path`` (.jsonl, .csv or .parquet by suffix).

    Creates missing parent directories. Returns the number of rows written: N*K for a
    full-information log, N for a bandit log. Raises ValueError for another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    writers = {".jsonl": _write_jsonl, ".csv": _write_csv, ".parquet": _write_parquet}
    if suffix not in writers:
        raise ValueError(f"unknown output format {path.name!r}: use .jsonl, .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return writers[suffix](log, path)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``python -m data synth`` flags to ``parser``; defaults are SynthConfig's."""
    d = SynthConfig()
    parser.add_argument("--out", required=True, help="output file: .jsonl, .csv or .parquet")
    parser.add_argument("--queries", type=int, default=d.queries, help="number of queries")
    parser.add_argument("--models", type=int, default=d.models, help="number of models (2..26)")
    parser.add_argument("--topics", type=int, default=d.topics, help="number of topics")
    parser.add_argument("--words-per-query", type=int, default=d.words_per_query, help="mean words per query")
    parser.add_argument(
        "--topic-word-share",
        type=float,
        default=d.topic_word_share,
        help="share of words from the query's topic vocabulary",
    )
    parser.add_argument(
        "--query-noise",
        type=float,
        default=d.query_noise,
        help="std of the per-(query, model) logit noise the text cannot explain",
    )
    parser.add_argument(
        "--query-offset",
        type=float,
        default=d.query_offset,
        help="std of the per-query logit offset (all models) the text cannot explain",
    )
    parser.add_argument(
        "--label-noise", type=float, default=d.label_noise, help="probability that a verdict is a coin flip"
    )
    parser.add_argument("--drift", action="store_true", help="model skills drift over time")
    parser.add_argument(
        "--bandit",
        action="store_true",
        help="bandit-feedback log: one logged model per query, with propensity",
    )
    parser.add_argument(
        "--logging-policy",
        choices=LOGGING_POLICIES,
        default=d.logging_policy,
        help="logging policy of a bandit log",
    )
    parser.add_argument("--epsilon", type=float, default=d.epsilon, help="eps of eps-greedy")
    parser.add_argument(
        "--temperature", type=float, default=d.temperature, help="temperature of the softmax logging policy"
    )
    parser.add_argument(
        "--cost-weight",
        type=float,
        default=d.cost_weight,
        help="utility = quality - cost_weight * cost (USD), for the logging policy",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build a SynthConfig from parsed flags (any SynthConfig field present on ``args``)."""
    known = {f.name for f in fields(SynthConfig)}
    return SynthConfig(**{k: v for k, v in vars(args).items() if k in known and v is not None})


def main(args: argparse.Namespace) -> int:
    """Generate and write a log; exit status 0, or 2 with one message for bad settings."""
    try:
        config = config_from_args(args)
        log = generate(config)
        rows = write(log, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = f"bandit ({config.logging_policy})" if config.bandit else "full-information"
    print(f"wrote {rows} rows ({config.queries} queries x {config.models} models, {kind}) to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="python -m data.synth", description="synthetic log")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
