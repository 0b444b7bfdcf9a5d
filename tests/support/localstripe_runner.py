"""Run localstripe (GPL-3.0, a test peer only) as its own process, bound to 127.0.0.1.

Its stock CLI listens on every interface and pickles its whole store to a fixed
/tmp path on every write (so parallel instances clobber each other). This runner
binds loopback only and keeps state in memory, or in ``--state-file`` when given.

    python tests/support/localstripe_runner.py --port 8420 [--state-file PATH]
"""

from __future__ import annotations

import argparse
import logging
import pickle
import socket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", default=None)
    args = parser.parse_args()

    from aiohttp import web
    from localstripe import resources, server

    state_file = args.state_file

    def dump_to_disk(self) -> None:
        if state_file:
            with open(state_file, "wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)

    def try_load_from_disk(self) -> None:
        if state_file:
            try:
                with open(state_file, "rb") as f:
                    self.clear()
                    self.update(pickle.load(f))
            except FileNotFoundError:
                pass

    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = try_load_from_disk
    resources.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    main()
