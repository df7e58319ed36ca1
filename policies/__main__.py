"""``python -m policies SUBCOMMAND``: tools around an exported policy (its portable twin, its exported program).

- ``portable PATH.pt``: write the portable twin ``policy.safetensors`` of a ``policy.pt`` (docs/contracts.md
  §2.11), for policies exported by a routerl that did not write it yet.
- ``export-program PATH [--out FILE]``: write the policy's numeric core as a ``torch.export`` program,
  ``policy.pt2`` beside PATH by default (docs/contracts.md §2.12).
- ``rules PATH --rules FILE --out NEW.pt``: the text policy PATH with the rule overrides of FILE instead
  of its own, without retraining (docs/contracts.md §2.9; :mod:`policies.rules_export`).

Exit status: 0 success, 2 bad input (one line naming the file, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policies.native import load_native_policy
from policies.policy_file import PolicyError


def _write_portable(args: argparse.Namespace) -> int:
    """``portable``: load the TorchScript policy and write its twin beside it."""
    from policies.artifact import load_policy
    from policies.export import write_twin

    loaded = load_policy(args.policy)
    try:
        written = write_twin(loaded.module, loaded.metadata, loaded.path)
    except ValueError as exc:  # a head class the portable format does not know
        raise PolicyError(f"{args.policy}: {exc}") from None
    except OSError as exc:  # the twin's path is a folder, or the folder is read-only
        raise PolicyError(f"{args.policy}: cannot write its twin ({exc.strerror or exc})") from None
    print(f"wrote {written}")
    return 0


def _export_program(args: argparse.Namespace) -> int:
    """``export-program``: export the numeric core of the policy PATH names and save it."""
    from policies.exported_program import PROGRAM_SUFFIX, program_path, write_program

    target = args.out or program_path(args.policy)
    if target.suffix != PROGRAM_SUFFIX:  # also keeps --out from replacing a policy.pt
        raise PolicyError(f"{target}: a program file's name ends in {PROGRAM_SUFFIX} (torch.export.load expects it)")
    portable = load_native_policy(args.policy).portable  # checked as the native engine checks it
    try:
        written = write_program(portable, target)
    except OSError as exc:
        raise PolicyError(f"{target}: cannot write the program ({exc.strerror or exc})") from None
    head, models = portable.head_kind, len(portable.header["arms"]["models"])
    print(f"wrote {written} ({written.stat().st_size / 1e6:.2f} MB): the {head} policy of {portable.path}, "
          f"{models} models; load it with torch.export.load")
    return 0


def _replace_rules(args: argparse.Namespace) -> int:
    """``rules``: script the policy again around its learned parts with the new rules."""
    from policies.rules_export import replace_rules

    written = replace_rules(args.policy, args.rules, args.out)
    print(f"wrote {written} with the rules of {args.rules} (scores unchanged)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns its exit status."""
    parser = argparse.ArgumentParser(prog="python -m policies", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("portable", help="write the portable twin policy.safetensors of a policy.pt (§2.11)")
    p.add_argument("policy", type=Path, metavar="PATH", help="an exported policy.pt")
    p.set_defaults(run=_write_portable)
    p = sub.add_parser("export-program", help="write the policy's numeric core as a torch.export program (§2.12)")
    p.add_argument("policy", type=Path, metavar="PATH", help="a policy.pt or a policy.safetensors")
    p.add_argument("--out", type=Path, metavar="FILE", help="the program file (default: policy.pt2 beside PATH)")
    p.set_defaults(run=_export_program)
    p = sub.add_parser("rules", help="replace a text policy's rule overrides without retraining (§2.9)")
    p.add_argument("policy", type=Path, metavar="PATH", help="an exported text policy.pt")
    p.add_argument("--rules", type=Path, required=True, metavar="FILE", help="the new rules file (rules: [] for none)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the new policy file (not PATH)")
    p.set_defaults(run=_replace_rules)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except PolicyError as exc:
        print(f"python -m policies {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
