"""``python -m training.follow``: keep a served policy learning from the service's decision logs (docs/contracts.md §6).

    python -m training.follow --run runs/default --logs logs/ --out runs/live \\
        [--service http://127.0.0.1:8000] [--config follow.yaml] [--set margin=0.01] [--exit-when-idle]
    python -m training.follow --out runs/live --rollback 3 [--service http://127.0.0.1:8000]

The first form starts (or, when ``--out`` holds a follower's checkpoint, continues) the loop of
:mod:`training.follower`, polling every ``--poll-seconds`` until SIGINT / SIGTERM (it finishes the
step it is in) or, with ``--exit-when-idle``, until a poll finds nothing new. Serve the follower's
``--out``/``policy.pt`` (``serve.py --policy runs/live/policy.pt --decision-log logs/decisions.jsonl``)
and give the admin token in ``ROUTERL_ADMIN_TOKEN``, so that a promotion reloads the service. The
second form installs an earlier version and reloads the service. User errors: one line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from data.schema import DataError
from training.cli import add_set_argument


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m training.follow",
        description="Follow a service's decision logs, learn from them and promote only policies that "
        "off-policy evaluation proves better.",
    )
    parser.add_argument("--out", type=Path, required=True, help="the follower's folder (policy.pt, versions/, ...)")
    parser.add_argument("--run", type=Path, help="run directory whose policy.pt and learner.npz start the follower")
    parser.add_argument("--logs", type=Path, help="folder of the service's decision logs (every worker's)")
    parser.add_argument("--service", help="base URL of serve.py, reloaded after each promotion or rollback")
    parser.add_argument("--config", type=Path, help="YAML of the follower's settings (training.follower.FollowConfig)")
    add_set_argument(parser, "override a setting, e.g. --set margin=0.01 (repeatable)")
    parser.add_argument(
        "--prices", type=Path, help="price table for feedback without cost (default configs/prices.yaml)"
    )
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="pause between polls that found nothing")
    parser.add_argument(
        "--exit-when-idle", action="store_true", help="stop after the first poll that finds nothing new"
    )
    parser.add_argument("--rollback", type=int, metavar="VERSION", help="install this earlier version and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Follow, or roll back; a user error is one line on stderr and exit status 2."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.rollback is not None:
            from training.promotion import rollback

            print(rollback(args.out, args.rollback, args.service))
            return 0
        return _follow(args)
    except DataError as error:
        print(f"python -m training.follow: error: {error}", file=sys.stderr)
        return 2


def _follow(args: argparse.Namespace) -> int:
    """Build the follower and poll until stopped."""
    from data.prices import PriceTable
    from training.follower import Follower, load_follow_config

    if args.run is None or args.logs is None:
        raise DataError("--run and --logs are needed to follow (or --rollback VERSION)")
    if not args.logs.is_dir():
        raise DataError(f"{args.logs}: not a folder of decision logs")
    if not args.poll_seconds > 0:
        raise DataError(f"--poll-seconds must be > 0, got {args.poll_seconds}")
    config = load_follow_config(args.config, args.overrides)
    prices = PriceTable.load_or_default(args.prices)
    follower = Follower(args.run, args.logs, args.out, config, args.service, prices)
    stopping = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        if follower.step() == 0:
            if args.exit_when_idle:
                break
            time.sleep(args.poll_seconds)
    follower.close()
    print(
        f"followed {follower.rounds} rounds; latest version {follower.version}; events in {args.out / 'events.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
