"""Features of a model's response, one definition for training and for the exported artifact.

A cascade (docs/architecture.md §6, docs/contracts.md §7.2) decides after seeing an answer: accept
it or call another model. What it sees of an answer is :class:`ResponseFeaturizer`, a
``torch.nn.Module`` that TorchScript compiles, so that the same code computes the features eagerly
in training (through :func:`response_table`) and scripted inside an artifact;
``tests/test_response_features.py`` checks that both give the same values, bit for bit.

Features of one response, in column order (:data:`FEATURE_NAMES`):

=================== ================================================================================
``log_bytes``       ln(1 + UTF-8 bytes of the response)
``log_lines``       ln(1 + line breaks)
``empty``           1 when the response is nothing but whitespace
``short``           1 when it has fewer than :data:`SHORT_BYTES` bytes once whitespace is stripped
``refusal``         1 when it holds a refusal marker ("I cannot", "I'm sorry", "as an AI", ...)
``hedge``           1 when it holds a hedging marker ("I don't know", "not sure", ...)
``code_block``      1 when it holds a code fence (three backticks, or ``[PYTHON]``)
``code_definition`` 1 when it defines a function (``def ``)
``answer_phrase``   1 when it states a final answer ("answer is", "answer:")
``choice``          1 when its final answer (:meth:`ResponseFeaturizer.answers`) is one choice letter a-e
=================== ================================================================================

Markers are matched case-insensitively after :meth:`ResponseFeaturizer.lowered`. The final answer
is the text after the last answer phrase (the whole response without one), trimmed; a leading
choice letter written as ``B``, ``B)``, ``(b)``, ``B.`` or ``B:`` is the answer alone; otherwise the
answer is that text with its whitespace runs collapsed. Two responses **agree** when their final
answers are equal and not empty (:meth:`ResponseFeaturizer.agreement`).

Why the code looks as it does: a TorchScript string is UTF-8 bytes, where Python's is code points.
So only operations that mean the same on both are used: substring tests, ``split``, ``replace`` and
``strip`` with explicit ASCII arguments, and equality. Case folding is ASCII only, as TorchScript's
``lower()`` (Python's would also fold non-ASCII letters, some into ASCII, as the Kelvin sign into "k";
:func:`lower_ascii`), and a length is counted in UTF-8 bytes in both (:func:`utf8_length`): where the
two runtimes need different code, ``torch.jit.is_scripting()`` picks it, and the parity test checks
it. No string is ever cut at a byte offset, so every answer handed back to Python is valid UTF-8.
"""

from dataclasses import dataclass

import numpy as np
import torch

from policies.rules import ascii_lower

#: The columns of :meth:`ResponseFeaturizer.forward`, in order (module docstring).
FEATURE_NAMES: tuple[str, ...] = (
    "log_bytes",
    "log_lines",
    "empty",
    "short",
    "refusal",
    "hedge",
    "code_block",
    "code_definition",
    "answer_phrase",
    "choice",
)
#: Columns that hold a count c and are given as ln(1 + c); the others are 0/1 flags.
LOG_COLUMNS: tuple[str, ...] = ("log_bytes", "log_lines")
#: A response shorter than this (UTF-8 bytes, whitespace stripped) is ``short``.
SHORT_BYTES = 16
#: What "whitespace" means here: ASCII only, the same in Python and TorchScript.
WHITESPACE = " \t\n\r"
#: Trimmed around a final answer and around a choice letter.
ANSWER_PUNCTUATION = WHITESPACE + ".:;,!()[]*'\"`"
#: Lower-case markers of a refusal; the apostrophe is ASCII (the typographic one is folded into it).
REFUSAL_MARKERS: tuple[str, ...] = (
    "i cannot",
    "i can't",
    "i can not",
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "as an ai",
    "as a language model",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "i won't",
    "i will not",
)
#: Lower-case markers of hedging.
HEDGE_MARKERS: tuple[str, ...] = (
    "i don't know",
    "i do not know",
    "not sure",
    "cannot be determined",
    "can't be determined",
    "cannot determine",
    "can't determine",
    "unable to determine",
    "hard to say",
    "difficult to say",
    "it depends",
    "unclear",
)
CODE_BLOCK_MARKERS: tuple[str, ...] = ("```", "[python]")
CODE_DEFINITION_MARKERS: tuple[str, ...] = ("def ",)
#: Phrases that introduce a final answer; the answer is the text after the last one found, tried in order.
ANSWER_PHRASES: tuple[str, ...] = ("answer is", "answer:")
CHOICE_LETTERS: tuple[str, ...] = ("a", "b", "c", "d", "e")


@torch.jit.unused
def _encoded_length(text: str) -> int:
    """Python's count of ``text``'s UTF-8 bytes (TorchScript never runs this: see :func:`utf8_length`)."""
    return len(text.encode("utf-8", "surrogatepass"))


def utf8_length(text: str) -> int:
    """The UTF-8 bytes of ``text``: ``len`` of a TorchScript string, the encoded length in Python."""
    if torch.jit.is_scripting():
        return len(text)
    return _encoded_length(text)


@torch.jit.unused
def _python_ascii_lower(text: str) -> str:
    """:func:`policies.rules.ascii_lower` (TorchScript never runs this: see :func:`lower_ascii`)."""
    return ascii_lower(text)


def lower_ascii(text: str) -> str:
    """``text`` with ASCII letters lower-cased and every other character kept: TorchScript's ``lower()``,
    and its Python twin :func:`policies.rules.ascii_lower` (Python's own ``lower`` folds more)."""
    if torch.jit.is_scripting():
        return text.lower()
    return _python_ascii_lower(text)


class ResponseFeaturizer(torch.nn.Module):
    """Response texts → (N, F) float32 features, their final answers, and agreement (module docstring)."""

    apostrophes: list[str]
    refusal_markers: list[str]
    hedge_markers: list[str]
    code_block_markers: list[str]
    code_definition_markers: list[str]
    answer_phrases: list[str]
    choice_letters: list[str]
    whitespace: str
    other_spaces: list[str]
    answer_punctuation: str
    short_bytes: int
    n_features: int
    log_columns: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Module attributes (pickled in an archive), not constants: a non-ASCII constant would be written
        # into the archive's code, which torch.jit.load may not parse back.
        self.apostrophes = [chr(0x2019), chr(0x2018)]  # ’ and ‘, folded into "'"
        self.refusal_markers = list(REFUSAL_MARKERS)
        self.hedge_markers = list(HEDGE_MARKERS)
        self.code_block_markers = list(CODE_BLOCK_MARKERS)
        self.code_definition_markers = list(CODE_DEFINITION_MARKERS)
        self.answer_phrases = list(ANSWER_PHRASES)
        self.choice_letters = list(CHOICE_LETTERS)
        self.whitespace = WHITESPACE
        # An attribute too: torch.jit.load cannot parse a "\r" literal back from the archive's code.
        self.other_spaces = [space for space in WHITESPACE if space != " "]
        self.answer_punctuation = ANSWER_PUNCTUATION
        self.short_bytes = SHORT_BYTES
        self.n_features = len(FEATURE_NAMES)
        self.register_buffer("log_columns", torch.tensor([[name in LOG_COLUMNS for name in FEATURE_NAMES]]))

    @torch.jit.export
    def lowered(self, text: str) -> str:
        """``text`` with ASCII letters lower-cased and typographic apostrophes made ASCII; nothing else changes."""
        text = lower_ascii(text)
        for apostrophe in self.apostrophes:
            text = text.replace(apostrophe, "'")
        return text

    def _holds_any(self, text: str, markers: list[str]) -> int:
        """1 when ``text`` holds one of ``markers``, else 0."""
        for marker in markers:
            if marker in text:
                return 1
        return 0

    def _answer(self, lowered: str) -> str:
        """The final answer of a response already :meth:`lowered` (module docstring)."""
        for phrase in self.answer_phrases:
            if phrase in lowered:
                lowered = lowered.split(phrase)[-1]
                break
        answer = lowered.strip(self.answer_punctuation)
        first_line = answer.split("\n")[0].strip(self.whitespace)
        first_word = first_line.split(" ")[0]
        letter = first_word.strip(self.answer_punctuation)
        if letter in self.choice_letters and (first_line == letter or first_word != letter):
            return letter
        for space in self.other_spaces:
            answer = answer.replace(space, " ")
        while "  " in answer:
            answer = answer.replace("  ", " ")
        return answer

    @torch.jit.export
    def answers(self, responses: list[str]) -> list[str]:
        """The final answer of each response ("" when it has none)."""
        return [self._answer(self.lowered(response)) for response in responses]

    @torch.jit.export
    def agreement(self, first: list[str], second: list[str]) -> torch.Tensor:
        """(N,) float32: 1 where the two responses' final answers are equal and not empty."""
        if len(first) != len(second):
            raise ValueError("agreement needs two lists of responses of the same length")
        agree: list[int] = []
        for one, other in zip(self.answers(first), self.answers(second)):
            agree.append(int(one != "" and one == other))
        return torch.tensor(agree, dtype=torch.int64).to(torch.float32)

    def _counts(self, response: str) -> list[int]:
        """One response's raw columns: counts for :data:`LOG_COLUMNS`, 0/1 for the flags."""
        lowered = self.lowered(response)
        stripped_bytes = utf8_length(response.strip(self.whitespace))
        return [
            utf8_length(response),
            response.count("\n"),
            int(stripped_bytes == 0),
            int(stripped_bytes < self.short_bytes),
            self._holds_any(lowered, self.refusal_markers),
            self._holds_any(lowered, self.hedge_markers),
            self._holds_any(lowered, self.code_block_markers),
            self._holds_any(lowered, self.code_definition_markers),
            self._holds_any(lowered, self.answer_phrases),
            int(self._answer(lowered) in self.choice_letters),
        ]

    def forward(self, responses: list[str]) -> torch.Tensor:
        """(N, F) float32 features of ``responses``, columns :data:`FEATURE_NAMES`.

        The raw columns are int64 (exact in both runtimes); one cast and one ``log1p`` of the same
        kernels make the floats, so eager and scripted results are equal bit for bit.
        """
        flat: list[int] = []
        for response in responses:
            flat.extend(self._counts(response))
        counts = torch.tensor(flat, dtype=torch.int64).reshape(len(responses), self.n_features)
        values = counts.to(torch.float32)
        return torch.where(self.log_columns, torch.log1p(values), values)


@dataclass(frozen=True)
class ResponseTable:
    """What a cascade can see of every logged response of a log: N queries × K models."""

    features: np.ndarray  # (N, K, F) float32, :data:`FEATURE_NAMES`
    answers: np.ndarray  # (N, K) object: each response's final answer ("" when none)
    agreement: np.ndarray  # (N, K, K) bool: models j and k agree on query i (never on the diagonal)

    def subset(self, index: np.ndarray) -> "ResponseTable":
        """The table of the queries at ``index`` (as :meth:`data.routing_log.RoutingLog.subset`)."""
        return ResponseTable(self.features[index], self.answers[index], self.agreement[index])


def agreement_matrix(answers: np.ndarray) -> np.ndarray:
    """(N, K, K) bool from (N, K) final answers: equal and not empty, j ≠ k (:meth:`ResponseFeaturizer.agreement`)."""
    n, k = answers.shape
    index: dict[str, int] = {"": -1}  # an empty answer agrees with nothing
    codes = np.array([index.setdefault(a, len(index)) for a in answers.ravel().tolist()], dtype=np.int64).reshape(n, k)
    answered = codes >= 0
    agree = (codes[:, :, None] == codes[:, None, :]) & answered[:, :, None] & answered[:, None, :]
    return agree & ~np.eye(k, dtype=bool)


def response_table(responses: np.ndarray, featurizer: ResponseFeaturizer | None = None) -> ResponseTable:
    """The features, final answers and agreement of an (N, K) array of response texts (:mod:`data.responses`)."""
    responses = np.asarray(responses, dtype=object)
    if responses.ndim != 2:
        raise ValueError(f"responses must be an (N, K) array of texts, got shape {responses.shape}")
    featurizer = featurizer or ResponseFeaturizer()
    n, k = responses.shape
    flat = [str(text) for text in responses.ravel().tolist()]
    with torch.no_grad():
        features = featurizer(flat).numpy().reshape(n, k, featurizer.n_features)
    answers = np.array(featurizer.answers(flat), dtype=object).reshape(n, k)
    return ResponseTable(features, answers, agreement_matrix(answers))
