"""Body cleaning (``atom_pipelines.mail.cleaning``): what extraction reads of every message.

Extraction reads only ``extraction_text``. If cleaning lets quoted history through, a thread of twenty replies is
read (and paid for) twenty times and its entities are credited to the wrong message; if it drops text, entities
silently go missing and nothing downstream can notice. These tests pin the policy this module adds around
BeautifulSoup and ``mail-parser-reply``: HTML to text, quoted-printable leftovers, reply/forward separation
(Outlook, Lotus Notes, "On ... wrote:"), bare forwards read from the forwarded message, and the signature guess
accepted only when it looks like a signature. Real bodies come from the shared Enron corpus, picked by id so the
tests are deterministic; a corpus-wide property test runs every body through ``clean_body``.

"""

from __future__ import annotations

import functools
import json

import pytest
from mailparser_reply.parser import EmailMessage

from atom_pipelines.mail.cleaning import (
    MAX_SIGNATURE_LINES,
    CleanedBody,
    body_text,
    clean_body,
    html_to_text,
    normalize_whitespace,
)
from atom_pipelines.mail.models import ItemBody
from atom_pipelines_tests.conftest import CORPUS


@functools.cache
def _corpus_bodies() -> dict[str, ItemBody]:
    bodies: dict[str, ItemBody] = {}
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            bodies[record["id"]] = ItemBody.model_validate(record.get("body") or {})
    return bodies


def corpus_body(message_id: str) -> ItemBody:
    return _corpus_bodies()[message_id]


@functools.cache
def _corpus_cleaned() -> dict[str, tuple[str, CleanedBody]]:
    """Every corpus body as (normalized text, cleaned parts): computed once for the corpus-wide tests."""
    return {message_id: (body_text(body), clean_body(body)) for message_id, body in _corpus_bodies().items()}


def text(content: str) -> ItemBody:
    return ItemBody(contentType="text", content=content)


def html(content: str) -> ItemBody:
    return ItemBody(contentType="html", content=content)


# -- HTML -------------------------------------------------------------------------------------------------------


def test_html_drops_script_style_head_and_title() -> None:
    result = html_to_text(
        "<html><head><title>Weekly report</title><style>p { color: red }</style></head>"
        "<body><script>var tracking = 1;</script><p>Visible text</p></body></html>"
    )
    assert "Visible text" in result
    for hidden in ("Weekly report", "color: red", "tracking"):
        assert hidden not in result


def test_html_br_and_block_elements_become_line_breaks() -> None:
    result = body_text(html("<div>First block</div><p>Second block</p>line one<br>line two<br/>line three"))
    lines = result.splitlines()
    for expected in ("First block", "Second block", "line one", "line two", "line three"):
        assert expected in lines, f"{expected!r} is not on a line of its own in {result!r}"


def test_html_entities_are_decoded() -> None:
    result = body_text(html("<p>AT&amp;T &lt;gas&gt; &quot;desk&quot; caf&eacute; Enron&#8217;s</p>"))
    assert result == 'AT&T <gas> "desk" café Enron’s'


def test_html_content_type_is_what_decides_parsing() -> None:
    # The same characters as plain text are not markup: a text body mentioning <b> keeps it.
    assert body_text(text("use <b> for bold")) == "use <b> for bold"
    assert body_text(html("use <b>bold</b> here")) != "use <b>bold</b> here"


def test_html_inline_elements_stay_on_their_line() -> None:
    result = body_text(html("<p>Please call <b>John Smith</b> at <span>713-853-1234</span> today.</p>"))
    assert result == "Please call John Smith at 713-853-1234 today."


def test_outlook_html_reply_separates_the_quoted_message() -> None:
    body = html(
        '<html><body><div class="WordSection1">'
        '<p class="MsoNormal"><span>Sounds good, see you Tuesday.<o:p></o:p></span></p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt"><p class="MsoNormal">'
        "<b><span>From:</span></b><span> Kaminski, Vince J &lt;vince.kaminski@enron.com&gt;<br>"
        "<b>Sent:</b> Monday, October 15, 2001 9:12 AM<br><b>To:</b> Mack, Iris &lt;iris.mack@enron.com&gt;<br>"
        "<b>Subject:</b> curves</span></p></div>"
        '<p class="MsoNormal">Iris, can you look at the curves before Tuesday?</p></div></body></html>'
    )
    cleaned = clean_body(body)
    assert cleaned.new_text == "Sounds good, see you Tuesday."
    assert "look at the curves" in cleaned.quoted_text


# -- whitespace and quoted-printable leftovers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("price=20\nlist", "price\nlist"),  # =20 is a space; at a line end it is trailing space, removed
        ("a=20b=\nc", "a bc"),  # decoded where the body shows quoted-printable (a soft break)...
        ("Name:=09Iris =\nMack", "Name:\tIris Mack"),
        ("a=20b", "a=20b"),  # ...and left alone where it does not: "cabinet_id=205" is a URL
        ("the forwarded =\ne-mail", "the forwarded e-mail"),  # soft line break joins the two halves
        ("wh=\no plans", "who plans"),
        ("one\r\ntwo\rthree", "one\ntwo\nthree"),
        ("x   y\t\tz", "x y z"),
        ("line   \nnext", "line\nnext"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("  \n\n padded \n\n ", "padded"),
        ("", ""),
    ],
)
def test_normalize_whitespace(raw: str, expected: str) -> None:
    assert normalize_whitespace(raw) == expected


def test_quoted_printable_leftovers_in_a_real_body_are_undone() -> None:
    # A corpus body written with soft breaks in the middle of words ("forwarded =\ne-mail", "wh=\no").
    body = corpus_body("enron-9b3647ccf2531ffcb21cbf3c03068056")
    assert "forwarded =\ne-mail" in body.content
    cleaned_text = body_text(body)
    assert "look over the forwarded e-mail yet?" in cleaned_text
    assert "another potential client who plans to use his own capital" in cleaned_text
    assert "=\n" not in cleaned_text


def test_literal_equals_twenty_in_a_url_is_kept() -> None:
    body = corpus_body("enron-1cdf01f13eebb663c47d9cb17205a6df")
    assert "file_list.asp?cabinet_id=205" in body.content
    assert "file_list.asp?cabinet_id=205" in body_text(body)


# -- reply and forward separation --------------------------------------------------------------------------------


def test_outlook_original_message_reply_on_a_real_body() -> None:
    cleaned = clean_body(corpus_body("enron-af43767e6934578b3cd4950bb342db9b"))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text == (
        "Vince: Is it ok to acknowledge our sponsorship at the conference?\n\n"
        "Anita: Can you follow up on the payment?"
    )
    assert cleaned.signature == "Thanks,\nKrishna."
    assert cleaned.quoted_text.startswith("-----Original Message-----")
    assert "I have not yet received a check from Enron or New Power." in cleaned.quoted_text
    assert "received a check" not in cleaned.extraction_text
    assert cleaned.extraction_text == cleaned.new_text + "\n\n" + cleaned.signature


def test_outlook_original_message_reply_synthetic() -> None:
    cleaned = clean_body(
        text(
            "Sounds good, let's meet on Tuesday to go over the curves.\n\n"
            "-----Original Message-----\n"
            "From: Kaminski, Vince J\n"
            "Sent: Monday, October 15, 2001 9:12 AM\n"
            "To: Mack, Iris\n"
            "Subject: curves\n\n"
            "Iris, can you look at the curves before Tuesday?\n"
        )
    )
    assert cleaned.new_text == "Sounds good, let's meet on Tuesday to go over the curves."
    assert "From: Kaminski, Vince J" in cleaned.quoted_text
    assert "look at the curves before Tuesday" in cleaned.quoted_text
    assert "Original Message" not in cleaned.extraction_text


def test_lotus_notes_forward_keeps_the_forwarded_message_out_of_the_new_text() -> None:
    cleaned = clean_body(corpus_body("enron-9d996ebf10ecdb95ddb9cd62abc8df0c"))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text.startswith("Any recommendations. Please, let me know ASAP.")
    forwarded_sentence = "We are considering a preliminary list of speakers"
    assert forwarded_sentence in cleaned.quoted_text
    assert forwarded_sentence not in cleaned.extraction_text


def test_lotus_notes_forward_separator_is_not_new_text() -> None:
    cleaned = clean_body(corpus_body("enron-9d996ebf10ecdb95ddb9cd62abc8df0c"))
    assert "Forwarded by" not in cleaned.new_text
    assert "Albert Wang" not in cleaned.new_text


LOTUS_BARE_FORWARD = (
    "---------------------- Forwarded by Vince J Kaminski/HOU/ECT on 01/05/2001 10:31 AM "
    "---------------------------\n\n\n"
    "Stinson Gibner\n01/04/2001 05:12 PM\n"
    "To:\tVince J Kaminski/HOU/ECT@ECT\ncc:\t\nSubject:\tModel review\n\n"
    "Vince,\n\nThe model review is scheduled for Friday in EB 1938.\n\nStinson\n"
)


def test_bare_lotus_notes_forward_is_read_from_the_forwarded_message() -> None:
    cleaned = clean_body(text(LOTUS_BARE_FORWARD))
    assert cleaned.text_basis == "forwarded"
    assert "The model review is scheduled for Friday" in cleaned.extraction_text


def test_on_date_wrote_reply_with_quoted_lines_on_a_real_body() -> None:
    cleaned = clean_body(corpus_body("enron-07483107a03a8d976c35ad082a072b2c"))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text.startswith("Vince,\n\nThank you for your efforts in talking to your corporate recruiting")
    assert cleaned.quoted_text.startswith("On Thu, 4 Oct 2001 Vince.J.Kaminski@enron.com wrote:")
    assert "> I talked top my recruiting people" in cleaned.quoted_text
    assert not any(line.startswith(">") for line in cleaned.extraction_text.splitlines())


def test_on_date_wrote_reply_synthetic() -> None:
    cleaned = clean_body(
        text(
            "I agree with John on the pricing.\n\n"
            "On Mon, 15 Oct 2001 09:12:00 -0500, John Smith wrote:\n"
            "> Do we agree on the pricing?\n"
            "> Let me know.\n"
        )
    )
    assert cleaned.new_text == "I agree with John on the pricing."
    assert cleaned.quoted_text == (
        "On Mon, 15 Oct 2001 09:12:00 -0500, John Smith wrote:\n> Do we agree on the pricing?\n> Let me know."
    )
    assert cleaned.extraction_text == "I agree with John on the pricing."


def test_bare_outlook_forward_is_read_from_the_forwarded_message() -> None:
    # A real body with no text of its own above "-----Original Message-----".
    cleaned = clean_body(corpus_body("enron-dd9505bef04dba9d5514dce78fd9533f"))
    assert cleaned.text_basis == "forwarded"
    assert cleaned.new_text == ""
    assert cleaned.forwarded_text.startswith("From: Hare, Bill")
    assert "I discussed the AEP/ENA standards with Barbara Gray" in cleaned.forwarded_text
    assert cleaned.extraction_text == cleaned.forwarded_text


def test_bare_forward_synthetic_reads_only_the_first_quoted_message() -> None:
    cleaned = clean_body(
        text(
            "-----Original Message-----\n"
            "From: Gibner, Stinson\nSent: Thursday, January 04, 2001 5:12 PM\nTo: Kaminski, Vince J\n"
            "Subject: Model review\n\n"
            "The model review is scheduled for Friday.\n\n"
            "-----Original Message-----\n"
            "From: Kaminski, Vince J\nSent: Wednesday, January 03, 2001 9:00 AM\nTo: Gibner, Stinson\n"
            "Subject: Model review\n\n"
            "When is the model review?\n"
        )
    )
    assert cleaned.text_basis == "forwarded"
    assert "The model review is scheduled for Friday." in cleaned.extraction_text
    assert "When is the model review?" not in cleaned.extraction_text
    assert "When is the model review?" in cleaned.quoted_text


# -- signatures --------------------------------------------------------------------------------------------------


def test_short_sign_off_is_the_signature() -> None:
    cleaned = clean_body(text("Can you send me the Q3 numbers?\n\nThanks,\nIris"))
    assert cleaned == CleanedBody(
        new_text="Can you send me the Q3 numbers?",
        signature="Thanks,\nIris",
        quoted_text="",
        text_basis="new",
    )
    # The signature is read too: the sign-off name is how extraction finds who wrote it.
    assert cleaned.extraction_text == "Can you send me the Q3 numbers?\n\nThanks,\nIris"


def test_huge_pseudo_signature_stays_in_the_body() -> None:
    body = "Team,\n\nThanks, everyone, for a great quarter. Here is the plan:\n" + "\n".join(
        f"{n}. Item {n} of the plan for the next quarter, with owners and dates." for n in range(1, 15)
    )
    # Precondition: the reply parser really does guess that everything from "Thanks," on is a signature.
    guessed = EmailMessage(body, languages=["en"], keep_hyphen_lists=True).read().replies[0].signatures
    assert guessed.startswith("Thanks, everyone")

    cleaned = clean_body(text(body))
    assert cleaned.signature == ""
    assert cleaned.new_text == body
    assert "14. Item 14 of the plan" in cleaned.extraction_text


@pytest.mark.parametrize(
    ("lines_after_sign_off", "is_signature"),
    [(MAX_SIGNATURE_LINES - 1, True), (MAX_SIGNATURE_LINES, False)],
)
def test_signature_line_limit(lines_after_sign_off: int, is_signature: bool) -> None:
    # "Thanks," plus N lines: a signature of MAX_SIGNATURE_LINES lines is accepted, one more line is not.
    tail = "\n".join(f"Line {n}" for n in range(lines_after_sign_off))
    cleaned = clean_body(text(f"Please review the draft before Friday.\n\nThanks,\n{tail}"))
    if is_signature:
        assert cleaned.new_text == "Please review the draft before Friday."
        assert cleaned.signature.endswith(f"Line {lines_after_sign_off - 1}")
    else:
        assert cleaned.signature == ""
        assert cleaned.new_text.endswith(f"Line {lines_after_sign_off - 1}")
    # Either way, nothing is lost from what extraction reads.
    assert f"Line {lines_after_sign_off - 1}" in cleaned.extraction_text


def test_long_single_line_signature_stays_in_the_body() -> None:
    long_line = "Iris Mack, Research Group, Enron North America Corp., 1400 Smith Street, Houston TX 77002. " * 5
    cleaned = clean_body(text(f"Please review.\n\nThanks,\n{long_line}"))
    assert cleaned.signature == ""
    assert "1400 Smith Street" in cleaned.new_text


# -- empty -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [text(""), text("   \n\n\t "), text("=20\n=20"), html(""), html("<html><body><p>&nbsp;</p></body></html>")],
    ids=["empty", "whitespace", "qp-spaces", "empty-html", "html-nbsp"],
)
def test_empty_body_has_basis_empty_and_nothing_to_read(body: ItemBody) -> None:
    cleaned = clean_body(body)
    assert cleaned.text_basis == "empty"
    assert cleaned.extraction_text == ""


def test_memo_with_header_lines_is_not_empty() -> None:
    cleaned = clean_body(
        text(
            "To:\tManagement Committee Members\n"
            "From:  Cindy Olson\n"
            "The attached is the results of the Focus Groups.  Frank Luntz will be at the meeting today.\n"
        )
    )
    assert cleaned.text_basis != "empty"
    assert "Frank Luntz" in cleaned.extraction_text


# -- the whole corpus --------------------------------------------------------------------------------------------


def test_every_corpus_body_cleans_and_reads_no_more_than_it_has() -> None:
    cleaned_corpus = _corpus_cleaned()  # clean_body raising on any body fails here
    assert len(cleaned_corpus) == 2853
    too_long, bad_basis, basis_seen = [], [], set()
    for message_id, (normalized, cleaned) in cleaned_corpus.items():
        basis_seen.add(cleaned.text_basis)
        if len(cleaned.extraction_text) > len(normalized) + len(cleaned.signature):
            too_long.append(message_id)
        consistent = {
            "new": bool(cleaned.new_text or cleaned.signature),
            "forwarded": cleaned.new_text == "" and bool(cleaned.forwarded_text),
            "empty": cleaned.extraction_text == "",
        }[cleaned.text_basis]
        if not consistent:
            bad_basis.append(message_id)
    assert too_long == []
    assert bad_basis == []
    # The corpus exercises every basis, so the checks above were not vacuous.
    # ("empty" is exercised by its own test: the corpus has no body without text since memos are kept whole.)
    assert basis_seen == {"new", "forwarded"}


def test_every_corpus_extraction_line_comes_from_the_body() -> None:
    """Cleaning selects text; it never invents or rewrites a line (the library strips each line)."""
    invented = {}
    for message_id, (normalized, cleaned) in _corpus_cleaned().items():
        lines = [line.strip() for line in cleaned.extraction_text.splitlines() if line.strip()]
        missing = [line for line in lines if line not in normalized]
        if missing:
            invented[message_id] = missing[:2]
    assert invented == {}
