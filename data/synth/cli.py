"""The command line: ``python -m data synth --out FILE [flags]`` writes a synthetic log."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from data.synth.config import LOGGING_POLICIES, SynthConfig
from data.synth.generator import generate
from data.synth.writers import write

#: The ``python -m data synth`` flags besides ``--out``, in help order: (SynthConfig field, help).
#: Each flag is its field's name with dashes and takes the field's type and default; a bool field
#: (False by default) is a switch, and a field listed in :data:`_CHOICES` takes one of those values.
_FLAGS: tuple[tuple[str, str], ...] = (
    ("queries", "number of queries"),
    ("models", "number of models (2..26)"),
    ("topics", "number of topics"),
    ("words_per_query", "mean words per query"),
    ("topic_word_share", "share of words from the query's topic vocabulary"),
    ("query_noise", "std of the per-(query, model) logit noise the text cannot explain"),
    ("query_offset", "std of the per-query logit offset (all models) the text cannot explain"),
    ("label_noise", "probability that a verdict is a coin flip"),
    ("drift", "model skills drift over time"),
    ("bandit", "bandit-feedback log: one logged model per query, with propensity"),
    ("logging_policy", "logging policy of a bandit log"),
    ("epsilon", "eps of eps-greedy"),
    ("temperature", "temperature of the softmax logging policy"),
    ("cost_weight", "utility = quality - cost_weight * cost (USD), for the logging policy"),
    ("seed", "random seed"),
)
#: The values a text flag accepts, by field.
_CHOICES: dict[str, tuple[str, ...]] = {"logging_policy": LOGGING_POLICIES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``python -m data synth`` flags to ``parser``; defaults are SynthConfig's."""
    defaults = SynthConfig()
    parser.add_argument("--out", required=True, help="output file: .jsonl, .csv or .parquet")
    for field, help_text in _FLAGS:
        flag = "--" + field.replace("_", "-")
        default = getattr(defaults, field)
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=help_text)
        elif field in _CHOICES:
            parser.add_argument(flag, choices=_CHOICES[field], default=default, help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build a SynthConfig from parsed flags (any SynthConfig field present on ``args``)."""
    known = {f.name for f in fields(SynthConfig)}
    return SynthConfig(**{k: v for k, v in vars(args).items() if k in known and v is not None})


def main(args: argparse.Namespace) -> int:
    """Generate and write a log; exit status 0, or 2 with one message for bad settings."""
    try:
        config = config_from_args(args)
        log = generate(config)
        rows = write(log, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = f"bandit ({config.logging_policy})" if config.bandit else "full-information"
    print(f"wrote {rows} rows ({config.queries} queries x {config.models} models, {kind}) to {args.out}")
    return 0
