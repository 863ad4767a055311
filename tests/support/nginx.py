"""Debian's nginx in front of `lesfocus serve`, configured from the shipped files.

The site file is used as shipped except for what a test must change: the upstream servers, the
listen addresses (free loopback ports instead of 80 and 443) and the certificate paths; the main
file (docs/nginx/nginx.conf: worker connections, file limit) except for its paths. Each of
those lines must appear exactly once, so the test fails when the shipped file drifts away from
what it checks. nginx runs in the foreground (`daemon off`) with its own prefix, pid, logs and
temporary folders, so no system nginx is involved.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.support.processes import stop_process

SHIPPED_SITE = Path(__file__).resolve().parents[2] / "docs" / "nginx" / "lesfocus.conf"
SHIPPED_MAIN = SHIPPED_SITE.with_name("nginx.conf")
_TEMP_FOLDERS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str | None:
    """The nginx binary (Debian puts it in /usr/sbin, often not on a user's PATH), or None."""
    return shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def make_self_signed_certificate(folder: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for `ip` and its key as PEM files; (certificate, key).

    Valid from 2000 to 2100, so the clock-shifted test runs (whose Python clock is ahead of the
    one OpenSSL reads) accept it as well.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lesfocus e2e")])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2000, 1, 1, tzinfo=timezone.utc))
        .not_valid_after(datetime(2100, 1, 1, tzinfo=timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _replace_each(text: str, replacements: list[tuple[str, str]], shipped: Path) -> str:
    """`text` with each (old, new) replaced; AssertionError unless every old occurs just once."""
    for old, new in replacements:
        if text.count(old) != 1:
            raise AssertionError(f"{shipped} should contain {old!r} exactly once; "
                                 "update tests/support/nginx.py with it")
        text = text.replace(old, new)
    return text


def render_site(text: str, *, upstreams: list[str], https_port: int, http_port: int,
                certificate: Path, key: Path, host: str = "127.0.0.1") -> str:
    """The shipped site file with the test's upstreams, ports and certificate."""
    replacements = [
        ("    server 127.0.0.1:8000;\n", "".join(f"    server {u};\n" for u in upstreams)),
        ("    listen 80;\n", f"    listen {host}:{http_port};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl http2;\n", f"    listen {host}:{https_port} ssl http2;\n"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("/etc/ssl/lesfocus/fullchain.pem", str(certificate)),
        ("/etc/ssl/lesfocus/privkey.pem", str(key)),
    ]
    return _replace_each(text, replacements, SHIPPED_SITE)


def render_main(text: str, *, folder: Path, site: Path, as_root: bool) -> str:
    """The shipped main file with the test's own pid, logs, temporary folders and site.

    The host's modules and conf.d are left out, so only the shipped files configure nginx.
    """
    temp = "".join(f"    {name}_temp_path {folder / name};\n" for name in _TEMP_FOLDERS)
    replacements = [
        # As root, nginx would hand its workers to www-data, who may not enter pytest's folders.
        ("user www-data;\n", "user root;\n" if as_root else ""),
        ("pid /run/nginx.pid;\n", f"daemon off;\npid {folder / 'nginx.pid'};\n"),
        ("error_log /var/log/nginx/error.log;\n", f"error_log {folder / 'error.log'} info;\n"),
        ("include /etc/nginx/modules-enabled/*.conf;\n", ""),
        ("    access_log /var/log/nginx/access.log;\n",
         f"    access_log {folder / 'access.log'};\n"),
        ("    include /etc/nginx/conf.d/*.conf;\n", ""),
        ("    include /etc/nginx/sites-enabled/*;\n", f"{temp}    include {site};\n"),
    ]
    return _replace_each(text, replacements, SHIPPED_MAIN)


class NginxProxy:
    """One nginx in the foreground with the shipped site in front of `upstreams`."""

    @property
    def public_url(self) -> str:
        """The HTTPS base URL clients (and agents' tokens) use."""
        return f"https://{self.host}:{self.https_port}"

    def __init__(self, folder: Path, binary: str, *, upstreams: list[str], certificate: Path,
                 key: Path, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.binary = binary
        self.upstreams = upstreams
        self.certificate = certificate
        self.key = key
        self.host = host
        # Chosen now, so the server can be told its public URL before nginx starts.
        self.https_port, self.http_port = free_port(host), free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.folder / "error.log"

    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        site = self.folder / "lesfocus.conf"
        site.write_text(render_site(SHIPPED_SITE.read_text(), upstreams=self.upstreams,
                                    https_port=self.https_port, http_port=self.http_port,
                                    certificate=self.certificate, key=self.key, host=self.host))
        main = self.folder / "nginx.conf"
        main.write_text(render_main(SHIPPED_MAIN.read_text(), folder=self.folder, site=site,
                                    as_root=os.geteuid() == 0))
        return main

    def start(self, timeout: float = 30.0) -> "NginxProxy":
        """Start nginx on its two loopback ports and wait until it accepts connections."""
        main = self._write_config()
        command = [self.binary, "-e", str(self.error_log), "-p", str(self.folder), "-c", str(main)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise AssertionError(f"nginx refused the rendered config: {checked.stderr}")
        # Its messages go to error.log (`-e` for those before the config is read).
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.https_port), timeout=1):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                errors = self.error_log.read_text()[-3000:] if self.error_log.exists() else ""
                self.stop()
                raise AssertionError(f"nginx did not start listening; its log: {errors}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop nginx at once (SIGTERM: fast shutdown)."""
        if self.proc is None:
            return
        stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
