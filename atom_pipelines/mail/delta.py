"""Following Graph's message delta: which (mailbox, day) partitions changed since the last round.

Delta is a trigger only. The truth is the day's listing: a changed day is noted *pending* in the store in the
same transaction as the folder's new deltaLink, and stays pending until a listing of that day that started
after the note has been stored. So a re-listed day equals a full resync by construction, and a tick or a
run killed anywhere loses nothing. The sensor that drives this lives in ``sensors.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol

from dagster import DagsterLogManager

from atom_pipelines.mail.models import printable
from atom_pipelines.mail.msgraph import DeltaRound, DeltaTokenExpiredError
from atom_pipelines.store.resource import MailStore


class DeltaSource(Protocol):
    """What following a delta needs of a mail source (``GraphMailSource`` has it)."""

    def folders(self) -> list[str]: ...

    def delta_round(self, mailbox: str, folder: str, delta_link: str | None) -> DeltaRound: ...

    def folder_id(self, mailbox: str, folder: str) -> str: ...


def note_changed_days(
    log: logging.Logger | DagsterLogManager, source: DeltaSource, store: MailStore, mailbox: str, now: dt.datetime
) -> None:
    """One delta round per followed folder of a mailbox; each round's changed days are noted pending with
    its deltaLink in one transaction. A folder without a deltaLink gets a baseline round (its history is
    the history sync's job); an expired token gets a full resync that also finds what was removed meanwhile."""
    stored = store.stored_versions(mailbox)
    for folder in source.folders():
        link = store.delta_link(mailbox, folder)
        resync = False
        try:
            round_ = source.delta_round(mailbox, folder, link)
        except DeltaTokenExpiredError as exc:
            log.warning(f"{mailbox}/{folder}: delta token expired, starting a FULL RESYNC of the folder: {exc}")
            store.forget_delta_link(mailbox, folder)
            resync = True
            round_ = source.delta_round(mailbox, folder, None)
        if link is None and not resync:
            store.note_delta_round(mailbox, folder, round_.delta_link, {}, now)
            log.info(f"{mailbox}/{folder}: baseline round, {len(round_.changes)} items, {round_.pages} pages")
            continue
        days: dict[dt.date, str] = {}
        seen: set[str] = set()
        for change in round_.changes:
            seen.add(change.message_id)
            known = stored.get(change.message_id)
            # The reason is stored: an id Graph cut inside a surrogate pair is written as its escape.
            named = printable(change.message_id)
            if change.removed:
                if known is not None:
                    days[known.day] = f"{folder}: {named} removed"
                continue
            if change.received_day is None:
                raise RuntimeError(
                    f"{mailbox}/{folder}: delta item {named} has no receivedDateTime; "
                    "cannot tell which partition it changes"
                )
            if known is None:
                days[change.received_day] = f"{folder}: {named} created"
            elif known.change_key != change.change_key or known.day != change.received_day:
                days[change.received_day] = days[known.day] = f"{folder}: {named} changed"
        if resync:
            # A resync lists the whole folder: stored messages of this folder it did not list were removed
            # (or moved) while the token was expired.
            folder_id = source.folder_id(mailbox, folder)
            for message_id, version in stored.items():
                if version.parent_folder_id == folder_id and message_id not in seen:
                    days.setdefault(version.day, f"{folder}: resync did not list {message_id}")
        store.note_delta_round(mailbox, folder, round_.delta_link, days, now)
        log.info(
            f"{mailbox}/{folder}: {'resync' if resync else 'delta'} round, {len(round_.changes)} changes, "
            f"{round_.pages} pages, {len(days)} day(s) to re-list"
        )
