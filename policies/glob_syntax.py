"""The glob syntax of the rules' ``pattern`` (docs/contracts.md §2.9), parsed once for both engines (torch-free).

:func:`parse_segments` cuts a pattern at its stars into segments of atoms (a literal run, ``?``, a
set, a negated set) and refuses what the syntax does not allow; :class:`policies.glob.Glob` matches
them in TorchScript, :func:`policies.native_rules.glob_regex` turns them into a regular expression
for the native engine. The syntax itself is described in :mod:`policies.glob`.
"""

#: Atom kinds: a literal run of bytes, ``?``, a set, a negated set.
LITERAL, ANY, IN_SET, NOT_IN_SET = 0, 1, 2, 3

Segment = tuple[list[int], list[str]]  # atom kinds, and each atom's literal text or set members


def _set_members(body: str, pattern: str) -> str:
    """The members of ``[body]``, ranges expanded, ASCII-lowercased, sorted, each once."""
    members: set[str] = set()
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            low, high = body[index], body[index + 2]
            if low > high:
                raise ValueError(f"glob {pattern!r}: the range {low}-{high} is reversed")
            members.update(chr(code) for code in range(ord(low), ord(high) + 1))
            index += 3
        else:
            members.add(body[index])
            index += 1
    if not all(member.isascii() for member in members):
        raise ValueError(f"glob {pattern!r}: a [...] set takes ASCII characters only")
    return "".join(sorted({member.lower() for member in members}))


def _parse_set(pattern: str, start: int) -> tuple[int, str, int]:
    """The set opening at ``pattern[start]`` (``[``): (its kind, its members, the index after ``]``)."""
    first = start + 1
    kind = IN_SET
    if first < len(pattern) and pattern[first] == "!":
        kind, first = NOT_IN_SET, first + 1
    close = pattern.find("]", first + 1)  # a ']' right after '[' or '[!' is a member
    if first >= len(pattern) or close < 0:
        raise ValueError(f"glob {pattern!r}: the '[' at position {start} is not closed by ']'")
    return kind, _set_members(pattern[first:close], pattern), close + 1


def parse_segments(pattern: str) -> list[Segment]:
    """The pattern cut at its stars: one (kinds, texts) segment per run between stars (possibly empty)."""
    segments: list[Segment] = [([], [])]
    index = 0
    while index < len(pattern):
        kinds, texts = segments[-1]
        character = pattern[index]
        if character == "*":
            segments.append(([], []))
            index += 1
        elif character == "?":
            kinds.append(ANY)
            texts.append("")
            index += 1
        elif character == "[":
            kind, members, index = _parse_set(pattern, index)
            kinds.append(kind)
            texts.append(members)
        else:
            lowered = character.encode("utf-8").lower().decode("utf-8")
            if kinds and kinds[-1] == LITERAL:
                texts[-1] += lowered
            else:
                kinds.append(LITERAL)
                texts.append(lowered)
            index += 1
    return segments
