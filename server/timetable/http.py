"""One HTTP exchange with a timetable server (RFC 9110), every failure put in words.

The Zermelo and WebUntis clients use `exchange`: it returns the status, headers and body of any
answer the server gave (4xx and 5xx included: the caller knows what they mean for its protocol)
and raises TimetableError for what is not an answer at all (no connection, a timeout, a broken
or oversized answer, an invalid TLS certificate). TLS is verified with the default context;
redirects are followed at most MAX_REDIRECTS times.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message

from .common import MAX_FILE_BYTES, TimetableError

MAX_REDIRECTS = 5
USER_AGENT = "lesfocus timetable sync"


@dataclass
class Answer:
    """What the server sent back."""

    status: int
    headers: Message
    body: bytes


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


def build_opener() -> urllib.request.OpenerDirector:
    """An opener that verifies TLS with the default context and follows at most MAX_REDIRECTS
    redirects (the iCal feed fetch of sync.py uses it too)."""
    return urllib.request.build_opener(
        _LimitedRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context()))


def exchange(url: str, *, what: str, timeout: float, method: str = "GET",
             headers: dict[str, str] | None = None, body: bytes | None = None,
             limit: int = MAX_FILE_BYTES) -> Answer:
    """Send one request to `url`; `what` names the server in messages ("the Zermelo portal")."""
    if not url.lower().startswith(("http://", "https://")):
        raise TimetableError(f"the address of {what} is not an http(s) URL")
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        try:
            response = build_opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code in (301, 302, 303, 307, 308):
                raise TimetableError(f"{what} redirects more than {MAX_REDIRECTS} times") \
                    from None
            response = err  # an answer with a status: the caller reads it
        with response:
            data = response.read(limit + 1)
            if len(data) > limit:
                raise TimetableError(f"the answer of {what} is larger than the {limit} bytes "
                                     f"allowed")
            return Answer(response.getcode() or 0, response.headers, data)
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, TimeoutError):
            raise TimetableError(f"{what} did not answer within {timeout:.0f} s") from None
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise TimetableError(f"the TLS certificate of {what} is not valid: "
                                 f"{reason.verify_message}") from None
        raise TimetableError(f"cannot reach {what}: {reason}") from None
    except TimeoutError:
        raise TimetableError(f"{what} did not answer within {timeout:.0f} s") from None
    except (http.client.HTTPException, OSError, ValueError) as err:
        raise TimetableError(f"the answer of {what} is broken: {type(err).__name__}: "
                             f"{str(err)[:120]}") from None


__all__ = ["Answer", "MAX_REDIRECTS", "USER_AGENT", "build_opener", "exchange"]
