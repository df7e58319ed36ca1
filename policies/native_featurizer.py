"""The native engine's tf-idf and first linear map, from the portable file (numpy, no torch).

The same tokenization and numbers as the TorchScript twin (:mod:`policies.scripted_featurizer`,
docs/contracts.md §2.4), computed where CPython and numpy are fastest:

- **One text** (:meth:`NativeFeaturizer.hidden_one`, the service's common case): the text is
  encoded to UTF-8, lowercased and cleaned by one ``bytes.translate`` (ASCII letters to lower case,
  every delimiter byte of the header to a space: exactly ``bytes.lower`` and the tokenizer's
  delimiters), split by ``bytes.split`` (runs of spaces drop out), and its terms' vocabulary
  indices counted by a ``Counter`` (the vocabulary is keyed by ``bytes.partition`` at the space, so
  a bigram is looked up as the triple (left, space, right) of its tokens and no string is built).
  Every step is a C-level builtin with no Python code per token. A term the vocabulary lacks maps
  to the extra index V, whose idf is 0, so it needs no filtering. Then about
  ten numpy calls: z = tf @ R[rows] / ‖tf · idf[rows]‖ + extras @ dense_map, with R = idf · text_map
  and idf² gathered together (one table built at load), tf = 1 + ln(count) and the extras' part
  from small tables.
- **Many texts** (from :data:`VECTORISED_FROM`): the training featurizer's vectorised tf-idf
  (:func:`data.tokenizer.term_weights`: numpy and pyarrow over the batch's concatenated bytes, no
  Python object per token), and z = tfidf @ text_map + extras @ dense_map (a scipy CSR product).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice, repeat

import numpy as np

from data.tokenizer import VocabularyIndex, term_weights
from policies.portable import PortablePolicy

#: What ``bytes.partition`` cuts a bigram term at (the vocabulary's keys, module docstring).
SPACE = b" "
#: Texts of fewer tokens than this take their extras' part of z from a table built at load.
EXTRA_ROWS = 256
#: Sublinear term frequency 1 + ln(count) of the counts 1..4095 (index 0 unused): one gather a query.
LOG_TF = np.concatenate([[0.0], np.log(np.arange(1, 4096, dtype=np.float64)) + 1.0])
#: From this many texts the vectorised analysis is faster than one text at a time (measured on the
#: RouterBench policy's vocabulary, 30-word prompts: about equal at 64 texts; at 1,024, 166,000
#: against 34,000 queries/s).
VECTORISED_FROM = 64


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
        # every term by bytes.partition at its space: (token, b"", b"") for a unigram, (left, b" ", right) for a
        # bigram; built and looked up in C-level maps, with no string built for a bigram
        self.lookup: dict[tuple[bytes, bytes, bytes], int] = dict(
            zip(map(bytes.partition, terms, repeat(SPACE)), range(len(terms)))
        )
        table = bytearray(bytes(range(256)).lower())
        for byte in header["delimiters"]:
            table[int(byte)] = ord(" ")
        self.table = bytes(table)
        self.length_scale = float(header["length_scale"])
        idf = np.asarray(portable.tensors["featurizer.idf"], dtype=np.float64)
        self.text_map = np.asarray(portable.tensors["text_map"], dtype=np.float64)
        self.dense_map = np.asarray(portable.tensors["dense_map"], dtype=np.float64)
        # per term: its text_map row times its idf, then idf² (the norm's weight); row V: every unknown term
        width = self.text_map.shape[1]
        self.term_rows = np.zeros((len(terms) + 1, width + 1))
        np.multiply(self.text_map, idf[:, None], out=self.term_rows[:-1, :width])
        self.term_rows[:-1, width] = idf * idf
        self.idf = idf
        self.terms = terms
        # extras @ dense_map of texts of 0..EXTRA_ROWS-1 tokens (one numpy call fewer a query)
        self.dense_rows = self.extras(np.arange(EXTRA_ROWS, dtype=np.float64)) @ self.dense_map
        self._index: VocabularyIndex | None = None  # built at the first large batch (it imports pyarrow)

    def tokens(self, text: str) -> list[bytes]:
        """The tokens of ``text`` (UTF-8, ASCII-lowercased, split at delimiters); ValueError for a lone surrogate."""
        return text.encode("utf-8").translate(self.table).split()

    def token_count(self, text: str) -> int:
        """The token count of docs/contracts.md §2.4 (the rules' length bounds)."""
        return len(self.tokens(text))

    def _terms(self, tokens: list[bytes]) -> Counter[int]:
        """The vocabulary index of each distinct term (unigram or bigram; V for every unknown one) and its count."""
        get, unknown, none, space = self.lookup.get, repeat(self.n_terms), repeat(b""), repeat(SPACE)
        unigrams = map(get, zip(tokens, none, none), unknown)
        return Counter([*unigrams, *map(get, zip(tokens, space, islice(tokens, 1, None)), unknown)])

    def extras(self, n_tokens: np.ndarray) -> np.ndarray:
        """(N, 3) float64: n / length_scale, ln(1 + n), 1."""
        return np.stack([n_tokens / self.length_scale, np.log1p(n_tokens), np.ones(len(n_tokens))], axis=1)

    def _dense(self, n: int) -> np.ndarray:
        """extras @ dense_map (m,) of a text of ``n`` tokens."""
        return np.dot((n / self.length_scale, math.log1p(n), 1.0), self.dense_map)

    def hidden_one(self, text: str) -> np.ndarray:
        """z (1, m) of one text (module docstring)."""
        tokens = self.tokens(text)
        counts = self._terms(tokens)
        n = len(tokens)
        terms = self.term_rows[np.fromiter(counts, np.intp, len(counts))]
        if n < len(LOG_TF):  # no count can reach the table's end
            tf = LOG_TF[np.fromiter(counts.values(), np.intp, len(counts))]
        else:
            tf = np.log(np.fromiter(counts.values(), np.float64, len(counts))) + 1.0
        squared_norm = (tf * tf) @ terms[:, -1]
        dense = self.dense_rows[n] if n < EXTRA_ROWS else self._dense(n)
        if squared_norm == 0.0:
            return dense[None, :]
        z = tf @ terms[:, :-1]
        z *= 1.0 / math.sqrt(squared_norm)
        z += dense
        return z[None, :]

    def _vocabulary_index(self) -> VocabularyIndex:
        """The vocabulary prepared for vectorised look-up, built once (two threads may both build it: same result)."""
        if self._index is None:
            self._index = VocabularyIndex.of({term: index for index, term in enumerate(self.terms)})
        return self._index

    def bags(self, texts: Sequence[str]) -> Bags:
        """The L2-normalised tf-idf of ``texts`` and their extras, vectorised: :class:`Bags`."""
        weights = term_weights(texts, self._vocabulary_index(), self.idf)
        return Bags(weights.columns, weights.indptr, weights.values, self.extras(weights.n_tokens.astype(np.float64)))

    def hidden(self, texts: Sequence[str]) -> np.ndarray:
        """z (N, m) = tfidf(texts) @ text_map + extras(texts) @ dense_map, float64."""
        if not texts:
            return np.zeros((0, self.text_map.shape[1]))
        if len(texts) == 1:
            return self.hidden_one(texts[0])
        if len(texts) < VECTORISED_FROM:
            return np.vstack([self.hidden_one(text) for text in texts])
        import scipy.sparse  # here: a service that scores one query at a time never needs it

        bags = self.bags(texts)
        tfidf = scipy.sparse.csr_matrix((bags.values, bags.columns, bags.offsets), shape=(len(texts), self.n_terms))
        return np.asarray(tfidf @ self.text_map) + bags.extras @ self.dense_map
