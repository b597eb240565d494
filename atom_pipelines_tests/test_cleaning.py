"""Body cleaning (``atom_pipelines.mail.cleaning``): what extraction reads of every message.

Extraction reads only ``extraction_text``. If cleaning lets quoted history through, a thread of twenty replies is
read (and paid for) twenty times and its entities are credited to the wrong message; if it drops text, entities
silently go missing and nothing downstream can notice. These tests pin the policy this module adds around
BeautifulSoup and ``mail-parser-reply``: HTML to text, quoted-printable leftovers, reply/forward separation
(Outlook, Lotus Notes, "On ... wrote:"), bare forwards read from the forwarded message, and the signature guess
accepted only when it looks like a signature. Real bodies come from the Enron corpus (corpus/), picked by id so the
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
from atom_pipelines_tests.conftest import open_corpus


@functools.cache
def _corpus_bodies() -> dict[str, ItemBody]:
    bodies: dict[str, ItemBody] = {}
    with open_corpus() as handle:
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


# An Outlook (web / new Outlook) HTML reply as Graph returns it: the reply header sits in <div id="divRplyFwdMsg">
# under an <hr>, each header label in <b>, each header line ended by a <br> and a newline of the HTML source.
OUTLOOK_HTML_REPLY = """<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} </style>
</head>
<body dir="ltr">
<div class="elementToProof" style="font-family: Aptos, Calibri, Helvetica, sans-serif; font-size: 12pt;">
Thanks Vince, I will send the <b>forward curves</b> to <a href="mailto:stinson.gibner@enron.com">Stinson
Gibner</a> by Friday.</div>
<div class="elementToProof" style="font-size: 12pt;"><br></div>
<div class="elementToProof" style="font-size: 12pt;">Iris</div>
<div id="appendonsend"></div>
<hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000">\
<b>From:</b> Kaminski, Vince J &lt;vince.kaminski@enron.com&gt;<br>
<b>Sent:</b> Monday, October 15, 2001 9:12 AM<br>
<b>To:</b> Mack, Iris &lt;iris.mack@enron.com&gt;<br>
<b>Cc:</b> Gibner, Stinson &lt;stinson.gibner@enron.com&gt;<br>
<b>Subject:</b> RE: curves</font>
<div>&nbsp;</div>
</div>
<div class="BodyFragment"><font size="2"><span style="font-size:11pt;">
<div class="PlainText">Iris,<br>
<br>
can you look at the <b>forward curves</b> for the <i>Houston Ship Channel</i> before Tuesday?<br>
<br>
Vince</div>
</span></font></div>
</body>
</html>"""


def test_outlook_web_html_reply_separates_the_quoted_message() -> None:
    cleaned = clean_body(html(OUTLOOK_HTML_REPLY))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text == "Thanks Vince, I will send the forward curves to Stinson Gibner by Friday.\n\nIris"
    # The header is one line per field (the source newline after each <br> is not a second line break).
    assert cleaned.quoted_text.startswith(
        "From: Kaminski, Vince J <vince.kaminski@enron.com>\n"
        "Sent: Monday, October 15, 2001 9:12 AM\n"
        "To: Mack, Iris <iris.mack@enron.com>\n"
    )
    assert "look at the forward curves for the Houston Ship Channel before Tuesday?" in cleaned.quoted_text
    assert "Houston Ship Channel" not in cleaned.extraction_text
    assert "P {margin-top" not in cleaned.extraction_text + cleaned.quoted_text


def test_html_source_whitespace_is_a_space_except_in_pre() -> None:
    result = body_text(
        html(
            "<p>Please call\n  John\tSmith</p>line one<br>\nline two"
            "<!--[if gte mso 9]><xml>office settings</xml><![endif]-->"
            "<pre>desk   volume\nHPL    1200</pre>"
        )
    )
    assert result.splitlines() == ["Please call John Smith", "line one", "line two", "desk volume", "HPL 1200"]


def test_html_table_cells_do_not_run_together() -> None:
    result = body_text(
        html("<table><tr><th>Name</th><th>Desk</th></tr><tr><td>Iris Mack</td><td>Research</td></tr></table>")
    )
    assert [line for line in result.splitlines() if line] == ["Name Desk", "Iris Mack Research"]


# -- whitespace and quoted-printable leftovers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("price=20\nlist", "price\nlist"),  # =20 is a space; at a line end it is trailing space, removed
        ("a=20b=\nc", "a bc"),  # decoded where the body shows quoted-printable (a soft break)...
        ("Name:=09Iris =\nMack", "Name:\tIris Mack"),
        ("a=20b", "a=20b"),  # ...and left alone where it does not: "cabinet_id=205" is a URL
        ("x=3D1, y=3D2=\n done", "x=1, y=2 done"),  # only plain-text escapes: decoded whole by quopri
        ("id=6490&n=93=20\nend", "id=6490&n=93\nend"),  # other "=" too: only soft breaks and =20/=09 undone
        ("=====\nNews=20\nof the week=\n, 6/1", "=====\nNews\nof the week, 6/1"),  # a rule is not a soft break
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


def test_quoted_printable_body_is_decoded_whole_when_safe() -> None:
    # Soft breaks, =20 and =3D only: the stdlib decodes it all, "=3D" included.
    body = corpus_body("enron-c5a9711ef58bc64a4f9d922e641433c7")
    assert "</O=3DENRON/OU=3DNA/CN=3DRECIPIENTS/CN=3DTOROURKE>" in body.content
    cleaned_text = body_text(body)
    assert "From: </O=ENRON/OU=NA/CN=RECIPIENTS/CN=TOROURKE>" in cleaned_text
    assert "=3D" not in cleaned_text


def test_rule_lines_and_url_ends_are_not_soft_line_breaks_on_real_bodies() -> None:
    # A "=-=-=" rule ends in "=" + newline (in a body that is not quoted-printable at all); so does a URL with an
    # empty last parameter: neither is joined to the next line.
    rule_body = corpus_body("enron-f0c2c7343f59bce243ba6f0483cf2738")
    assert "=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=\n\nDavid C. Shimko" in rule_body.content
    assert "=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=\n\nDavid C. Shimko" in body_text(rule_body)
    url_body = corpus_body("enron-3eb50822a067990b1362f083bef607c9")
    assert "&DF=&FO=\n" in url_body.content.replace("\r\n", "\n")
    assert "&DF=&FO=\n" in body_text(url_body)


def test_equals_sign_rules_are_not_soft_line_breaks() -> None:
    # "=====" under a heading ends in "=" + newline but is not quoted-printable: the heading stays on its line.
    body = corpus_body("enron-1e2e03cb9789c93379cd82573781a8cd")
    assert "=\n\nDear Subscriber," in body.content.replace("\r\n", "\n")
    cleaned_text = body_text(body)
    assert "=\n\nDear Subscriber," in cleaned_text
    assert "=RiskNews Update" not in cleaned_text


# -- reply and forward separation --------------------------------------------------------------------------------


def test_outlook_original_message_reply_on_a_real_body() -> None:
    cleaned = clean_body(corpus_body("enron-af43767e6934578b3cd4950bb342db9b"))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text == (
        "Vince: Is it ok to acknowledge our sponsorship at the conference?\n\nAnita: Can you follow up on the payment?"
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
    # Read in the body's own words: the author and date lines are rewritten for the parser, and put back.
    assert cleaned.extraction_text.startswith("Stinson Gibner\n01/04/2001 05:12 PM\nTo:\tVince J Kaminski")
    for invented in ("From:", "Sent:", "Original Message", "Forwarded by"):
        assert invented not in cleaned.extraction_text


def test_bare_lotus_notes_forward_with_a_wrapped_separator_on_a_real_body() -> None:
    # "----- Forwarded by Susan Gardenfeld/NY/WGM/US on\n11/26/2001 01:19 PM -----": the separator wraps.
    cleaned = clean_body(corpus_body("enron-028a31ab534f70bf634c3b34743b52f9"))
    assert cleaned.text_basis == "forwarded"
    assert cleaned.new_text == ""
    assert cleaned.extraction_text.startswith("david.kirkland@bakerbotts.com on 11/26/2001 12:59:26 PM\n\nTo:")
    assert "Attached are clean and marked copies of a revised version of the amendment." in cleaned.extraction_text
    assert "Forwarded by" not in cleaned.extraction_text


def test_lotus_notes_separators_are_put_back_as_they_were_on_a_real_body() -> None:
    # Three Notes separators (one wrapped) and the body's own Outlook separators in one thread.
    body = corpus_body("enron-57c0b71ef92bbed499a56eedf540e5a4")
    cleaned = clean_body(body)
    assert cleaned.text_basis == "new"
    normalized_lines = {line.strip() for line in body_text(body).splitlines()}
    quoted_lines = [line for line in cleaned.quoted_text.splitlines() if line]
    assert [line for line in quoted_lines if line not in normalized_lines] == []
    assert "---------------------- Forwarded by Michael Eiben/HOU/ECT on 05/17/2001 02:52 PM" in cleaned.quoted_text
    assert "----- Forwarded by Donald B Simpson/OR4/AEPIN on 04/17/01 08:26 AM -----" in cleaned.quoted_text
    assert "Forwarded by Michael Eiben/HOU/ECT on 05/14/2001\n11:43 AM -----" in cleaned.quoted_text
    assert cleaned.quoted_text.count("-----Original Message-----") == body_text(body).count(
        "-----Original Message-----"
    )


def test_lotus_notes_reply_header_without_separator_on_a_real_body() -> None:
    # A Notes reply quotes the original under "Amitava Dhar\n26/04/2001 21:23\nTo: ...": no separator line.
    cleaned = clean_body(corpus_body("enron-be7af85a16d668a0ead42c4dcb234156"))
    assert cleaned.text_basis == "new"
    assert cleaned.new_text.startswith("Amitava,\n\nThank you for the detailed info")
    assert cleaned.new_text.endswith("Cheers,\nScott")
    assert cleaned.quoted_text.startswith("Amitava Dhar\n26/04/2001 21:23\nTo:\tMike Mumford/LON/ECT@ECT")
    assert "26/04/2001" not in cleaned.extraction_text


def test_lotus_notes_reply_header_on_one_line() -> None:
    cleaned = clean_body(
        text(
            "I agree as well with Jerry & Frederic.\n\n\n"
            "frederic.janbon@bnpparibas.com on 10/13/2001 01:03:14 AM\n"
            "To:\tSteve Kean/NA/Enron@Enron\ncc:\t\nSubject:\tRe: ISDA study\n\n"
            "We should ask ISDA for the study first.\n"
        )
    )
    assert cleaned.new_text == "I agree as well with Jerry & Frederic."
    assert cleaned.quoted_text.startswith("frederic.janbon@bnpparibas.com on 10/13/2001 01:03:14 AM\nTo:")
    assert "We should ask ISDA" in cleaned.quoted_text


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


def test_forward_of_a_forward_is_read_from_the_message_with_text() -> None:
    # "FW: FW:": the first quoted message is the empty outer forward (a header and nothing under it).
    cleaned = clean_body(corpus_body("enron-8a7066e79baf21bb0d3aae27759668ec"))
    assert cleaned.text_basis == "forwarded"
    assert cleaned.forwarded_text.startswith("From: Jack Quinn [mailto:JQuinn@QuinnGillespie.com]")
    assert "tom green from sidley & austin -- fabulous." in cleaned.extraction_text
    assert "From: Robertson, Linda" in cleaned.quoted_text


def test_forward_of_a_message_without_text_is_read_from_its_header() -> None:
    cleaned = clean_body(
        text(
            "-----Original Message-----\n"
            "From: Vetters, Charles\nSent: Tuesday, November 13, 2001 10:13 AM\nTo: Jafry, Rahil\n"
            "Subject: For your viewing pleasure\n"
        )
    )
    assert cleaned.text_basis == "forwarded"
    assert cleaned.extraction_text.startswith("From: Vetters, Charles")
    assert "For your viewing pleasure" in cleaned.extraction_text


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


def test_memo_with_header_lines_on_a_real_body_is_kept_whole() -> None:
    body = corpus_body("enron-8265770c50f030f6fc4be555adaa6bc3")
    cleaned = clean_body(body)
    assert cleaned.text_basis == "new"
    assert cleaned.new_text == body_text(body)
    assert cleaned.new_text.startswith("To: Management Committee Members\nFrom: Cindy Olson")
    assert "Frank Luntz will be at the Management Committee meeting today" in cleaned.extraction_text


def test_memo_header_does_not_swallow_its_first_line_of_text() -> None:
    # The parser's header takes one line past "From:" (for a wrapped subject): here, the memo's first sentence.
    cleaned = clean_body(
        text(
            "To: All Research Group Members\nFrom: Vince Kaminski\n"
            "The group meeting moves to EB 1938 on Thursday.\n\n"
            "Please bring the curves for the Houston Ship Channel.\n"
        )
    )
    assert cleaned.text_basis == "new"
    assert "The group meeting moves to EB 1938 on Thursday." in cleaned.extraction_text
    assert "Please bring the curves" in cleaned.extraction_text


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


def test_every_corpus_line_comes_from_the_body() -> None:
    """Cleaning selects text; it never invents or rewrites a line (the library strips each line).

    Every part is checked, not only what extraction reads: Lotus Notes separators and author lines are rewritten
    for the reply parser and must be put back in the quoted history too.
    """
    invented = {}
    for message_id, (normalized, cleaned) in _corpus_cleaned().items():
        for part in ("extraction_text", "new_text", "signature", "quoted_text", "forwarded_text"):
            lines = [line.strip() for line in getattr(cleaned, part).splitlines() if line.strip()]
            missing = [line for line in lines if line not in normalized]
            if missing:
                invented[(message_id, part)] = missing[:2]
    assert invented == {}
