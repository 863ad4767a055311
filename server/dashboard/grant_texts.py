"""The grant rules' refusals (server/grants.py, GrantError) in the reader's language.

The dashboard shows its own words for the refusals it expects (teacher.py, leader.py); any other
refusal of the rules is translated here, by the same matching as the importers' messages
(server/timetable/messages.py). grants.py keeps its English for the API.
"""

from __future__ import annotations

from flask_babel import gettext

from ..fields import N_
from ..timetable.messages import translate

GRANT_MESSAGES = (
    N_("services must be a list of service ids (or left out for all)"),
    N_("give at least one service, or leave services out for all"),
    N_("%(service)s is not a service this school blocks (known: %(known)s)"),
    N_("the reason is %(length)s characters long; at most %(limit)s are allowed"),
    N_("scope must be one of %(scopes)s, not %(scope)s"),
    N_("scope %(scope)s needs %(field)s"),
    N_("the lesson is cancelled; it blocks nothing"),
    N_("the lesson is over"),
    N_("give either end or minutes, not both"),
    N_("minutes must be a whole number above 0"),
    N_("minutes may be at most one year"),
    N_("the exception would start after the lesson has ended"),
    N_("an exception for a lesson ends at the latest when the lesson ends (%(end)s)"),
    N_("an exception with scope %(scope)s needs an end (or minutes)"),
    N_("the exception must end after it starts"),
    N_("the exception would already be over"),
    N_("the exception was revoked already"),
    N_("the exception is over already"),
    N_("minutes must be a whole number from 1 to 1440"),
    N_("the exception lasts until the end of the lesson already"),
    N_("a lesson's exception is extended with +5 min"),
    N_("the times do not overlap or touch the exception"),
    N_("only lessons of this week can be planned"),
)


def grant_refusal(err: Exception) -> str:
    """A GrantError's message in the reader's language, first letter capitalised."""
    text = translate(str(err), gettext, messages=GRANT_MESSAGES)
    return text[:1].upper() + text[1:]
