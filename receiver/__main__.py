"""``python -m receiver``: the receiver without the full CLI (tests, containers)."""

from __future__ import annotations

import argparse

from receiver.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers, args.threads)


if __name__ == "__main__":
    main()
