"""The heuristic extraction provider (``atom_pipelines.extraction.heuristic``): the embedded default and the last
provider behind every LLM chain.

Its entity keys are what the graph joins on across messages and mailboxes, so a key that drifts (an address
not lowercased, ``sub.example.co.uk`` instead of ``example.co.uk``, two spellings of one phone number) splits one
real-world thing into several nodes, and a placeholder address (``no_address@enron.com``) or a free-mail domain
turned into an "organization" joins unrelated people into one. These tests pin the keys, the roles a mention
carries (header roles before text roles, merged by dedupe), greeting/sign-off name resolution to a participant,
how names the body writes are keyed (a participant's address, a participant's domain, else the name itself; the
rules that find them are pinned in test_offline_ner.py), and the outcome: ``entities`` when something is found, ``none_found`` (a success, not a failure) otherwise.
MessageText objects are built directly, so each test shows exactly what the provider was given.
"""

from __future__ import annotations

import pytest

from atom_pipelines.extraction.heuristic import HeuristicProvider, dedupe_mentions
from atom_pipelines.extraction.outcomes import EntityMention, EntityType, Outcome, Role
from atom_pipelines.extraction.providers import MessageText, Participant


def message(
    new_text: str = "",
    *,
    subject: str = "",
    sender: Participant | None = None,
    to: tuple[Participant, ...] = (),
    cc: tuple[Participant, ...] = (),
    signature: str = "",
) -> MessageText:
    """A message as cleaning hands it over: ``body`` is the new text plus the signature (basis 'new')."""
    body = "\n\n".join(part for part in (new_text, signature) if part)
    return MessageText(
        mailbox="vince.kaminski@enron.com",
        message_id="msg-1",
        subject=subject,
        sender=sender,
        to=to,
        cc=cc,
        new_text=new_text,
        signature=signature,
        body=body,
    )


def extract(msg: MessageText) -> dict[str, EntityMention]:
    attempt = HeuristicProvider().extract(msg)
    by_key = {m.entity_key: m for m in attempt.mentions}
    assert len(by_key) == len(attempt.mentions), "dedupe must leave one mention per key"
    return by_key


def keys_of_type(found: dict[str, EntityMention], entity_type: EntityType) -> set[str]:
    return {key for key, m in found.items() if m.entity_type is entity_type}


VINCE = Participant("Kaminski, Vince J", "Vince.Kaminski@ENRON.com")
IRIS = Participant("Iris Mack", "iris.mack@enron.com")
STINSON = Participant("Stinson Gibner", "stinson.gibner@enron.com")


# -- people and organizations from the headers -------------------------------------------------------------------


def test_participants_are_people_keyed_by_lowercased_address_with_their_header_role() -> None:
    found = extract(message(sender=VINCE, to=(IRIS,), cc=(STINSON,)))
    assert keys_of_type(found, EntityType.PERSON) == {
        "person:vince.kaminski@enron.com",
        "person:iris.mack@enron.com",
        "person:stinson.gibner@enron.com",
    }
    sender = found["person:vince.kaminski@enron.com"]
    assert sender.name == "Kaminski, Vince J"
    assert sender.roles == (Role.SENDER,)
    assert sender.evidence == "Kaminski, Vince J <vince.kaminski@enron.com>"
    assert found["person:iris.mack@enron.com"].roles == (Role.TO,)
    assert found["person:stinson.gibner@enron.com"].roles == (Role.CC,)


def test_participant_without_display_name_is_named_by_address() -> None:
    found = extract(message(sender=Participant("", "dkocian@enron.com")))
    assert found["person:dkocian@enron.com"].name == "dkocian@enron.com"


@pytest.mark.parametrize(
    "unusable",
    ["no_address@enron.com", "NO_ADDRESS@ENRON.COM", "", "Vince J Kaminski/HOU/ECT@ECT", "not an address"],
)
def test_placeholder_and_non_addresses_make_no_person(unusable: str) -> None:
    found = extract(message(sender=Participant("Someone", unusable), to=(IRIS,)))
    assert set(found) == {"person:iris.mack@enron.com", "organization:enron.com"}


def test_organization_from_domain_keyed_by_registered_domain() -> None:
    found = extract(
        message(
            sender=Participant("Jane Roe", "jane.roe@mail.example.co.uk"),
            to=(Participant("Hill Huntington", "hillh@Stanford.EDU"),),
        )
    )
    assert keys_of_type(found, EntityType.ORGANIZATION) == {"organization:example.co.uk", "organization:stanford.edu"}
    org = found["organization:example.co.uk"]
    assert org.name == "example.co.uk"
    assert org.roles == (Role.DOMAIN,)
    assert org.evidence == "jane.roe@mail.example.co.uk"


@pytest.mark.parametrize(
    "free_mail", ["friend@gmail.com", "friend@yahoo.com", "friend@hotmail.com", "friend@yahoo.co.uk"]
)
def test_free_mail_domains_are_not_organizations(free_mail: str) -> None:
    found = extract(message(sender=Participant("Friend", free_mail)))
    assert set(found) == {f"person:{free_mail}"}


def test_one_organization_for_many_participants_of_a_domain() -> None:
    found = extract(message(sender=VINCE, to=(IRIS, STINSON)))
    assert keys_of_type(found, EntityType.ORGANIZATION) == {"organization:enron.com"}
    # Evidence is the first participant that showed the domain.
    assert found["organization:enron.com"].evidence == "Vince.Kaminski@ENRON.com"


# -- values in the text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("The fee is $2,500 per month.", "money:usd:2500"),
        ("A $1.5 million deal.", "money:usd:1.5 million"),
        ("A $1.5M deal.", "money:usd:1.5 million"),
        ("Budget: USD 2,000", "money:usd:2000"),
        ("Paid US$300 today.", "money:usd:300"),
        ("Costs €3bn in total.", "money:eur:3 billion"),
        ("Costs EUR 40 in total.", "money:eur:40"),
        ("About £4k.", "money:gbp:4 thousand"),
        ("A $20mm facility.", "money:usd:20 million"),
    ],
)
def test_money_is_keyed_by_currency_and_normalized_amount(text: str, key: str) -> None:
    found = extract(message(text))
    assert keys_of_type(found, EntityType.MONEY) == {key}
    assert found[key].roles == (Role.TEXT,)
    assert found[key].evidence == text


def test_spellings_of_one_amount_are_one_money_entity() -> None:
    found = extract(message("$5bn, $5 billion and $5 BILLION"))
    assert keys_of_type(found, EntityType.MONEY) == {"money:usd:5 billion"}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Closing on October 15, 2001.", "date:2001-10-15"),
        ("Closing on Oct. 15th, 2001.", "date:2001-10-15"),
        ("Closing on 15 October 2001.", "date:2001-10-15"),
        ("Closing on 10/15/2001.", "date:2001-10-15"),
        ("Closing on 10/15/01.", "date:2001-10-15"),
        ("Closing on 2001-10-15.", "date:2001-10-15"),
    ],
)
def test_dates_are_keyed_by_iso_day(text: str, key: str) -> None:
    found = extract(message(text))
    assert keys_of_type(found, EntityType.DATE) == {key}


@pytest.mark.parametrize("text", ["Invalid 2001-13-45 day.", "Long ago: 1/2/1850.", "Version 3.2.1 shipped."])
def test_impossible_or_implausible_dates_are_not_dates(text: str) -> None:
    assert keys_of_type(extract(message(text)), EntityType.DATE) == set()


def test_phone_numbers_are_keyed_by_e164_whatever_the_spelling() -> None:
    found = extract(message("Call 713-853-1234, 713.853.1234 or +1 (713) 853 1234. London: +44 20 7946 0958."))
    assert keys_of_type(found, EntityType.PHONE) == {"phone:+17138531234", "phone:+442079460958"}
    assert found["phone:+17138531234"].name == "713-853-1234"  # the first spelling found


def test_urls_need_a_scheme_or_www() -> None:
    found = extract(
        message("See http://www.enron.com/deals, https://example.com/a and www.Example.org/Page. Not foo.bar.")
    )
    assert keys_of_type(found, EntityType.URL) == {
        "url:http://www.enron.com/deals",
        "url:https://example.com/a",
        "url:www.example.org/page",
    }


def test_addresses_in_text_are_people_and_placeholders_are_not() -> None:
    found = extract(message("Ask JEFF.Skilling@Enron.com, not no_address@enron.com."))
    assert keys_of_type(found, EntityType.PERSON) == {"person:jeff.skilling@enron.com"}
    mention = found["person:jeff.skilling@enron.com"]
    assert mention.roles == (Role.TEXT,)
    assert mention.evidence == "Ask JEFF.Skilling@Enron.com, not no_address@enron.com."


def test_subject_mentions_have_the_subject_role() -> None:
    found = extract(message(subject="Deal closing on 12 November 2001"))
    assert found["date:2001-11-12"].roles == (Role.SUBJECT,)


# -- greetings and sign-offs -------------------------------------------------------------------------------------


def test_greeting_and_sign_off_resolve_to_the_matching_participants() -> None:
    found = extract(
        message(
            "Hi Iris,\n\nCan you send me the curves?",
            sender=VINCE,
            to=(IRIS,),
            signature="Thanks,\nVince",
        )
    )
    assert found["person:iris.mack@enron.com"].roles == (Role.TO, Role.GREETING)
    # "Kaminski, Vince J": the comma of a "Last, First" display name does not stop the first name matching.
    assert found["person:vince.kaminski@enron.com"].roles == (Role.SENDER, Role.SIGNATURE)
    assert not any(key.startswith("person-name:") for key in found)


@pytest.mark.parametrize(
    ("display_name", "signed"),
    [("Susan Trevino", "Susan Trevino"), ("Trevino, Susan", "Susan Trevino"), ("Trevino, Susan M.", "Susan Trevino")],
)
def test_full_name_resolves_whatever_the_display_name_order(display_name: str, signed: str) -> None:
    # 115 sign-offs/greetings of the corpus are of the "Last, First [Middle]" shape ("Susan Trevino" signed by
    # "Trevino, Susan"); they went unresolved while full names had to match the display name word for word.
    found = extract(
        message(
            "Please approve.",
            sender=Participant(display_name, "susan.trevino@enron.com"),
            signature=f"Thanks,\n{signed}",
        )
    )
    assert found["person:susan.trevino@enron.com"].roles == (Role.SENDER, Role.SIGNATURE)
    assert not any(key.startswith("person-name:") for key in found)


def test_greeting_word_with_title_is_resolved() -> None:
    found = extract(message("Dear Mr. Lay,\n\nThank you.", to=(Participant("Kenneth Lay", "ken.lay@enron.com"),)))
    assert found["person:ken.lay@enron.com"].roles == (Role.TO, Role.GREETING)


def test_ambiguous_name_gets_a_person_name_key() -> None:
    found = extract(
        message(
            "Hi John,\n\nSee you there.",
            to=(Participant("John Smith", "john.smith@enron.com"), Participant("John Doe", "john.doe@enron.com")),
        )
    )
    mention = found["person-name:john"]
    assert mention.entity_type is EntityType.PERSON
    assert mention.roles == (Role.GREETING,)
    assert mention.evidence == "Hi John,"
    assert found["person:john.smith@enron.com"].roles == (Role.TO,)
    assert found["person:john.doe@enron.com"].roles == (Role.TO,)


def test_same_person_in_to_and_cc_is_one_match_not_an_ambiguity() -> None:
    found = extract(
        message(
            "Hi John,\n\nok",
            to=(Participant("Smith, John", "john.smith@enron.com"),),
            cc=(Participant("Smith, John", "JOHN.SMITH@enron.com"),),
        )
    )
    assert found["person:john.smith@enron.com"].roles == (Role.TO, Role.CC, Role.GREETING)
    assert "person-name:john" not in found


def test_full_name_with_another_surname_is_not_that_participant() -> None:
    found = extract(
        message(
            "Please review.", sender=Participant("John Smith", "john.smith@enron.com"), signature="Thanks,\nJohn Doe"
        )
    )
    assert found["person-name:john doe"].roles == (Role.SIGNATURE,)
    assert found["person:john.smith@enron.com"].roles == (Role.SENDER,)


def test_name_matching_no_participant_gets_a_person_name_key() -> None:
    found = extract(message("Please review.", sender=VINCE, signature="Regards,\nJeff Dasovich"))
    assert found["person-name:jeff dasovich"].roles == (Role.SIGNATURE,)
    assert found["person:vince.kaminski@enron.com"].roles == (Role.SENDER,)


def test_sign_off_without_separate_signature_is_read_from_the_last_lines() -> None:
    found = extract(message("Can you send the numbers?\n\nThanks,\nIris", to=(IRIS,)))
    assert found["person:iris.mack@enron.com"].roles == (Role.TO, Role.SIGNATURE)


@pytest.mark.parametrize(
    "body",
    ["Hi All,\n\nThe meeting moved.", "Hello Team,\n\nok", "Please review.\n\nThanks,\nThe Team", "Thanks,\nEveryone"],
)
def test_group_words_are_not_names(body: str) -> None:
    found = extract(message(body))
    assert not any(m.entity_type is EntityType.PERSON for m in found.values())


@pytest.mark.parametrize(
    ("body", "greeted"),
    [("Iris,\n\nCan you send the curves?", True), ("Crude:\nBank of America\nCitibank", False)],
)
def test_a_bare_opening_line_is_a_greeting_only_when_it_is_a_first_name(body: str, greeted: bool) -> None:
    # "Crude:" heading a list of counterparties was read as a greeting to a person named Crude.
    found = extract(message(body, to=(IRIS,)))
    greetings = {key for key, m in found.items() if Role.GREETING in m.roles}
    assert greetings == ({"person:iris.mack@enron.com"} if greeted else set())


# -- names the body writes ---------------------------------------------------------------------------------------


def test_a_participant_named_in_the_text_resolves_to_the_participant() -> None:
    found = extract(message("I talked to Iris about the curves; Jeff Dasovich agrees.", sender=VINCE, to=(IRIS,)))
    assert found["person:iris.mack@enron.com"].roles == (Role.TO, Role.TEXT)
    other = found["person-name:jeff dasovich"]
    assert other.roles == (Role.TEXT,)
    assert other.evidence == "I talked to Iris about the curves; Jeff Dasovich agrees."


def test_an_organization_spelled_like_a_participant_domain_is_that_domain() -> None:
    found = extract(message("Enron and Bank of America signed.", sender=VINCE))
    assert found["organization:enron.com"].roles == (Role.DOMAIN, Role.TEXT)
    bank = found["organization:bank of america"]
    assert (bank.name, bank.entity_type, bank.roles) == ("Bank of America", EntityType.ORGANIZATION, (Role.TEXT,))
    assert keys_of_type(found, EntityType.ORGANIZATION) == {"organization:enron.com", "organization:bank of america"}


def test_evidence_on_a_long_line_quotes_the_part_around_the_name() -> None:
    line = "word " * 80 + "then Houston Bar Association met " + "word " * 80
    mention = extract(message(line.strip()))["organization:houston bar association"]
    assert "Houston Bar Association" in mention.evidence
    assert len(mention.evidence) <= 200 and mention.evidence in line


# -- dedupe and outcome ------------------------------------------------------------------------------------------


def test_a_participant_mentioned_in_the_text_is_one_entity_with_both_roles() -> None:
    found = extract(
        message(
            "Forward it to iris.mack@enron.com please.", subject="ask iris.mack@enron.com", sender=VINCE, to=(IRIS,)
        )
    )
    iris = found["person:iris.mack@enron.com"]
    assert iris.roles == (Role.TO, Role.SUBJECT, Role.TEXT)
    # The header mention comes first and is the one kept: its name and evidence, not the text's.
    assert iris.name == "Iris Mack"
    assert iris.evidence == "Iris Mack <iris.mack@enron.com>"


def test_dedupe_keeps_the_first_mention_and_merges_roles_in_order() -> None:
    def mention(roles: tuple[Role, ...], evidence: str) -> EntityMention:
        return EntityMention("person:a@x.com", "A", EntityType.PERSON, roles, evidence)

    other = EntityMention("date:2001-10-15", "Oct 15", EntityType.DATE, (Role.TEXT,), "e")
    merged = list(
        dedupe_mentions(
            iter(
                [mention((Role.TO,), "first"), other, mention((Role.TO,), "again"), mention((Role.CC, Role.TEXT), "x")]
            )
        )
    )
    assert [m.entity_key for m in merged] == ["person:a@x.com", "date:2001-10-15"]
    assert merged[0].roles == (Role.TO, Role.CC, Role.TEXT)
    assert merged[0].evidence == "first"


def test_outcome_is_entities_with_a_count_and_says_heuristic() -> None:
    attempt = HeuristicProvider().extract(message("Fee: $2,500.", sender=VINCE))
    assert attempt.outcome is Outcome.ENTITIES
    assert attempt.reason == f"{len(attempt.mentions)} entities"
    assert len(attempt.mentions) == 3  # sender, enron.com, the fee
    assert (attempt.provider, attempt.model) == ("heuristic", "rules-v1")
    # Measured, not left at the default 0.0 (perf_counter ticks in nanoseconds; the rules take microseconds).
    assert 0 < attempt.latency_ms < 5_000


@pytest.mark.parametrize(
    "msg",
    [
        message(),
        message(sender=Participant("Nobody", "no_address@enron.com"), to=(Participant("", ""),)),
        message("ok, sounds good", subject="re: lunch"),
    ],
    ids=["nothing", "placeholder-participants-only", "plain-text-only"],
)
def test_nothing_found_is_none_found_with_a_reason(msg: MessageText) -> None:
    attempt = HeuristicProvider().extract(msg)
    assert attempt.outcome is Outcome.NONE_FOUND
    assert attempt.outcome.succeeded  # a valid answer that found nothing, not a failure
    assert attempt.mentions == ()
    assert attempt.reason == "no participant or pattern found"


def test_a_body_organization_whose_label_two_domains_share_gets_one_key_whatever_the_hash_seed() -> None:
    """enron.com and enron.net both label "Enron": the body's "Enron" must be keyed the same in every process
    (Celery workers each hash strings their own way; set order had made it depend on PYTHONHASHSEED)."""
    import subprocess
    import sys

    script = (
        "from atom_pipelines_tests.test_heuristic import message, extract, Participant, Role\n"
        "msg = message('We met with Enron today.', sender=Participant('Ann Lee', 'ann.lee@enron.net'),\n"
        "              to=(Participant('Bo Chu', 'bo.chu@enron.com'), Participant('Cy Ng', 'cy.ng@enron.net')))\n"
        "found = extract(msg)\n"
        "print(sorted(k for k, m in found.items() if Role.TEXT in m.roles))\n"
    )
    seen = set()
    for seed in ("0", "1", "2", "3", "4", "5"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        seen.add(done.stdout.strip())
    assert seen == {"['organization:enron.com']"}, seen
