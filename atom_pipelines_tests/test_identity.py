"""Identity resolution (``atom_pipelines.entity_graph.identity``): which name mentions become which person.

A wrong merge puts one person's mail on another's node, and nobody sees it; so each rule of the module
docstring is pinned on its own, every refusal included (ambiguous, no correspondent, never_merge, unusable),
with the decision row that explains it. Two addresses must never become one person by a shared display name,
only by a configured alias, and the same rows must give the same decisions in any order.
"""

from __future__ import annotations

import random

import pytest

from atom_pipelines.entity_graph.identity import (
    MERGED,
    REFUSED,
    Decision,
    Resolution,
    address_name,
    reduced_name,
    resolve_identities,
)
from atom_pipelines.extraction import keys

MAILBOX = "kaminski-v"
VINCE = "person:vince.kaminski@enron.com"
VKAMINS = "person:vkamins@enron.com"
STINSON = "person:stinson.gibner@enron.com"


def person_row(mailbox: str, message_id: str, address: str, name: str, roles: str = "to") -> dict[str, str]:
    return {
        "mailbox": mailbox,
        "message_id": message_id,
        "entity_key": keys.person_key(address),
        "name": name,
        "roles": roles,
    }


def name_row(mailbox: str, message_id: str, name: str, roles: str = "greeting") -> dict[str, str]:
    return {
        "mailbox": mailbox,
        "message_id": message_id,
        "entity_key": keys.person_name_key(name),
        "name": name,
        "roles": roles,
    }


def only_name_decision(resolution: Resolution) -> Decision:
    decisions = [d for d in resolution.decisions if d.rule != "alias"]
    assert len(decisions) == 1, decisions
    return decisions[0]


# Rule 3: the reduction of names.


@pytest.mark.parametrize("variant", ["Vince Kaminski", "Kaminski, Vince", "Vince J Kaminski", "Vince J. Kaminski"])
def test_the_four_variants_of_one_name_reduce_alike(variant: str) -> None:
    assert reduced_name(variant) == ("vince", "kaminski")


@pytest.mark.parametrize(
    ("written", "reduced"),
    [
        ("Vince", ("vince", None)),
        ("José Ñúñez", ("jose", "nunez")),  # accents stripped
        ("Germany Jr, Don (WD)", ("don", "germany")),  # suffix and parenthesised part dropped, then reordered
        ("Vince Kaminski, PhD", ("vince", "kaminski")),  # a suffix after a comma is not "Last, First"
        ('"Norman H. Packard" @ENRON', ("norman", "packard")),  # quotes and a Notes domain dropped
        ("Vince J Kaminski/HOU/ECT@ECT", ("vince", "kaminski")),  # a Notes hierarchy dropped
        ("Kerri L Barsh (E-mail)", ("kerri", "barsh")),
        ("Dr. Vince Kaminski", ("vince", "kaminski")),
        ("Mr. Kaminski", None),  # a family name alone, never to be read as a given name
        ("J.", None),
        ("vince.kaminski@enron.com", None),  # an address is not a name (its local part is read elsewhere)
        ("", None),
    ],
)
def test_reduced_name(written: str, reduced: tuple[str, str | None] | None) -> None:
    assert reduced_name(written) == reduced


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("vince.kaminski@enron.com", ("vince", "kaminski")),
        ("vince_kaminski@enron.com", ("vince", "kaminski")),
        ("vince.j.kaminski@enron.com", ("vince", "kaminski")),
        ("vkamins@enron.com", None),  # no first.last shape: no name to read
        ("vince2.kaminski@enron.com", None),
        ("dr.kaminski@enron.com", None),
    ],
)
def test_address_name_reads_first_last_local_parts(address: str, name: tuple[str, str] | None) -> None:
    assert address_name(address) == name


# Rule 1: display names belong to the address they came with.


def test_display_names_are_counted_per_address_and_label_is_the_most_frequent() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Kaminski, Vince J"),
        person_row(MAILBOX, "m2", "vince.kaminski@enron.com", "Vince J Kaminski"),
        person_row(MAILBOX, "m3", "vince.kaminski@enron.com", "Kaminski, Vince J"),
        person_row(MAILBOX, "m4", "vince.kaminski@enron.com", "vince.kaminski@enron.com"),  # just the address
        person_row(MAILBOX, "m5", "vince.kaminski@enron.com", "'Vince.Kaminski@enron.com'"),  # quoted address
        person_row(MAILBOX, "m6", "vince.kaminski@enron.com", ""),
    ]
    resolution = resolve_identities(rows)
    assert resolution.display_names[VINCE] == {"Kaminski, Vince J": 2, "Vince J Kaminski": 1}
    assert resolution.names(VINCE) == ["Kaminski, Vince J", "Vince J Kaminski"]
    assert resolution.label(VINCE) == "Kaminski, Vince J"
    assert resolution.label("person:nobody@enron.com") is None
    assert resolution.names("person:nobody@enron.com") == []


def test_label_ties_are_broken_alphabetically_whatever_the_row_order() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski"),
        person_row(MAILBOX, "m2", "vince.kaminski@enron.com", "Kaminski, Vince"),
    ]
    assert resolve_identities(rows).label(VINCE) == "Kaminski, Vince"
    assert resolve_identities(rows[::-1]).label(VINCE) == "Kaminski, Vince"


def test_two_addresses_with_the_same_display_name_stay_two_people() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        person_row(MAILBOX, "m2", "vkamins@enron.com", "Vince Kaminski", "sender"),
    ]
    resolution = resolve_identities(rows)
    assert resolution.resolve(MAILBOX, VINCE) == VINCE
    assert resolution.resolve(MAILBOX, VKAMINS) == VKAMINS
    assert resolution.display_names[VINCE] == {"Vince Kaminski": 1}
    assert resolution.display_names[VKAMINS] == {"Vince Kaminski": 1}
    assert resolution.decisions == []  # a person: key gets no decision row without an alias
    # And a name mention of that full name is ambiguous between them, not given to either.
    decision = only_name_decision(resolve_identities([*rows, name_row(MAILBOX, "m3", "Vince Kaminski")]))
    assert (decision.decision, decision.rule) == (REFUSED, "ambiguous")


# Rules 2 and 4: matching a name mention against the mailbox's correspondents.


@pytest.mark.parametrize("variant", ["Vince Kaminski", "Kaminski, Vince", "Vince J Kaminski", "Vince J. Kaminski"])
def test_a_full_name_mention_merges_into_the_one_correspondent_with_that_name(variant: str) -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Kaminski, Vince J", "sender"),
        person_row(MAILBOX, "m1", "stinson.gibner@enron.com", "Stinson Gibner", "to"),
        name_row(MAILBOX, "m2", variant, "signature"),
    ]
    resolution = resolve_identities(rows)
    mention = keys.person_name_key(variant)
    decision = only_name_decision(resolution)
    assert (decision.decision, decision.person_key, decision.rule) == (MERGED, VINCE, "full_name")
    assert (decision.message_id, decision.mention_key, decision.mention_name) == ("m2", mention, variant)
    assert resolution.name_merges == {(MAILBOX, mention): VINCE}
    assert resolution.resolve(MAILBOX, mention) == VINCE
    # The merge holds in the mailbox it was decided in, not in another one.
    assert resolution.resolve("other-mailbox", mention) == mention


def test_a_single_name_matches_a_given_name_never_a_family_name() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        name_row(MAILBOX, "m2", "Vince"),
        name_row(MAILBOX, "m3", "Kaminski"),
    ]
    resolution = resolve_identities(rows)
    by_message = {d.message_id: d for d in resolution.decisions}
    assert (by_message["m2"].decision, by_message["m2"].person_key, by_message["m2"].rule) == (
        MERGED,
        VINCE,
        "given_name",
    )
    assert (by_message["m3"].decision, by_message["m3"].person_key, by_message["m3"].rule) == (
        REFUSED,
        None,
        "no_correspondent",
    )
    assert resolution.resolve(MAILBOX, "person-name:kaminski") == "person-name:kaminski"


def test_a_full_name_mention_needs_the_family_name_too() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        name_row(MAILBOX, "m2", "Vince Smith"),
    ]
    decision = only_name_decision(resolve_identities(rows))
    assert (decision.decision, decision.rule) == (REFUSED, "no_correspondent")


def test_the_address_local_part_gives_a_person_a_name() -> None:
    rows = [
        # No display name: the name is only the address, as in many Enron headers.
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "vince.kaminski@enron.com", "to"),
        person_row(MAILBOX, "m1", "shirley_crenshaw@enron.com", "", "cc"),
        name_row(MAILBOX, "m2", "Vince Kaminski"),
        name_row(MAILBOX, "m3", "Shirley"),
    ]
    resolution = resolve_identities(rows)
    assert resolution.resolve(MAILBOX, "person-name:vince kaminski") == VINCE
    assert resolution.resolve(MAILBOX, "person-name:shirley") == "person:shirley_crenshaw@enron.com"
    assert resolution.display_names == {}  # the local part is for matching, not a display name


def test_two_correspondents_with_the_name_are_ambiguous_and_both_are_named() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        person_row(MAILBOX, "m1", "vince.farmer@enron.com", "Vince Farmer", "to"),
        name_row(MAILBOX, "m2", "Vince"),
    ]
    resolution = resolve_identities(rows)
    decision = only_name_decision(resolution)
    assert (decision.decision, decision.person_key, decision.rule) == (REFUSED, None, "ambiguous")
    assert "person:vince.farmer@enron.com" in decision.detail and VINCE in decision.detail
    assert resolution.name_merges == {}
    assert resolution.resolve(MAILBOX, "person-name:vince") == "person-name:vince"


def test_a_name_that_may_be_another_correspondents_nickname_is_ambiguous() -> None:
    """ "Steve" names Steve Hotte exactly, but in a mailbox where Steven Harris writes too it may be his."""
    hotte, harris = "person:steve.hotte@enron.com", "person:steven.harris@enron.com"
    both = [
        person_row("harris-s", "m1", "steven.harris@enron.com", "Steven Harris", "sender"),
        person_row("harris-s", "m1", "steve.hotte@enron.com", "Steve Hotte", "to"),
        name_row("harris-s", "m2", "Steve", "signature"),
    ]
    decision = only_name_decision(resolve_identities(both))
    assert (decision.decision, decision.rule) == (REFUSED, "ambiguous")
    assert harris in decision.detail and hotte in decision.detail
    # Without Steven Harris, Steve Hotte is the one correspondent named Steve.
    alone = [row for row in both if "harris@" not in row["entity_key"]]
    assert resolve_identities(alone).resolve("harris-s", "person-name:steve") == hotte


def test_a_nickname_never_merges_by_itself() -> None:
    rows = [
        person_row(MAILBOX, "m1", "robert.smith@enron.com", "Robert Smith", "sender"),
        name_row(MAILBOX, "m2", "Bob"),
    ]
    decision = only_name_decision(resolve_identities(rows))
    assert (decision.decision, decision.rule) == (REFUSED, "no_correspondent")


def test_only_header_participants_of_the_same_mailbox_are_candidates() -> None:
    rows = [
        # Vince is a correspondent of another mailbox only ...
        person_row("other-mailbox", "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        # ... and in this mailbox only written in a body, which does not make him a correspondent here.
        person_row(MAILBOX, "m2", "vince.kaminski@enron.com", "Vince Kaminski", "text"),
        person_row(MAILBOX, "m2", "stinson.gibner@enron.com", "Stinson Gibner", "sender"),
        name_row(MAILBOX, "m3", "Vince"),
        name_row("other-mailbox", "m4", "Vince"),
    ]
    resolution = resolve_identities(rows)
    by_mailbox = {d.mailbox: d for d in resolution.decisions}
    assert (by_mailbox[MAILBOX].decision, by_mailbox[MAILBOX].rule) == (REFUSED, "no_correspondent")
    assert MAILBOX in by_mailbox[MAILBOX].detail
    assert (by_mailbox["other-mailbox"].decision, by_mailbox["other-mailbox"].person_key) == (MERGED, VINCE)


@pytest.mark.parametrize("unusable", ["J.", "Mr. Kaminski", "(E-mail)", "Jr."])
def test_a_name_that_reduces_to_nothing_is_refused_unusable(unusable: str) -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince J Kaminski", "sender"),
        person_row(MAILBOX, "m1", "john.kaminski@enron.com", "J Kaminski", "to"),
        name_row(MAILBOX, "m2", unusable),
    ]
    resolution = resolve_identities(rows)
    decision = only_name_decision(resolution)
    assert (decision.decision, decision.person_key, decision.rule) == (REFUSED, None, "unusable_name")
    assert resolution.name_merges == {}


# Rule 5: never_merge, the reviewer's undo.


def test_never_merge_refuses_the_merge_in_every_mailbox_and_only_that_one() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        person_row("other-mailbox", "m2", "vince.kaminski@enron.com", "Vince Kaminski", "to"),
        name_row(MAILBOX, "m3", "Vince"),
        name_row("other-mailbox", "m4", "VINCE"),
        name_row(MAILBOX, "m5", "Vince Kaminski"),  # a different reduced name: still merged
    ]
    assert len(resolve_identities(rows).name_merges) == 3  # without the undo, all three merge
    resolution = resolve_identities(rows, never_merge=[("Vince", "Vince.Kaminski@enron.com")])
    by_message = {d.message_id: d for d in resolution.decisions}
    for message_id in ("m3", "m4"):
        assert (by_message[message_id].decision, by_message[message_id].person_key) == (REFUSED, None)
        assert by_message[message_id].rule == "never_merge"
        assert VINCE in by_message[message_id].detail
    assert (by_message["m5"].decision, by_message["m5"].person_key) == (MERGED, VINCE)
    assert resolution.name_merges == {(MAILBOX, "person-name:vince kaminski"): VINCE}


def test_never_merge_holds_for_the_canonical_person_of_an_alias() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vkamins@enron.com", "Vince Kaminski", "sender"),
        name_row(MAILBOX, "m2", "Vince"),
    ]
    aliases = {"vkamins@enron.com": "vince.kaminski@enron.com"}
    decision = only_name_decision(resolve_identities(rows, aliases, never_merge=[("vince", "vkamins@enron.com")]))
    assert (decision.decision, decision.rule) == (REFUSED, "never_merge")


@pytest.mark.parametrize(("name", "address"), [("J.", "vince.kaminski@enron.com"), ("Vince", "not an address")])
def test_a_never_merge_pair_that_could_never_match_is_an_error(name: str, address: str) -> None:
    with pytest.raises(ValueError, match="never_merge"):
        resolve_identities([], never_merge=[(name, address)])


# Aliases.


def test_an_alias_resolves_everywhere_and_brings_its_display_names() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vkamins@enron.com", "Vince J Kaminski", "sender"),
        person_row("other-mailbox", "m2", "vkamins@enron.com", "Vince J Kaminski", "to"),
        person_row(MAILBOX, "m3", "vince.kaminski@enron.com", "Kaminski, Vince", "to"),
    ]
    resolution = resolve_identities(rows, {"vkamins@enron.com": "vince.kaminski@enron.com"})
    assert resolution.resolve(MAILBOX, VKAMINS) == VINCE
    assert resolution.resolve("any-mailbox", VKAMINS) == VINCE
    assert resolution.display_names == {VINCE: {"Vince J Kaminski": 2, "Kaminski, Vince": 1}}
    assert resolution.label(VKAMINS) == resolution.label(VINCE) == "Vince J Kaminski"
    assert resolution.decisions == [
        Decision(
            "", "", VKAMINS, "vkamins@enron.com", MERGED, VINCE, "alias", "configured alias of vince.kaminski@enron.com"
        )
    ]


def test_an_alias_chain_resolves_to_its_end_with_a_row_per_alias_seen() -> None:
    rows = [
        person_row(MAILBOX, "m1", "a@enron.com", "Vince", "sender"),
        person_row(MAILBOX, "m2", "b@enron.com", "Vince K", "sender"),
    ]
    aliases = {"a@enron.com": "b@enron.com", "b@enron.com": "c@enron.com", "unseen@enron.com": "c@enron.com"}
    resolution = resolve_identities(rows, aliases)
    assert resolution.resolve(MAILBOX, "person:a@enron.com") == "person:c@enron.com"
    assert resolution.resolve(MAILBOX, "person:b@enron.com") == "person:c@enron.com"
    assert resolution.resolve(MAILBOX, "person:unseen@enron.com") == "person:c@enron.com"
    assert [(d.mention_key, d.person_key, d.rule) for d in resolution.decisions] == [
        ("person:a@enron.com", "person:c@enron.com", "alias"),
        ("person:b@enron.com", "person:c@enron.com", "alias"),
    ]
    assert "via b@enron.com" in resolution.decisions[0].detail
    assert resolution.display_names == {"person:c@enron.com": {"Vince": 1, "Vince K": 1}}


@pytest.mark.parametrize(
    "aliases",
    [
        {"a@enron.com": "b@enron.com", "b@enron.com": "a@enron.com"},
        {"x@enron.com": "a@enron.com", "a@enron.com": "b@enron.com", "b@enron.com": "a@enron.com"},
    ],
)
def test_an_alias_cycle_is_an_error_naming_its_addresses(aliases: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cycle") as raised:
        resolve_identities([], aliases)
    assert "a@enron.com" in str(raised.value) and "b@enron.com" in str(raised.value)


def test_a_name_matching_an_alias_and_its_canonical_is_one_candidate() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vkamins@enron.com", "Vince Kaminski", "sender"),
        person_row(MAILBOX, "m2", "vince.kaminski@enron.com", "Vince Kaminski", "sender"),
        name_row(MAILBOX, "m3", "Vince"),
    ]
    assert only_name_decision(resolve_identities(rows)).rule == "ambiguous"  # without the alias: two people
    resolution = resolve_identities(rows, {"vkamins@enron.com": "vince.kaminski@enron.com"})
    decision = only_name_decision(resolution)
    assert (decision.decision, decision.person_key, decision.rule) == (MERGED, VINCE, "given_name")


def test_an_alias_local_part_names_its_canonical_person() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vkamins@enron.com", "vkamins@enron.com", "sender"),
        name_row(MAILBOX, "m2", "Vince Kaminski"),
    ]
    resolution = resolve_identities(rows, {"vince.kaminski@enron.com": "vkamins@enron.com"})
    assert resolution.resolve(MAILBOX, "person-name:vince kaminski") == VKAMINS


# Decisions and resolve().


def test_one_decision_per_name_row_sorted_and_independent_of_row_order() -> None:
    rows = [
        person_row(MAILBOX, "m1", "vkamins@enron.com", "Vince Kaminski", "sender"),
        person_row(MAILBOX, "m1", "stinson.gibner@enron.com", "Stinson Gibner", "to"),
        person_row("other-mailbox", "m5", "stinson.gibner@enron.com", "Gibner, Stinson", "sender"),
        name_row(MAILBOX, "m3", "Vince"),
        name_row(MAILBOX, "m2", "Vince"),  # the same key in two messages: two rows, two decisions
        name_row(MAILBOX, "m2", "Stinson"),
        name_row(MAILBOX, "m4", "Shirley"),
        name_row("other-mailbox", "m6", "Stinson"),
    ]
    aliases = {"vkamins@enron.com": "vince.kaminski@enron.com"}
    resolution = resolve_identities(rows, aliases)
    assert len(resolution.decisions) == 5 + 1  # five name rows and the one alias seen
    assert resolution.decisions == sorted(
        resolution.decisions, key=lambda d: (d.mailbox, d.message_id, d.mention_key, d.rule)
    )
    assert [(d.mailbox, d.message_id, d.mention_key) for d in resolution.decisions] == [
        ("", "", VKAMINS),
        (MAILBOX, "m2", "person-name:stinson"),
        (MAILBOX, "m2", "person-name:vince"),
        (MAILBOX, "m3", "person-name:vince"),
        (MAILBOX, "m4", "person-name:shirley"),
        ("other-mailbox", "m6", "person-name:stinson"),
    ]
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    again = resolve_identities(shuffled, aliases)
    assert again.decisions == resolution.decisions
    assert (
        again.name_merges
        == resolution.name_merges
        == {
            (MAILBOX, "person-name:vince"): VINCE,
            (MAILBOX, "person-name:stinson"): STINSON,
            ("other-mailbox", "person-name:stinson"): STINSON,
        }
    )


def test_resolve_leaves_other_keys_unchanged() -> None:
    resolution = resolve_identities(
        [person_row(MAILBOX, "m1", "vince.kaminski@enron.com", "Vince Kaminski", "sender")],
        {"vkamins@enron.com": "vince.kaminski@enron.com"},
    )
    assert resolution.resolve(MAILBOX, "organization:enron.com") == "organization:enron.com"
    assert resolution.resolve(MAILBOX, "person:stinson.gibner@enron.com") == "person:stinson.gibner@enron.com"
    assert resolution.resolve(MAILBOX, "person-name:stinson") == "person-name:stinson"


def test_a_person_row_with_another_key_is_an_error() -> None:
    row = {"mailbox": MAILBOX, "message_id": "m1", "entity_key": "organization:enron.com", "name": "", "roles": "to"}
    with pytest.raises(ValueError, match="organization:enron.com"):
        resolve_identities([row])
