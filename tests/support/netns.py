"""A small harness of Linux network namespaces for the agent's integration tests (ip-netns(8)).

Usage (needs root; every name is unique per run; everything is removed on close, also on failure):

    with GatewayLab() as lab:               # c1, c2 (two classroom segments) -> gw -> inet
        lab.add_server_address("198.51.100.10")         # an address a fake service answers on
        srv = TcpServer(lab.inet, "198.51.100.10", 443)   # accepts and echoes, in a thread
        with lab.c1.entered():                          # this thread's new sockets live in c1
            s = socket.create_connection(("198.51.100.10", 443), timeout=2)
        lab.gw.exec(["nft", "list", "ruleset"])         # a command inside gw
        p = lab.gw.start_process(my_function, arg)      # a forked Python process inside gw

Addresses (the same in every lab; namespaces keep them apart):

    c1   eth0 10.81.1.10/24 fd81:1::10/64     gw lan1 10.81.1.1/24 fd81:1::1/64
    c2   eth0 10.81.2.10/24 fd81:2::10/64     gw lan2 10.81.2.1/24 fd81:2::1/64
    inet eth0 10.81.0.2/30  fd81::2/64        gw wan  10.81.0.1/30 fd81::1/64
    inet lo: the server addresses a test adds (`add_server_address`); gw routes everything to inet.

Only the namespaces created here carry traffic; nothing is routed to the machine's own network.
Processes started through a `Netns` are tracked and ended by pid on close; no other process is
touched.
"""

from __future__ import annotations

import ctypes
import errno
import multiprocessing
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

C1_ADDR, C1_ADDR6 = "10.81.1.10", "fd81:1::10"
C2_ADDR, C2_ADDR6 = "10.81.2.10", "fd81:2::10"
SEG1_CIDRS = ("10.81.1.0/24", "fd81:1::/64")
SEG2_CIDRS = ("10.81.2.0/24", "fd81:2::/64")
GW_LAN1, GW_LAN1_6 = "10.81.1.1", "fd81:1::1"
GW_LAN2, GW_LAN2_6 = "10.81.2.1", "fd81:2::1"
GW_WAN, GW_WAN6 = "10.81.0.1", "fd81::1"
INET_ADDR, INET_ADDR6 = "10.81.0.2", "fd81::2"


def available() -> bool:
    """True when this process can create namespaces (root, `ip` and `nft` present)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("nft") is not None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _run_in_child(path: str, fn: Callable[..., Any], args: tuple, conn: Any) -> None:
    # Runs in the forked child: enter the namespace, run, send back the result or the error.
    fd = os.open(path, os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)
    try:
        result = fn(*args)
        if conn is not None:
            conn.send(("ok", result))
    except BaseException as exc:  # the parent re-raises it; nothing is lost
        if conn is not None:
            conn.send(("error", repr(exc)))
        raise


class Netns:
    """One named network namespace (`ip netns add`), with helpers to run things inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"
        self._procs: list[Any] = []

    def create(self) -> None:
        """Create the namespace and bring its loopback up."""
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.exec(["ip", "link", "set", "lo", "up"])
        # No duplicate address detection on interfaces made later: tentative link-local
        # addresses otherwise delay the first IPv6 packets by a second or more.
        self.sysctl("net.ipv6.conf.default.accept_dad", "0")
        self.sysctl("net.ipv6.conf.all.accept_dad", "0")

    def exec(self, args: Sequence[str], check: bool = True, timeout: float = 30,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace and wait for it (text output captured)."""
        proc = subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a command inside the namespace; it is ended (by pid) when the lab closes."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)
        self._procs.append(proc)
        return proc

    def start_process(self, fn: Callable[..., Any], *args: Any,
                      daemon: bool = True) -> multiprocessing.Process:
        """Fork a Python process that enters the namespace and runs fn(*args); ended on close.

        `daemon=False` lets fn start processes of its own (multiprocessing forbids that to daemons).
        """
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(target=_run_in_child, args=(self.path, fn, args, None), daemon=daemon)
        proc.start()
        self._procs.append(proc)
        return proc

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30) -> Any:
        """Run fn(*args) in a forked process inside the namespace; return its (picklable) result."""
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_run_in_child, args=(self.path, fn, args, child), daemon=True)
        proc.start()
        child.close()
        try:
            if not parent.poll(timeout):
                raise TimeoutError(f"{self.name}: {fn.__name__} did not finish in {timeout} s")
            status, value = parent.recv()
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            parent.close()
        if status != "ok":
            raise RuntimeError(f"{self.name}: {fn.__name__} raised {value}")
        return value

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling thread into the namespace for the block (its sockets stay there)."""
        # Namespaces are per thread: save this thread's own namespace to come back to it.
        back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(target)
            os.close(back)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A new socket that lives in this namespace."""
        with self.entered():
            return socket.socket(family, type, proto)

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl of this namespace (net.* keys are per namespace)."""
        self.exec(["sysctl", "-q", "-w", f"{key}={value}"])

    def stop_processes(self) -> None:
        """End every process started through this namespace, by its pid."""
        for proc in reversed(self._procs):
            if isinstance(proc, subprocess.Popen):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(3)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            else:
                if proc.is_alive():
                    proc.terminate()
                    proc.join(3)
                    if proc.is_alive():
                        proc.kill()
                        proc.join()
        self._procs.clear()

    def delete(self) -> None:
        """Stop this namespace's processes and remove it (its veths go with it)."""
        self.stop_processes()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Lab:
    """A set of namespaces with a unique prefix, linked by veth pairs; a context manager."""

    def __init__(self, roles: Sequence[str], prefix: str | None = None) -> None:
        self.prefix = prefix or f"lf{secrets.token_hex(3)}"
        self.ns: dict[str, Netns] = {role: Netns(f"{self.prefix}-{role}") for role in roles}
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> "Lab":
        try:
            for ns in self.ns.values():
                ns.create()
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        """Hook for subclasses: links, addresses and routes."""

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run fn (e.g. a server's stop) when the lab closes, before the namespaces go."""
        self._closers.append(fn)

    def link(self, a: str, a_if: str, b: str, b_if: str) -> None:
        """Create a veth pair a_if (in a) <-> b_if (in b) and bring both ends up."""
        # Created directly inside the namespaces, so no interface name ever exists in the host.
        subprocess.run(["ip", "link", "add", a_if, "netns", self.ns[a].name, "type", "veth",
                        "peer", "name", b_if, "netns", self.ns[b].name], check=True)
        self.ns[a].exec(["ip", "link", "set", a_if, "up"])
        self.ns[b].exec(["ip", "link", "set", b_if, "up"])

    def address(self, role: str, ifname: str, cidr: str) -> None:
        """Add an address (IPv6 without duplicate address detection, so it works at once)."""
        extra = ["nodad"] if ":" in cidr else []
        self.ns[role].exec(["ip", "addr", "add", cidr, "dev", ifname, *extra])

    def close(self) -> None:
        """Stop servers and processes, then delete every namespace; safe to call twice."""
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:  # cleanup goes on; the test has already reported its own failure
                pass
        self._closers.clear()
        for ns in self.ns.values():
            ns.delete()


class GatewayLab(Lab):
    """The agent's test network: classroom namespaces c1 and c2 -> gateway gw -> `inet`."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__(["c1", "c2", "gw", "inet"], prefix)

    @property
    def c1(self) -> Netns:
        return self.ns["c1"]

    @property
    def c2(self) -> Netns:
        return self.ns["c2"]

    @property
    def gw(self) -> Netns:
        return self.ns["gw"]

    @property
    def inet(self) -> Netns:
        return self.ns["inet"]

    def build(self) -> None:
        """Links, addresses, routes and forwarding as in the module docstring."""
        self.link("c1", "eth0", "gw", "lan1")
        self.link("c2", "eth0", "gw", "lan2")
        self.link("gw", "wan", "inet", "eth0")
        for role, ifname, cidrs in [
            ("c1", "eth0", (f"{C1_ADDR}/24", f"{C1_ADDR6}/64")),
            ("c2", "eth0", (f"{C2_ADDR}/24", f"{C2_ADDR6}/64")),
            ("gw", "lan1", (f"{GW_LAN1}/24", f"{GW_LAN1_6}/64")),
            ("gw", "lan2", (f"{GW_LAN2}/24", f"{GW_LAN2_6}/64")),
            ("gw", "wan", (f"{GW_WAN}/30", f"{GW_WAN6}/64")),
            ("inet", "eth0", (f"{INET_ADDR}/30", f"{INET_ADDR6}/64")),
        ]:
            for cidr in cidrs:
                self.address(role, ifname, cidr)
        for role, via, via6 in [("c1", GW_LAN1, GW_LAN1_6), ("c2", GW_LAN2, GW_LAN2_6),
                                ("gw", INET_ADDR, INET_ADDR6)]:
            self.ns[role].exec(["ip", "route", "add", "default", "via", via])
            self.ns[role].exec(["ip", "-6", "route", "add", "default", "via", via6])
        self.inet.exec(["ip", "route", "add", "10.81.0.0/16", "via", GW_WAN])
        self.inet.exec(["ip", "-6", "route", "add", "fd81::/16", "via", GW_WAN6])
        self.gw.sysctl("net.ipv4.ip_forward", "1")
        self.gw.sysctl("net.ipv6.conf.all.forwarding", "1")

    def add_server_address(self, address: str) -> None:
        """Give `inet` one more address (on its loopback) that servers there can bind to."""
        prefix = "/128" if ":" in address else "/32"
        self.address("inet", "lo", address + prefix)


class ThreadedTcpListener:
    """A TCP listener inside a namespace that hands each connection to `_handle` in a thread.

    Subclasses set their own attributes, then call `super().__init__` (which starts accepting).
    """

    def __init__(self, ns: Netns, host: str, port: int, backlog: int = 64) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = ns.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)  # so stop() is noticed between connections
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop accepting and close the listening socket."""
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


class TcpServer(ThreadedTcpListener):
    """A threaded TCP server inside a namespace: sends `greeting` on accept, then echoes lines.

    `http=True` answers one HTTP/1.1 request per connection with `200 OK` and the Host it saw.
    """

    def __init__(self, ns: Netns, host: str, port: int, greeting: bytes = b"",
                 http: bool = False) -> None:
        self.greeting = greeting
        self.http = http
        super().__init__(ns, host, port)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with conn:
                if self.greeting:
                    conn.sendall(self.greeting)
                while not self._stop.is_set():
                    data = conn.recv(65536)
                    if not data:
                        return
                    if self.http:
                        host = b""
                        for line in data.split(b"\r\n"):
                            if line.lower().startswith(b"host:"):
                                host = line[5:].strip()
                        body = b"hello " + host
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                     b"Connection: close\r\n\r\n%s" % (len(body), body))
                        return
                    conn.sendall(data)
        except OSError:
            return


class UdpEchoServer:
    """A threaded UDP server inside a namespace that echoes every datagram (a stand-in for QUIC)."""

    def __init__(self, ns: Netns, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = ns.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.sock.sendto(data, peer)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class FakeDnsServer:
    """An authoritative stand-in resolver inside a namespace (UDP and TCP), built with dnspython.

    `zone` maps a lower-case name to a list of addresses (A and AAAA by their form); other names
    get NXDOMAIN. Every query is counted in `queries` (name, type) so tests can see what reached it.
    `ns=None` serves in the caller's own namespace (e.g. on 127.0.0.1).
    """

    def __init__(self, ns: Netns | None, host: str, zone: dict[str, list[str]], port: int = 53,
                 ttl: int = 300, truncate: tuple[str, ...] = ()) -> None:
        import dns.message  # test dependency only; the agent never imports dnspython

        self._dns = dns
        self.zone = {name.lower().rstrip("."): list(addrs) for name, addrs in zone.items()}
        self.ttl = ttl
        self.truncate = set(truncate)  # names whose UDP answers set TC (RFC 1035 §4.1.1)
        self.queries: list[tuple[str, int]] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        make = ns.socket if ns is not None else socket.socket
        # Port 0 picks one for both: the port the kernel gives UDP may be taken for TCP (by
        # another test's connection), and then another is tried.
        for attempt in range(50 if port == 0 else 1):
            self.udp = make(family, socket.SOCK_DGRAM)
            self.udp.bind((host, port))
            self.port = self.udp.getsockname()[1]
            self.tcp = make(family, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((host, self.port))
                break
            except OSError as err:
                self.udp.close()
                self.tcp.close()
                if port != 0 or err.errno != errno.EADDRINUSE or attempt == 49:
                    raise
        self.tcp.listen(16)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    def answer(self, wire: bytes, tcp: bool = False) -> bytes:
        """The wire answer to one query (TC and no records over UDP for `truncate` names)."""
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.rrset

        query = dns.message.from_wire(wire)
        reply = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text().lower().rstrip(".")
        self.queries.append((name, int(q.rdtype)))
        if name not in self.zone:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            return reply.to_wire()
        if name in self.truncate and not tcp:
            import dns.flags
            reply.flags |= dns.flags.TC
            return reply.to_wire()
        want = {dns.rdatatype.A: lambda a: ":" not in a, dns.rdatatype.AAAA: lambda a: ":" in a}
        pick = want.get(q.rdtype)
        addrs = [a for a in self.zone[name] if pick and pick(a)]
        if addrs:
            rrset = dns.rrset.from_text_list(q.name, self.ttl, dns.rdataclass.IN, q.rdtype, addrs)
            reply.answer.append(rrset)
        return reply.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                self.udp.sendto(self.answer(data), peer)
            except Exception:  # a malformed query gets no answer, as from a real server
                continue

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(2)
                    size = int.from_bytes(head, "big")
                    data = b""
                    while len(data) < size:
                        chunk = conn.recv(size - len(data))
                        if not chunk:
                            break
                        data += chunk
                    out = self.answer(data, tcp=True)
                    conn.sendall(len(out).to_bytes(2, "big") + out)
                except Exception:
                    continue

    def stop(self) -> None:
        """Stop serving and close the sockets."""
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


def tcp_connect(ns: Netns, host: str, port: int, timeout: float = 2.0) -> str:
    """Try a TCP connection from ns: 'open', 'reset' (refused/reset), or 'timeout'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return "open"
    except ConnectionRefusedError:
        return "reset"
    except ConnectionResetError:
        return "reset"
    except (TimeoutError, socket.timeout):
        return "timeout"
    except OSError as exc:  # e.g. host unreachable from an ICMP reject
        return f"error:{exc.errno}"
    finally:
        s.close()


def dns_query(ns: Netns, server: str, name: str, rdtype: str = "A", tcp: bool = False,
              port: int = 53, timeout: float = 2.0) -> Any:
    """Send one query from ns with dnspython and return the dns.message.Message answer."""
    import dns.message
    import dns.query

    query = dns.message.make_query(name, rdtype)
    with ns.entered():
        if tcp:
            return dns.query.tcp(query, server, port=port, timeout=timeout)
        return dns.query.udp(query, server, port=port, timeout=timeout)


def twitter_lesson_on_lokaal_1(now: Any) -> Any:
    """The BlockState of the lab's two segments: lokaal-1 in a lesson that blocks twitter for an
    hour, lokaal-2 free."""
    from datetime import timedelta

    from agent.state import BlockState, SegmentState
    return BlockState(now, (
        SegmentState(1, "lokaal-1", SEG1_CIDRS, {"twitter": now + timedelta(hours=1)}),
        SegmentState(2, "lokaal-2", SEG2_CIDRS, {})), None)


def start_observed_gateway(lab: Lab, state_of: Callable[[], Any]) -> tuple[Any, Any]:
    """The lab gateway's nftables enforcer and observer (the tests' catalog), started in its
    namespace with the state `state_of()` gives; the caller stops them."""
    from agent.enforcers.nftables import NftablesEnforcer
    from agent.observers.capture import Observer
    from tests.support.policies import SERVICES, make_policy
    enforcer = NftablesEnforcer(lan_interfaces=["lan1", "lan2"], dns_port=5353)
    observer = Observer(["lan1", "lan2"], enforcer, SERVICES, state_of)
    with lab.gw.entered():
        enforcer.start(make_policy())
        enforcer.apply(state_of())
        observer.start()
    return enforcer, observer
