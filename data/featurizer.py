"""Text features for routing: word uni- and bigram tf-idf, projected to a few dense dimensions.

Pipeline (fitted on the training split only):

1. **Terms** of :mod:`data.tokenizer` (byte-level tokens, unigrams and bigrams).
2. **Vocabulary**: terms in at least ``min_df`` training documents, the ``max_features`` most
   frequent by document frequency (ties broken by the term's bytes, so the result is
   deterministic). At most ``fit_sample`` training documents (a seeded sample) fit it.
3. **tf-idf** (Salton & Buckley, 1988), as scikit-learn's ``sublinear_tf=True, smooth_idf=True``:
   ``tf = 1 + ln(count)``, ``idf = ln((1 + n) / (1 + df)) + 1``, then the vector is L2-normalised.
   Unknown terms are ignored; a text with no known term gives the zero vector.
4. **Projection** (latent semantic analysis, Deerwester et al., 1990): the top ``components``
   right singular vectors of the training tf-idf matrix, each rescaled so that its projection has
   unit root-mean-square over the training documents (so ridge penalties treat them alike).
5. **Structure**: the token count n as n / (mean training n) and ln(1 + n). Text length drives
   cost (tokens) and often difficulty, and normalised tf-idf alone cannot see it.
6. A constant **bias** feature 1.

Dimension: ``components + 3`` dense float32 features per query (see :attr:`dimension`).
Memory of the fitted state: ``max_features × components × 8`` bytes for the projection
(e.g. 20,000 × 32 × 8 ≈ 5 MB),
plus the vocabulary. The exported policy does not store the projection: it folds it into each
agent's first linear map (see :mod:`policies`), so the artifact holds ``max_features × m`` floats
for an agent whose first map has ``m`` outputs.

This is the Python twin, fast for training. :mod:`data.featurizer_script` is the TorchScript
twin that runs inside the exported policy; a parity test proves both give the same tf-idf.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from data.tokenizer import tokenize, with_bigrams

#: Dense features after the projection: length / mean length, ln(1 + length), bias.
N_DENSE_EXTRAS = 3


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FeaturizerConfig:
    """Hyperparameters of the text featurizer."""

    min_df: int = 2  # a term must occur in at least this many training documents
    max_features: int = 20000  # vocabulary size cap (most frequent terms by document frequency)
    components: int = 16  # dense dimensions of the LSA projection (16 led on RouterBench CV; BENCHMARKS.md)
    fit_sample: int = 100_000  # at most this many training documents fit vocabulary and projection
    seed: int = 0  # seeds the sample and the SVD's start vector


class TextFeaturizer:
    """tf-idf over a learned vocabulary, projected by LSA; ``fit`` then ``transform``."""

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.vocabulary: dict[bytes, int] = {}
        self.idf = np.zeros(0)
        self.projection = np.zeros((0, 0))  # (V, components), rescaled
        self.length_scale = 1.0  # mean token count of the training documents

    @property
    def n_terms(self) -> int:
        """Vocabulary size V (the tf-idf dimension)."""
        return len(self.vocabulary)

    @property
    def dimension(self) -> int:
        """Dense feature dimension: projection components, two structure features, the bias."""
        return self.projection.shape[1] + N_DENSE_EXTRAS

    def fit(self, texts: Sequence[str]) -> TextFeaturizer:
        """Learn vocabulary, idf and projection from training texts."""
        config = self.config
        if len(texts) > config.fit_sample:
            rng = np.random.default_rng(config.seed)
            chosen = np.sort(rng.choice(len(texts), size=config.fit_sample, replace=False))
            texts = [texts[i] for i in chosen.tolist()]
        document_frequency: Counter[bytes] = Counter()
        for text in texts:
            document_frequency.update(set(with_bigrams(tokenize(text))))
        kept = [(df, term) for term, df in document_frequency.items() if df >= config.min_df]
        kept.sort(key=lambda item: (-item[0], item[1]))
        kept = kept[: config.max_features]
        self.vocabulary = {term: index for index, (_, term) in enumerate(kept)}
        frequencies = np.array([df for df, _ in kept], dtype=np.float64)
        self.idf = np.log((1.0 + len(texts)) / (1.0 + frequencies)) + 1.0
        matrix, n_tokens = self.analyze(texts)
        self.length_scale = max(float(np.mean(n_tokens)), 1.0) if len(n_tokens) else 1.0
        self.projection = self._fit_projection(matrix)
        return self

    def _fit_projection(self, matrix: sp.csr_matrix) -> np.ndarray:
        """Top right singular vectors of the tf-idf matrix, signs fixed, rescaled to unit RMS.

        Randomized SVD with power iterations (Halko, Martinsson & Tropp, 2011, Algorithm 4.4),
        seeded, so that the projection is the same in every run.
        """
        rank = min(self.config.components, min(matrix.shape))
        if rank < 1:
            return np.zeros((matrix.shape[1], 0))
        rng = np.random.default_rng(self.config.seed)
        sketch = min(rank + 10, min(matrix.shape))
        basis = _orthonormal(matrix @ rng.standard_normal((matrix.shape[1], sketch)))
        for _ in range(4):
            basis = _orthonormal(matrix @ _orthonormal(matrix.T @ basis))
        small = np.asarray((matrix.T @ basis).T)  # (sketch, V): the row space, compressed
        eigenvalues, left = np.linalg.eigh(small @ small.T)  # singular values², ascending
        order = np.argsort(-eigenvalues)[:rank]
        singular = np.sqrt(np.maximum(eigenvalues[order], 1e-300))
        vt = (left[:, order].T @ small) / singular[:, None]
        signs = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
        vt *= signs[:, None]
        projected = np.asarray(matrix @ vt.T)
        rms = np.sqrt(np.mean(projected**2, axis=0))
        rms[rms == 0] = 1.0
        return (vt / rms[:, None]).T

    def tfidf(self, texts: Sequence[str]) -> sp.csr_matrix:
        """Sparse (N, V) tf-idf rows, L2-normalised, float64."""
        return self.analyze(texts)[0]

    def analyze(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """tf-idf rows and the token count of every text, in one tokenization pass."""
        vocabulary = self.vocabulary
        rows: list[int] = []
        cols: list[int] = []
        n_tokens = np.zeros(len(texts), dtype=np.float64)
        for row, text in enumerate(texts):
            tokens = tokenize(text)
            n_tokens[row] = len(tokens)
            ids = [i for i in map(vocabulary.get, with_bigrams(tokens)) if i is not None]
            rows.extend([row] * len(ids))
            cols.extend(ids)
        n, v = len(texts), max(self.n_terms, 1)
        keys, counts = np.unique(
            np.asarray(rows, dtype=np.int64) * v + np.asarray(cols, dtype=np.int64), return_counts=True
        )
        row_of, col_of = keys // v, keys % v
        values = (1.0 + np.log(counts)) * self.idf[col_of]
        norms = np.sqrt(np.bincount(row_of, weights=values**2, minlength=n))
        values = values / norms[row_of]
        return sp.csr_matrix((values, (row_of, col_of)), shape=(n, self.n_terms)), n_tokens

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Dense (N, dimension) float32 features: projected tf-idf, structure, bias."""
        matrix, n_tokens = self.analyze(texts)
        projected = np.asarray(matrix @ self.projection)
        extras = np.stack([n_tokens / self.length_scale, np.log1p(n_tokens), np.ones(len(texts))], axis=1)
        return np.hstack([projected, extras]).astype(np.float32)

    def terms_as_text(self) -> list[str]:
        """The vocabulary as UTF-8 strings in index order (for the TorchScript twin)."""
        ordered = sorted(self.vocabulary.items(), key=lambda item: item[1])
        return [term.decode("utf-8") for term, _ in ordered]


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column span, via the eigenvectors of the small Gram matrix.

    Equivalent to a thin QR for the randomized SVD, but made of matrix products only, which
    are far faster than LAPACK's QR on tall, thin matrices on small multi-core machines.
    """
    columns = np.asarray(columns)
    eigenvalues, eigenvectors = np.linalg.eigh(columns.T @ columns)
    keep = eigenvalues > eigenvalues.max() * 1e-12
    return columns @ (eigenvectors[:, keep] / np.sqrt(eigenvalues[keep]))
