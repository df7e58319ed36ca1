"""Rule overrides compiled into the exported policy (docs/contracts.md §2.9).

A rules file maps conditions on the query text to the models a query may be routed to::

    rules:
      - name: code goes to code models
        when: {contains_any: ["```", "def "]}
        route_to: [code-34b, gpt-4]

:func:`read_rules` reads and validates it (pydantic, unknown keys refused) into :class:`Rule` s;
:func:`check_models` refuses a rule that names a model the policy does not have; :func:`canonical`
is the JSON form kept in the artifact's metadata (``rules``). :class:`RuleSet` is their TorchScript
form inside the policy: ``mask(queries)`` is, per query, the models allowed by the **first** rule
(file order) whose conditions all hold, and every model when none holds.

Text semantics are the artifact's, so Python and C++ agree byte for byte: TorchScript strings are
UTF-8 bytes and ``lower()`` lowercases ASCII letters only, so matching is ASCII case-insensitive
(keywords and patterns are ASCII-lowercased when compiled); tokens are counted by the policy's
own tokenizer (:meth:`policies.scripted_featurizer.ScriptedFeaturizer.token_count`, §2.4);
characters are Unicode code points. The module must run scripted (``torch.jit.script``): in eager
Python, strings are code points and the byte arithmetic below would not hold.
"""

from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

import torch
import yaml
from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from data.schema import DataError
from policies.glob import Glob, parse_segments
from policies.scripted_featurizer import ScriptedFeaturizer

STRICT = ConfigDict(extra="forbid")
Text = Annotated[str, StringConstraints(min_length=1)]
Count = Annotated[int, Field(strict=True, ge=0)]
#: The conditions of a rule, in the order the canonical form and error messages list them.
CONDITIONS = ("contains_any", "contains_all", "pattern", "min_tokens", "max_tokens", "min_chars", "max_chars")


@dataclass(frozen=True, config=STRICT)
class Conditions:
    """What must hold of a query (all that are given): substrings, a glob, token and character counts.

    ``contains_any`` / ``contains_all``: one / every string occurs in the text (ASCII
    case-insensitive). ``pattern``: a glob over the whole ASCII-lowercased text (``*`` any run, ``?``
    one character, ``[abc]`` / ``[a-z]`` / ``[!abc]`` one ASCII character of / not of a set).
    ``min_tokens``..``max_chars``: inclusive bounds on the token count (§2.4) and on the code points.
    """

    contains_any: list[Text] | None = None
    contains_all: list[Text] | None = None
    pattern: Text | None = None
    min_tokens: Count | None = None
    max_tokens: Count | None = None
    min_chars: Count | None = None
    max_chars: Count | None = None

    def __post_init__(self) -> None:
        """At least one condition; non-empty lists; a valid glob; each minimum at most its maximum."""
        given = self.given()
        if not given:
            raise ValueError(f"'when' needs at least one condition of {', '.join(CONDITIONS)}")
        for name in ("contains_any", "contains_all"):
            if given.get(name) == []:
                raise ValueError(f"{name} needs at least one string")
        if self.pattern is not None:
            parse_segments(self.pattern)  # a ValueError naming the problem
        for low, high in ((self.min_tokens, self.max_tokens), (self.min_chars, self.max_chars)):
            if low is not None and high is not None and low > high:
                raise ValueError(f"a minimum ({low}) above its maximum ({high}) matches nothing")

    def given(self) -> dict[str, Any]:
        """The conditions that are set, lists as lists, in :data:`CONDITIONS` order."""
        return {name: value for name in CONDITIONS if (value := getattr(self, name)) is not None}


@dataclass(frozen=True, config=STRICT)
class Rule:
    """When ``when`` holds, the query may go only to ``route_to`` (one model: forced)."""

    when: Conditions
    route_to: list[Text] = field(default_factory=list)
    name: str | None = None

    def __post_init__(self) -> None:
        """``route_to`` names at least one model, each once."""
        if not self.route_to:
            raise ValueError("route_to needs at least one model")
        if len(set(self.route_to)) != len(self.route_to):
            raise ValueError(f"route_to names a model twice: {list(self.route_to)}")


_RULE = TypeAdapter(Rule)


def _label(index: int, name: object) -> str:
    """``rule 2 ('long prompts')``: how messages name a rule (1-based, in file order)."""
    return f"rule {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")


def _problem(location: Sequence[object], message: str) -> str:
    """One pydantic error as ``when.min_tokens: Input should be ...`` (a rule-wide check without a key)."""
    message = message.removeprefix("Value error, ")
    return f"{'.'.join(str(part) for part in location)}: {message}" if location else message


def parse_rules(items: object, source: str) -> list[Rule]:
    """Validate a list of rule mappings; a problem is one :class:`DataError` naming ``source`` and the rule."""
    if not isinstance(items, list):
        raise DataError(f"{source}: 'rules' must be a list of rules")
    rules = []
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            raise DataError(f"{source}: {_label(index, name)}: a rule is a mapping of when, route_to and name")
        try:
            rules.append(_RULE.validate_python(item))
        except ValidationError as error:
            problems = "; ".join(_problem(problem["loc"], problem["msg"]) for problem in error.errors())
            raise DataError(f"{source}: {_label(index, name)}: {problems}") from None
    return rules


def read_rules(path: str | Path) -> list[Rule]:
    """The rules of a YAML rules file (``rules: [...]``), validated; any problem is one :class:`DataError`."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: cannot read the rules file: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict) or set(document) != {"rules"}:
        raise DataError(f"{path}: a rules file is a mapping with one key, 'rules': a list of rules")
    return parse_rules(document["rules"], str(path))


def check_models(rules: Sequence[Rule], models: Sequence[str], source: str) -> None:
    """Refuse a rule that routes to a model the log (and so the policy) does not have."""
    for index, rule in enumerate(rules):
        for model in rule.route_to:
            if model not in models:
                raise DataError(
                    f"{source}: {_label(index, rule.name)}: unknown model {model!r}; "
                    f"the log's models are {sorted(models)}"
                )


def canonical(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """The metadata's ``rules``: per rule {name, when (the given conditions), route_to}, in file order."""
    return [{"name": rule.name, "when": rule.when.given(), "route_to": list(rule.route_to)} for rule in rules]


def from_canonical(rules: Sequence[Mapping[str, Any]]) -> list[Rule]:
    """:func:`canonical`'s form back into rules (validated again)."""
    return parse_rules([dict(rule) for rule in rules], "rules")


def character_count(text: str) -> int:
    """Unicode code points of ``text`` (scripted: its UTF-8 bytes less the continuation bytes 0x80-0xBF).

    Printable ASCII (with newlines and tabs) is one byte a character: one native ``isprintable``
    pass. Otherwise 64 native ``count`` passes rather than a loop over bytes, which the TorchScript
    interpreter runs at about 2 µs a byte.
    """
    if text.replace("\n", " ").replace("\t", " ").isprintable():
        return len(text)
    count = len(text)
    for byte in range(0x80, 0xC0):
        count -= text.count(chr(byte))
    return count


class CompiledRule(torch.nn.Module):
    """One rule's conditions in TorchScript; absent bounds are 0 (minimum) and -1 (maximum)."""

    contains_any: list[str]
    contains_all: list[str]
    min_tokens: int
    max_tokens: int
    min_chars: int
    max_chars: int

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        when = rule.when
        self.contains_any = [ascii_lower(text) for text in when.contains_any or ()]
        self.contains_all = [ascii_lower(text) for text in when.contains_all or ()]
        self.glob = Glob(when.pattern if when.pattern is not None else "*")
        self.min_tokens = when.min_tokens or 0
        self.max_tokens = -1 if when.max_tokens is None else when.max_tokens
        self.min_chars = when.min_chars or 0
        self.max_chars = -1 if when.max_chars is None else when.max_chars

    def forward(self, lowered: str, tokens: int, chars: int) -> bool:
        """Whether every condition holds for the ASCII-lowercased text and its counts."""
        if tokens < self.min_tokens or (self.max_tokens >= 0 and tokens > self.max_tokens):
            return False
        if chars < self.min_chars or (self.max_chars >= 0 and chars > self.max_chars):
            return False
        if len(self.contains_any) > 0:
            found = False
            for keyword in self.contains_any:
                if keyword in lowered:
                    found = True
                    break
            if not found:
                return False
        for keyword in self.contains_all:
            if keyword not in lowered:
                return False
        return self.glob.matches(lowered)


def ascii_lower(text: str) -> str:
    """``text`` with ASCII letters lowercased and every other character kept, as TorchScript's ``lower()``."""
    return text.encode("utf-8").lower().decode("utf-8")


class RuleSet(torch.nn.Module):
    """The rules of a policy in TorchScript: ``mask(queries)`` -> (N, K) bool, first matching rule wins.

    ``allowed`` has one row per rule and a last row of every model (no rule matched), so a batch's
    mask is one ``index_select``. Token and character counts are computed only when a rule uses them.
    """

    allowed: torch.Tensor
    n_rules: int
    needs_tokens: bool
    needs_chars: bool

    def __init__(self, rules: Sequence[Rule], models: Sequence[str]) -> None:
        super().__init__()
        check_models(rules, models, "rules")
        allowed = torch.zeros(len(rules) + 1, len(models), dtype=torch.bool)
        for index, rule in enumerate(rules):
            allowed[index, [models.index(model) for model in rule.route_to]] = True
        allowed[len(rules)] = True
        self.register_buffer("allowed", allowed)
        self.rules = torch.nn.ModuleList([CompiledRule(rule) for rule in rules])
        self.n_rules = len(rules)
        given = {name for rule in rules for name in rule.when.given()}
        self.needs_tokens = bool(given & {"min_tokens", "max_tokens"})
        self.needs_chars = bool(given & {"min_chars", "max_chars"})
        # the policy's tokenizer (§2.4) without a vocabulary: only its token count is used
        self.tokenizer = ScriptedFeaturizer([], torch.zeros(0, dtype=torch.float64), 1.0)

    def first_match(self, text: str) -> int:
        """The index of the first rule whose conditions hold for ``text``; ``n_rules`` when none does."""
        tokens = self.tokenizer.token_count(text) if self.needs_tokens else 0
        chars = character_count(text) if self.needs_chars else 0
        lowered = text.lower()
        found = self.n_rules
        for index, rule in enumerate(self.rules):
            if found == self.n_rules and rule(lowered, tokens, chars):
                found = index
        return found

    def forward(self, queries: list[str]) -> torch.Tensor:
        """(N, K) bool: the models each query may be routed to."""
        chosen = [self.first_match(text) for text in queries] if self.n_rules > 0 else [0 for _ in queries]
        return self.allowed.index_select(0, torch.tensor(chosen, dtype=torch.int64))
