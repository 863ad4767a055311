"""The error of an edit the rules refuse, naming the form or request field at fault.

Use-case functions (rooms, segments, gateways, people) raise `FieldError` with an English msgid
marked by `N_` and its parameters; the CLI prints `str(err)` (English), the dashboard shows
`err.translated()` in the reader's language. `N_` only marks a text for `pybabel extract`.
"""

from __future__ import annotations

from typing import Any


def N_(message: str) -> str:
    """Mark `message` for extraction; translated where it is shown."""
    return message


class FieldError(ValueError):
    """A refused edit; `field` names the field, `message` is the msgid, `params` its values."""

    def __init__(self, field: str, message: str, **params: Any) -> None:
        self.field = field
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)

    def translated(self) -> str:
        """The message in the language of the current request."""
        from flask_babel import gettext
        return gettext(self.message, **self.params)
