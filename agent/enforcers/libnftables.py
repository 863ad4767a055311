"""A thin ctypes binding to libnftables.so.1 (libnftables(3)): run nft command batches in-process.

Debian's python3-nftables does the same but only for the system Python; the agent's virtualenv
loads the shared library itself. One `Nftables` context is not thread-safe: callers serialize.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

# enum nft_output_flags in nftables/libnftables.h
NFT_CTX_OUTPUT_HANDLE = 1 << 3
NFT_CTX_OUTPUT_JSON = 1 << 4
NFT_CTX_OUTPUT_ECHO = 1 << 5

_LIBRARY = "libnftables.so.1"


class NftablesUnavailable(OSError):
    """libnftables.so.1 cannot be loaded on this machine."""


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(_LIBRARY)
    except OSError:
        name = ctypes.util.find_library("nftables")
        if not name:
            raise NftablesUnavailable(
                f"{_LIBRARY} not found (Debian package libnftables1)") from None
        lib = ctypes.CDLL(name)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
    return lib


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """The loaded library (loaded once); NftablesUnavailable when it is missing."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load()
        return _lib


class Nftables:
    """One libnftables context with buffered output and errors."""

    def __init__(self, json_output: bool = False, dry_run: bool = False) -> None:
        self._lib = library()
        self._ctx = self._lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT
        if not self._ctx:
            raise NftablesUnavailable("nft_ctx_new failed")
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)
        if json_output:
            flags = self._lib.nft_ctx_output_get_flags(self._ctx)
            self._lib.nft_ctx_output_set_flags(self._ctx, flags | NFT_CTX_OUTPUT_JSON)
        if dry_run:
            self._lib.nft_ctx_set_dry_run(self._ctx, True)

    def run(self, commands: str) -> tuple[int, str, str]:
        """Run a batch of nft commands (text, or JSON starting with '{'): (rc, output, error)."""
        if not self._ctx:
            raise ValueError("the nftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def close(self) -> None:
        """Free the context."""
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> "Nftables":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
