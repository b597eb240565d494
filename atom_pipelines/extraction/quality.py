"""When an extraction that "succeeded" is still a quality drop: the definitions the checks of
``email_entities`` apply (checks/extraction.py), kept with the extraction they judge.

- **Degraded**: when the chain's first usable provider is an LLM, a message whose accepted answer came
  from a later provider because every earlier one failed. Falling to a second model of the same provider
  (``model_fallback``) is counted but is not a quality drop; falling to the offline heuristic
  (``heuristic_fallback``) is: it reads headers, greetings and names, not what an LLM reads.
- **Quiet**: an LLM's accepted answer with no entity from the text (header participants are found whatever
  the model says, so they do not count) on a message with at least ``QUIET_MIN_WORDS`` words of new text.
  A model that goes quiet is caught against its own recent baseline, not a fixed share: some mailboxes are
  mostly one-line replies.
"""

from __future__ import annotations

import datetime as dt

#: Words of new text (quoted history and signature excluded) a message needs before "nothing in it" from a
#: model is suspicious: two or three sentences of business mail name someone or something.
QUIET_MIN_WORDS = 30

#: The baseline: the model's quiet share over partitions recorded in the last ``QUIET_BASELINE_DAYS`` days,
#: once it rests on at least ``QUIET_MIN_BASELINE`` messages with text (below that it says nothing).
QUIET_BASELINE_DAYS = 14
QUIET_MIN_BASELINE = 20

#: A partition is judged on at least this many messages with text.
QUIET_MIN_MESSAGES = 5

#: "Far above the baseline": at least this many points above it, and at least twice it.
QUIET_JUMP = 0.30


def has_enough_text(text: str) -> bool:
    return len(text.split()) >= QUIET_MIN_WORDS


def baseline_since(now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(days=QUIET_BASELINE_DAYS)


def gone_quiet(with_text: int, quiet: int, baseline_with_text: int, baseline_quiet: int) -> bool:
    """A partition's quiet share jumped far above the model's own baseline (both judged on enough messages)."""
    if with_text < QUIET_MIN_MESSAGES or baseline_with_text < QUIET_MIN_BASELINE:
        return False
    share, baseline = quiet / with_text, baseline_quiet / baseline_with_text
    return share >= baseline + QUIET_JUMP and share >= 2 * baseline
