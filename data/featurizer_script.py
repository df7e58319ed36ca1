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
    n_terms: int
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
        self.n_terms = len(vocabulary)
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

    def tokens(self, text: str) -> list[str]:
        """Byte tokens of one text (see :mod:`data.tokenizer`)."""
        tokens: list[str] = []
        for token in self._clean(text.lower()).split(" "):
            if token != "":
                tokens.append(token)
        return tokens

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the (N, V) tf-idf matrix, and the (N, 3) dense extras.

        Extras: [n / length_scale, ln(1 + n), 1] for a text of n tokens. Empty texts give no
        tf-idf entries.
        """
        vocabulary = self.vocabulary
        follows = self.bigrams
        nothing: dict[str, int] = {}
        width = max(self.n_terms, 1)
        keys: list[int] = []  # row * width + column of every known term occurrence
        lengths: list[float] = []
        for row, text in enumerate(texts):
            base = row * width
            count = 0
            following = nothing  # bigrams that start with the previous token
            for token in self._clean(text.lower()).split(" "):
                if token != "":
                    count += 1
                    index = vocabulary.get(token, -1)
                    if index >= 0:
                        keys.append(base + index)
                    index = following.get(token, -1)
                    if index >= 0:
                        keys.append(base + index)
                    following = follows.get(token, nothing)
            lengths.append(float(count))
        if len(keys) <= 2048:  # sorting a short list, then a linear pass, beats torch.unique's set-up
            keys.sort()
            sorted_keys = torch.tensor(keys, dtype=torch.int64)
            unique, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
        else:
            unique, counts = torch.unique(torch.tensor(keys, dtype=torch.int64), return_counts=True)
        values = 1.0 + torch.log(counts.to(torch.float64))
        if len(texts) == 1:
            row_of = torch.zeros_like(unique)
            col_of = unique
            values = values * self.idf.index_select(0, col_of)
            squares = torch.zeros(1, dtype=torch.float64).index_add_(0, row_of, values * values)
            values = values / torch.sqrt(squares)
        else:
            row_of = torch.div(unique, width, rounding_mode="floor")
            col_of = unique - row_of * width
            values = values * self.idf.index_select(0, col_of)
            squares = torch.zeros(len(texts), dtype=torch.float64).index_add_(0, row_of, values * values)
            values = values / torch.sqrt(squares).index_select(0, row_of)
        n_tokens = torch.tensor(lengths, dtype=torch.float64)
        extras = torch.stack([n_tokens / self.length_scale, torch.log1p(n_tokens), torch.ones_like(n_tokens)], dim=1)
        return row_of, col_of, values, extras

    @torch.jit.export
    def dense(self, texts: list[str]) -> torch.Tensor:
        """The (N, V) tf-idf matrix, dense (for parity checks and small batches)."""
        rows, cols, values, _ = self.forward(texts)
        matrix = torch.zeros(len(texts), self.n_terms, dtype=torch.float64)
        matrix[rows, cols] = values
        return matrix
