"""Byte-level tokenization shared by Python and TorchScript (CONTRACTS.md §2).

Text is taken as UTF-8 bytes. ASCII letters are lowercased; every other byte is kept. A token is
a maximal run of bytes that are neither ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f) nor ASCII
punctuation (``string.punctuation``). Terms are the tokens (unigrams) and each pair of adjacent
tokens joined by one space (bigrams; a space never occurs inside a token, so the join is
unambiguous). Because every delimiter is ASCII, a token never splits a multi-byte character.
"""

from __future__ import annotations

import re
import string
from itertools import pairwise

#: The delimiter bytes, in the order the TorchScript twin replaces them.
DELIMITERS: bytes = b" \t\n\r\x0b\x0c" + string.punctuation.encode("ascii")
_TOKEN = re.compile(b"[^" + re.escape(DELIMITERS) + b"]+")


def tokenize(text: str) -> list[bytes]:
    """The tokens of ``text`` as UTF-8 byte strings (ASCII letters lowercased)."""
    return _TOKEN.findall(text.encode("utf-8").lower())


def with_bigrams(tokens: list[bytes]) -> list[bytes]:
    """The terms of a token list: unigrams then bigrams (``b"left right"``)."""
    return tokens + [left + b" " + right for left, right in pairwise(tokens)]
