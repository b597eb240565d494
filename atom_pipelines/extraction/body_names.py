"""People and organizations named in a mail body, found by rules: the offline extractor's reading of the text.

Pure (no Dagster, no I/O beyond the bundled name lists): ``find_names(text, ...)`` returns spans of the text,
each a person or an organization, never overlapping. The rules, and why each is there:

- **Organizations** are capitalized runs that end in a legal form (``Mariner Energy, Inc.``, ``Hirsch &
  Westheimer, P.C.``) or in a word that heads organization names (``Houston Bar Association``, ``Duke Energy
  North America``, ``Bank of America``); names the message's own address and URL domains spell (``Enron`` for
  enron.com, ``CERA`` for cera.com); and acronyms the text defines for one of those (``... Corporation (TETCO)``).
- **People** are a title and a name (``Ms. Beck``), a first name of the US Census 1990 first-name lists
  (bundled by the ``names`` package, MIT; the data is public domain) alone or with initials and a surname
  (``Mark E. Haedicke``), ``First M. Last`` whatever the first name, an initial and a Census surname
  (``S. Harris``), a name line over a job-title line (a signature), and the participants' own names.

Precision comes first (a false organization pollutes the entity graph): a capitalized word that is only
capitalized (a sentence start, a day, a department) is never a name, and an organization needs one of the
signals above, not just capitals. Measured on the gold set by ``bench/offline_ner.py``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from atom_pipelines.extraction.mentions import EMAIL_IN_TEXT
from atom_pipelines.extraction.outcomes import EntityType

PERSON, ORGANIZATION = EntityType.PERSON, EntityType.ORGANIZATION


@dataclass(frozen=True)
class BodyName:
    """A name as written in the text, and where: ``text[start:end] == name``."""

    name: str
    entity_type: EntityType
    start: int
    end: int


# -- word lists --------------------------------------------------------------------------------------------------

#: Legal forms that end an organization's name (compared without dots, casefolded).
LEGAL_FORMS = frozenset(
    "inc incorporated corp corporation co company llc lc lp llp ltd limited plc pc pa na sa ag nv bv gmbh".split()
)
#: Legal forms that are also US state codes or words when written in capitals ("Denver, CO", "PA"): a legal form
#: only as "Co." or "P.A.", not as "CO" or "PA".
CAPITALS_NOT_LEGAL = frozenset("co pa na sa ag nv pc".split())
#: Words that head organization names when they end a capitalized run ("Houston Bar Association").
ORG_HEADS = frozenset(
    """association associates bank bancorp university college institute foundation society council commission
    federation agency authority board partners partnership capital markets marketing trading services
    energy power pipeline transmission gas electric utilities steel coal oil petroleum resources holdings
    industries securities investments ventures venture technologies airlines insurance laboratories""".split()
)
#: Heads that open a name before "of" ("Bank of America", "University of Texas").
ORG_HEADS_BEFORE_OF = frozenset(
    "bank university college institute association federation council commission department bureau board".split()
)
#: Words that may follow the head of an organization's name ("Duke Energy North America").
ORG_TAILS = frozenset("north south east west america americas europe international usa us uk".split())
#: Modifiers that do not make a head a name: "Natural Gas", "North American Power" are commodities and markets.
GENERIC_MODIFIERS = frozenset(
    """natural north south east west northern southern eastern western american electric gas power energy total
    new our your their this that the all any each other retail wholesale physical financial commercial
    clean renewable green""".split()
)
#: Connector words allowed inside an organization's name.
CONNECTORS = frozenset({"of", "and", "&", "for", "de"})
#: Titles before a person's name.
TITLES = frozenset("mr mrs ms miss dr prof".split())
#: Words of the job-title line under a signature's name line.
JOB_WORDS = frozenset(
    """director manager associate administrator coordinator executive president ceo cfo coo cto vp vice chairman
    officer attorney counsel analyst assistant specialist senior sr engineer consultant partner controller
    trader head chief secretary representative lead supervisor principal economist""".split()
)
#: Words that open a capitalized run without being part of a name: sentence starters, greetings, headers.
SENTENCE_WORDS = frozenset(
    """The This That These Those There Their They Them Then Than Thanks Thank Regards Best Cheers Sincerely
    Please Attached Attachment Note Yes No Ok Okay Hello Hi Dear Hey Fyi Fw Fwd Re Subject From Sent To Cc Bcc
    Date Time Place Cost When Where What Who Why How Which While With Without Within Also And Or But If As At
    By For In On Of Off Out Up Down Over Under Into Onto Per Via All Any Some Each Every Both Either Neither
    Our Your My His Her Its We You He She It I Is Are Was Were Will Can Could Would Should Let Just Great Good
    Happy Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday Call See Ask Tell
    Send Get Give Make Take Check Contact Review Forward Go Talk Meet Join Visit Read Find Keep Sign Click""".split()
)
#: Words that end a line's capitalized run after a name without being part of it ("Stanford University Email:").
LINE_LABELS = frozenset("email e-mail phone fax tel voice cell mobile web website office".split())
#: First names of the Census lists that are (also) common English words, places or months in business mail:
#: reviewed by hand from the names that occur lowercase in the corpus and the places and months of the lists.
NOT_FIRST_NAMES = frozenset(
    """In An So My Will May Long See Many Hope Soon Numbers Major Page Else Chance Roman Art Miles Summer Loan
    Carry Season Winter Love Miss Ok Desire Spring Man Manual Yen Le Stanford Young Chase Asia Dot Son Kit Era
    Junior Grant Penny Esta Un Merlin Meta Ena Hilton Hang Golden Brain Sunshine Lean Bee Joy Star Sun Precious
    Aide Delta Mica Jewel Pia Min Dia Nam Ma Na Li Del Ria Flo Reda Yer Mac Van Von Chi Jc Wm Royal Sterling
    Houston Austin Dallas Denver Paris Florence Georgia Virginia Carolina India China Sydney Jackson Lincoln
    Madison Orlando Alexandria Augusta Charlotte Cheyenne Dakota Nevada Sierra America Easter Sunday
    April June August Autumn Jan Tuesday Monday Friday Christmas Power Energy Gas Trading Market Credit Risk
    Legal Deal Rate Bank Tax Will Florida Edison German Argentina""".split()
)
#: Capitalized words that are never part of a person's name (they start sentences, head lines, name days).
NEVER_NAMES = frozenset(
    """The This That These Those There Their They Them Then Than Thanks Thank Regards Best Cheers Sincerely
    Please Attached Attachment Note Yes No Ok Okay Hello Hi Dear Hey Fyi Fw Fwd Re Subject From Sent To Cc Bcc
    Date Time Place Cost When Where What Who Why How Which While With Without Within Also And Or But If As At
    By For In On Of Off Out Up Down Over Under Into Onto Per Via All Any Some Each Every Both Either Neither
    Team Everyone Folks Guys Group Department Dept Committee Management Office Building Floor Room Suite Street
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August
    September October November December Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Today Tomorrow
    Yesterday Morning Afternoon Evening Tonight Week Weekend Year Month Day New Old Happy Great Good Just Let
    Can Could Would Should Will Shall Must Might Is Are Was Were Be Been Have Has Had Do Does Did Not Here
    Phone Fax Cell Mobile Tel Email Mail Web Website Page Call Conference Meeting Agenda Update Reminder
    Notice Report Summary Status Total Amount Payment Approved Approval Information Info Details Details
    North South East West Central Eastern Western Pacific Mountain Standard Houston Texas Legal Finance
    Accounting Operations Credit Risk Tax Human Resources Services Support Customer Service Transaction
    Director Manager President Vice Executive Senior Sr Jr Chief Officer Assistant Associate Analyst
    Administrator Coordinator Attorney Counsel Specialist Trader Energy Power Gas Electric Natural Market
    Markets Trading Capital Bank Corp Inc Co Company Corporation Group LLC Ltd Ph Mr Mrs Ms Dr Prof""".split()
)


@functools.cache
def first_names() -> frozenset[str]:
    """First names of the US Census 1990 lists (male and female), title-cased, less common words."""
    found = set()
    for list_name in ("dist.male.first", "dist.female.first"):
        found.update(line.split()[0].title() for line in _census_list(list_name) if line.strip())
    return frozenset(found - NOT_FIRST_NAMES - NEVER_NAMES)


@functools.cache
def surnames() -> frozenset[str]:
    """Surnames of the US Census 1990 list (88,799), title-cased, less words that are never names."""
    found = {line.split()[0].title() for line in _census_list("dist.all.last") if line.strip()}
    return frozenset(found - NEVER_NAMES - NOT_FIRST_NAMES)


def _census_list(list_name: str) -> list[str]:
    return (resources.files("names") / list_name).read_text(encoding="ascii").splitlines()


# -- tokens ------------------------------------------------------------------------------------------------------

# Dotted abbreviations first ("P.C.", "L.P.", "U.S."), then capitalized words (a trailing dot kept for "Inc.",
# "T."), the connectors of organization names, commas and parentheses. Lowercase words are not tokens: they are
# in the gaps between tokens, and a gap with anything but spaces ends a run. Apostrophes stay inside words
# ("Moody's", "O'Neil"); the possessive is cut later.
_TOKEN = re.compile(r"(?:[A-Z]\.){2,}|[A-Z][A-Za-z0-9'’&\-]*\.?|\b(?:of|and|for|de)\b|[,()&]")
_URL = re.compile(r"(?i)\b(?:https?://|www\.|mailto:)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|edu|gov)\b\S*")
# Transport headers pasted into a body ("Received: from ...", "Content-Type: ..."): no names to read there.
_TRANSPORT_HEADER = re.compile(
    r"(?im)^(?:received|return-path|content-[\w-]+|mime-version|x-[\w-]+|message-id|content-class):.*$"
)


_CAPITAL = re.compile(r"[A-Z]")
_INITIAL = re.compile(r"[A-Z]\.")
_DOTTED = re.compile(r"[A-Z]\.|(?:[A-Za-z]\.){2,}")
_KEEP_DOT = LEGAL_FORMS | {"jr", "sr", "st"} | TITLES


@dataclass(frozen=True, slots=True)
class _Token:
    text: str  # without a possessive 's or a sentence's closing dot
    start: int
    end: int
    possessive: bool
    bare: str  # casefolded, without dots
    is_title_case: bool  # "Sally", "McClure", "Inc."
    is_upper: bool  # "EES", "AT&T" (two letters or more)
    is_initial: bool  # "T."

    @property
    def is_capitalized(self) -> bool:
        return self.is_title_case or self.is_upper or self.is_initial


def _tokens(line: str, offset: int) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN.finditer(line):
        raw = match.group()
        text, end = raw, match.end()
        possessive = raw.endswith(("'s", "’s"))
        if possessive:
            text, end = text[:-2], end - 2
        # A closing dot belongs to the word only for initials and abbreviations ("T.", "Inc.", "Co.", "Jr.").
        if text.endswith(".") and not _DOTTED.fullmatch(text) and text[:-1].casefold() not in _KEEP_DOT:
            text, end = text[:-1], end - 1
        word = text.rstrip(".")
        letters = text.replace(".", "").replace("&", "")
        tokens.append(
            _Token(
                text=text,
                start=offset + match.start(),
                end=offset + end,
                possessive=possessive,
                bare=text.replace(".", "").casefold(),
                is_title_case=bool(word) and word[0].isupper() and not word.isupper(),
                is_upper=len(letters) >= 2 and letters.isupper() and letters.isalpha(),
                is_initial=_INITIAL.fullmatch(raw) is not None,
            )
        )
    return tokens


# -- the finder --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    name: BodyName
    priority: int  # higher wins an overlap


def find_names(text: str, *, people: Iterable[str] = (), organization_labels: Iterable[str] = ()) -> list[BodyName]:
    """The people and organizations named in text, in text order, no two overlapping.

    ``people``: names the message's participants go by (first and last names of their display names), which
    are people wherever the body writes them. ``organization_labels``: the labels of the message's own
    organization domains ("enron" for enron.com, "duke-energy"), which are organizations wherever the body
    spells them.
    """
    masked = _mask(text)
    known_people = {name for name in people if len(name) >= 2}
    labels = {label.casefold().replace("-", "") for label in organization_labels if len(label) >= 3}
    candidates: list[_Candidate] = []
    lines = _lines(masked)
    for index, (offset, line) in enumerate(lines):
        if not _CAPITAL.search(line):
            continue
        tokens = _tokens(line, offset)
        next_line = lines[index + 1][1] if index + 1 < len(lines) else ""
        candidates.extend(_line_candidates(text, line, tokens, next_line, known_people, labels))
    candidates.extend(_acronyms(text, masked, candidates))
    return _resolve(candidates)


def _mask(text: str) -> str:
    """The text with addresses, URLs and transport headers blanked (same length: offsets stay the text's)."""
    for pattern in (_TRANSPORT_HEADER, EMAIL_IN_TEXT, _URL):
        text = pattern.sub(lambda m: " " * len(m.group()), text)
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    lines, offset = [], 0
    for line in text.split("\n"):
        lines.append((offset, line))
        offset += len(line) + 1
    return lines


def _line_candidates(
    text: str, line: str, tokens: list[_Token], next_line: str, people: set[str], labels: set[str]
) -> list[_Candidate]:
    found: list[_Candidate] = []
    for run in _runs(text, tokens):
        found.extend(_organization_in_run(text, run, labels))
        found.extend(_people_in_run(text, run, line, next_line, people))
    return found


def _runs(text: str, tokens: list[_Token]) -> list[list[_Token]]:
    """Maximal runs of capitalized tokens, connectors allowed inside, ", Inc." style legal forms attached.

    Tokens are of one run only when spaces alone separate them: "Linda/Richard" and "Services - Legal" are two.
    """
    runs: list[list[_Token]] = []
    current: list[_Token] = []
    previous_end = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if current and text[previous_end : token.start].strip(" \t'’"):
            runs.append(current)
            current = []
        previous_end = token.end
        if token.is_capitalized:
            current.append(token)
            if token.possessive:
                runs.append(current)
                current = []
        elif current and token.text.casefold() in CONNECTORS and _capitalized_at(tokens, index + 1):
            current.append(token)
        elif current and token.text == "," and _legal_form_at(tokens, index + 1):
            pass  # "Mariner Energy, Inc.": the comma stays inside the name's span
        else:
            if current:
                runs.append(current)
            current = []
        index += 1
    if current:
        runs.append(current)
    return runs


def _capitalized_at(tokens: list[_Token], index: int) -> bool:
    return index < len(tokens) and tokens[index].is_capitalized


def _legal_form_at(tokens: list[_Token], index: int) -> bool:
    return index < len(tokens) and _is_legal_form(tokens[index])


def _is_legal_form(token: _Token) -> bool:
    if token.bare not in LEGAL_FORMS or not token.text[0].isupper():
        return False
    return not (token.bare in CAPITALS_NOT_LEGAL and token.text.isupper() and "." not in token.text)


def _span(text: str, first: _Token, last: _Token, entity_type: EntityType, priority: int) -> _Candidate:
    return _Candidate(BodyName(text[first.start : last.end], entity_type, first.start, last.end), priority)


def _content_start(run: list[_Token]) -> int:
    """Index of the first token that can start a name (leading sentence words, titles and connectors dropped)."""
    start = 0
    while start < len(run) and (run[start].text in SENTENCE_WORDS or run[start].text.casefold() in CONNECTORS):
        start += 1
    return start


def _organization_in_run(text: str, run: list[_Token], labels: set[str]) -> list[_Candidate]:
    start = _content_start(run)
    words = run[start:]
    if not words:
        return []
    found = _domain_names(text, words, labels)
    named = _named_organization(text, words)
    return found + [named] if named else found


def _named_organization(text: str, words: list[_Token]) -> _Candidate | None:
    # A legal form closes the name: "Enron North America Corp.", "Upstream Energy Services Company, LLC".
    if sum(1 for w in words if w.is_upper) > 5:
        return None  # a sentence in capitals ("THE REPORT IS PREPARED FOR THE LIMITED USE OF"), not a name
    for end in range(len(words) - 1, 0, -1):
        if _is_legal_form(words[end]):
            first = _first_org_word(words[:end])
            if first is not None:
                return _span(text, words[first], words[end], ORGANIZATION, 50)
    # A head word closes it ("Houston Bar Association"), perhaps with a region after ("Duke Energy North America").
    while len(words) > 1 and words[-1].bare in LINE_LABELS:
        words = words[:-1]
    last = len(words) - 1
    while last > 0 and words[last].bare in ORG_TAILS:
        last -= 1
    if last > 0 and words[last].bare in ORG_HEADS:
        first = _first_org_word(words[:last])
        modifiers = [w for w in words[first:last] if w.bare not in CONNECTORS] if first is not None else []
        if first is not None and modifiers and not all(w.bare in GENERIC_MODIFIERS for w in modifiers):
            end = len(words) - 1 if last < len(words) - 1 else last
            return _span(text, words[first], words[end], ORGANIZATION, 40)
    # A head before "of" opens it: "Bank of America", "University of Texas at Austin".
    for index, word in enumerate(words[:-2]):
        if word.bare in ORG_HEADS_BEFORE_OF and words[index + 1].text == "of":
            return _span(text, word, words[-1], ORGANIZATION, 40)
    return None


def _domain_names(text: str, words: list[_Token], labels: set[str]) -> list[_Candidate]:
    """The message's own domains, spelled out: "Enron" for enron.com, "Duke Energy" for duke-energy.com.
    (Below a longer name that contains one: "Enron North America Corp." wins over its "Enron".)"""
    found = []
    for index, word in enumerate(words):
        if not (word.is_title_case or word.is_upper):
            continue
        for width in (2, 1):
            piece = words[index : index + width]
            if len(piece) == width and "".join(w.bare for w in piece) in labels:
                found.append(_span(text, piece[0], piece[-1], ORGANIZATION, 30))
                break
    return found


def _first_org_word(words: list[_Token]) -> int | None:
    """Where the name before a head or legal form starts: past connectors, at a word that can open a name."""
    for index, word in enumerate(words):
        if word.text.casefold() in CONNECTORS or word.is_initial:
            continue
        if word.is_title_case or word.is_upper:
            return index
    return None


def _people_in_run(text: str, run: list[_Token], line: str, next_line: str, people: set[str]) -> list[_Candidate]:
    found = []
    index = 0
    while index < len(run):
        token = run[index]
        # A title and a name: "Ms. Beck", "Mr Plitsch", "Dr. Hill".
        if token.bare in TITLES and index + 1 < len(run) and _surname_like(run[index + 1]):
            end = index + 1
            while end + 1 < len(run) and _surname_like(run[end + 1]) and not run[end].possessive:
                end += 1
            found.append(_span(text, run[index + 1], run[end], PERSON, 45))
            index = end + 1
            continue
        if token.text in NEVER_NAMES or not token.is_title_case:
            # An initial and a Census surname: "S. Harris" (not the list item "A. Fill out the form").
            if (
                token.is_initial
                and not _opens_line(text, token)
                and index + 1 < len(run)
                and run[index + 1].text in surnames()
                and run[index + 1].is_title_case
            ):
                found.append(_span(text, token, run[index + 1], PERSON, 35))
                index += 2
                continue
            index += 1
            continue
        end = _full_name_end(run, index)
        known = token.text in first_names() or token.text.casefold() in people
        if end > index and (known or _has_middle_initial(run, index, end)):
            found.append(_span(text, token, run[end], PERSON, 45))
            index = end + 1
            continue
        if known and not _after_number(text, token) and not _after_place_word(run, index):
            found.append(_span(text, token, token, PERSON, 20))
        elif len(run) <= 3 and _signature_name(text, line, run, next_line):
            found.append(_span(text, run[0], run[-1], PERSON, 25))
            return found
        index += 1
    return found


def _after_place_word(run: list[_Token], index: int) -> bool:
    """ "San Francisco", "Santa Barbara", "Fort Worth": the name is a place's."""
    return index > 0 and run[index - 1].bare in {"san", "santa", "los", "las", "fort", "st", "port", "lake"}


def _opens_line(text: str, token: _Token) -> bool:
    return not text[text.rfind("\n", 0, token.start) + 1 : token.start].strip()


def _after_number(text: str, token: _Token) -> bool:
    """ "1100 Caroline", "Suite 906 Louisiana": a street of an address, not a person."""
    return re.search(r"\d\s+$", text[max(0, token.start - 12) : token.start]) is not None


def _surname_like(token: _Token) -> bool:
    return token.is_title_case and token.text not in NEVER_NAMES and token.bare not in ORG_HEADS


def _full_name_end(run: list[_Token], index: int) -> int:
    """Last token of "First [M.] Last [Last]" starting at index, or index if no surname follows."""
    end = index
    cursor = index + 1
    while cursor < len(run) and run[cursor].is_initial:
        cursor += 1
    taken = 0
    while cursor < len(run) and taken < 2 and _surname_like(run[cursor]) and not run[end].possessive:
        end, cursor, taken = cursor, cursor + 1, taken + 1
    return end


def _has_middle_initial(run: list[_Token], index: int, end: int) -> bool:
    return any(token.is_initial for token in run[index + 1 : end])


def _signature_name(text: str, line: str, run: list[_Token], next_line: str) -> bool:
    """A line that is only this name, over a job-title line: the name line of a signature block."""
    if line.strip() != text[run[0].start : run[-1].end] or not all(_surname_like(t) or t.is_initial for t in run):
        return False
    words = {word.casefold().rstrip(".") for word in re.findall(r"[A-Za-z.]+", next_line)}
    return bool(words & JOB_WORDS)


def _acronyms(text: str, masked: str, candidates: list[_Candidate]) -> list[_Candidate]:
    """An acronym the text defines for an organization it names ("Texas Eastern Transmission Corporation
    (TETCO)") is that organization wherever the text writes it."""
    defined = set()
    for candidate in candidates:
        if candidate.name.entity_type is ORGANIZATION and candidate.priority >= 40:
            after = re.match(r"\s*\(([A-Z][A-Z&]{1,7})\)", masked[candidate.name.end :])
            if after:
                defined.add(after.group(1))
    found = []
    for acronym in defined:
        for match in re.finditer(rf"(?<![\w&]){re.escape(acronym)}(?![\w&])", masked):
            found.append(_Candidate(BodyName(acronym, ORGANIZATION, match.start(), match.end()), 30))
    return found


def _resolve(candidates: list[_Candidate]) -> list[BodyName]:
    """No overlaps: higher priority first, then the longer span; the result in text order."""
    taken: list[BodyName] = []
    for candidate in sorted(candidates, key=lambda c: (-c.priority, -(c.name.end - c.name.start), c.name.start)):
        name = candidate.name
        if any(name.start < other.end and other.start < name.end for other in taken):
            continue
        taken.append(name)
    return sorted(taken, key=lambda n: n.start)
