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

A fit tokenizes its texts once and works from their term counts (:class:`TermCounts`), which
cross-validation shares across its fits (:mod:`training.tuning`).

This is the Python twin, fast for training. :mod:`policies.scripted_featurizer` is the TorchScript
twin that runs inside the exported policy; a parity test proves both give the same tf-idf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import ConfigDict, NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from threadpoolctl import threadpool_limits

from data.tokenizer import TermWeights, Tokens, VocabularyIndex, count_pairs, indices_of, term_weights

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


@dataclass(frozen=True)
class TermCounts:
    """How often each distinct term occurs in each of a batch of texts: the texts tokenized once.

    A fit needs nothing else of its texts (vocabulary, idf, tf-idf rows and lengths all follow
    from the counts), so cross-validation (:mod:`training.tuning`), which fits on many subsets of
    the same texts, counts them once and gives each fit the rows of its subset (:meth:`rows`).
    """

    counts: sp.csr_matrix  # (N, D) occurrences of each distinct term in each text; ascending columns in each row
    terms: Any  # pyarrow large_binary array (D,): the distinct terms
    rank: np.ndarray  # (D,) each term's position in bytewise order (pyarrow sorts binary values as Python sorts bytes)
    n_tokens: np.ndarray  # (N,) int64: tokens per text

    @classmethod
    def of(cls, texts: Sequence[str]) -> TermCounts:
        """The counts of ``texts`` (:meth:`data.tokenizer.Tokens.terms`: unigrams and bigrams)."""
        import pyarrow.compute as pc

        tokens = Tokens.of(texts)
        terms, doc = tokens.terms()
        encoded = pc.dictionary_encode(terms)
        distinct = encoded.dictionary
        row_of, columns, counts = count_pairs(doc, indices_of(encoded.indices), len(distinct))
        rank = np.empty(len(distinct), dtype=np.int64)
        rank[np.asarray(pc.sort_indices(distinct))] = np.arange(len(distinct))
        indptr = np.searchsorted(row_of, np.arange(len(texts) + 1))
        matrix = sp.csr_matrix((counts, columns, indptr), shape=(len(texts), len(distinct)))
        return cls(matrix, distinct, rank, tokens.n_tokens)

    @property
    def n_texts(self) -> int:
        return len(self.n_tokens)

    def rows(self, rows: np.ndarray) -> TermCounts:
        """The counts of the texts ``rows``, in that order."""
        return replace(self, counts=self.counts[rows], n_tokens=self.n_tokens[rows])

    def vocabulary(self, min_df: int, max_features: int) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary's terms (indices into :attr:`terms`) and their document frequencies, in vocabulary order.

        Terms in at least ``min_df`` texts, the ``max_features`` most frequent by document
        frequency, ties broken by the term's bytes, so that the result is deterministic.
        """
        frequency = np.bincount(self.counts.indices, minlength=self.counts.shape[1])
        kept = np.flatnonzero(frequency >= min_df)
        chosen = kept[np.lexsort((self.rank[kept], -frequency[kept]))[:max_features]]
        return chosen, frequency[chosen]


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
        self._counted: tuple[Any, dict[bytes, int], np.ndarray] | None = None  # a cache of _vocabulary_ids()

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
        chosen = self._fitting_rows(len(texts), sample_keys)
        self._fit_counted(TermCounts.of(texts if chosen is None else [texts[i] for i in chosen.tolist()]))
        return self

    def _fitting_rows(self, n_texts: int, sample_keys: np.ndarray | None) -> np.ndarray | None:
        """The rows that fit, in order, when there are more than ``fit_sample`` texts (None: all of them)."""
        config = self.config
        if n_texts <= config.fit_sample:
            return None
        if sample_keys is None:
            rng = np.random.default_rng(config.seed)
            return np.sort(rng.choice(n_texts, size=config.fit_sample, replace=False))
        if len(sample_keys) != n_texts:
            raise ValueError(f"{len(sample_keys)} sample keys for {n_texts} texts")
        return np.sort(np.argsort(sample_keys, kind="stable")[: config.fit_sample])

    def _fit_counted(self, counts: TermCounts) -> sp.csr_matrix:
        """Fit on exactly the counted texts; return their tf-idf rows (for :meth:`fit_transform_counted`)."""
        config = self.config
        columns, frequencies = counts.vocabulary(config.min_df, config.max_features)
        terms = counts.terms.take(columns).to_pylist()
        self.vocabulary = {term: index for index, term in enumerate(terms)}
        ids = np.full(len(counts.terms), -1, dtype=np.int64)
        ids[columns] = np.arange(len(columns))
        self._counted = (counts.terms, self.vocabulary, ids)  # counts.rows() of the same texts share the terms
        self.idf = np.log((1.0 + counts.n_texts) / (1.0 + frequencies.astype(np.float64))) + 1.0
        matrix = self._counted_matrix(counts)
        n_tokens = counts.n_tokens.astype(np.float64)
        self.length_scale = max(float(np.mean(n_tokens)), 1.0) if len(n_tokens) else 1.0
        self.projection = self._fit_projection(matrix)
        return matrix

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
        return self._matrix(weights), weights.n_tokens.astype(np.float64)

    def _counted_matrix(self, counts: TermCounts) -> sp.csr_matrix:
        """The tf-idf rows of counted texts: their counts of the vocabulary's terms, weighed as :meth:`analyze` does."""
        matrix = counts.counts
        ids = self._vocabulary_ids(counts.terms)[matrix.indices]
        known = ids >= 0
        row_of = np.repeat(np.arange(counts.n_texts, dtype=np.int64), np.diff(matrix.indptr))[known]
        ids = ids[known]
        order = np.argsort(row_of * max(self.n_terms, 1) + ids)  # entries by (text, vocabulary index), as analyze's
        weights = TermWeights.of_counts(row_of[order], ids[order], matrix.data[known][order], self.idf, counts.n_tokens)
        return self._matrix(weights)

    def _vocabulary_ids(self, terms: Any) -> np.ndarray:
        """The vocabulary index of each of ``terms`` (-1: none), cached (:meth:`_fit_counted` sets it for its terms)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._counted is None or self._counted[0] is not terms or self._counted[1] is not self.vocabulary:
            ordered = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
            ids = indices_of(pc.index_in(terms, value_set=pa.array(ordered, type=terms.type)))
            self._counted = (terms, self.vocabulary, ids)
        return self._counted[2]

    def _matrix(self, weights: TermWeights) -> sp.csr_matrix:
        """:class:`data.tokenizer.TermWeights` as a (texts, V) sparse matrix."""
        shape = (len(weights.n_tokens), self.n_terms)
        return sp.csr_matrix((weights.values, weights.columns, weights.indptr), shape=shape)

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
        return self.fit_transform_counted(TermCounts.of(texts))

    def fit_transform_counted(self, counts: TermCounts) -> np.ndarray:
        """:meth:`fit_transform` of the texts ``counts`` counted, from their counts: the same numbers, no tokenizing."""
        chosen = self._fitting_rows(counts.n_texts, None)
        if chosen is None:
            return self._dense(self._fit_counted(counts), counts.n_tokens.astype(np.float64))
        self._fit_counted(counts.rows(chosen))
        return self.transform_counted(counts)

    def transform_counted(self, counts: TermCounts) -> np.ndarray:
        """:meth:`transform` of the texts ``counts`` counted, from their counts."""
        return self._dense(self._counted_matrix(counts), counts.n_tokens.astype(np.float64))

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


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column span, via the eigenvectors of the small Gram matrix.

    Equivalent to a thin QR for the randomized SVD, but made of matrix products only, which
    are far faster than LAPACK's QR on tall, thin matrices on small multi-core machines.
    """
    columns = np.asarray(columns)
    eigenvalues, eigenvectors = np.linalg.eigh(columns.T @ columns)
    keep = eigenvalues > eigenvalues.max() * 1e-12
    return columns @ (eigenvectors[:, keep] / np.sqrt(eigenvalues[keep]))
