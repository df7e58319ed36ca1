"""Byte-level tokenization shared by Python and TorchScript (docs/contracts.md §2), and its vectorised batch form.

Text is taken as UTF-8 bytes. ASCII letters are lowercased; every other byte is kept. A token is
a maximal run of bytes that are neither ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f) nor ASCII
punctuation (``string.punctuation``). Terms are the tokens (unigrams) and each pair of adjacent
tokens joined by one space (bigrams; a space never occurs inside a token, so the join is
unambiguous). Because every delimiter is ASCII, a token never splits a multi-byte character.

For a batch, :class:`Tokens` finds every token of every text at once (numpy over the concatenated
bytes, pyarrow for the token strings), :class:`VocabularyIndex` looks them up, and
:func:`term_weights` gives the batch's tf-idf. Training (:mod:`data.featurizer`) and the native
serving engine (:mod:`policies.native_featurizer`) share them; this module imports nothing of
routerl's, so the service may reach it (docs/architecture.md).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The delimiter bytes, in the order the TorchScript twin replaces them.
DELIMITERS: bytes = b" \t\n\r\x0b\x0c" + string.punctuation.encode("ascii")

#: Token pairs (distinct tokens of a batch, squared) up to which bigrams are looked up in a table (32 MB).
_DENSE_PAIRS = 1 << 22
#: Byte → byte with ASCII letters lowercased (``bytes.lower``), and byte → "part of a token".
_LOWER = np.frombuffer(bytes(range(256)).lower(), dtype=np.uint8)
_TOKEN_BYTE = np.ones(256, dtype=bool)
_TOKEN_BYTE[np.frombuffer(DELIMITERS, dtype=np.uint8)] = False


def _arrow() -> Any:
    """pyarrow, imported on first use so that ``import data.tokenizer`` stays light."""
    import pyarrow

    return pyarrow


@dataclass(frozen=True)
class Tokens:
    """The tokens of a batch of texts, as one pyarrow binary array, and where each one is.

    The tokenization above, vectorised over the texts' concatenated UTF-8
    bytes: a token is a maximal run of non-delimiter bytes that does not cross a text boundary.
    Removing the delimiter bytes leaves the tokens back to back, so their offsets are the
    cumulative run lengths and no Python object is built per token. A bigram is a token and
    the next one of the same text (``pair`` holds the first one's position).
    """

    tokens: Any  # pyarrow large_binary array (T,): every token occurrence, text by text
    doc: np.ndarray  # (T,) int64: the text of each token
    pair: np.ndarray  # (P,) int64: positions t whose tokens t and t + 1 form a bigram
    n_tokens: np.ndarray  # (N,) int64: tokens per text

    @classmethod
    def of(cls, texts: Sequence[str]) -> Tokens:
        pa = _arrow()
        array = pa.array(list(texts), type=pa.large_string())
        n = len(array)
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + n + 1]
        data = array.buffers()[2]
        raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
        raw = raw[offsets[0] : offsets[-1]] if n else raw[:0]
        offsets = offsets - offsets[0] if n else np.zeros(1, dtype=np.int64)
        token = _TOKEN_BYTE[raw]
        first = offsets[:-1][offsets[:-1] < offsets[1:]]  # first byte of every non-empty text
        last = offsets[1:][offsets[:-1] < offsets[1:]] - 1
        start, end = token.copy(), token.copy()
        start[1:] &= ~token[:-1]
        end[:-1] &= ~token[1:]
        start[first] = token[first]
        end[last] = token[last]
        starts = np.flatnonzero(start)
        lengths = np.flatnonzero(end) - starts + 1
        bounds = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        body = _LOWER[raw[token]]
        tokens = pa.Array.from_buffers(pa.large_binary(), len(starts), [None, pa.py_buffer(bounds), pa.py_buffer(body)])
        n_tokens = np.diff(np.searchsorted(starts, offsets))  # tokens starting in each text's bytes
        doc = np.repeat(np.arange(n, dtype=np.int64), n_tokens)
        return cls(tokens, doc, np.flatnonzero(doc[:-1] == doc[1:]), n_tokens)

    def terms(self) -> tuple[Any, np.ndarray]:
        """Every term occurrence (unigrams, then bigrams ``b"left right"``) and its text."""
        pa = _arrow()
        import pyarrow.compute as pc

        space = pa.scalar(b" ", type=pa.large_binary())
        bigrams = pc.binary_join_element_wise(self.tokens.take(self.pair), self.tokens.take(self.pair + 1), space)
        return pa.concat_arrays([self.tokens, bigrams]), np.concatenate([self.doc, self.doc[self.pair]])

    def known(self, vocabulary: VocabularyIndex) -> tuple[np.ndarray, np.ndarray]:
        """(text, vocabulary index) of every term occurrence in the vocabulary.

        Bigrams are looked up without building their strings: each distinct token of the batch
        gets a code, a vocabulary bigram whose two halves both occur becomes the integer key
        left code × D + right code, and each adjacent token pair's key is searched among those.
        """
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(self.tokens)
        distinct = encoded.dictionary
        code = indices_of(encoded.indices)
        width = max(len(distinct), 1)
        unigram_of = indices_of(pc.index_in(distinct, value_set=vocabulary.unigrams))
        unigram = np.append(vocabulary.unigram_ids, -1)[unigram_of]
        left = indices_of(pc.index_in(vocabulary.left, value_set=distinct))
        right = indices_of(pc.index_in(vocabulary.right, value_set=distinct))
        usable = (left >= 0) & (right >= 0)
        keys, bigram_ids = left[usable] * width + right[usable], vocabulary.bigram_ids[usable]
        pair_keys = code[self.pair] * width + code[self.pair + 1]
        if width * width <= _DENSE_PAIRS:  # few distinct tokens: a direct table, one gather per pair
            table = np.full(width * width, -1, dtype=np.int64)
            table[keys] = bigram_ids
            bigram = table[pair_keys]
        elif len(keys):
            order = np.argsort(keys)
            keys, bigram_ids = keys[order], bigram_ids[order]
            slot = np.minimum(np.searchsorted(keys, pair_keys), len(keys) - 1)
            bigram = np.where(keys[slot] == pair_keys, bigram_ids[slot], -1)
        else:
            bigram = np.full(len(pair_keys), -1, dtype=np.int64)
        ids = np.concatenate([unigram[code], bigram])
        docs = np.concatenate([self.doc, self.doc[self.pair]])
        found = ids >= 0
        return docs[found], ids[found]


@dataclass(frozen=True)
class VocabularyIndex:
    """The vocabulary split for :meth:`Tokens.known`: unigrams, and bigrams as (left, right) halves."""

    unigrams: Any  # pyarrow large_binary array of the one-token terms
    unigram_ids: np.ndarray  # their vocabulary indices
    left: Any  # pyarrow large_binary arrays: the two tokens of every bigram term
    right: Any
    bigram_ids: np.ndarray

    @classmethod
    def of(cls, vocabulary: dict[bytes, int]) -> VocabularyIndex:
        pa = _arrow()
        unigrams = [(term, index) for term, index in vocabulary.items() if b" " not in term]
        bigrams = [(term.split(b" ", 1), index) for term, index in vocabulary.items() if b" " in term]
        binary = pa.large_binary()
        return cls(
            pa.array([term for term, _ in unigrams], type=binary),
            np.array([index for _, index in unigrams], dtype=np.int64),
            pa.array([halves[0] for halves, _ in bigrams], type=binary),
            pa.array([halves[1] for halves, _ in bigrams], type=binary),
            np.array([index for _, index in bigrams], dtype=np.int64),
        )


def indices_of(array: Any) -> np.ndarray:
    """A pyarrow integer array as int64, nulls as -1."""
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(array, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class TermWeights:
    """The L2-normalised sublinear tf-idf of a batch of texts, as CSR arrays (docs/contracts.md §2.4).

    Text i's entries are ``columns[indptr[i]:indptr[i + 1]]`` (vocabulary indices, ascending) with
    weights ``values[...]``: (1 + ln count) · idf, each text's vector scaled to unit length (a text
    with no known term has none). ``n_tokens`` counts every token of each text, known or not.
    """

    indptr: np.ndarray  # (N + 1,) int64
    columns: np.ndarray  # (T,) int64
    values: np.ndarray  # (T,) float64
    n_tokens: np.ndarray  # (N,) int64

    @classmethod
    def of_counts(
        cls, row_of: np.ndarray, columns: np.ndarray, counts: np.ndarray, idf: np.ndarray, n_tokens: np.ndarray
    ) -> TermWeights:
        """The weights of (text, term, count) entries sorted by (text, term), for texts with ``n_tokens`` tokens."""
        values = (1.0 + np.log(counts)) * idf[columns]
        norms = np.sqrt(np.bincount(row_of, weights=values**2, minlength=len(n_tokens)))
        indptr = np.searchsorted(row_of, np.arange(len(n_tokens) + 1))
        return cls(indptr.astype(np.int64), columns, values / norms[row_of], n_tokens)


def count_pairs(doc: np.ndarray, ids: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text, id, count) of every distinct (text, id) pair of the occurrences ``doc``, ``ids``, sorted by (text, id).

    Each occurrence is a key text × width + id (``width``: more than any id); one sort groups
    them (a sort beats ``np.unique``'s hash), and each count is the length of its run.
    """
    width = max(width, 1)
    keys = np.sort(doc * width + ids)
    firsts = np.flatnonzero(np.diff(keys, prepend=-1))
    counts = np.diff(np.append(firsts, len(keys)))
    row_of, columns = np.divmod(keys[firsts], width)
    return row_of, columns, counts


def term_weights(texts: Sequence[str], vocabulary: VocabularyIndex, idf: np.ndarray) -> TermWeights:
    """:class:`TermWeights` of ``texts`` against ``vocabulary`` (``idf``: one value per term), vectorised.

    Shared by training (:meth:`data.featurizer.TextFeaturizer.analyze`) and the native serving
    engine (:mod:`policies.native_featurizer`), so both weigh a batch with the same numbers.
    """
    tokens = Tokens.of(texts)
    doc, ids = tokens.known(vocabulary)
    return TermWeights.of_counts(*count_pairs(doc, ids, len(idf)), idf, tokens.n_tokens)
