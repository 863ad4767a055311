"""`lesfocus serve` and `lesfocus demo` on a port that is taken: one clear line, exit 1, nothing
printed or started before it (issue 14)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from server.serving import listen_problem


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_taken_port_is_named_with_how_to_choose_another(taken_port: int) -> None:
    problem = listen_problem("127.0.0.1", taken_port)
    assert problem is not None and "\n" not in problem
    assert f"poort {taken_port} is al in gebruik op 127.0.0.1:{taken_port}" in problem
    assert f"port {taken_port} is already in use" in problem and "--port" in problem


def test_a_free_port_and_port_zero_are_fine() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert listen_problem("127.0.0.1", free) is None
    assert listen_problem("127.0.0.1", 0) is None


@pytest.mark.parametrize("host, port, words", [
    ("no-such-host.invalid", 5000, "onbekend adres"),
    ("127.0.0.1", 70000, "poort 70000 bestaat niet"),
])
def test_impossible_addresses_are_said_too(host: str, port: int, words: str) -> None:
    assert words in (listen_problem(host, port) or "")


# Nothing here reads the database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_on_a_taken_port_exits_before_starting_the_server(app, runner, monkeypatch,
                                                                taken_port: int) -> None:
    import server.serving
    started = []
    monkeypatch.setattr(server.serving, "exec_server", lambda *args: started.append(args))
    result = runner.invoke(args=["serve", "--port", str(taken_port)])
    assert result.exit_code == 1 and started == []
    assert f"poort {taken_port} is al in gebruik" in result.output
    assert "serving on" not in result.output


# Nothing here reads the database.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo_on_a_taken_port_exits_before_printing_the_url_or_building(
        app, runner, monkeypatch, taken_port: int) -> None:
    import server.demo
    built = []
    monkeypatch.setattr(server.demo, "build_demo", lambda: built.append(1))
    result = runner.invoke(args=["demo", "--port", str(taken_port)])
    assert result.exit_code == 1 and built == []
    assert "http://" not in result.output
    assert f"poort {taken_port} is al in gebruik" in result.output
    assert "make demo PORT=5001" in result.output
