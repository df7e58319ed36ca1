"""Byte-level tokenization shared by Python and TorchScript (docs/contracts.md §2).

Text is taken as UTF-8 bytes. ASCII letters are lowercased; every other byte is kept. A token is
a maximal run of bytes that are neither ASCII whitespace (space, \\t, \\n, \\r, \\v, \\f) nor ASCII
punctuation (``string.punctuation``). Terms are the tokens (unigrams) and each pair of adjacent
tokens joined by one space (bigrams; a space never occurs inside a token, so the join is
unambiguous). Because every delimiter is ASCII, a token never splits a multi-byte character.
"""

from __future__ import annotations

import string

#: The delimiter bytes, in the order the TorchScript twin replaces them.
DELIMITERS: bytes = b" \t\n\r\x0b\x0c" + string.punctuation.encode("ascii")
