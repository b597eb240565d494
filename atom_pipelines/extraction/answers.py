"""From a model's raw answer to a validated :class:`ExtractionAnswer`, or the outcome that says why not.

Repair before giving up, but never repair into a different structure: markdown fences, prose around the
JSON and trailing commas are mended by ``json-repair`` (a maintained library); an answer whose brackets do
not balance was cut off or garbled, and "repairing" it would close it into a shorter answer that looks
valid. That counts as ``invalid``, never as a success.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import json_repair
from pydantic import ValidationError

from atom_pipelines.extraction.mentions import EMAIL_IN_TEXT
from atom_pipelines.extraction.outcomes import Outcome
from atom_pipelines.extraction.schema import ExtractionAnswer

PREVIEW_CHARS = 240

_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}|\b[A-Za-z0-9_-]{32,}\b")


@dataclass(frozen=True)
class ParsedAnswer:
    outcome: Outcome
    reason: str
    answer: ExtractionAnswer | None = None
    repaired: bool = False


def preview(raw: str | None) -> str:
    """A short, safe look at a raw answer: addresses and anything key-like masked."""
    if raw is None:
        return "<None>"
    text = _KEY_LIKE.sub("<key>", EMAIL_IN_TEXT.sub("<email>", raw[: PREVIEW_CHARS * 2]))
    text = text.replace("\n", "\\n")
    return text[:PREVIEW_CHARS] + ("..." if len(raw) > PREVIEW_CHARS else "")


def parse_answer(content: str | None) -> ParsedAnswer:
    """Classify and parse the content of one completion (finish reasons are judged before this)."""
    if content is None or not content.strip():
        return ParsedAnswer(
            Outcome.NO_CONTENT, "model returned None" if content is None else "model returned empty content"
        )
    repaired = False
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        span = _json_span(content)
        if span is None:
            return ParsedAnswer(Outcome.UNPARSABLE, f"no JSON object in the answer ({exc.msg})")
        if not _balanced(span):
            return ParsedAnswer(Outcome.INVALID, "JSON brackets do not balance: repairing would change the structure")
        data = json_repair.repair_json(span, return_objects=True)
        repaired = True
        if not isinstance(data, dict):
            return ParsedAnswer(Outcome.UNPARSABLE, "not JSON even after repair")
    try:
        answer = ExtractionAnswer.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        return ParsedAnswer(
            Outcome.INVALID,
            f"schema: {exc.error_count()} error(s), first at {where}: {first['msg']}",
            repaired=repaired,
        )
    outcome = Outcome.ENTITIES if answer.entities else Outcome.NONE_FOUND
    how = " after repair" if repaired else ""
    return ParsedAnswer(
        outcome, f"{len(answer.entities)} entities, {len(answer.relations)} relations{how}", answer, repaired
    )


def _json_span(content: str) -> str | None:
    start, end = content.find("{"), content.rfind("}")
    if start == -1:
        return None
    # An answer cut off before its closing brace has no '}' after the '{': keep it all so it is judged.
    return content[start : end + 1] if end > start else content[start:]


def _balanced(span: str) -> bool:
    """Do braces and brackets close in order, outside strings?"""
    stack: list[str] = []
    in_string = escaped = False
    pairs = {"}": "{", "]": "["}
    for char in span:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]":
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack and not in_string
