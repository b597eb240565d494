"""Body cleaning: HTML to text, whitespace normalized, new text separated from quoted history and signature.

Extraction reads only the text a message adds (``new_text``), so a thread of twenty replies is not read
twenty times. Reply/forward splitting is done by ``mail-parser-reply`` (maintained, multi-language, knows
Outlook and Lotus Notes separators); HTML by BeautifulSoup. What is ours is the policy around them:

* a message with no new text (a bare forward) is read from the forwarded message, since that text would
  otherwise never be read at all;
* the library's signature guess is accepted only when it looks like one (a few short lines), because on
  newsletters it sometimes swallows half the body;
* ``=20``/``=09`` and ``=\\n`` leftovers of quoted-printable (about 150 bodies of the Enron corpus) are undone,
  but only in a body that shows quoted-printable (a soft line break, or ``=20``/``=09`` at a line end):
  elsewhere ``cabinet_id=205`` is a URL, not an encoded space;
* the Lotus Notes separator ``----- Forwarded by X/HOU/ECT on <date> -----`` (which the reply parser does
  not know) is rewritten to Outlook's ``-----Original Message-----`` before parsing;
* a body the parser reads as all header and no text (a memo opening with ``To:``/``From:`` lines) is kept
  whole as new text: text is never lost to a parse.

Nothing is thrown away: the raw body is stored beside these parts.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Literal

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
from mailparser_reply.parser import EmailMessage

from atom_pipelines.mail.models import ItemBody

#: A signature longer than this is more likely body text that the reply parser misjudged.
MAX_SIGNATURE_LINES = 8
MAX_SIGNATURE_CHARS = 400

_QP_SOFT_BREAK = re.compile(r"=\n")
_QP_LEFTOVER = re.compile(r"=(20|09)")
_QP_SIGNAL = re.compile(r"=\n|=(?:20|09)\n")
# "---------------------- Forwarded by Vince J Kaminski/HOU/ECT on 01/05/2001 10:31 AM ----------..."
# (Notes wraps it onto a second line when the name is long).
# The author and date lines under it become Outlook's "From:"/"Sent:" so the header is recognised whole.
_LOTUS_FORWARD = re.compile(
    r"^[ \t]*-{3,}[ \t]*Forwarded by [^\n]*(?:\n[^\n]*?)?-{3,}[ \t]*$"
    r"(?:\s*\n(?P<author>[^\n]{1,80})\n(?P<sent>\d{1,2}/\d{1,2}/\d{2,4} \d{1,2}:\d{2}(?: ?[AP]M)?)[ \t]*$)?",
    re.MULTILINE,
)
OUTLOOK_SEPARATOR = "-----Original Message-----"
_BLOCK_TAGS = (
    "p", "div", "tr", "li", "ul", "ol", "table", "blockquote", "hr", "pre",
    "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer",
)
_TRAILING_SPACE = re.compile(r"[ \t\u00a0]+\n")
_SPACE_RUN = re.compile(r"[ \t\u00a0]{2,}")
_BLANK_RUN = re.compile(r"\n{3,}")

TextBasis = Literal["new", "forwarded", "empty"]


@dataclass(frozen=True)
class CleanedBody:
    """The parts of a body. ``extraction_text`` is what extraction reads; ``text_basis`` says which part it is."""

    new_text: str
    signature: str
    quoted_text: str
    text_basis: TextBasis
    #: The first quoted message (headers included): what a bare forward is read from.
    forwarded_text: str = ""

    @property
    def extraction_text(self) -> str:
        if self.text_basis == "new":
            return "\n\n".join(part for part in (self.new_text, self.signature) if part)
        if self.text_basis == "forwarded":
            return self.forwarded_text
        return ""


def html_to_text(html: str) -> str:
    """Visible text of an HTML body, block elements on their own lines."""
    with warnings.catch_warnings():
        # A short body that happens to look like a file name is still a body.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(html, "html.parser")
    for hidden in soup(["script", "style", "head", "title"]):
        hidden.decompose()
    # Line breaks around block elements only: inline ones (<b>, <span>, <a>) stay inside their sentence,
    # and an Outlook reply header "<b>From:</b> X<br><b>Sent:</b> Y" keeps "From: X" on one line.
    for element in soup.find_all(_BLOCK_TAGS):
        element.insert_before("\n")
        element.insert_after("\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    return soup.get_text()


def normalize_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _QP_SIGNAL.search(text):
        text = _QP_SOFT_BREAK.sub("", text)
        text = _QP_LEFTOVER.sub(lambda m: " " if m.group(1) == "20" else "\t", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _SPACE_RUN.sub(" ", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip()


def body_text(body: ItemBody) -> str:
    """The body as normalized plain text, whatever content type Graph sent."""
    raw = html_to_text(body.content) if body.content_type == "html" else body.content
    return normalize_whitespace(raw)


def clean_body(body: ItemBody) -> CleanedBody:
    """Split a message body into new text, signature and quoted history."""
    text = body_text(body)
    if not text:
        return CleanedBody("", "", "", "empty")
    parseable = _LOTUS_FORWARD.sub(_as_outlook_header, text)
    replies = EmailMessage(parseable, languages=["en"], keep_hyphen_lists=True).read().replies
    if not replies:
        return CleanedBody(text, "", "", "new")

    latest = replies[0]
    signature = latest.signatures or ""
    if signature and not _looks_like_signature(signature):
        new_text, signature = latest.full_body, ""
    else:
        new_text = latest.body
    quoted_parts = [reply.content for reply in replies[1:] if reply.content.strip()]
    quoted = "\n\n".join(quoted_parts).strip()

    if new_text.strip():
        return CleanedBody(new_text.strip(), signature.strip(), quoted, "new")
    if quoted_parts:
        return CleanedBody("", signature.strip(), quoted, "forwarded", quoted_parts[0].strip())
    if not signature:
        # The parser took everything for a header (a memo opening with "To:"/"From:" lines): keep it all.
        return CleanedBody(text, "", "", "new")
    return CleanedBody("", signature.strip(), "", "new")


def _as_outlook_header(match: re.Match) -> str:
    if match.group("author"):
        return f"{OUTLOOK_SEPARATOR}\nFrom: {match.group('author').strip()}\nSent: {match.group('sent')}"
    return OUTLOOK_SEPARATOR


def _looks_like_signature(candidate: str) -> bool:
    lines = [line for line in candidate.splitlines() if line.strip()]
    return len(lines) <= MAX_SIGNATURE_LINES and len(candidate) <= MAX_SIGNATURE_CHARS
