"""The generator: a synthetic world with known ground truth, drawn from :class:`SynthConfig`.

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
* **Skills.** The shape of RouterBench (Hu et al. 2024): the dearest model is the best on
  average, and cheaper ones match or beat it on subsets of queries. On the logit scale,
  ``skill[k, t] = 0.8 + 2.0 * pos_k - hardness_k * difficulty_t + deviation[k, t]``: dearer
  models are better on average (the deviation, std 0.4, averages to zero over a model's
  topics), and a topic's difficulty ``difficulty_t ~ U(0, 1)`` widens the gap, since each unit
  costs a model ``hardness_k = 1.2 - 0.9 * pos_k`` logits (1.2 for the cheapest, 0.3 for the
  dearest). ``min(T, K) - 1`` distinct cheaper models are *specialists*, each on its own topic:
  there its skill is the dearest model's plus a margin ~ U(0.3, 1.0), so it beats the dearest
  model on that topic's plain queries at a fraction of the cost. Each difficulty marker in a
  query costs another ``hardness_k`` logits, so the dearest model's lead grows with difficulty
  and it is the best model for most queries with two markers. An unexplained per-query offset
  (same for all models) and a per-(query, model) offset (``query_noise``, not predictable from
  the text) are added, then ``p = sigmoid(logit)``. With the defaults, mean expected quality
  rises with price from about 0.48 to 0.90, the dearest model leads the next by about 0.05, and
  both the topic and the difficulty can be read from the words, so a router can learn which
  model is best where.
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

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.synth.config import MODEL_CATALOG, SynthConfig, SynthLog

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

#: Syllable parts of the made-up words: onset + vowel per syllable, one coda per word.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "o", "ou")
_CODAS = ("", "", "", "n", "r", "s", "l", "m")

_START = np.datetime64("2024-01-01T00:00:00", "s")

#: Skill (logit) of a model at price position ``pos`` on a plain query of an easy topic:
#: ``intercept + slope * pos``, so that dearer models are better on average.
_BASE_SKILL_INTERCEPT, _BASE_SKILL_SLOPE = 0.8, 2.0
#: Logits a model loses per unit of difficulty (a difficulty marker, or a topic's difficulty):
#: ``cheapest + (dearest - cheapest) * pos``; weak models lose more on hard queries.
_HARDNESS_CHEAPEST, _HARDNESS_DEAREST = 1.2, 0.3
#: Std of a model's topic-to-topic skill deviation (averaging to zero over its topics).
_TOPIC_DEVIATION_STD = 0.4
#: Topic difficulties are drawn from U(0, this), in difficulty-marker units.
_MAX_TOPIC_DIFFICULTY = 1.0
#: A specialist's skill on its topic exceeds the dearest model's by U(low, high) logits.
_SPECIALIST_MARGIN = (0.3, 1.0)


@dataclass(frozen=True)
class _World:
    """What does not depend on the queries: vocabulary, models, prices and skills."""

    vocabulary: list[str]
    """[topic 0 .. topic T-1 words][shared words][difficulty markers]."""
    model_names: list[str]
    input_price: np.ndarray
    """(K,) USD per 1M prompt tokens."""
    output_price: np.ndarray
    """(K,) USD per 1M completion tokens."""
    verbosity: np.ndarray
    """(K,) factor on each model's completion length."""
    skill: np.ndarray
    """(K, T) logits of each model on each topic."""
    hardness: np.ndarray
    """(K,) logit lost per difficulty marker."""
    drift_slope: np.ndarray
    """(K,) total logit change from the first to the last query (0 without drift)."""


@dataclass(frozen=True)
class _Queries:
    """The drawn queries: text, topic, difficulty, tokens, cost and time."""

    texts: list[str]
    topic: np.ndarray
    n_markers: np.ndarray
    prompt_tokens: np.ndarray
    completion_tokens: np.ndarray
    cost: np.ndarray
    timestamps: np.ndarray


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
    chosen = sorted(MODEL_CATALOG[:k], key=lambda nm: nm[1])
    return [n for n, _ in chosen], np.array([p for _, p in chosen], dtype=np.float64)


def _round_sig(x: np.ndarray, digits: int = 2) -> np.ndarray:
    """Round positive values to ``digits`` significant digits (tidy price tables)."""
    mag = np.floor(np.log10(x))
    return np.round(x / 10.0**mag, digits - 1) * 10.0**mag


def _vocabulary(cfg: SynthConfig, rng: np.random.Generator) -> list[str]:
    """The made-up words laid out as [topic words][shared words][markers], specials among the shared."""
    t = cfg.topics
    n_special = len(_SPECIAL_WORDS) if cfg.special_words else 0
    n_made = t * cfg.vocabulary_per_topic + cfg.shared_vocabulary + cfg.difficulty_markers
    made = _make_words(rng, n_made - min(n_special, cfg.shared_vocabulary))
    n_topic_words = t * cfg.vocabulary_per_topic
    shared_made = cfg.shared_vocabulary - min(n_special, cfg.shared_vocabulary)
    shared = made[n_topic_words : n_topic_words + shared_made]
    if n_special:
        # Specials take the rarest shared slots so that they stay occasional.
        shared = shared + list(_SPECIAL_WORDS[: cfg.shared_vocabulary - shared_made])
    return made[:n_topic_words] + shared + made[n_topic_words + shared_made :]


def _skills(pos: np.ndarray, topics: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(K, T) skill logits of each model on each topic's plain queries, and (K,) hardness.

    ``pos`` holds the price positions, sorted from cheapest to dearest. See the module docstring
    for the formula. The ``min(T, K) - 1`` specialists are distinct cheaper models on distinct
    topics, so at least one topic (two with the defaults) is led by the dearest model throughout.
    """
    k = len(pos)
    hardness = _HARDNESS_CHEAPEST + (_HARDNESS_DEAREST - _HARDNESS_CHEAPEST) * pos
    topic_difficulty = rng.uniform(0.0, _MAX_TOPIC_DIFFICULTY, size=topics)
    deviation = rng.normal(0.0, _TOPIC_DEVIATION_STD, size=(k, topics))
    deviation -= deviation.mean(axis=1, keepdims=True)
    base = _BASE_SKILL_INTERCEPT + _BASE_SKILL_SLOPE * pos
    skill = base[:, None] - hardness[:, None] * topic_difficulty[None, :] + deviation
    n_specialists = min(topics, k) - 1
    specialist = rng.permutation(k - 1)[:n_specialists]
    own_topic = rng.permutation(topics)[:n_specialists]
    margin = rng.uniform(*_SPECIALIST_MARGIN, size=n_specialists)
    skill[specialist, own_topic] = skill[k - 1, own_topic] + margin
    return skill, hardness


def _world(
    cfg: SynthConfig,
    vocabulary_rng: np.random.Generator,
    model_rng: np.random.Generator,
    drift_rng: np.random.Generator,
) -> _World:
    """Vocabulary, models, prices and skills (they do not depend on the number of queries)."""
    k = cfg.models
    names, pos = _models(k)
    verbosity = model_rng.uniform(0.6, 1.6, size=k)
    skill, hardness = _skills(pos, cfg.topics, model_rng)
    drift_slope = np.zeros(k)
    if cfg.drift:
        movers = drift_rng.permutation(k)[: max(1, k // 2)]
        drift_slope[movers] = cfg.drift_strength * drift_rng.choice([-1.0, 1.0], size=len(movers))
    return _World(
        vocabulary=_vocabulary(cfg, vocabulary_rng),
        model_names=names,
        input_price=_round_sig(0.10 * 50.0**pos),
        output_price=_round_sig(0.30 * 50.0**pos),
        verbosity=verbosity,
        skill=skill,
        hardness=hardness,
        drift_slope=drift_slope,
    )


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


def _queries(cfg: SynthConfig, world: _World, rng: np.random.Generator) -> _Queries:
    """Topics, difficulty, texts, token counts, costs and timestamps of the N queries."""
    n, k, t = cfg.queries, cfg.models, cfg.topics
    topic = rng.integers(0, t, size=n)
    n_markers = np.where(rng.random(n) < cfg.hard_share, rng.integers(1, 3, size=n), 0).astype(np.int64)
    texts, n_words = _texts(cfg, rng, topic, n_markers, world.vocabulary)
    prompt_tokens = np.maximum(1, np.rint(1.3 * n_words * rng.uniform(0.9, 1.1, size=n)))
    prompt_tokens = prompt_tokens.astype(np.int64)
    base_completion = np.exp(rng.normal(np.log(60.0), 0.5, size=n)) * (1.0 + 0.5 * n_markers)
    completion = base_completion[:, None] * world.verbosity[None, :] * np.exp(rng.normal(0.0, 0.25, size=(n, k)))
    completion_tokens = np.maximum(1, np.rint(completion)).astype(np.int64)
    cost = (prompt_tokens[:, None] * world.input_price[None, :] + completion_tokens * world.output_price[None, :]) / 1e6
    gaps = np.rint(rng.exponential(cfg.mean_gap_seconds, size=n))
    gaps = np.maximum(1, gaps).astype(np.int64)
    return _Queries(
        texts=texts,
        topic=topic,
        n_markers=n_markers,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=np.round(cost, 12),
        timestamps=_START + np.cumsum(gaps).astype("timedelta64[s]"),
    )


def _outcomes(
    cfg: SynthConfig, world: _World, queries: _Queries, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(expected_quality, realised 0/1 quality), both (N, K): the logit model, label noise, Bernoulli."""
    n, k = cfg.queries, cfg.models
    when = np.arange(n) / max(1, n - 1)  # time position in [0, 1]
    logit = (
        world.skill.T[queries.topic]  # (N, K)
        - queries.n_markers[:, None] * world.hardness[None, :]
        + world.drift_slope[None, :] * (when[:, None] - 0.5)
        + rng.normal(0.0, cfg.query_offset, size=(n, 1))  # query-level, all models
        + rng.normal(0.0, cfg.query_noise, size=(n, k))
    )
    p = (1.0 - cfg.label_noise) * _sigmoid(logit) + 0.5 * cfg.label_noise
    expected_quality = np.round(np.clip(p, 0.02, 0.98), 4)
    quality = (rng.random((n, k)) < expected_quality).astype(np.float64)
    return expected_quality, quality


def _logging_policy(
    cfg: SynthConfig, expected_quality: np.ndarray, cost: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(action, its propensity, the full (N, K) action distribution) of the bandit logging policy."""
    n, k = expected_quality.shape
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
    u = rng.random(n) * cdf[:, -1]
    action = np.minimum((cdf < u[:, None]).sum(axis=1), k - 1).astype(np.int64)
    return action, probs[np.arange(n), action], probs


def generate(config: SynthConfig) -> SynthLog:
    """Generate a synthetic log and its ground truth from ``config`` (deterministic in seed).

    Independent random streams (``default_rng(seed).spawn``) feed the vocabulary, the queries,
    the outcomes, the logging policy, the drift and the models (verbosity, skills), so switching
    ``bandit`` or ``drift`` on does not change the queries, the vocabulary and skills do not
    depend on the number of queries, and the skills do not depend on the vocabulary's size.
    """
    streams = np.random.default_rng(config.seed).spawn(6)
    vocabulary_rng, query_rng, outcome_rng, policy_rng, drift_rng, model_rng = streams
    world = _world(config, vocabulary_rng, model_rng, drift_rng)
    queries = _queries(config, world, query_rng)
    expected_quality, quality = _outcomes(config, world, queries, outcome_rng)
    action = propensity = probs = None
    if config.bandit:
        action, propensity, probs = _logging_policy(config, expected_quality, queries.cost, policy_rng)

    n = config.queries
    width = max(6, len(str(n)))
    return SynthLog(
        model_names=world.model_names,
        query_ids=list(map(f"q{{:0{width}d}}".format, range(1, n + 1))),
        queries=queries.texts,
        topic=queries.topic.astype(np.int64),
        expected_quality=expected_quality,
        quality=quality,
        cost=queries.cost,
        prompt_tokens=queries.prompt_tokens,
        completion_tokens=queries.completion_tokens,
        timestamps=queries.timestamps,
        action=action,
        propensity=propensity,
        input_price=world.input_price,
        output_price=world.output_price,
        difficulty=queries.n_markers,
        logging_probabilities=probs,
        config=config,
    )
