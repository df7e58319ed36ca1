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

#: Delimiters frequent in prompts, replaced before the check that skips the others (speed only; "_" is in
#: 41% of RouterBench prompts, "___" blanks, which without it took the slow path).
COMMON_DELIMITERS = ["\n", ".", ",", "?", "'", ":", "(", ")", "-", '"', "!", "\t", "_", "/"]
#: Counts below this take 1 + ln(count) from a table (speed only: one gather instead of three ops).
TF_TABLE = 64
#: Texts of fewer tokens take their extras row from a table (speed only: one view instead of four ops).
EXTRAS_TABLE = 256


class ScriptedFeaturizer(torch.nn.Module):
    """Sparse tf-idf (row, column, value triplets, float64, L2 rows) and the dense extras.

    One text is bound by the interpreter (~0.1 µs an instruction, ~2 µs a tensor op), so the
    steps below are shaped for few of either; every float64 operation is the one the formulas
    name, in the same order, so that each speed-up leaves every value bit for bit as it was.
    """

    # a constant: TorchScript unrolls the loop over it (not the rare ones: a constant "\x0b" is saved
    # as "\v", which torch.jit.load cannot parse)
    __constants__ = ["common_delimiters"]
    delimiters: list[str]
    rare_delimiters: list[str]
    vocabulary: dict[str, int]
    tokens: dict[str, tuple[int, dict[str, int]]]
    length_scale: float
    idf: torch.Tensor
    extras_divisor: torch.Tensor
    log_extra: torch.Tensor
    tf_limit: int
    tf_table: torch.Tensor
    extras_limit: int
    extras_table: torch.Tensor
    first_offset: torch.Tensor

    def __init__(self, vocabulary: list[str], idf: torch.Tensor, length_scale: float) -> None:
        super().__init__()
        self.delimiters = [chr(byte) for byte in DELIMITERS]
        self.common_delimiters = tuple(d for d in COMMON_DELIMITERS if d in self.delimiters)
        # every other delimiter but the space, which needs no replacing
        self.rare_delimiters = [d for d in self.delimiters if d not in [*self.common_delimiters, " "]]
        self.vocabulary = {term: index for index, term in enumerate(vocabulary)}
        self.tokens = _token_table(self.vocabulary)
        self.register_buffer("idf", idf.to(torch.float64))
        self.length_scale = length_scale
        # extras = where(log_extra, ln(1 + x), x / extras_divisor) of x = [n, n, 1]: [n / length_scale, ln(1 + n), 1]
        self.register_buffer("extras_divisor", torch.tensor([[length_scale, 1.0, 1.0]], dtype=torch.float64))
        self.register_buffer("log_extra", torch.tensor([[False, True, False]]))
        # tf_table[c] = 1 + ln c and extras_table[n] = the extras of n tokens, computed by the very ops they
        # replace (so bit for bit theirs on a CPU of the exporting machine's kind; torch's log kernels may
        # differ in the last bit between CPU kinds, as the replaced ops' results would)
        self.tf_limit = TF_TABLE
        self.register_buffer("tf_table", torch.arange(TF_TABLE, dtype=torch.float64).log_().add_(1.0))
        self.extras_limit = EXTRAS_TABLE
        self.register_buffer("extras_table", self._extras(list(range(EXTRAS_TABLE))))
        self.register_buffer("first_offset", torch.zeros(1, dtype=torch.int64))  # one text's bag offsets

    @classmethod
    def from_featurizer(cls, featurizer: TextFeaturizer) -> "ScriptedFeaturizer":
        """The twin of a fitted Python featurizer."""
        return cls(featurizer.terms_as_text(), torch.from_numpy(featurizer.idf), featurizer.length_scale)

    def _clean(self, lowered: str) -> str:
        """``lowered`` with every delimiter byte replaced by a space.

        Fast path: the most common delimiters are replaced first; when what is left, spaces
        removed, is all ASCII letters and digits (``isalnum`` is byte-wise in TorchScript), no
        other delimiter can remain, and the other ~25 are skipped. Otherwise (rarer punctuation,
        non-ASCII bytes, an empty text) each of the other delimiters is replaced too.
        """
        for delimiter in self.common_delimiters:  # unrolled; a replace is one instruction, "in" + replace four
            lowered = lowered.replace(delimiter, " ")
        if not lowered.replace(" ", "").isalnum():
            for delimiter in self.rare_delimiters:
                lowered = lowered.replace(delimiter, " ")
        return lowered

    def _spaced(self, text: str) -> str:
        """The tokens of ``text`` joined by single spaces ("" when it has none), by native string passes only.

        Delimiters become spaces, runs of spaces are halved until none is left, and the ends are
        stripped, so that ``split(" ")`` gives the tokens and nothing else: the per-token loop
        (~0.1 µs per interpreted instruction) needs no check for empty tokens and no counter.
        """
        cleaned = self._clean(text.lower())
        while "  " in cleaned:
            cleaned = cleaned.replace("  ", " ")
        return cleaned.strip(" ")

    @torch.jit.export
    def token_count(self, text: str) -> int:
        """The tokens of ``text`` as the extras count them (docs/contracts.md §2.4), for the rules' length bounds."""
        spaced = self._spaced(text)
        return 0 if spaced == "" else spaced.count(" ") + 1

    def _terms(self, texts: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
        """The distinct known terms of every text, flattened: (columns, counts, start of each text's
        run), and the token count of each text.

        The only per-token work: one ``tokens`` lookup (the token's unigram column and the bigrams
        it starts) and one lookup among the bigrams the previous token starts, counted in a ``dict``
        (column → count, in order of first occurrence); everything after it is a handful of tensor
        ops for the whole batch.
        """
        table = self.tokens
        nothing: dict[str, int] = {}
        unknown = (-1, nothing)
        columns: list[int] = []
        counts: list[int] = []
        starts: list[int] = []
        lengths: list[int] = []
        for text in texts:
            seen: dict[int, int] = {}
            spaced = self._spaced(text)
            tokens: list[str] = [] if spaced == "" else spaced.split(" ")
            following = nothing  # bigrams that start with the previous token
            for token in tokens:
                index, starting = table.get(token, unknown)
                if index >= 0:
                    seen[index] = seen.get(index, 0) + 1
                index = following.get(token, -1)
                if index >= 0:
                    seen[index] = seen.get(index, 0) + 1
                following = starting
            starts.append(len(columns))
            columns.extend(seen.keys())
            counts.extend(seen.values())
            lengths.append(len(tokens))
        return columns, counts, starts, lengths

    def _tfidf(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        """(columns, L2-normalised tf-idf values, start of each text's run, token count of each text).

        values = (1 + ln count) · idf, in place (the same float64 operations as out of place,
        fewer tensors), with 1 + ln count gathered from ``tf_table`` when every count is in it.
        """
        columns, counts, starts, lengths = self._terms(texts)
        col_of = torch.tensor(columns, dtype=torch.int64)
        if len(counts) > 0 and max(counts) < self.tf_limit:
            values = self.tf_table.index_select(0, torch.tensor(counts, dtype=torch.int64))
        else:  # from int64: TorchScript's torch.tensor(list[float]) rounds through float32
            values = torch.tensor(counts, dtype=torch.float64).log_().add_(1.0)
        values = values.mul_(self.idf.index_select(0, col_of))
        if len(texts) == 1:
            values = values.div_(torch.linalg.vector_norm(values))
        elif len(texts) > 1:
            row_of = self._rows(starts, len(columns))
            squares = torch.zeros(len(texts), dtype=torch.float64).index_add_(0, row_of, values * values)
            values = values / torch.sqrt(squares).index_select(0, row_of)
        return col_of, values, starts, lengths

    def _extras(self, lengths: list[int]) -> torch.Tensor:
        """(N, 3) float64 [n / length_scale, ln(1 + n), 1] for texts of n tokens, in four tensor ops.

        x = [n, n, 1] is built from int64 (exact), then ``where(log_extra, ln(1 + x), x / extras_divisor)``:
        the same divisions and ``log1p`` as computing each column on its own.
        """
        if len(lengths) == 0:
            return torch.zeros(0, 3, dtype=torch.float64)
        counted = torch.tensor([[n, n, 1] for n in lengths], dtype=torch.float64)
        return torch.where(self.log_extra, torch.log1p(counted), counted.div_(self.extras_divisor))

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
        col_of, values, starts, lengths = self._tfidf(texts)
        return col_of, torch.tensor(starts, dtype=torch.int64), values, self._extras(lengths)

    def shared_bags(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`bags` for the policy's own read-only use: one text's offsets and extras are views
        of ``first_offset`` and ``extras_table`` (two tensor ops fewer than building them)."""
        col_of, values, starts, lengths = self._tfidf(texts)
        if len(lengths) == 1 and lengths[0] < self.extras_limit:
            return col_of, self.first_offset, values, self.extras_table.narrow(0, lengths[0], 1)
        return col_of, torch.tensor(starts, dtype=torch.int64), values, self._extras(lengths)

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, cols, values) of the (N, V) tf-idf matrix, and the (N, 3) dense extras.

        Extras: [n / length_scale, ln(1 + n), 1] for a text of n tokens. Empty texts give no
        tf-idf entries.
        """
        col_of, values, starts, lengths = self._tfidf(texts)
        return self._rows(starts, len(col_of)), col_of, values, self._extras(lengths)


def _token_table(vocabulary: dict[str, int]) -> dict[str, tuple[int, dict[str, int]]]:
    """token → (column of the unigram or -1, {next token: column of the bigram "token next"}).

    One lookup per token gives both, and bigrams are found without building their strings.
    Terms with a space that are not two tokens cannot occur in a text and are left out.
    """
    bigrams: dict[str, dict[str, int]] = {}
    for term, index in vocabulary.items():
        parts = term.split(" ")
        if len(parts) == 2 and parts[0] != "" and parts[1] != "":
            bigrams.setdefault(parts[0], {})[parts[1]] = index
    # in column order, then the tokens that only start bigrams: the same artifact for the same vocabulary
    table = {term: (index, bigrams.get(term, {})) for term, index in vocabulary.items() if " " not in term}
    for token, following in bigrams.items():
        table.setdefault(token, (-1, following))
    return table
