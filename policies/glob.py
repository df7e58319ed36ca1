"""Glob matching in TorchScript (TorchScript has no regular expressions), for the rules (:mod:`policies.rules`).

Syntax, as :func:`fnmatch.fnmatchcase`: ``*`` matches any run of characters (newlines included),
``?`` one character, ``[abc]`` / ``[a-z]`` one ASCII character of the set, ``[!abc]`` one
character not in it (any non-ASCII character); ``]`` first in a set and ``-`` first or last are
members. No escapes: ``[*]`` matches a star. A set that is not closed, that holds a non-ASCII
character or a reversed range is refused. The pattern is ASCII-lowercased (matching is ASCII
case-insensitive: the policy lowercases the text the same way).

How it matches, in O(len(text) × len(pattern)) at worst and with no recursion: the pattern is cut at
its stars into a prefix, middle segments and a suffix. The prefix must match at the start and the
suffix at the end; each middle segment, in order, is matched at its leftmost place after the
previous one. Leftmost is optimal: every atom of a segment takes one character or a fixed literal,
so an earlier start also ends earlier and leaves the rest the most room. Candidate places are
found with ``str.find`` of the segment's longest literal (its anchor), native code, so a typical
pattern costs a few ``find`` calls whatever the text's length. Scripted, strings are UTF-8 bytes:
a character is a lead byte and its continuation bytes (0x80-0xBF).
"""

from typing import Final

import torch

from policies.glob_syntax import ANY, IN_SET, LITERAL, NOT_IN_SET, Segment, parse_segments

__all__ = ["ANY", "IN_SET", "LITERAL", "NOT_IN_SET", "Glob", "parse_segments"]


def _anchor(segment: Segment) -> int:
    """The atom ``find`` looks for: the segment's longest literal, else its first set; -1 if it has neither."""
    kinds, texts = segment
    literals = [index for index, kind in enumerate(kinds) if kind == LITERAL]
    if literals:
        return max(literals, key=lambda index: len(texts[index]))
    return kinds.index(IN_SET) if IN_SET in kinds else -1


class Glob(torch.nn.Module):
    """One compiled pattern; ``matches(lowered_text)`` (scripted) says whether the whole text matches."""

    literal: Final[int] = LITERAL
    in_set: Final[int] = IN_SET
    not_in_set: Final[int] = NOT_IN_SET
    has_star: bool
    prefix_kinds: list[int]
    prefix_texts: list[str]
    middle_kinds: list[list[int]]
    middle_texts: list[list[str]]
    middle_anchors: list[int]
    suffix_kinds: list[int]
    suffix_texts: list[str]

    def __init__(self, pattern: str) -> None:
        super().__init__()
        segments = parse_segments(pattern)
        self.has_star = len(segments) > 1
        self.prefix_kinds, self.prefix_texts = segments[0]
        middles = [segment for segment in segments[1:-1] if segment[0]]  # "**" is "*"
        self.middle_kinds = [kinds for kinds, _ in middles]
        self.middle_texts = [texts for _, texts in middles]
        self.middle_anchors = [_anchor(segment) for segment in middles]
        self.suffix_kinds, self.suffix_texts = segments[-1] if self.has_star else ([], [])

    @torch.jit.export
    def matches(self, text: str) -> bool:
        """Whether the whole of ``text`` (already ASCII-lowercased) matches the pattern."""
        n = len(text)
        position = self._match_at(self.prefix_kinds, self.prefix_texts, text, 0)
        if not self.has_star or position < 0:
            return position == n
        for index in range(len(self.middle_kinds)):
            kinds, texts = self.middle_kinds[index], self.middle_texts[index]
            if not self._possible(kinds, texts, text, position):
                return False
            position = self._leftmost(kinds, texts, self.middle_anchors[index], text, position)
            if position < 0:
                return False
        if len(self.suffix_kinds) == 0:
            return True
        start = self._back_off(self.suffix_kinds, self.suffix_texts, len(self.suffix_kinds), text, n)
        return start >= position and self._match_at(self.suffix_kinds, self.suffix_texts, text, start) == n

    def _possible(self, kinds: list[int], texts: list[str], text: str, start: int) -> bool:
        """Whether every literal, and a character of / not of every set, occurs at or after ``start``.

        A necessary condition checked by native passes, so that most segments that match nowhere
        are refused without a candidate loop.
        """
        rest = text[start:]
        for index in range(len(kinds)):
            kind, atom = kinds[index], texts[index]
            if kind == self.literal and atom not in rest:
                return False
            if kind == self.not_in_set and rest.strip(atom) == "":
                return False
            if kind == self.in_set:
                present = False
                for member in range(len(atom)):
                    if atom[member] in rest:
                        present = True
                        break
                if not present:
                    return False
        return True

    def _char_width(self, text: str, position: int) -> int:
        """Bytes of the character starting at ``position``: a lead byte and its continuation bytes."""
        width = 1
        if ord(text[position]) >= 0xC0:
            while position + width < len(text) and 0x80 <= ord(text[position + width]) < 0xC0:
                width += 1
        return width

    def _match_at(self, kinds: list[int], texts: list[str], text: str, position: int) -> int:
        """Where the segment ends when it matches at ``position``; -1 if it does not, -2 if the text ran out."""
        for index in range(len(kinds)):
            kind = kinds[index]
            if kind == self.literal:
                if not text.startswith(texts[index], position):
                    return -2 if position + len(texts[index]) > len(text) else -1
                position += len(texts[index])
            else:
                if position >= len(text):
                    return -2
                member = ord(text[position]) < 0x80 and text[position] in texts[index]
                if (kind == self.in_set and not member) or (kind == self.not_in_set and member):
                    return -1
                position += self._char_width(text, position)
        return position

    def _back_off(self, kinds: list[int], texts: list[str], count: int, text: str, position: int) -> int:
        """Where the segment's first ``count`` atoms start when they end at ``position`` (-1: before the text)."""
        for index in range(count - 1, -1, -1):
            if kinds[index] == self.literal:
                position -= len(texts[index])
            else:
                position -= 1
                while position > 0 and 0x80 <= ord(text[position]) < 0xC0:
                    position -= 1
            if position < 0:
                return -1
        return position

    def _leftmost(self, kinds: list[int], texts: list[str], anchor: int, text: str, start: int) -> int:
        """Where the segment's leftmost match at or after ``start`` ends; -1 if it matches nowhere.

        With an anchor, each of its occurrences (``find``) fixes one candidate start (the atoms before
        it take fixed lengths); without one, every character from ``start`` is a candidate.
        """
        search = start
        while search <= len(text):
            candidate = search
            found = search
            if anchor >= 0:
                found = self._next_anchor(kinds[anchor], texts[anchor], text, search)
                if found < 0:
                    return -1
                candidate = self._back_off(kinds, texts, anchor, text, found)
            if candidate >= start:
                end = self._match_at(kinds, texts, text, candidate)
                if end >= 0:
                    return end
                if end == -2:  # a later start runs out of text too
                    return -1
            search = found + (1 if anchor >= 0 or found >= len(text) else self._char_width(text, found))
        return -1

    def _next_anchor(self, kind: int, members: str, text: str, search: int) -> int:
        """The first place at or after ``search`` where the literal, or a member of the set, occurs; -1 if none."""
        if kind == self.literal:
            return text.find(members, search)
        first = -1
        for index in range(len(members)):
            place = text.find(members[index], search)
            if place >= 0 and (first < 0 or place < first):
                first = place
        return first
