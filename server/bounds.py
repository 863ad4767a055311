"""Bounds every input is checked against before it reaches the database (issue 13, item 3).

Ids are PostgreSQL `integer` columns (SQLite's are the same tables): a larger number is no id of
anything, and PostgreSQL would refuse it with an error instead of finding nothing. Date-times
outside DATE_YEARS mean a typo (year 0202, 9999) and cannot be shown or shifted by a timezone
without overflowing; they are refused where they come in, naming the field.
"""

from __future__ import annotations

from datetime import datetime

from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1
DATE_YEARS = (2000, 2199)
# The longest text a query parameter may carry (the column it is compared with): longer is
# refused with 400 naming the parameter, and the OpenAPI document says each maximum.
QUERY_TEXT_MAX = {"action": 64, "object_type": 32, "object_id": 64, "actor": 200, "room": 64,
                  "school": 64}


def parse_id(text: object) -> int | None:
    """`text` as an id: ASCII digits only (not ², not ٣), 1..MAX_ID; None when it is not one."""
    if not isinstance(text, str) or not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def year_in_range(value: datetime) -> bool:
    """Whether `value` lies within DATE_YEARS."""
    return DATE_YEARS[0] <= value.year <= DATE_YEARS[1]


def describe_years() -> str:
    return f"between {DATE_YEARS[0]} and {DATE_YEARS[1]}"


class IdConverter(IntegerConverter):
    """`<int:...>` in a route: a number past MAX_ID becomes 0, which is no row's id, so the view
    answers its usual 404. (Refusing it in the converter would make werkzeug answer 405 when the
    path has a route for another method.)"""

    def to_python(self, value: str) -> int:
        number = int(value)
        return number if number <= MAX_ID else 0
