"""TLS ClientHellos built with scapy: the reference the agent's own parser is tested against."""

from __future__ import annotations

from functools import lru_cache

from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName, TLS_Ext_SupportedGroups
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.tls.record import TLS


@lru_cache(maxsize=64)
def scapy_client_hello(host: str | None, before: int = 0) -> bytes:
    """A ClientHello naming `host` (or none), after `before` padding groups (SNI further back)."""
    ext = [TLS_Ext_SupportedGroups(groups=[29, 23] * before)] if before else []
    if host is not None:
        ext.append(TLS_Ext_ServerName(servernames=[ServerName(servername=host.encode())]))
    ext.append(TLS_Ext_SupportedGroups(groups=[29]))
    return bytes(TLS(msg=[TLSClientHello(ciphers=[0x1301, 0x1302], ext=ext)]))
