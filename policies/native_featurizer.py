"""The native engine's tf-idf and first linear map, from the portable file (numpy, no torch).

The same tokenization and numbers as the TorchScript twin (:mod:`policies.scripted_featurizer`,
docs/contracts.md §2.4), computed where CPython and numpy are fastest:

- **One text** (:meth:`NativeFeaturizer.hidden_one`, the service's common case when idle): the
  text is encoded to UTF-8, lowercased and cleaned by one ``bytes.translate`` (ASCII letters to
  lower case, every delimiter byte of the header to a space: exactly ``bytes.lower`` and the
  tokenizer's delimiters) and split by ``bytes.split`` (runs of spaces drop out); its known terms
  are counted by a ``Counter``. The vocabulary is one dict keyed by the terms' bytes (a bigram's
  two tokens joined by a space: ``map(b" ".join, ...)``; keys of token pairs or triples would be
  looked up 1-2 µs a query faster, but their dict takes 4-8 ms longer to build for 20,000 terms), its
  values rows of ``term_rows`` from 1: a miss gives None, which ``filter`` drops, so an unknown
  term costs no numpy work and a text without a known term none at all. Every step is a C-level builtin with
  no Python code per token. Then a few numpy calls: with R = idf · text_map and idf² side by side
  in ``term_rows`` (built at load), one gather of the text's rows and one product with the pairs
  [tf, tf²] of their counts (tf = 1 + ln count, from a table; a plain sum when every count is 1)
  give both tf · R[rows] and the squared norm ‖tf · idf[rows]‖², and z = tf · R[rows] /
  ‖tf · idf[rows]‖ + extras @ dense_map, the extras' part from a table.
- **A few texts** (:meth:`NativeFeaturizer.hidden_few`, 2 to 63: a busy service's micro-batch):
  each text counted as above, then the numpy work once for the batch (one gather of every text's
  rows and pairs, the extras' rows, the norms and the sum), but for one product per text. Per
  text, against one at a time (30-word prompts, demo and RouterBench policies, BENCHMARKS.md): 3 %
  less to 7 % more at 2 texts, about the same at 3, 5-21 % less at 8 (a busy service's usual
  batch), 13-36 % less at 63; the more known terms, the more it saves.
- **Many texts** (from :data:`VECTORISED_FROM`): the training featurizer's vectorised tf-idf
  (:func:`data.tokenizer.term_weights`: numpy and pyarrow over the batch's concatenated bytes, no
  Python object per token), and z = tfidf @ text_map + extras @ dense_map (a scipy CSR product).

The three agree within float64 rounding (``tests/test_native_featurizer.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice

import numpy as np

from data.tokenizer import VocabularyIndex, term_weights
from policies.portable import PortablePolicy

#: What separates the two tokens of a bigram term.
SPACE = b" "
#: Texts of fewer tokens than this take their extras' part of z from a table built at load.
EXTRA_ROWS = 256


def tf_pairs(counts: np.ndarray) -> np.ndarray:
    """(n, 2) float64 [1 + ln c, (1 + ln c)²] of term counts c: each term's tf and its weight in the squared norm."""
    tf = np.log(counts.astype(np.float64)) + 1.0
    return np.stack([tf, tf * tf], axis=1)


#: :func:`tf_pairs` of the counts 0..4095 (row 0 unused): one gather for a text of fewer tokens.
TF_PAIRS = np.vstack([np.zeros((1, 2)), tf_pairs(np.arange(1, 4096))])
#: From this many texts the vectorised analysis is faster than counting each text (measured on the
#: RouterBench policy's vocabulary, 30-word prompts: about equal at 64 texts; at 1,024, 166,000
#: against 34,000 queries/s).
VECTORISED_FROM = 64
#: The smallest positive float64: the squared norm of a text without known terms is raised to it (no 0 / 0).
TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Bags:
    """The tf-idf of a batch as ``torch.embedding_bag`` takes it, and the dense extras.

    Text i's entries are ``columns[offsets[i]:offsets[i + 1]]`` with weights ``values[...]``
    (L2-normalised tf-idf of the vocabulary's terms); ``extras`` is (N, 3): n / length_scale,
    ln(1 + n), 1 for a text of n tokens.
    """

    columns: np.ndarray  # (T,) int64
    offsets: np.ndarray  # (N + 1,) int64
    values: np.ndarray  # (T,) float64
    extras: np.ndarray  # (N, 3) float64


class NativeFeaturizer:
    """Text → the policy's first linear map z (N, m), from the portable file's vocabulary, idf and maps."""

    def __init__(self, portable: PortablePolicy) -> None:
        header = portable.header["featurizer"]
        terms = portable.terms()
        self.n_terms = len(terms)
        # term (UTF-8 bytes, a bigram's two tokens joined by a space) → its row in term_rows (1..V)
        self.lookup = dict(zip(terms, range(1, len(terms) + 1)))
        table = bytearray(bytes(range(256)).lower())
        for byte in header["delimiters"]:
            table[int(byte)] = ord(" ")
        self.table = bytes(table)
        self.length_scale = float(header["length_scale"])
        idf = np.asarray(portable.tensors["featurizer.idf"], dtype=np.float64)
        self.text_map = np.asarray(portable.tensors["text_map"], dtype=np.float64)
        self.dense_map = np.asarray(portable.tensors["dense_map"], dtype=np.float64)
        # row 1 + j: term j's text_map row times its idf, then idf² (its weight in the squared norm); row 0 unused
        # (rows start at 1 so that filter(None, ...) drops only the look-ups that missed)
        self.width = self.text_map.shape[1]
        self.term_rows = np.zeros((len(terms) + 1, self.width + 1))
        np.multiply(self.text_map, idf[:, None], out=self.term_rows[1:, : self.width])
        self.term_rows[1:, self.width] = idf * idf
        self.idf = idf
        self.terms = terms
        # extras @ dense_map of texts of 0..EXTRA_ROWS-1 tokens (one numpy call a batch)
        self.dense_rows = self.extras(np.arange(EXTRA_ROWS)) @ self.dense_map
        self._index: VocabularyIndex | None = None  # built at the first large batch (it imports pyarrow)

    def tokens(self, text: str) -> list[bytes]:
        """The tokens of ``text`` (UTF-8, ASCII-lowercased, split at delimiters); ValueError for a lone surrogate."""
        return text.encode("utf-8").translate(self.table).split()

    def token_count(self, text: str) -> int:
        """The token count of docs/contracts.md §2.4 (the rules' length bounds)."""
        return len(self.tokens(text))

    def _counts(self, text: str) -> tuple[Counter[int], int, int]:
        """The ``term_rows`` row of each known unigram and bigram of ``text`` with its count, the number of
        known terms counted, and the text's token count (unknown terms dropped)."""
        tokens = self.tokens(text)
        get = self.lookup.get
        bigrams = map(SPACE.join, zip(tokens, islice(tokens, 1, None)))
        known = [*filter(None, map(get, tokens)), *filter(None, map(get, bigrams))]
        return Counter(known), len(known), len(tokens)

    def extras(self, n_tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """(N, 3) float64: n / length_scale, ln(1 + n), 1."""
        n_tokens = np.asarray(n_tokens, dtype=np.float64)
        return np.stack([n_tokens / self.length_scale, np.log1p(n_tokens), np.ones(len(n_tokens))], axis=1)

    def _dense(self, lengths: list[int]) -> np.ndarray:
        """extras @ dense_map (N, m) of texts of ``lengths`` tokens, a new array: the table's rows when it has them."""
        if max(lengths) < EXTRA_ROWS:
            return self.dense_rows.take(lengths, axis=0)
        return self.extras(lengths) @ self.dense_map

    def hidden_one(self, text: str) -> np.ndarray:
        """z (1, m) of one text (module docstring): one product of its rows with their [tf, tf²]."""
        counts, known, n_tokens = self._counts(text)
        distinct = len(counts)
        if distinct == 0:  # no known term: a zero tf-idf vector (as TorchScript's L2 norm leaves it)
            return self._dense([n_tokens])
        if distinct == known:  # every count 1: tf = tf² = 1, a plain sum of the rows
            sums = np.add.reduce(self.term_rows.take(np.fromiter(counts, np.intp, distinct), axis=0), axis=0)
            text_part, squared_norm = sums[: self.width], sums[self.width]
        else:  # the rows, then their counts, in one array
            rows_counts = np.fromiter(chain(counts, counts.values()), np.intp, 2 * distinct)
            rows = self.term_rows.take(rows_counts[:distinct], axis=0)
            sums = np.dot(self._tf_pairs(rows_counts[distinct:], n_tokens).T, rows)
            text_part, squared_norm = sums[0, : self.width], sums[1, self.width]
        if squared_norm == 0.0:  # only known terms of idf 0 (a hand-made file): a zero tf-idf vector
            return self._dense([n_tokens])
        z = text_part / math.sqrt(squared_norm)
        z += self.dense_rows[n_tokens] if n_tokens < EXTRA_ROWS else self._dense([n_tokens])[0]
        return z[None, :]

    @staticmethod
    def _tf_pairs(counts: np.ndarray, most_tokens: int) -> np.ndarray:
        """:func:`tf_pairs` of ``counts`` of texts of at most ``most_tokens`` tokens: from the table when no count
        can pass its end."""
        return TF_PAIRS.take(counts, axis=0) if most_tokens < len(TF_PAIRS) else tf_pairs(counts)

    def hidden_few(self, texts: Sequence[str]) -> np.ndarray:
        """z (N, m) of a few texts (module docstring): counted one by one, gathered and finished together."""
        counted = [self._counts(text) for text in texts]
        lengths = [n_tokens for _, _, n_tokens in counted]
        z = self._dense(lengths)
        ends = list(accumulate(len(counts) for counts, _, _ in counted))
        if ends[-1] == 0:  # no known term anywhere
            return z
        every_counts = [counts for counts, _, _ in counted]
        rows_counts = np.fromiter(
            chain(chain.from_iterable(every_counts), chain.from_iterable(map(Counter.values, every_counts))),
            np.intp,
            2 * ends[-1],
        )
        rows = self.term_rows.take(rows_counts[: ends[-1]], axis=0)
        pairs_t = self._tf_pairs(rows_counts[ends[-1] :], max(lengths)).T
        sums = np.zeros((len(texts), 2, self.width + 1))  # per text [Σ tf · R[rows], Σ tf² · idf²]
        for text, (start, end) in enumerate(zip([0, *ends], ends)):
            if end > start:
                np.matmul(pairs_t[:, start:end], rows[start:end], out=sums[text])
        # a text without a known term, or with known terms of idf 0 only (a hand-made file), has sums of 0: they
        # stay 0 (0 / sqrt(tiny)), as TorchScript's L2 norm leaves an empty vector
        z += sums[:, 0, : self.width] / np.sqrt(np.maximum(sums[:, 1, self.width], TINY))[:, None]
        return z

    def _vocabulary_index(self) -> VocabularyIndex:
        """The vocabulary prepared for vectorised look-up, built once (two threads may both build it: same result)."""
        if self._index is None:
            self._index = VocabularyIndex.of({term: index for index, term in enumerate(self.terms)})
        return self._index

    def bags(self, texts: Sequence[str]) -> Bags:
        """The L2-normalised tf-idf of ``texts`` and their extras, vectorised: :class:`Bags`."""
        weights = term_weights(texts, self._vocabulary_index(), self.idf)
        return Bags(weights.columns, weights.indptr, weights.values, self.extras(weights.n_tokens))

    def hidden(self, texts: Sequence[str]) -> np.ndarray:
        """z (N, m) = tfidf(texts) @ text_map + extras(texts) @ dense_map, float64."""
        if not texts:
            return np.zeros((0, self.width))
        if len(texts) == 1:
            return self.hidden_one(texts[0])
        if len(texts) < VECTORISED_FROM:
            return self.hidden_few(texts)
        import scipy.sparse  # here: a service that scores one query at a time never needs it

        bags = self.bags(texts)
        tfidf = scipy.sparse.csr_matrix((bags.values, bags.columns, bags.offsets), shape=(len(texts), self.n_terms))
        return np.asarray(tfidf @ self.text_map) + bags.extras @ self.dense_map
