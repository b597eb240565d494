"""The one place Graph query options are built: ``$filter`` windows from typed datetimes, ``$select``.

Production bug #7 was a ``$filter`` that quoted its dates: ``receivedDateTime ge '2026-05-01T00:00:00Z'`` is
an ``Edm.String`` compared with an ``Edm.DateTimeOffset`` property, and Graph answers HTTP 400 "A binary
operator with incompatible types was detected". Here a date literal can only come from an aware
``datetime``, is written unquoted in UTC with a ``Z`` offset, and a naive datetime is refused before any
request is made.
"""

from __future__ import annotations

import datetime as dt

#: The message properties the pipeline stores (see ``GraphMessage`` and ``sync.message_row``), with
#: ``changeKey`` and ``parentFolderId`` so the delta sensor can tell a changed message from one already
#: stored, and which stored messages a folder's resync must list. Selecting them
#: keeps pages small (Graph warns that big pages of whole messages time out with 504).
MESSAGE_FIELDS: tuple[str, ...] = (
    "id",
    "changeKey",
    "parentFolderId",
    "internetMessageId",
    "conversationId",
    "subject",
    "body",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "receivedDateTime",
    "sentDateTime",
)

#: What a delta round needs to map a change to its partition, and nothing more.
DELTA_FIELDS: tuple[str, ...] = ("id", "changeKey", "receivedDateTime")


class NaiveDatetimeError(ValueError):
    """A datetime without a timezone reached the filter builder: its instant is unknown."""


def odata_datetime(value: dt.datetime) -> str:
    """An OData ``DateTimeOffset`` literal: unquoted, UTC, ``Z`` (``2026-05-01T00:00:00Z``)."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"naive datetime {value.isoformat()} in a Graph filter: give it a timezone (UTC partitions use "
            "datetime.timezone.utc); a naive time means a different instant on every server"
        )
    utc = value.astimezone(dt.timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def received_window_filter(start: dt.datetime, end: dt.datetime) -> str:
    """``receivedDateTime ge <start> and receivedDateTime lt <end>``: the half-open window ``[start, end)``.

    ``receivedDateTime`` comes first, so ``$orderby=receivedDateTime`` is accepted (Graph's rule: ordered
    properties must lead the filter, in order, or it answers ``InefficientFilter``).
    """
    start_literal, end_literal = odata_datetime(start), odata_datetime(end)
    if end <= start:
        raise ValueError(f"empty window: end {end_literal} is not after start {start_literal}")
    return f"receivedDateTime ge {start_literal} and receivedDateTime lt {end_literal}"


def received_on_or_after_filter(start: dt.datetime) -> str:
    """``receivedDateTime ge <start>``: also the only filter Graph's message delta accepts."""
    return f"receivedDateTime ge {odata_datetime(start)}"


def select(fields: tuple[str, ...]) -> str:
    return ",".join(fields)
