"""The synthetic world's settings (:class:`SynthConfig`) and what a generation returns (:class:`SynthLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.routing_log import RoutingLog

#: The logging policies a bandit log can be drawn with.
LOGGING_POLICIES: tuple[str, ...] = ("uniform", "eps-greedy", "softmax")

#: (name, price position in [0, 1]) for every model the generator knows, in the order in which
#: they are picked: ``models=K`` takes the first K, then sorts them by price. The first five
#: span the whole price range, so any K >= 2 includes the cheapest and the dearest.
MODEL_CATALOG: tuple[tuple[str, float], ...] = (
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


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the synthetic world; the same config and seed give the same log.

    The defaults are the demo log's: ``data/demo/demo.jsonl`` is exactly the output of
    ``python -m data synth --out data/demo/demo.jsonl`` (``tests/test_synth.py`` checks every byte).
    """

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
    difficulty_markers: int = 4
    """Number of distinct difficulty marker words. Few, so that each is frequent enough for the
    default features (16 LSA components) to see it: on the demo log, a linear fit of the marker
    count on the training split's features explains 77% of its variance on the held-out queries
    with 4 markers, 39% with 8."""
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
            2 <= self.models <= len(MODEL_CATALOG),
            f"models must be in 2..{len(MODEL_CATALOG)}, got {self.models}",
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
    def shape(self) -> tuple[int, int]:
        """(N, K): the numbers of queries and of models, the shape of the per-(query, model) matrices."""
        return len(self.query_ids), len(self.model_names)

    @property
    def tasks(self) -> list[str]:
        """Per query its task, the name of its main topic (``topic-0`` ...): the log's ``task`` column."""
        return [f"topic-{topic}" for topic in self.topic.tolist()]

    @property
    def is_bandit(self) -> bool:
        """True when this is a bandit-feedback log (one logged row per query)."""
        return self.action is not None

    def routing_log(self, expected: bool = False) -> RoutingLog:
        """The full table as an in-memory :class:`~data.routing_log.RoutingLog`, without writing a file.

        ``expected``: the ground truth ``expected_quality`` as the quality (noise-free), else the drawn one.
        """
        n, k = self.shape
        return RoutingLog(
            models=tuple(self.model_names),
            query_ids=np.array(self.query_ids, dtype=object),
            queries=self.queries,
            quality=self.expected_quality if expected else self.quality,
            cost=self.cost,
            prompt_tokens=np.broadcast_to(self.prompt_tokens[:, None], (n, k)).astype(np.float64),
            completion_tokens=self.completion_tokens.astype(np.float64),
        )
