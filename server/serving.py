"""Serving the app in production: gunicorn with one process of threads (the `gthread` worker).

Why not waitress: every waiting long poll is a request in flight, and with 500 of them waitress's
throughput on other requests fell from 5,130 to 54 req/s in a trivial app on our CI machine,
while gunicorn's gthread worker kept 2,530 (its main loop watches only idle keep-alive sockets;
requests in flight sit in the thread pool). One worker process: the change feed wakes the long
polls waiting in it (server/changes.py), and the scheduler runs exactly once.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class _GunicornApp(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in the worker (preload_app is off): the app's threads (scheduler, long-poll
        # watcher) and database connections belong to the process that serves.
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


def run_server(factory: Callable[[], Flask], host: str, port: int, threads: int,
               on_ready: Callable[[int], None] | None = None) -> None:
    """Serve the app made by `factory` until interrupted; `on_ready(port)` once listening."""

    def when_ready(server: Any) -> None:
        if on_ready is not None:
            on_ready(server.LISTENERS[0].sock.getsockname()[1])

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "worker_class": "gthread",
        "workers": 1,
        "threads": threads,
        # Long polls hold a connection for up to a minute each; leave room for everyone else.
        "worker_connections": threads + 200,
        "backlog": 2048,
        "keepalive": 75,  # longer than an agent's poll interval, so agents reuse connections
        "timeout": 120,  # the worker's heartbeat to the master; long polls end within 60 s
        "when_ready": when_ready,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "lesfocus",
    }
    _GunicornApp(factory, options).run()
