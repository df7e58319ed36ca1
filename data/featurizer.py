"""Text features for routing: word uni- and bigram tf-idf, projected to a few dense dimensions.

Pipeline (fitted on the training split only):

1. **Terms** of :mod:`data.tokenizer` (byte-level tokens, unigrams and bigrams).
2. **Vocabulary**: terms in at least ``min_df`` training documents, the ``max_features`` most
   frequent by document frequency (ties broken by the term's bytes, so the result is
   deterministic). At most ``fit_sample`` training documents fit it: those with the smallest
   sample keys when the caller gives them (training uses the hash of the query id, which
   ``train.py --ray`` reproduces without gathering every text), else a seeded random sample.
3. **tf-idf** (Salton & Buckley, 1988), as scikit-learn's ``sublinear_tf=True, smooth_idf=True``:
   ``tf = 1 + ln(count)``, ``idf = ln((1 + n) / (1 + df)) + 1``, then the vector is L2-normalised.
   Unknown terms are ignored; a text with no known term gives the zero vector.
4. **Projection** (latent semantic analysis, Deerwester et al., 1990): the top ``components``
   right singular vectors of the training tf-idf matrix. ``whiten`` (the default) rescales each so
   that its projection has unit root-mean-square over the training documents, so that a ridge
   penalty treats every component alike; without it the components keep their relative spread
   (the first has unit RMS), and a ridge penalty shrinks the weak directions most, as ridge
   regression on the tf-idf itself does. ``components: 0`` keeps no text representation at all
   (the structure features and the bias only). :mod:`training.tuning` chooses these by
   cross-validation.
5. **Structure**: the token count n as n / (mean training n) and ln(1 + n). Text length drives
   cost (tokens) and often difficulty, and normalised tf-idf alone cannot see it.
6. A constant **bias** feature 1.

Dimension: ``components + 3`` dense float32 features per query (see :attr:`dimension`).
Memory of the fitted state: ``max_features × components × 8`` bytes for the projection
(e.g. 20,000 × 32 × 8 ≈ 5 MB),
plus the vocabulary. The exported policy does not store the projection: it folds it into each
agent's first linear map (see :mod:`policies`), so the artifact holds ``max_features × m`` floats
for an agent whose first map has ``m`` outputs.

This is the Python twin, fast for training. :mod:`policies.scripted_featurizer` is the TorchScript
twin that runs inside the exported policy; a parity test proves both give the same tf-idf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import scipy.sparse as sp
from pydantic import ConfigDict, NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from threadpoolctl import threadpool_limits

from data.tokenizer import Tokens, VocabularyIndex, indices_of, term_weights

#: Dense features after the projection: length / mean length, ln(1 + length), bias.
N_DENSE_EXTRAS = 3
#: Texts tokenized per step: bounds the memory of the term arrays (a few hundred MB at most).
_BATCH = 65536


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FeaturizerConfig:
    """Hyperparameters of the text featurizer."""

    min_df: PositiveInt = 2  # a term must occur in at least this many training documents
    max_features: PositiveInt = 20000  # vocabulary size cap (most frequent terms by document frequency)
    components: NonNegativeInt = 16  # dense dimensions of the LSA projection (0: none); train.py tunes it
    whiten: bool = True  # each component rescaled to unit RMS; false: relative spread kept (the first unit RMS)
    fit_sample: PositiveInt = 100_000  # at most this many training documents fit vocabulary and projection
    seed: int = 0  # seeds the sample and the SVD's start vector


class TextFeaturizer:
    """tf-idf over a learned vocabulary, projected by LSA; ``fit`` then ``transform``."""

    def __init__(self, config: FeaturizerConfig | None = None) -> None:
        self.config = config or FeaturizerConfig()
        self.vocabulary: dict[bytes, int] = {}
        self.idf = np.zeros(0)
        self.projection = np.zeros((0, 0))  # (V, components), rescaled
        self.component_rms = np.zeros(0)  # RMS of each unscaled component over the training documents
        self.length_scale = 1.0  # mean token count of the training documents
        self._terms: tuple[dict[bytes, int], VocabularyIndex] | None = None  # a cache of _index()

    @property
    def n_terms(self) -> int:
        """Vocabulary size V (the tf-idf dimension)."""
        return len(self.vocabulary)

    @property
    def dimension(self) -> int:
        """Dense feature dimension: projection components, two structure features, the bias."""
        return self.projection.shape[1] + N_DENSE_EXTRAS

    def fit(self, texts: Sequence[str], sample_keys: np.ndarray | None = None) -> TextFeaturizer:
        """Learn vocabulary, idf and projection from training texts.

        Beyond ``fit_sample`` texts, a sample of them fits: the ``fit_sample`` with the smallest
        ``sample_keys`` (one number per text; ties go to the earlier text), or without keys a
        seeded random sample; either way in the texts' order.
        """
        config = self.config
        if len(texts) > config.fit_sample:
            if sample_keys is None:
                rng = np.random.default_rng(config.seed)
                chosen = rng.choice(len(texts), size=config.fit_sample, replace=False)
            else:
                if len(sample_keys) != len(texts):
                    raise ValueError(f"{len(sample_keys)} sample keys for {len(texts)} texts")
                chosen = np.argsort(sample_keys, kind="stable")[: config.fit_sample]
            texts = [texts[i] for i in np.sort(chosen).tolist()]
        self._fit_texts(texts)
        return self

    def _fit_texts(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """Fit on exactly ``texts``; return their tf-idf rows and token counts (for :meth:`fit_transform`)."""
        config = self.config
        self.vocabulary, frequencies = _vocabulary(texts, config.min_df, config.max_features)
        self.idf = np.log((1.0 + len(texts)) / (1.0 + frequencies)) + 1.0
        matrix, n_tokens = self.analyze(texts)
        self.length_scale = max(float(np.mean(n_tokens)), 1.0) if len(n_tokens) else 1.0
        self.projection = self._fit_projection(matrix)
        return matrix, n_tokens

    def _fit_projection(self, matrix: sp.csr_matrix) -> np.ndarray:
        """Top right singular vectors of the tf-idf matrix, signs fixed, rescaled to unit RMS.

        Randomized SVD with power iterations (Halko, Martinsson & Tropp, 2011, Algorithm 4.4),
        seeded, so that the projection is the same in every run.
        """
        rank = min(self.config.components, min(matrix.shape))
        if rank < 1:
            self.component_rms = np.zeros(0)
            return np.zeros((matrix.shape[1], 0))
        with _one_blas_thread():
            return self._randomized_svd(matrix, rank)

    def _randomized_svd(self, matrix: sp.csr_matrix, rank: int) -> np.ndarray:
        rng = np.random.default_rng(self.config.seed)
        sketch = min(rank + 10, min(matrix.shape))
        basis = _orthonormal(matrix @ rng.standard_normal((matrix.shape[1], sketch)))
        for _ in range(4):
            basis = _orthonormal(matrix @ _orthonormal(matrix.T @ basis))
        small = np.asarray((matrix.T @ basis).T)  # (sketch, V): the row space, compressed
        eigenvalues, left = np.linalg.eigh(small @ small.T)  # singular values², ascending
        order = np.argsort(-eigenvalues)[:rank]
        rank = len(order)  # fewer when the texts span fewer directions than asked for (a tiny training set)
        singular = np.sqrt(np.maximum(eigenvalues[order], 1e-300))
        vt = (left[:, order].T @ small) / singular[:, None]
        signs = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
        vt *= signs[:, None]
        projected = np.asarray(matrix @ vt.T)
        rms = np.sqrt(np.mean(projected**2, axis=0))
        rms[rms == 0] = 1.0
        self.component_rms = rms
        return (vt / (rms[:, None] if self.config.whiten else rms[0])).T

    def analyze(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """tf-idf rows and the token count of every text, in one tokenization pass."""
        parts = [self._analyze_batch(texts[start : start + _BATCH]) for start in range(0, len(texts), _BATCH)]
        if not parts:
            return sp.csr_matrix((0, self.n_terms)), np.zeros(0)
        return sp.vstack([m for m, _ in parts], format="csr"), np.concatenate([n for _, n in parts])

    def _analyze_batch(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`analyze` of one batch (:func:`data.tokenizer.term_weights`)."""
        weights = term_weights(texts, self._index(), self.idf)
        matrix = sp.csr_matrix((weights.values, weights.columns, weights.indptr), shape=(len(texts), self.n_terms))
        return matrix, weights.n_tokens.astype(np.float64)

    def _index(self) -> VocabularyIndex:
        """The vocabulary prepared for vectorised look-up (cached while the vocabulary is the same)."""
        if self._terms is None or self._terms[0] is not self.vocabulary:
            self._terms = (self.vocabulary, VocabularyIndex.of(self.vocabulary))
        return self._terms[1]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Dense (N, dimension) float32 features: projected tf-idf, structure, bias.

        Batched, so that the sparse matrix of a million texts is never held whole.
        """
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            matrix, n_tokens = self._analyze_batch(texts[start : start + _BATCH])
            out[start : start + len(n_tokens)] = self._dense(matrix, n_tokens)
        return out

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` of the same texts, tokenizing them once when all of them fit.

        The same numbers as the two calls (each row's features depend on that row alone).
        """
        if len(texts) > self.config.fit_sample:
            return self.fit(texts).transform(texts)
        return self._dense(*self._fit_texts(texts))

    def _dense(self, matrix: sp.csr_matrix, n_tokens: np.ndarray) -> np.ndarray:
        """The dense features of analyzed rows: projected tf-idf, then length / mean length, ln(1 + length), 1."""
        projected = np.asarray(matrix @ self.projection)
        extras = np.stack([n_tokens / self.length_scale, np.log1p(n_tokens), np.ones(len(n_tokens))], axis=1)
        return np.hstack([projected, extras]).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (``numpy.savez`` without pickle): :meth:`from_arrays` inverts it.

        The vocabulary is one byte string of the terms in index order and their end offsets; the
        configuration is its JSON text as bytes.
        """
        ordered = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {
            "terms": np.frombuffer(b"".join(ordered), dtype=np.uint8),
            "term_ends": np.cumsum([len(term) for term in ordered], dtype=np.int64),
            "idf": self.idf,
            "projection": self.projection,
            "component_rms": self.component_rms,
            "length_scale": np.asarray(self.length_scale),
            "config": np.frombuffer(json.dumps(asdict(self.config)).encode(), dtype=np.uint8),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TextFeaturizer:
        """The featurizer that :meth:`to_arrays` wrote."""
        featurizer = cls(FeaturizerConfig(**json.loads(bytes(arrays["config"]).decode())))
        blob, ends = bytes(arrays["terms"]), np.asarray(arrays["term_ends"]).tolist()
        starts = [0, *ends[:-1]]
        featurizer.vocabulary = {blob[start:end]: index for index, (start, end) in enumerate(zip(starts, ends))}
        featurizer.idf = np.asarray(arrays["idf"], dtype=np.float64)
        featurizer.projection = np.asarray(arrays["projection"], dtype=np.float64)
        featurizer.component_rms = np.asarray(arrays["component_rms"], dtype=np.float64)
        featurizer.length_scale = float(arrays["length_scale"])
        return featurizer

    def terms_as_text(self) -> list[str]:
        """The vocabulary as UTF-8 strings in index order (for the TorchScript twin)."""
        ordered = sorted(self.vocabulary.items(), key=lambda item: item[1])
        return [term.decode("utf-8") for term, _ in ordered]


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread (threadpoolctl).

    The projection's dense products are tall and thin (texts × ~26): on a small machine shared
    with other jobs, OpenBLAS's threads mostly wait for each other (measured: 20× the CPU time
    and 30× the wall time of one thread at load average 9). One thread computes the same
    blocks in the same order, so the projection is bit-identical on every machine.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _vocabulary(texts: Sequence[str], min_df: int, max_features: int) -> tuple[dict[bytes, int], np.ndarray]:
    """Terms in at least ``min_df`` texts, the ``max_features`` most frequent by document frequency.

    Ties are broken by the term's bytes (pyarrow sorts binary values bytewise, as Python sorts
    ``bytes``). Returns the vocabulary (term → index) and the document frequencies in index order.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    terms, doc = Tokens.of(texts).terms()
    encoded = pc.dictionary_encode(terms)
    distinct = encoded.dictionary
    term = indices_of(encoded.indices)
    pairs = np.sort(doc * max(len(distinct), 1) + term)  # (text, term) keys; a sort beats np.unique's hash
    present = pairs[np.flatnonzero(np.diff(pairs, prepend=-1))]  # each (text, term) pair once
    frequency = np.bincount(present % max(len(distinct), 1), minlength=len(distinct))
    kept = np.flatnonzero(frequency >= min_df)
    table = pa.table({"negative_df": -frequency[kept], "term": distinct.take(pa.array(kept))})
    order = pc.sort_indices(table, sort_keys=[("negative_df", "ascending"), ("term", "ascending")])
    order = np.asarray(order.to_numpy())[:max_features]
    chosen = kept[order]
    words = distinct.take(pa.array(chosen)).to_pylist()
    return {word: index for index, word in enumerate(words)}, frequency[chosen].astype(np.float64)


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column span, via the eigenvectors of the small Gram matrix.

    Equivalent to a thin QR for the randomized SVD, but made of matrix products only, which
    are far faster than LAPACK's QR on tall, thin matrices on small multi-core machines.
    """
    columns = np.asarray(columns)
    eigenvalues, eigenvectors = np.linalg.eigh(columns.T @ columns)
    keep = eigenvalues > eigenvalues.max() * 1e-12
    return columns @ (eigenvectors[:, keep] / np.sqrt(eigenvalues[keep]))
