"""The TorchScript twin of :class:`data.featurizer.TextFeaturizer`, run inside the artifact.

It computes the sparse tf-idf and the dense structure features (length, log length, bias);
the LSA projection is folded into the agent's linear map by the exporter, so it is not here.

TorchScript strings are UTF-8 byte strings: ``lower()`` lowercases ASCII letters only and
``replace`` / ``split`` with an explicit separator work on bytes, which is exactly the
tokenization of :mod:`data.tokenizer`. (``str.split()`` without a separator is not used: in
TorchScript it also splits on some non-ASCII bytes.)
"""

import torch

from data.featurizer import TextFeaturizer
from data.tokenizer import DELIMITERS

#: Delimiters frequent in prompts, replaced before the check that skips the others (speed only).
COMMON_DELIMITERS = ["\n", ".", ",", "?", "'", ":", "(", ")", "-", '"', "!", "\t"]


class ScriptedFeaturizer(torch.nn.Module):
    """Sparse tf-idf (row, column, value triplets, float64, L2 rows) and the dense extras."""

    delimiters: list[str]
    common_delimiters: list[str]
    vocabulary: dict[str, int]
    bigrams: dict[str, dict[str, int]]
    length_scale: float
    idf: torch.Tensor

    def __init__(self, vocabulary: list[str], idf: torch.Tensor, length_scale: float) -> None:
        super().__init__()
        self.delimiters = [chr(byte) for byte in DELIMITERS]
        self.common_delimiters = [d for d in COMMON_DELIMITERS if d in self.delimiters]
        self.vocabulary = {term: index for index, term in enumerate(vocabulary)}
        # bigrams[left][right] = index of the term "left right": looked up without building strings
        self.bigrams: dict[str, dict[str, int]] = {}
        for term, index in self.vocabulary.items():
            parts = term.split(" ")
            if len(parts) == 2 and parts[0] != "" and parts[1] != "":
                self.bigrams.setdefault(parts[0], {})[parts[1]] = index
        self.register_buffer("idf", idf.to(torch.float64))
        self.length_scale = length_scale

    @classmethod
    def from_featurizer(cls, featurizer: TextFeaturizer) -> "ScriptedFeaturizer":
        """The twin of a fitted Python featurizer."""
        return cls(featurizer.terms_as_text(), torch.from_numpy(featurizer.idf), featurizer.length_scale)

    def _clean(self, lowered: str) -> str:
        """``lowered`` with every delimiter byte replaced by a space.

        Fast path: the most common delimiters are replaced first; when what is left, spaces
        removed, is all ASCII letters and digits (``isalnum`` is byte-wise in TorchScript), no
        other delimiter can remain, and the other ~30 checks are skipped. Otherwise (rarer
        punctuation, non-ASCII bytes, an empty text) every delimiter is checked, as before.
        """
        for delimiter in self.common_delimiters:
            if delimiter in lowered:
                lowered = lowered.replace(delimiter, " ")
        if not lowered.replace(" ", "").isalnum():
            for delimiter in self.delimiters:
                if delimiter in lowered:
                    lowered = lowered.replace(delimiter, " ")
        return lowered

    @torch.jit.export
    def token_count(self, text: str) -> int:
        """The tokens of ``text`` as the extras count them (docs/contracts.md §2.4), for the rules' length bounds.

        Native string passes only (a per-token loop costs ~2 µs a token in the interpreter): runs of
        spaces are halved until none is left, so the spaces that remain separate the tokens.
        """
        cleaned = self._clean(text.lower())
        while "  " in cleaned:
            cleaned = cleaned.replace("  ", " ")
        cleaned = cleaned.strip(" ")
        return 0 if cleaned == "" else cleaned.count(" ") + 1

    def _terms(self, texts: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
        """The distinct known terms of every text, flattened: (columns, counts, start of each text's
        run), and the token count of each text.

        The only per-token work: one pass over ``split(" ")`` counting unigrams and bigrams in a
        ``dict`` (no list of keys to sort and de-duplicate afterwards); everything after it is a
        handful of tensor ops for the whole batch.
        """
        vocabulary = self.vocabulary
        follows = self.bigrams
        nothing: dict[str, int] = {}
        columns: list[int] = []
        counts: list[int] = []
        starts: list[int] = []
        lengths: list[int] = []
        for text in texts:
            seen: dict[int, int] = {}
            n = 0
            following = nothing  # bigrams that start with the previous token
            for token in self._clean(text.lower()).split(" "):
                if token != "":
                    n += 1
                    index = vocabulary.get(token, -1)
                    if index >= 0:
                        seen[index] = seen.get(index, 0) + 1
                    index = following.get(token, -1)
                    if index >= 0:
                        seen[index] = seen.get(index, 0) + 1
                    following = follows.get(token, nothing)
            starts.append(len(columns))
            columns.extend(seen.keys())
            counts.extend(seen.values())
            lengths.append(n)
        return columns, counts, starts, lengths

    def _tfidf(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
        """(columns, L2-normalised tf-idf values, start of each text's run, (N, 3) extras)."""
        columns, counts, starts, lengths = self._terms(texts)
        col_of = torch.tensor(columns, dtype=torch.int64)
        values = (torch.log(torch.tensor(counts, dtype=torch.float64)) + 1.0) * self.idf.index_select(0, col_of)
        if len(texts) == 1:
            values = values / torch.linalg.vector_norm(values)
        elif len(texts) > 1:
            row_of = self._rows(starts, len(columns))
            squares = torch.zeros(len(texts), dtype=torch.float64).index_add_(0, row_of, values * values)
            values = values / torch.sqrt(squares).index_select(0, row_of)
        # from int64: TorchScript's torch.tensor(list[float]) rounds through float32
        n_tokens = torch.tensor(lengths, dtype=torch.float64)
        extras = torch.stack([n_tokens / self.length_scale, torch.log1p(n_tokens), torch.ones_like(n_tokens)], dim=1)
        return col_of, values, starts, extras

    def _rows(self, starts: list[int], total: int) -> torch.Tensor:
        """The text (row) of each of ``total`` flattened entries, from the start of each text's run."""
        sizes = torch.diff(torch.tensor(starts + [total], dtype=torch.int64))  # noqa: RUF005 (no [*a, b] in TorchScript)
        return torch.repeat_interleave(torch.arange(len(starts), dtype=torch.int64), sizes)

    @torch.jit.export
    def bags(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tf-idf as ``torch.embedding_bag`` takes it: (columns, offsets, values), and the (N, 3) extras.

        Text i's entries are ``columns[offsets[i]:offsets[i + 1]]`` with weights ``values[...]``,
        so that the policy's first linear map is one weighted bag sum over its rows.
        """
        col_of, values, starts, extras = self._tfidf(texts)
        return col_of, torch.tensor(starts, dtype=torch.int64), values, extras

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the (N, V) tf-idf matrix, and the (N, 3) dense extras.

        Extras: [n / length_scale, ln(1 + n), 1] for a text of n tokens. Empty texts give no
        tf-idf entries.
        """
        col_of, values, starts, extras = self._tfidf(texts)
        return self._rows(starts, len(col_of)), col_of, values, extras
