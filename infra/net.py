"""Loopback networking helpers shared by the launchers, the demo, benchmarks and tests (servers here listen on
127.0.0.1 only)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a rendezvous or a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
