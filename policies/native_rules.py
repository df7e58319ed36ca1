"""The native engine's rule overrides: :class:`policies.rules.RuleSet` in Python, from the metadata's rules (no torch).

The same semantics (docs/contracts.md §2.9): per query, the models allowed by the first rule (file
order) whose conditions all hold, every model when none holds. Keywords and patterns match the
ASCII-lowercased text; tokens are counted by the policy's tokenizer; characters are code points.
Patterns are parsed by :func:`policies.glob_syntax.parse_segments`, the parser of the TorchScript
glob, and matched by the same algorithm: the prefix at the start, each middle segment at its
leftmost place after the previous one, the suffix at the end. Each star-free segment is a regular
expression of fixed width, so a match never backtracks across stars (linear in the text).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from policies.glob_syntax import ANY, IN_SET, LITERAL, Segment, parse_segments

#: ``str.translate`` table that lowercases ASCII letters only (TorchScript's ``lower()``).
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _segment_regex(segment: Segment) -> tuple[re.Pattern[str], int]:
    """A star-free segment as a regular expression, and its width in characters."""
    parts, width = [], 0
    for kind, text in zip(*segment):
        if kind == LITERAL:
            parts.append(re.escape(text))
            width += len(text)
            continue
        if kind == ANY:
            parts.append(".")
        else:
            members = "".join(re.escape(member) for member in text)
            parts.append(f"[{members}]" if kind == IN_SET else f"[^{members}]")
        width += 1
    return re.compile("".join(parts), re.DOTALL), width


class NativeGlob:
    """One pattern; :meth:`matches` says whether the whole ASCII-lowercased text matches it."""

    def __init__(self, pattern: str) -> None:
        segments = parse_segments(pattern)
        self.exact = len(segments) == 1
        compiled = [_segment_regex(segment) for segment in segments]
        self.prefix = compiled[0][0]
        self.middles = [regex for (regex, width) in compiled[1:-1] if width > 0]  # "**" is "*"
        self.suffix, self.suffix_width = compiled[-1]

    def matches(self, text: str) -> bool:
        """Whether all of ``text`` matches (leftmost placement of every middle segment is optimal: module docstring)."""
        if self.exact:
            return self.prefix.fullmatch(text) is not None
        found = self.prefix.match(text)
        if found is None:
            return False
        position = found.end()
        for middle in self.middles:
            found = middle.search(text, position)
            if found is None:
                return False
            position = found.end()
        start = len(text) - self.suffix_width
        return start >= position and self.suffix.fullmatch(text, start) is not None


class NativeRule:
    """One rule's conditions (absent ones always hold)."""

    def __init__(self, when: Mapping[str, Any]) -> None:
        self.contains_any = [str(text).translate(ASCII_LOWER) for text in when.get("contains_any") or ()]
        self.contains_all = [str(text).translate(ASCII_LOWER) for text in when.get("contains_all") or ()]
        self.glob = NativeGlob(str(when["pattern"])) if when.get("pattern") is not None else None
        self.tokens = (when.get("min_tokens"), when.get("max_tokens"))
        self.chars = (when.get("min_chars"), when.get("max_chars"))
        self.needs_tokens = self.tokens != (None, None)

    @staticmethod
    def _within(value: int, bounds: tuple[int | None, int | None]) -> bool:
        low, high = bounds
        return (low is None or value >= low) and (high is None or value <= high)

    def holds(self, lowered: str, tokens: int) -> bool:
        """Whether every condition holds for the ASCII-lowercased text of ``tokens`` tokens."""
        if not self._within(len(lowered), self.chars) or not self._within(tokens, self.tokens):
            return False
        if self.contains_any and not any(keyword in lowered for keyword in self.contains_any):
            return False
        if not all(keyword in lowered for keyword in self.contains_all):
            return False
        return self.glob is None or self.glob.matches(lowered)


class NativeRuleSet:
    """The metadata's canonical rules (§2.9) against the policy's models; :meth:`mask` per query."""

    def __init__(self, rules: Sequence[Mapping[str, Any]], models: Sequence[str], token_count: Callable[[str], int]):
        self.rules = [NativeRule(rule["when"]) for rule in rules]
        self.allowed = np.zeros((len(rules) + 1, len(models)), dtype=bool)
        for index, rule in enumerate(rules):
            self.allowed[index, [list(models).index(model) for model in rule["route_to"]]] = True
        self.allowed[len(rules)] = True
        self.token_count = token_count
        self.needs_tokens = any(rule.needs_tokens for rule in self.rules)  # else texts are not tokenized

    def first_match(self, text: str) -> int:
        """The index of the first rule that holds for ``text``; the number of rules when none does."""
        lowered = text.translate(ASCII_LOWER)
        tokens = self.token_count(text) if self.needs_tokens else 0
        for index, rule in enumerate(self.rules):
            if rule.holds(lowered, tokens):
                return index
        return len(self.rules)

    def mask(self, queries: Sequence[str]) -> np.ndarray:
        """(N, K) bool: the models each query may be routed to."""
        if not self.rules:
            return np.ones((len(queries), self.allowed.shape[1]), dtype=bool)
        return self.allowed[[self.first_match(text) for text in queries]]
