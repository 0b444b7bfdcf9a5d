"""``stripe-pipeline dev`` argument parsing; the demo itself is imported only when run."""

from __future__ import annotations

import argparse
from pathlib import Path

from stripe_pipeline.commands.common import positive_int


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (1-65535)")
    return port


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return seconds


def cmd_dev(args: argparse.Namespace) -> int:
    from stripe_pipeline.devtools.demo import DemoConfig, run_demo

    config = DemoConfig(
        data_dir=Path(args.data_dir),
        receiver_port=args.receiver_port,
        dagster_port=args.dagster_port,
        localstripe_port=args.localstripe_port,
        stripe_api_port=args.stripe_api_port,
        customers=args.customers,
        traffic=not args.no_traffic,
        traffic_interval=args.traffic_interval,
        exit_after=args.exit_after,
    )
    return run_demo(config)


def add_dev_command(commands: argparse._SubParsersAction) -> None:
    """Register ``dev`` on the top-level ``stripe-pipeline`` parser."""
    dev = commands.add_parser(
        "dev",
        help="run the whole pipeline locally against a fake Stripe (localstripe)",
        description=(
            "Migrate the SQLite database, start localstripe (127.0.0.1) with a Stripe front "
            "before it (serving what localstripe lacks), the receiver and Dagster (webserver "
            "+ daemon), register the webhook and drive realistic traffic. "
            "Ctrl-C stops every child process. State lives in --data-dir, so a second run "
            "continues where the first stopped. Needs the dev extra: pip install -e '.[dev]'."
        ),
    )
    dev.add_argument("--data-dir", default="data", help="state folder (default: ./data)")
    dev.add_argument("--receiver-port", type=_port, default=8000, help="default 8000")
    dev.add_argument("--dagster-port", type=_port, default=3000, help="default 3000")
    dev.add_argument("--localstripe-port", type=_port, default=8420, help="default 8420")
    dev.add_argument(
        "--stripe-api-port",
        type=_port,
        default=8421,
        help="the Stripe API the pipeline uses: a front over localstripe (default 8421)",
    )
    dev.add_argument(
        "--customers", type=positive_int, default=6, help="customers in the first burst (default 6)"
    )
    dev.add_argument("--no-traffic", action="store_true", help="start everything, send nothing")
    dev.add_argument(
        "--traffic-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="send a small round of traffic this often after the first burst (0: never; "
        "default 30)",
    )
    dev.add_argument(
        "--exit-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="stop everything after this many seconds (for tests and CI)",
    )
    dev.set_defaults(func=cmd_dev)
