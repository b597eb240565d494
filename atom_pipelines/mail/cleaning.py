"""Body cleaning: HTML to text, whitespace normalized, new text separated from quoted history and signature.

Extraction reads only the text a message adds (``new_text``), so a thread of twenty replies is not read
twenty times. Reply/forward splitting is done by ``mail-parser-reply`` (maintained, multi-language, knows
Outlook headers and "On ... wrote:" lines); HTML by BeautifulSoup. What is ours is the policy around them:

* a message with no new text (a bare forward) is read from the forwarded message, since that text would
  otherwise never be read at all: the first quoted message with text under its header (a forward of a forward
  has the outer, empty message first);
* the library's signature guess is accepted only when it looks like one (a few short lines), because on
  newsletters it sometimes swallows half the body;
* quoted-printable leftovers (about 100 bodies of the Enron corpus: ``=20``/``=09`` and ``=\\n`` soft line breaks)
  are undone only in a body that shows quoted-printable, i.e. has ``=20``/``=09`` at a line end or a soft line
  break (an ``=`` ending a line of text that goes on in the next; the end of a ``=====`` or ``=-=-=`` rule is
  not one); elsewhere ``cabinet_id=205`` is a URL, not an encoded space. Such a body is decoded whole with the
  stdlib ``quopri`` when every ``=`` in it is one a quoted-printable encoder writes for plain text (``=\\n``,
  ``=20``, ``=09``, ``=3D``); a body that also has other ``=`` (a half-decoded export with a URL's
  ``customerid=6490`` or a ``=-=-=`` rule) only gets its soft breaks, ``=20`` and ``=09`` undone;
* HTML: line breaks around block elements and ``<br>`` only, so inline elements (``<b>``, ``<span>``) stay in
  their sentence and an Outlook reply header ``<b>From:</b> X<br><b>Sent:</b> Y`` stays one header line each;
* Lotus Notes, which the reply parser does not know, is rewritten before parsing: the separator
  ``----- Forwarded by X/HOU/ECT on <date> -----`` (wrapped onto two lines when the name is long) becomes an
  ``-----Original Message-----`` line (each in its own upper/lower case), and a Notes header's author lines
  (``Jeff Klotz@ENRON`` + ``04/23/2001 02:54 PM``, or ``Albert Wang <a@rice.edu> on 04/23/2001 12:37:55 PM``,
  above ``To:``) become ``From:``/``Sent:`` lines, so forwards and Notes replies split where Outlook ones do.
  The rewritten lines are put back to the body's own words in every part returned: cleaning selects text, it
  never rewrites it;
* a body that opens with header lines (a memo: ``To: ...``/``From: ...``) keeps them in its new text, since the
  parser's header can swallow the first line of text; and a body the parser leaves with no new text and nothing
  quoted to read is kept whole as new text: text is never lost to a parse.

Nothing is thrown away: the raw body is stored beside these parts.
"""

from __future__ import annotations

import quopri
import re
import warnings
from dataclasses import dataclass
from typing import Literal

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, NavigableString
from mailparser_reply.parser import EmailMessage, EmailReply

from atom_pipelines.mail.models import ItemBody

#: A signature longer than this is more likely body text that the reply parser misjudged.
MAX_SIGNATURE_LINES = 8
MAX_SIGNATURE_CHARS = 400

#: A soft line break: "=" ending a line of text. Not the last "=" of a "=====" or "=-=-=" rule (a line without a
#: letter or digit), since an encoder writes a literal "=" as "=3D".
_QP_SOFT_BREAK = re.compile(r"^(?=[^\n]*\w)([^\n]*?)(?<!=)=\n", re.MULTILINE)
_QP_LEFTOVER = re.compile(r"=(20|09)")
#: A body shows quoted-printable by an encoded space/tab at a line end, or by a soft line break that goes on in
#: the next line (a URL's "&FO=" above a blank line is not one).
_QP_SIGNAL = re.compile(r"=(?:20|09)\n|^(?=[^\n]*\w)[^\n]*(?<!=)=\n(?!\n)", re.MULTILINE)
#: An "=" that a quoted-printable encoder would not have written for plain ASCII text: decoding the whole body
#: with quopri would then turn literal text ("customerid=6490", "=====") into garbage.
_QP_NOT_PLAIN = re.compile(r"=(?!\n|20|09|3[dD])")

_NOTES_DATE = r"\d{1,2}/\d{1,2}/\d{2,4},? \d{1,2}:\d{2}(?::\d{2})?(?: ?[AaPp][Mm])?(?: [A-Z]{3})?"
# "---------------------- Forwarded by Vince J Kaminski/HOU/ECT on 01/05/2001 10:31 AM ----------..."
# (Notes wraps it onto a second line when the name is long).
_LOTUS_FORWARD = re.compile(r"^[ \t]*-{3,}[ \t]*Forwarded by [^\n]*(?:\n[^\n]*?)?-{3,}[ \t]*$", re.MULTILINE)
# A Notes header's author and date, above its "To:"/"cc:" lines, either on two lines
# "Jeff Klotz@ENRON\n04/23/2001 02:54 PM\nTo: ..." or on one "Albert Wang <a@rice.edu> on 04/23/2001 12:37:55 PM\nTo:".
# Found by the date (the patterns open with a literal, which the regex engine scans for fast); the author (the
# line above the date, or the start of the date's line) is checked in code.
_NOTES_DATE_LINE = re.compile(rf"\n[ \t]*(?P<sent>{_NOTES_DATE})[ \t]*\n(?:[ \t]*\n)?(?=[ \t]*(?:To|cc):)")
_NOTES_ON_DATE = re.compile(rf" on (?P<sent>{_NOTES_DATE})[ \t]*\n(?:[ \t]*\n)?(?=[ \t]*(?:To|cc):)")
_HEADER_LABEL = re.compile(r"(?:From|To|cc|Sent|Subject|Date)\b", re.IGNORECASE)
_MAX_NOTES_AUTHOR_CHARS = 150
#: The separator the reply parser knows (its GENERIC_MAIL_SEPARATOR): a part headed only by it has no header.
_SEPARATOR_LINE = re.compile(r"-{5,} ?Original Message ?-{5,}", re.IGNORECASE)
_BLOCK_TAGS = tuple(
    "p div tr li ul ol dl dt dd table caption blockquote hr pre h1 h2 h3 h4 h5 h6 section article header footer"
    " nav aside main address center form fieldset figure".split()
)
_CELL_TAGS = ("td", "th")
_HTML_SOURCE_BREAK = re.compile(r"[\t\n\r\f]+")
_PREFORMATTED_TAGS = ("pre", "textarea", "xmp", "listing", "plaintext")
_PREFORMATTED = re.compile(rf"<(?:{'|'.join(_PREFORMATTED_TAGS)})\b", re.IGNORECASE)
_SPACE_AROUND_BREAK = re.compile(r"[ \t]*\n[ \t]*")
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
    #: The forwarded message (headers included), the first quoted one with text: what a bare forward is read from.
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
    # Line breaks and tabs of the HTML source are a space wherever they are (a newline after "<br>" is not a second
    # line break), except in <pre>. Without <pre> that is one pass over the source; with it, over the text nodes
    # outside <pre> (plain text nodes only: comments, like Outlook's <!--[if mso]>, must stay comments, unread).
    preformatted = _PREFORMATTED.search(html) is not None
    if not preformatted:
        html = _HTML_SOURCE_BREAK.sub(" ", html)
    with warnings.catch_warnings():
        # A short body that happens to look like a file name is still a body.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(html, "html.parser")
    for hidden in soup(["script", "style", "head", "title"]):
        hidden.decompose()
    if preformatted:
        kept = {id(string) for pre in soup.find_all(_PREFORMATTED_TAGS) for string in pre.find_all(string=True)}
        for string in soup.find_all(string=_HTML_SOURCE_BREAK.search):
            if type(string) is NavigableString and id(string) not in kept:
                string.replace_with(_HTML_SOURCE_BREAK.sub(" ", string))
    # Line breaks around block elements only: inline ones (<b>, <span>, <a>) stay inside their sentence,
    # and an Outlook reply header "<b>From:</b> X<br><b>Sent:</b> Y" keeps "From: X" on one line.
    for element in soup.find_all(_BLOCK_TAGS):
        element.insert_before("\n")
        element.insert_after("\n")
    for cell in soup.find_all(_CELL_TAGS):
        # Cells of a row stay on the row's line, but "<td>Name</td><td>Iris</td>" is not "NameIris".
        cell.insert_after(" ")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    return _SPACE_AROUND_BREAK.sub("\n", soup.get_text())


def normalize_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if ("=\n" in text or "=20\n" in text or "=09\n" in text) and _QP_SIGNAL.search(text):  # str tests: fast
        text = _undo_quoted_printable(text)
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
    parseable, separators, headers = _notes_as_outlook(text)
    replies = EmailMessage(parseable, languages=["en"], keep_hyphen_lists=True).read().replies
    if not replies:
        return CleanedBody(text, "", "", "new")

    def restore(part: str) -> str:
        # The parts are slices of the rewritten text: put the body's own separator and author lines back.
        if separators:
            # A marker is a whole line of its own (the parser strips every line).
            part = "\n".join(separators.get(line, line) for line in part.split("\n"))
        for rewritten, original in headers.items():
            if rewritten in part:
                part = part.replace(rewritten, original)
        return part.strip()

    latest = replies[0]
    signature = latest.signatures or ""
    if signature and not _looks_like_signature(signature):
        new_text, signature = latest.full_body, ""
    else:
        new_text = latest.body
    if latest.headers and ":" in latest.headers and not _SEPARATOR_LINE.fullmatch(latest.headers):
        # The body opens with header lines (a memo "To: ...\nFrom: ...", a forward pasted without separator).
        # They are this message's own, and the parser's header may have swallowed the first line of text.
        new_text = latest.content.replace(signature, "") if signature else latest.content
    quoted_replies = [reply for reply in replies[1:] if reply.content.strip()]
    quoted = restore("\n\n".join(reply.content for reply in quoted_replies))
    new_text, signature = restore(new_text), restore(signature)

    if new_text:
        return CleanedBody(new_text, signature, quoted, "new")
    forwarded = _forwarded_reply(quoted_replies)
    if forwarded is not None:
        return CleanedBody("", signature, quoted, "forwarded", restore(forwarded.content))
    if signature:
        return CleanedBody("", signature, quoted, "new")
    # The parser found headers and nothing to read under them: keep the body whole rather than lose it.
    return CleanedBody(text, "", "", "new")


def _undo_quoted_printable(text: str) -> str:
    if not _QP_NOT_PLAIN.search(text):
        # Every "=" is an escape a quoted-printable encoder writes for plain text: the stdlib decodes it all
        # (=3D included). Only ASCII escapes are left to decode, so the UTF-8 round trip cannot fail.
        return quopri.decodestring(text.encode("utf-8")).decode("utf-8")
    text = _QP_SOFT_BREAK.sub(r"\1", text)
    return _QP_LEFTOVER.sub(lambda m: " " if m.group(1) == "20" else "\t", text)


def _notes_as_outlook(text: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Lotus Notes separators and author lines rewritten as Outlook's, and each rewrite mapped to its original.

    Returns the rewritten text, the separator markers (each a whole line) and the rewritten author lines, each
    mapped to the original. Each separator gets its own marker, "-----Original Message-----" with its own pattern
    of upper and lower case (the parser ignores case): the parser locates a header by searching for its text, so
    no marker may contain another one or the body's own "-----Original Message-----", as longer dashes would.
    """
    separators: dict[str, str] = {}
    headers: dict[str, str] = {}
    if "Forwarded by" in text:
        count = 0

        def separator(match: re.Match) -> str:
            nonlocal count
            count += 1
            while (marker := _separator_marker(count)) in text:
                count += 1
            separators[marker] = _stripped_lines(match.group(0))
            return marker

        text = _LOTUS_FORWARD.sub(separator, text)

    # Author lines, as (start, end, rewritten): "From: <author>\nSent: <date>" or "From: <author> on <date>".
    rewrites: list[tuple[int, int, str]] = []
    padded = "\n" + text  # so that a header on the first line is preceded by a line break too
    for match in _NOTES_DATE_LINE.finditer(padded):
        line_start = padded.rfind("\n", 0, match.start()) + 1
        author = padded[line_start : match.start()].strip()
        if author and ":" not in author and len(author) <= _MAX_NOTES_AUTHOR_CHARS and author not in separators:
            rewrites.append((line_start - 1, match.end() - 1, f"From: {author}\nSent: {match.group('sent')}"))
    for match in _NOTES_ON_DATE.finditer(padded):
        line_start = padded.rfind("\n", 0, match.start()) + 1
        author = padded[line_start : match.start()].strip()
        if author and not _HEADER_LABEL.match(author) and len(author) <= _MAX_NOTES_AUTHOR_CHARS:
            rewrites.append((line_start - 1, match.end() - 1, f"From: {author} on {match.group('sent')}"))
    if rewrites:
        pieces, position = [], 0
        for start, end, rewritten in sorted(rewrites):
            if start < position:  # overlaps the previous rewrite: keep that one
                continue
            headers[rewritten] = _stripped_lines(text[start : end - 1])
            pieces += [text[position:start], rewritten, "\n"]
            position = end
        text = "".join(pieces) + text[position:]
    return text, separators, headers


def _separator_marker(number: int) -> str:
    """A separator the reply parser knows, told apart by case: 1 -> "-----Original message-----"."""
    letters = "".join(c.upper() if number >> bit & 1 else c for bit, c in enumerate("originalmessage"))
    return f"-----{letters[:8]} {letters[8:]}-----"


def _stripped_lines(original: str) -> str:
    """The original as the reply parser hands it back: every line stripped (a blank line under it is kept)."""
    return "\n".join(line.strip() for line in original.split("\n"))


def _forwarded_reply(quoted_replies: list[EmailReply]) -> EmailReply | None:
    """The message a bare forward forwards: the first quoted part with a header and text under it.

    A separator line is a part of its own (the parser splits it from the "From:" header under it), a Notes
    separator may carry a stray line (an embedded picture) above the author's header, and a forward of a forward
    has the outer, empty message's header first: all are passed over for the first message that has text.
    Failing that, the first part with text, then the first real header (a forward of a message without text).
    """
    with_header = [reply for reply in quoted_replies if reply.headers and not _SEPARATOR_LINE.fullmatch(reply.headers)]
    return next(
        (reply for reply in with_header if reply.full_body),
        next((reply for reply in quoted_replies if reply.full_body), with_header[0] if with_header else None),
    )


def _looks_like_signature(candidate: str) -> bool:
    lines = [line for line in candidate.splitlines() if line.strip()]
    return len(lines) <= MAX_SIGNATURE_LINES and len(candidate) <= MAX_SIGNATURE_CHARS
