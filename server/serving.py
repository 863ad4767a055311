"""Serving the app in production: gunicorn with one process of greenlets (the `gevent` worker).

Why greenlets: an agent's long poll (`GET /api/v1/gateways/self/policy?wait=55`) waits for up to a
minute in `server/changes.py`. Under the `gthread` worker each waiting agent held an OS thread, so
600 agents (or 70 connections that sent half a request header, against 64 threads) froze every
other request. Under gevent a waiting request is a greenlet parked on the change feed's
`threading.Condition`, which monkey-patching makes greenlet-aware; the worker's connection limit
(`--connections`) is the only bound, and it is counted in file descriptors and KiB, not threads.
Measured figures are in docs/architecture.md ("Serving") and tests/bench/bench_serving.py.

Monkey-patching comes first: `lesfocus serve` starts this module in a fresh interpreter
(`exec_server`), whose gunicorn master imports no part of the app; the worker patches (gunicorn's
`GeventWorker.init_process`) and only then imports and builds the app. That matters for psycopg 3,
which picks its wait function when imported (psycopg/waiting.py: the blocking C `wait_c` unless
gevent has patched `select`); `_make_psycopg_cooperative` covers callers of `run_server` that
imported psycopg before the fork. sqlite3 calls block the hub while they run (short queries; see
the figures).

Cannot be frozen (gunicorn's gevent worker bounds only the idle wait plus the request head, by
its `keepalive` setting, and never the body): `LesfocusWorker.handle` gives every connection
- HEADER_SECONDS from accept (or from a request's first byte on a kept-alive connection) to the
  end of its request head, else 408 and close (closed without an answer if no byte came);
- a body deadline of BODY_SECONDS plus MIN_BODY_RATE bytes per second of body: the body is read
  into memory before the app runs (up to the app's MAX_CONTENT_LENGTH, else 413), so a view never
  waits on a slow client;
- KEEPALIVE_SECONDS of idle time between requests, and SEND_SECONDS for writing an answer.
Answers it gives itself use the API's JSON error shape. gunicorn's `timeout` means, for this
worker, "the hub did not run the worker's heartbeat for that long" (something blocked every
greenlet), not a per-request limit. One worker process: the change feed wakes the long polls
waiting in it, and several `lesfocus serve` processes share work through PostgreSQL.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gunicorn import http, util
from gunicorn.app.base import BaseApplication
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData
from gunicorn.workers.ggevent import GeventWorker

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)

# Connections one process holds at once (waiting agents, browsers, half-open sockets).
DEFAULT_CONNECTIONS = 10_000
HEADER_SECONDS = 10.0
BODY_SECONDS = 10.0
MIN_BODY_RATE = 50_000  # bytes/s: a 16 MiB timetable upload may take 10 s + 5.6 min
KEEPALIVE_SECONDS = 75.0  # longer than the gap between an agent's requests, so it reuses one
SEND_SECONDS = 60.0
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024  # when the app has no MAX_CONTENT_LENGTH
# File descriptors per connection, plus the database pool, logs and the listening socket.
SPARE_DESCRIPTORS = 256


class _Refused(Exception):
    """A request the worker answers itself (408, 413) before the app sees it."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _error_answer(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": reason, "message": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _buffered(parser: Any) -> int:
    """Bytes the parser has read from the socket but not parsed yet (a pipelined request)."""
    buf = parser.unreader.buf
    buf.seek(0, io.SEEK_END)
    return int(buf.tell())


class LesfocusWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with deadlines for the request head, the body and idle time."""

    def init_process(self) -> None:
        """Patch (gunicorn does it first thing), then make psycopg cooperative, then load."""
        self.patch()
        _make_psycopg_cooperative()
        gevent.hub.reinit()
        # GeventWorker.init_process would patch again; the base class loads the app and runs.
        super(GeventWorker, self).init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM (a graceful stop): stop accepting, and answer the waiting agents at once."""
        super().handle_exit(sig, frame)
        gevent.spawn(self._answer_waiting_agents)

    def _answer_waiting_agents(self) -> None:
        from .api.gateways import release_waiting_polls
        try:
            release_waiting_polls(self.wsgi)
        except Exception:  # noqa: BLE001 - the stop goes on; the polls end with the process
            self.log.exception("answering the waiting long polls at stop failed")

    def _body_limit(self) -> int:
        config = getattr(self.wsgi, "config", None) or {}
        return int(config.get("MAX_CONTENT_LENGTH") or DEFAULT_BODY_LIMIT)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection: requests in turn, each within its deadlines."""
        req = None
        try:
            parser = http.RequestParser(self.cfg, client, addr)
            listener_name = listener.getsockname()
            new_connection = True
            while True:
                req = None
                began = time.monotonic()
                if not _buffered(parser):
                    # Wait for the next request's first byte; a peer that sends none is closed
                    # without an answer (a browser's unused preconnection, an idle keep-alive).
                    client.settimeout(HEADER_SECONDS if new_connection else KEEPALIVE_SECONDS)
                    if not client.recv(1, socket.MSG_PEEK):
                        return
                # On a new connection the wait for the first byte counts against the head.
                allowed = HEADER_SECONDS - (time.monotonic() - began) * new_connection
                new_connection = False
                req = self._read_head(parser, client, max(allowed, 0.001))
                self._read_body(req, client)
                client.settimeout(SEND_SECONDS)
                self.handle_request(listener_name, req, client, addr)
        except _Refused as refused:
            self._refuse(client, refused)
        except StopIteration:
            pass  # the last answer said "Connection: close", or the peer is done
        except (TimeoutError, NoMoreData):
            pass  # a peer that went quiet while idle or while reading an answer
        except OSError as err:
            if err.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                self.log.warning("connection from %s: %s", addr, err)
        except gevent.GreenletExit:
            pass
        except Exception as err:  # noqa: BLE001 - gunicorn answers malformed requests with 400
            self.handle_error(req, client, addr, err)
        finally:
            util.close(client)

    def _read_head(self, parser: Any, client: Any, allowed: float) -> Any:
        """The next request's line and headers within `allowed` seconds."""
        client.settimeout(None)  # the deadline below covers the whole head, however trickled
        try:
            with gevent.Timeout(allowed):
                return next(parser)
        except gevent.Timeout:
            raise _Refused(408, "Request Timeout",
                           f"the request line and headers must arrive within "
                           f"{HEADER_SECONDS:g} s") from None

    def _read_body(self, req: Any, client: Any) -> None:
        """Read the whole body into memory within its deadline, so the app never waits on it."""
        reader = req.body.reader
        length = reader.length if isinstance(reader, LengthReader) else None
        if not isinstance(reader, ChunkedReader) and not length:
            return  # no body (gunicorn gives a request without one a body of length 0)
        expects_continue = any(name == "EXPECT" and value.strip().lower() == "100-continue"
                               for name, value in req.headers)
        limit = self._body_limit()
        if length is not None and length > limit:
            raise _Refused(413, "Request Entity Too Large",
                           f"the body is {length} bytes, more than the {limit} this server reads")
        if expects_continue:
            # Answered here, since the body is read before gunicorn would send it.
            req.headers = [(n, v) for n, v in req.headers if n != "EXPECT"]
            client.settimeout(SEND_SECONDS)
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        client.settimeout(None)
        began = time.monotonic()
        pieces: list[bytes] = []
        received = 0
        while True:
            allowed = began + BODY_SECONDS + received / MIN_BODY_RATE - time.monotonic()
            try:
                with gevent.Timeout(max(allowed, 0.001)):
                    piece = req.body.read(65536)
            except gevent.Timeout:
                raise _Refused(408, "Request Timeout",
                               f"the body must arrive within {BODY_SECONDS:g} s plus 1 s per "
                               f"{MIN_BODY_RATE} bytes") from None
            except (InvalidChunkSize, ChunkMissingTerminator) as err:
                raise _Refused(400, "Bad Request", f"malformed chunked body: {err}") from None
            if not piece:
                break
            received += len(piece)
            if received > limit:
                raise _Refused(413, "Request Entity Too Large",
                               f"the body is more than the {limit} bytes this server reads")
            pieces.append(piece)
        req.body = Body(io.BytesIO(b"".join(pieces)))

    def _refuse(self, client: Any, refused: _Refused) -> None:
        try:
            client.settimeout(1.0)
            client.sendall(_error_answer(refused.status, refused.reason, refused.message))
        except OSError:
            pass  # the peer is gone or does not read: it is being closed anyway


def _make_psycopg_cooperative() -> None:
    """Give psycopg a greenlet-aware wait function if it was imported before patching.

    psycopg 3 chooses its wait function when `psycopg.waiting` is imported: the C `wait_c`,
    which blocks the whole hub, unless gevent has patched `select` by then (psycopg >= 3.1.14).
    `exec_server` imports psycopg only after patching; `run_server` callers may not have.
    """
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and getattr(waiting, "wait", None) is getattr(waiting, "wait_c", 0):
        waiting.wait = waiting.wait_poll  # a poll() that gevent patched, so a cooperative one
        log.info("psycopg was imported before gevent patched select: using wait_poll")


def raise_descriptor_limit(connections: int) -> int:
    """Raise the soft limit of open files towards `connections` + spare (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


class _GunicornApp(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in the worker after monkey-patching (preload_app is off): the app's threads
        # (change feed) are greenlets, and its database connections belong to this process.
        app = self.factory()
        settle_heap()
        return app


def settle_heap() -> None:
    """Move what start-up made (modules, the app, the catalog) out of the garbage collector's way.

    Every full collection walks all tracked objects; without this, the ones a policy compile
    triggers walked Flask, SQLAlchemy and the templates each time and made the slowest compiles
    two to three times the median (tests/bench/bench_policy.py prints both). See gc.freeze in
    the Python documentation: meant for exactly this, after start-up, before serving.
    """
    gc.collect()
    gc.freeze()


def run_server(factory: Callable[[], Flask], host: str, port: int,
               connections: int = DEFAULT_CONNECTIONS,
               on_ready: Callable[[int], None] | None = None) -> None:
    """Serve the app made by `factory` in this process's gunicorn until interrupted.

    `on_ready(port)` runs once listening. `connections`: how many one worker holds at once.
    """
    limit = raise_descriptor_limit(connections)
    connections = max(1, min(connections, limit - SPARE_DESCRIPTORS))

    def when_ready(server: Any) -> None:
        if on_ready is not None:
            on_ready(server.LISTENERS[0].sock.getsockname()[1])

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "worker_class": LesfocusWorker,
        "workers": 1,
        "worker_connections": connections,
        "backlog": 2048,
        # The idle deadline between requests is LesfocusWorker's; a non-zero value keeps
        # gunicorn from closing each connection after one answer.
        "keepalive": int(KEEPALIVE_SECONDS),
        # The hub's heartbeat to the master (see the module docstring); a long poll yields.
        "timeout": 120,
        # SIGTERM answers waiting agents with 304 at once (they poll again elsewhere); other
        # requests get this long to finish.
        "graceful_timeout": 10,
        # Forwarded headers are read in one place, the app's ProxyFix (LESFOCUS_TRUSTED_PROXIES);
        # gunicorn would otherwise take the scheme from X-Forwarded-Proto of any loopback peer.
        "secure_scheme_headers": {},
        "when_ready": when_ready,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "lesfocus",
    }
    _GunicornApp(factory, options).run()


def serving_command(host: str, port: int, connections: int) -> list[str]:
    """The command line of a fresh interpreter serving the app (monkey-patched first)."""
    # -P: no working-directory entry on sys.path, so `server` is the installed package.
    return [sys.executable, "-P", "-m", "server.serving", "--host", host, "--port", str(port),
            "--connections", str(connections)]


def listen_problem(host: str, port: int, how_to_choose: str = "--port") -> str | None:
    """Why the server could not listen on `host`:`port` (one line, Dutch / English), or None.

    Checked by binding a socket the way gunicorn does (SO_REUSEADDR, so a port in TIME_WAIT is
    free) and closing it again, before anything is printed or started: without it a taken port
    showed as gunicorn's "Can't connect" after the dashboard's URL had been printed.
    """
    if not 0 <= port <= 65535:
        return (f"lesfocus: poort {port} bestaat niet / port {port} does not exist (1-65535); "
                f"kies een andere met {how_to_choose} / choose another with {how_to_choose}")
    if port == 0:
        return None  # the kernel picks a free one
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        return (f"lesfocus: onbekend adres {host!r} / unknown address {host!r} ({err}); "
                f"kies een ander met --host / choose another with --host")
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            return (f"lesfocus: poort {port} is al in gebruik op {shown} / port {port} is "
                    f"already in use on {shown}; kies een andere met {how_to_choose} / choose "
                    f"another with {how_to_choose}")
        return (f"lesfocus: kan niet luisteren op {shown} / cannot listen on {shown} "
                f"({err.strerror}); kies een andere poort met {how_to_choose} / choose another "
                f"port with {how_to_choose}")
    finally:
        probe.close()
    return None


def exec_server(host: str, port: int, connections: int) -> None:
    """Replace this process by a fresh interpreter serving the app (monkey-patched first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    command = serving_command(host, port, connections)
    os.execv(command[0], command)


def _create_app() -> Flask:
    from .app import create_app  # imported in the worker, after monkey-patching
    return create_app()


def main(argv: list[str] | None = None) -> None:
    """`python -m server.serving --host H --port P --connections N` (what `lesfocus serve` runs)."""
    import argparse
    parser = argparse.ArgumentParser(prog="lesfocus serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    args = parser.parse_args(argv)
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def listening(bound: int) -> None:
        # Printed once the socket is bound, with the real port (`--port 0` picks a free one).
        print(f"lesfocus: serving on http://{shown}:{bound}/", flush=True)

    run_server(_create_app, args.host, args.port, args.connections, on_ready=listening)


if __name__ == "__main__":
    main()
