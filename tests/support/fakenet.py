"""Fake Internet services and client probes for the end-to-end tests, inside the lab's namespaces.

Services: HTTPS (TLS 1.2+/HTTP/1.1 keep-alive) with certificates from a throwaway CA made by
openssl(1) for the test, answering `hello <host>`; the same server answers DNS-over-HTTPS
(RFC 8484, POST application/dns-message) when given a zone. Probes run in a client namespace and
report an outcome a scenario can judge: content obtained or not.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any, Callable

from tests.support.netns import Netns, ThreadedTcpListener


def make_ca(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A CA and one server certificate for `names` (SAN), made with openssl; (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "srv.key",
                                                          "srv.csr", "srv.pem"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=lesfocus e2e test CA")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=fake service")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


class TlsHttpServer(ThreadedTcpListener):
    """HTTPS on (host, port) in `ns`: `hello <host>` for GET, DoH answers for POST /dns-query."""

    def __init__(self, ns: Netns, host: str, certfile: Path, keyfile: Path, port: int = 443,
                 doh: Callable[[bytes], bytes] | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        self.doh = doh
        super().__init__(ns, host, port)

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                buffer = b""
                while not self._stop.is_set():
                    while b"\r\n\r\n" not in buffer:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    lines = head.split(b"\r\n")
                    headers = {k.strip().lower(): v.strip() for k, _, v in
                               (line.partition(b":") for line in lines[1:])}
                    length = int(headers.get(b"content-length", b"0"))
                    while len(buffer) < length:
                        buffer += conn.recv(65536)
                    body, buffer = buffer[:length], buffer[length:]
                    if lines[0].startswith(b"POST /dns-query") and self.doh is not None:
                        payload, kind = self.doh(body), b"application/dns-message"
                    else:
                        payload, kind = b"hello " + headers.get(b"host", b""), b"text/plain"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: " + kind +
                                 b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        except (OSError, ssl.SSLError, ValueError):
            return


def _outcome(err: BaseException) -> str:
    if isinstance(err, (ConnectionRefusedError, ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(err, ssl.SSLError):
        return f"tls:{err.reason}"
    return f"error:{type(err).__name__}"


class HttpsClient:
    """A keep-alive HTTPS connection from a client namespace (the flow opened in the break)."""

    def __init__(self, ns: Netns, address: str, name: str, cafile: Path,
                 timeout: float = 2.0) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        raw = ns.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        raw.settimeout(timeout)
        self.name = name
        try:
            raw.connect((address, 443))
            self.conn: ssl.SSLSocket | None = context.wrap_socket(raw, server_hostname=name)
            self.error = ""
        except (OSError, ssl.SSLError) as err:
            raw.close()
            self.conn, self.error = None, _outcome(err)

    def get(self, path: str = "/") -> str:
        """One request on the connection: `ok:<body>`, or how it failed."""
        if self.conn is None:
            return self.error
        try:
            self.conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.name}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.conn.recv(65536)
                if not chunk:
                    return "closed"
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(
                b"content-length")][0].split(b":")[1])
            while len(body) < length:
                chunk = self.conn.recv(65536)
                if not chunk:
                    return "closed"
                body += chunk
            return "ok:" + body.decode()
        except (OSError, ssl.SSLError) as err:
            return _outcome(err)

    def post(self, path: str, body: bytes, kind: str) -> tuple[str, bytes]:
        """One POST; (outcome, response body)."""
        if self.conn is None:
            return self.error, b""
        try:
            self.conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {self.name}\r\nContent-Type: "
                              f"{kind}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.conn.recv(65536)
                if not chunk:
                    return "closed", b""
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(
                b"content-length")][0].split(b":")[1])
            while len(rest) < length:
                rest += self.conn.recv(65536)
            return "ok", rest[:length]
        except (OSError, ssl.SSLError) as err:
            return _outcome(err), b""

    def close(self) -> None:
        """Close the connection."""
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass


def https_get(ns: Netns, address: str, name: str, cafile: Path, timeout: float = 2.0) -> str:
    """A fresh HTTPS GET of https://name/ at `address`: `ok:hello name`, or how it failed."""
    client = HttpsClient(ns, address, name, cafile, timeout)
    try:
        return client.get()
    finally:
        client.close()


def resolve(ns: Netns, server: str, name: str, tcp: bool = False, timeout: float = 2.0,
            rdtype: str = "A") -> str:
    """The first A (or AAAA) address of `name` from `server`, or how the lookup failed."""
    from tests.support.netns import dns_query
    import dns.exception
    import dns.rcode

    try:
        answer = dns_query(ns, server, name, rdtype, tcp=tcp, timeout=timeout)
    except dns.exception.Timeout:
        return "timeout"
    except (OSError, dns.exception.DNSException) as err:
        return f"error:{type(err).__name__}"
    if answer.rcode() == dns.rcode.NXDOMAIN:
        return "NXDOMAIN"
    for rrset in answer.answer:
        for item in rrset:
            if hasattr(item, "address"):
                return str(item.address)
    return "NOANSWER"


def doh_resolve(ns: Netns, address: str, doh_name: str, name: str, cafile: Path) -> str:
    """Resolve `name` over DoH (RFC 8484 POST) at `address`: first A address or how it failed."""
    import dns.message
    import dns.rcode

    client = HttpsClient(ns, address, doh_name, cafile)
    try:
        outcome, body = client.post("/dns-query", dns.message.make_query(name, "A").to_wire(),
                                    "application/dns-message")
    finally:
        client.close()
    if outcome != "ok":
        return outcome
    answer = dns.message.from_wire(body)
    if answer.rcode() == dns.rcode.NXDOMAIN:
        return "NXDOMAIN"
    for rrset in answer.answer:
        for item in rrset:
            return str(item.address)
    return "NOANSWER"


def udp_echo(ns: Netns, address: str, port: int = 443, timeout: float = 1.0) -> bool:
    """True when a datagram to (address, port) is echoed back (a QUIC stand-in got through)."""
    sock = ns.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        sock.sendto(b"\xc0quic-initial-ish", (address, port))
        data, _ = sock.recvfrom(2048)
        return data.startswith(b"\xc0quic")
    except OSError:
        return False
    finally:
        sock.close()


def nft(ns: Netns, *args: str) -> str:
    """nft(8) inside `ns`; its output."""
    return ns.exec(["nft", *args], check=False).stdout


def start_process_log(ns: Netns, args: list[str], log: Path, **kwargs: Any) -> Any:
    """Start a command in `ns` with stdout and stderr appended to `log`."""
    handle = open(log, "a")
    try:
        return ns.popen(args, stdout=handle, stderr=subprocess.STDOUT, **kwargs)
    finally:
        handle.close()
