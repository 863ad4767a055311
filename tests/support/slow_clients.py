"""Slow clients for the "cannot be frozen" probes (SPEC §5, "slow clients"): sockets that send
half a request header and stop, and a watch for when the other end closes them."""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable

HALF_A_HEADER = b"GET /api/v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: appl"


def open_half_headers(connect: Callable[[], socket.socket], count: int) -> list[socket.socket]:
    """`count` sockets from `connect()` (plain or TLS), each sent half a request header."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect()
            opened.append(sock)
            sock.sendall(HALF_A_HEADER)
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return opened


def closed_by_peer(socks: list[socket.socket], within: float) -> tuple[int, list[bytes]]:
    """How many of `socks` the other end closed within `within` s, and the data it sent first.

    TLS sockets count as closed on a close_notify, an unclean end or a reset; TLS records that
    carry no application data (session tickets) are skipped.
    """
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed, answers = 0, []
    deadline = time.monotonic() + within
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if data:
                answers.append(data)
                continue
            selector.unregister(sock)
            closed += 1
    selector.close()
    return closed, answers
