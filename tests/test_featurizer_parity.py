"""The TorchScript featurizer inside the artifact and the Python twin give the same vectors."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from data.featurizer import FeaturizerConfig, TextFeaturizer
from data.loading import load_log
from policies.export import script
from policies.scripted_featurizer import EXTRAS_TABLE, TF_TABLE, ScriptedFeaturizer

TRAIN = [
    "What is the capital of France?",
    "Write a Python function that reverses a list.",
    "Explain the café's crème brûlée — in 日本語, please!",
    "what is the CAPITAL of spain?",
    "Write a function in Python to sort a list.",
    "Explain gravity to a child.",
    "Résumé: naïve Ünïcödé tokens, ÀÉÎ and emoji 🙂🙂.",
    "tabs\tand\nnewlines\x0bvertical\x0cfeed\rreturn",
]
PROBES = [
    "",
    "   \t\n",
    "!!!???",
    "CAPITAL of France?!",
    "Ünïcödé ÀÉÎ lowercases only ASCII: ÀB → Àb",
    "emoji 🙂🙂 and 日本語 and crème brûlée",
    "\x1c\x1d\x1e separators are not whitespace here\u00a0nbsp\u2003emspace",
    "python " * 20000,  # very long
    "a_b-c.d/e:f@g[h]i`j{k}l~m",
]


def _fit(texts: list[str]) -> TextFeaturizer:
    return TextFeaturizer(FeaturizerConfig(min_df=1, components=4)).fit(texts)


def _dense(scripted: torch.jit.ScriptModule, texts: list[str], n_terms: int) -> torch.Tensor:
    """The scripted featurizer's (N, V) tf-idf, made dense from its (rows, cols, values) triplets."""
    rows, cols, values, _ = scripted(texts)
    matrix = torch.zeros(len(texts), n_terms, dtype=torch.float64)
    matrix[rows, cols] = values
    return matrix


def _compare(featurizer: TextFeaturizer, texts: list[str]) -> None:
    scripted = script(ScriptedFeaturizer.from_featurizer(featurizer))
    python_tfidf, python_lengths = featurizer.analyze(texts)
    torch_tfidf = _dense(scripted, texts, featurizer.n_terms).numpy()
    np.testing.assert_allclose(torch_tfidf, python_tfidf.toarray(), rtol=1e-12, atol=1e-12)
    _, _, _, extras = scripted(texts)
    np.testing.assert_allclose(extras[:, 1].numpy(), np.log1p(python_lengths), rtol=1e-14)
    dense = featurizer.transform(texts)
    np.testing.assert_allclose(dense[:, -3:], extras.numpy().astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, WORLD!", [b"hello", b"world"]),
        ("ÀB", ["Àb".encode()]),  # non-ASCII bytes kept, ASCII lowercased
        ("a\u00a0b", ["a\u00a0b".encode()]),  # NBSP is not ASCII whitespace
        ("x_y", [b"x", b"y"]),  # underscore is ASCII punctuation
    ],
)
def test_tokenization_is_byte_level_and_ascii_lowercase(text: str, tokens: list[bytes]) -> None:
    """Both twins see the same terms: the fitted vocabulary is the tokens and their bigram, nothing else."""
    featurizer = _fit([text])
    bigrams = [left + b" " + right for left, right in pairwise(tokens)]
    assert sorted(featurizer.vocabulary) == sorted(tokens + bigrams)
    _compare(featurizer, [text, ""])


def test_parity_on_edge_cases() -> None:
    featurizer = _fit(TRAIN + PROBES[3:7])
    assert featurizer.n_terms > 20
    _compare(featurizer, PROBES + TRAIN)


def test_empty_text_gives_zero_tfidf_and_empty_batch_works() -> None:
    featurizer = _fit(TRAIN)
    scripted = script(ScriptedFeaturizer.from_featurizer(featurizer))
    rows, cols, values, extras = scripted([""])
    assert len(rows) == len(cols) == len(values) == 0 and extras.shape == (1, 3)
    assert featurizer.analyze([""])[0].nnz == 0
    rows, cols, values, extras = scripted([])
    assert len(rows) == len(cols) == len(values) == 0 and extras.shape == (0, 3)


def test_rows_are_unit_norm_and_sublinear() -> None:
    featurizer = _fit(TRAIN)
    matrix = featurizer.analyze(["python python python list", "list"])[0].toarray()
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0)
    python, unit = featurizer.vocabulary[b"python"], featurizer.vocabulary[b"list"]
    ratio = matrix[0, python] / matrix[0, unit]
    expected = (1 + np.log(3)) * featurizer.idf[python] / featurizer.idf[unit]
    assert ratio == pytest.approx(expected)


def test_parity_on_routerbench_prompts(routerbench) -> None:
    log = load_log(routerbench).log
    rng = np.random.default_rng(0)
    sample = [log.queries[i] for i in rng.choice(log.n_queries, size=120, replace=False)]
    featurizer = TextFeaturizer(FeaturizerConfig(components=8)).fit(sample[:100])
    _compare(featurizer, sample)


def test_projection_is_deterministic() -> None:
    first, second = _fit(TRAIN), _fit(TRAIN)
    np.testing.assert_array_equal(first.projection, second.projection)
    assert torch.equal(torch.from_numpy(first.transform(PROBES)), torch.from_numpy(second.transform(PROBES)))


def test_single_text_path_equals_batch_path_and_bags_match_triplets() -> None:
    """One text takes its own normalisation branch; batches (with empty texts inside) another."""
    featurizer = _fit(TRAIN + PROBES[3:7])
    scripted = script(ScriptedFeaturizer.from_featurizer(featurizer))
    texts = ["", *TRAIN[:3], "!!!", *PROBES[3:7], ""]
    batch = _dense(scripted, texts, featurizer.n_terms)
    for i, text in enumerate(texts):
        torch.testing.assert_close(_dense(scripted, [text], featurizer.n_terms)[0], batch[i], rtol=1e-14, atol=1e-15)
    rows, cols, values, extras = scripted(texts)
    bag_cols, offsets, bag_values, bag_extras = scripted.bags(texts)
    assert torch.equal(bag_cols, cols) and torch.equal(bag_values, values) and torch.equal(bag_extras, extras)
    sizes = torch.bincount(rows, minlength=len(texts))
    assert offsets.tolist() == torch.cumsum(sizes, 0).sub(sizes).tolist()
    assert sizes[0] == 0 and sizes[-1] == 0 and sizes[1] > 0


class _PolicyBags(torch.nn.Module):
    """Exposes the policy's own :meth:`ScriptedFeaturizer.shared_bags` (not exported: its tensors are shared)."""

    def __init__(self, featurizer: ScriptedFeaturizer) -> None:
        super().__init__()
        self.featurizer = featurizer

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.featurizer.shared_bags(texts)


def test_one_text_through_the_tables_gives_its_bags_bit_for_bit_on_both_sides_of_their_limits() -> None:
    """The policy's single-text path gathers 1 + ln(count) and the extras row from tables: no bit may change."""
    featurizer = _fit(TRAIN)
    scripted = script(_PolicyBags(ScriptedFeaturizer.from_featurizer(featurizer)))
    texts = ["", "python", "Explain gravity to a child."]
    texts += [" ".join(["python"] * count) + " list" for count in (TF_TABLE - 1, TF_TABLE, TF_TABLE + 1)]
    texts += ["gravity " * (EXTRAS_TABLE + shift) for shift in (-1, 0, 1)]
    for text in texts:
        shared, fresh = scripted([text]), scripted.featurizer.bags([text])
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(shared, fresh, strict=True)), text[:40]


def test_extras_rows_are_the_formula_column_by_column_bit_for_bit() -> None:
    """[n / length_scale, ln(1 + n), 1], each column computed on its own as before the one-``where`` form."""
    featurizer = ScriptedFeaturizer(["a"], torch.ones(1, dtype=torch.float64), 10.739805825242719)
    counts = torch.arange(2 * EXTRAS_TABLE, dtype=torch.float64)
    expected = torch.stack([counts / featurizer.length_scale, torch.log1p(counts), torch.ones_like(counts)], dim=1)
    _, _, _, extras = script(featurizer)([" a" * n for n in range(2 * EXTRAS_TABLE)])
    assert torch.equal(extras, expected)
    assert torch.equal(featurizer.extras_table, expected[:EXTRAS_TABLE])


def test_a_bigram_is_counted_when_its_first_token_is_not_a_term() -> None:
    """The token table holds tokens that only start bigrams (a vocabulary capped by max_features can drop them)."""
    scripted = script(ScriptedFeaturizer(["b", "a b", "x y z"], torch.ones(3, dtype=torch.float64), 1.0))
    rows, cols, values, _ = scripted(["A b, a; b x y z"])
    assert rows.tolist() == [0, 0] and cols.tolist() == [0, 1]  # "b" twice, "a b" twice, "x y z" never a term
    torch.testing.assert_close(values, torch.full((2,), 0.5**0.5, dtype=torch.float64))
