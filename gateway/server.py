"""The HTTP server process around the app: uvicorn, with a socket bound before start-up
and a deadline on shutdown.

- `listen`: the listening socket is made before the app starts, so a taken port ends
  `serve` at once with a message, before the store, the worker and the relay are up
  (uvicorn binds after the app's start-up, then waits on a shutdown that had hung).
- `Server`: after SIGTERM/SIGINT the process ends within the worker's shutdown grace plus
  a margin for closing the store, whatever state it is in (starting, migrating, draining
  jobs, stuck in a call): a timer thread ends it if the orderly shutdown has not.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

import uvicorn

CLOSE_MARGIN_SECONDS = 5.0


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _give_up(sig: int) -> None:
    print(
        f"switchboard: shutdown did not finish in time after signal {sig}; exiting",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + sig)


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace: float) -> None:
        super().__init__(config)
        self.grace = grace
        self._deadline: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self.grace + CLOSE_MARGIN_SECONDS, _give_up, (sig,))
            self._deadline.daemon = True
            self._deadline.start()
        super().handle_exit(sig, frame)
