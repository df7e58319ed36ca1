"""``python -m data SUBCOMMAND``: tools around routing logs (summary of a log, synthetic data, public datasets)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns its exit status."""
    from data import fetch, summary, synth

    parser = argparse.ArgumentParser(prog="python -m data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="write a synthetic log with known ground truth")
    synth.add_arguments(p)
    p.set_defaults(run=synth.main)
    p = sub.add_parser("summary", help="what is in a log, and what loading it would reject")
    summary.add_arguments(p)
    p.set_defaults(run=summary.main)
    p = sub.add_parser("fetch", help="download a public dataset (RouterBench) into data/external/, sha256-verified")
    fetch.add_arguments(p)
    p.set_defaults(run=fetch.main)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
